"""`warren doctor` with a real containerd: healthy, a noexec data dir, a lost socket; frozen."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths
from warren_bundle.payload.format import read_embedded

from conftest import Supervised
from support import (
    doctor_lines,
    metric_samples,
    metric_value,
    run_warren,
    staged_containerd_version,
    start_run,
    stop_run,
    warren_env,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def noexec_data_dir(wpaths: Paths, root_required: None) -> Iterator[Path]:
    """The data dir is a tmpfs mounted noexec (mode 0755, so only noexec is wrong with it)."""
    data_dir = wpaths.data_dir
    data_dir.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "noexec,mode=0755,size=64m", "tmpfs", str(data_dir)],
        capture_output=True,
        text=True,
    )
    assert mounted.returncode == 0, mounted.stderr
    try:
        yield data_dir
    finally:
        subprocess.run(["umount", str(data_dir)], capture_output=True)


def test_a_noexec_data_dir_fails_naming_the_remedy(
    wpaths: Paths, noexec_data_dir: Path, staged_payload: Path
) -> None:
    out = run_warren(wpaths, "doctor")

    assert out.returncode == ExitCode.ERROR, out.stdout
    found = doctor_lines(out.stdout)
    line = found["data dir exec"]
    assert line.startswith("FAIL  data dir exec")
    assert f"data dir {noexec_data_dir} is on a noexec filesystem" in line
    assert f"remount it with exec (mount -o remount,exec {noexec_data_dir})" in line
    assert "pass --data-dir elsewhere" in line
    assert found["data dir"].startswith("PASS"), "only noexec is wrong with this data dir"
    assert os.listdir(noexec_data_dir) == [], "doctor must not write into the data dir"


HEALTHY_PASSES = (
    "platform",
    "payload",
    "libc",
    "binaries",
    "privileges",
    "data dir",
    "data dir exec",
    "free space",
    "cgroups",
    "overlayfs",
    "kernel",
    "pidfiles",
    "socket",
)


def test_a_healthy_setup_passes(supervised: Supervised) -> None:
    out = run_warren(supervised.paths, "doctor", "--json")

    data = json.loads(out.stdout)
    assert out.returncode == 0, out.stdout
    assert data["ok"] is True and data["summary"]["FAIL"] == 0
    status = {c["name"]: c for c in data["checks"]}
    for name in HEALTHY_PASSES:
        assert status[name]["status"] == "PASS", status[name]
    assert staged_containerd_version() in status["socket"]["message"]
    assert "alive" in status["pidfiles"]["message"]
    # The rest may warn on a particular host, but never fail.
    assert all(c["status"] in ("PASS", "WARN") for c in data["checks"])


def test_socket_not_found_while_containerd_runs(
    wpaths: Paths, staged_payload: Path, root_required: None
) -> None:
    # A long health interval: the supervisor must not notice and repair it during the test.
    proc = start_run(wpaths, staged_payload, "--health-interval", "600")
    try:
        wpaths.socket.unlink()

        out = run_warren(wpaths, "doctor")

        assert out.returncode == ExitCode.NOT_RUNNING, out.stdout
        line = doctor_lines(out.stdout)["socket"]
        assert line.startswith("FAIL  socket")
        assert f"socket not found: {wpaths.socket}" in line
        assert f"ls -l {wpaths.socket}" in line
        assert "restart containerd or Warren" in line
        status = run_warren(wpaths, "containerd", "status")
        assert "socket error" in status.stdout and "socket not found" in status.stdout
    finally:
        assert stop_run(proc) == 0


@pytest.mark.e2e
def test_frozen_doctor_and_metrics_describe_the_embedded_payload(
    wpaths: Paths, frozen_exe: Path, root_required: None
) -> None:
    env = warren_env(wpaths, payload=None)
    digest = read_embedded(frozen_exe).digest

    out = subprocess.run(
        [str(frozen_exe), "doctor", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    data = json.loads(out.stdout)
    payload = next(c for c in data["checks"] if c["name"] == "payload")
    assert payload["status"] == "PASS", payload
    assert f"sha256:{digest[:12]} intact (embedded in {frozen_exe})" in payload["message"]
    assert data["summary"]["FAIL"] == 0, data

    shown = subprocess.run(
        [str(frozen_exe), "metrics"], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    found = metric_samples(shown.stdout)
    assert metric_value(found, "embedded_containerd_running") == 0
    info = [dict(labels) for name, labels in found if name == "embedded_build_info"]
    assert info and info[0]["payload_digest"] == digest
