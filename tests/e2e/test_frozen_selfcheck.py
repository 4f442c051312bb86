"""The frozen file can do what its exclusions might break: `_selfcheck`, and a live /metrics."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.paths import Paths

from support import (
    cleanup_runtime,
    containerd_started,
    make_paths,
    metric_samples,
    metric_value,
    short_dir,
    wait_for,
)
from support.frozen import exe_under_test, frozen_env, run_frozen

pytestmark = pytest.mark.e2e


@pytest.fixture
def exe(request: pytest.FixtureRequest) -> Path:
    return exe_under_test(request)


@pytest.fixture
def paths() -> Iterator[Paths]:
    base = short_dir("fm")
    paths = make_paths(base)
    yield paths
    cleanup_runtime(paths, base)


def test_selfcheck_passes_and_imports_every_module(exe: Path, paths: Paths) -> None:
    from warren_bundle.selfcheck import package_modules

    out = run_frozen(exe, paths, "_selfcheck", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True
    assert report["modules"] == package_modules()  # every one from source, fetch aside
    assert {"idna codec", "getaddrinfo localhost", "metrics server and scrape"} <= set(
        report["checks"]
    )
    assert "_selfcheck" not in run_frozen(exe, paths, "--help").stdout


@pytest.mark.usefixtures("root_required")
def test_containerd_run_serves_metrics_on_the_given_address(exe: Path, paths: Paths) -> None:
    errors = paths.data_dir.parent / "run.err"
    with open(errors, "w") as err:
        proc = subprocess.Popen(
            [str(exe), "containerd", "run", "--metrics-addr", "127.0.0.1:0"],
            env=frozen_env(paths),
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd="/",
        )
    try:
        wait_for(
            lambda: proc.poll() is not None or containerd_started(paths),
            timeout=60,
            what="the frozen warren to start containerd",
        )
        assert proc.poll() is None, errors.read_text()[-2000:]
        status = run_frozen(exe, paths, "containerd", "status", "--json")
        assert status.returncode == 0, status.stderr
        address = json.loads(status.stdout)["metrics_addr"]
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")

        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
            scraped = metric_samples(reply.read().decode())
        assert metric_value(scraped, "embedded_containerd_running") == 1.0
        assert metric_value(scraped, "embedded_containerd_state", state="RUNNING") == 1.0

        via_cli = run_frozen(exe, paths, "metrics")  # the frozen client scrapes it too
        assert via_cli.returncode == 0, via_cli.stderr
        assert metric_value(metric_samples(via_cli.stdout), "embedded_containerd_running") == 1.0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, errors.read_text()[-2000:]
