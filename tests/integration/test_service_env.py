"""The service's environment reaches containerd: the proxy (plain, and CONTAINERD_-prefixed for
containerd alone) and never systemd's notify variables; `warren doctor` reports the proxy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from warren_bundle.paths import Paths

from support import (
    WARREN,
    containerd_started,
    doctor_lines,
    read_pid,
    run_warren,
    stop_run,
    wait_for,
    warren_env,
)

pytestmark = pytest.mark.integration


def environ_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().partition("=")[::2] for p in pairs if b"=" in p)


def test_containerd_gets_the_proxy_and_doctor_reports_it(
    wpaths: Paths, staged_payload: Path, root_required: None
) -> None:
    proxy = {
        "HTTP_PROXY": "http://user:pa%40ss@192.0.2.1:3128",
        "NO_PROXY": "localhost,127.0.0.1,10.217.0.0/16",
        "CONTAINERD_HTTPS_PROXY": "http://192.0.2.2:3128",
        "https_proxy": "http://lower:1",
    }
    proc = subprocess.Popen(
        [*WARREN, "containerd", "run"],
        env=warren_env(wpaths, staged_payload, **proxy),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: proc.poll() is not None or containerd_started(wpaths), 90)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        env = environ_of(read_pid(wpaths.containerd_pidfile))
        assert env["HTTP_PROXY"] == proxy["HTTP_PROXY"]
        assert env["HTTPS_PROXY"] == "http://192.0.2.2:3128"  # containerd's own, in place
        assert "https_proxy" not in env and "CONTAINERD_HTTPS_PROXY" not in env
        assert env["NO_PROXY"] == proxy["NO_PROXY"]

        doctor = run_warren(wpaths, "doctor", payload=staged_payload)
        line = doctor_lines(doctor.stdout)["proxy"]
        assert line.startswith("PASS") and "containerd uses" in line, line
        assert "HTTPS_PROXY=http://192.0.2.2:3128" in line
        assert "user:***@192.0.2.1" in line and "pa%40ss" not in doctor.stdout
    finally:
        assert stop_run(proc) == 0


def test_doctor_warns_of_a_proxy_that_would_carry_the_pod_network(wpaths: Paths) -> None:
    done = run_warren(wpaths, "doctor", HTTPS_PROXY="http://192.0.2.1:3128", NO_PROXY="localhost")
    line = doctor_lines(done.stdout)["proxy"]
    assert line.startswith("WARN"), line
    assert "leaves out 127.0.0.1, 10.217.0.0/16" in line and "add 127.0.0.1,10.217.0.0/16" in line
    unset = {k: "" for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    clean = doctor_lines(run_warren(wpaths, "doctor", **unset).stdout)["proxy"]
    assert clean.startswith("PASS") and "connects to registries directly" in clean, clean
