"""/metrics of a real supervised containerd: running, a kill -9 and its restart, stop, restart."""

from __future__ import annotations

import json
import signal
import urllib.error
from pathlib import Path

import psutil
import pytest

from warren_bundle import metrics
from warren_bundle.paths import Paths
from warren_bundle.payload.format import read_file
from warren_bundle.runtime import statefile as state

from support import (
    Samples,
    metric_samples,
    metric_value,
    read_pid,
    run_warren,
    staged_containerd_version,
    start_run,
    stop_run,
    wait_for,
)

pytestmark = pytest.mark.integration


def scrape(address: str) -> Samples:
    return metric_samples(metrics.scrape(address))


def try_scrape(address: str) -> Samples | None:
    try:
        return scrape(address)
    except OSError:
        return None


def endpoint_address(paths: Paths) -> str:
    def recorded() -> str | None:
        current = state.read(paths) or {}
        return current.get("metrics_addr")

    return str(wait_for(recorded, timeout=10, what="the metrics address in the state file"))


def test_scrape_through_a_kill_and_a_stop(
    wpaths: Paths, staged_payload: Path, root_required: None
) -> None:
    proc = start_run(
        wpaths, staged_payload, "--metrics-addr", "127.0.0.1:0", "--health-interval", "0.5"
    )
    try:
        address = endpoint_address(wpaths)
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")

        first = scrape(address)
        assert metric_value(first, "embedded_containerd_running") == 1
        assert metric_value(first, "embedded_containerd_restarts_total") == 0
        assert metric_value(first, "embedded_containerd_uptime_seconds") >= 0
        assert metric_value(first, "embedded_startup_duration_seconds") > 0
        assert metric_value(first, "embedded_socket_ready_duration_seconds") > 0
        assert metric_value(first, "embedded_extraction_duration_seconds", cached="false") > 0
        info = [dict(labels) for name, labels in first if name == "embedded_build_info"]
        assert info[0]["containerd_version"] == staged_containerd_version()
        assert info[0]["runc_version"] == "1.1.5"
        assert info[0]["payload_digest"] == read_file(staged_payload).digest

        old = read_pid(wpaths.containerd_pidfile)
        psutil.Process(old).send_signal(signal.SIGKILL)

        def restarted() -> Samples | None:
            now = try_scrape(address)
            if now is None or metric_value(now, "embedded_containerd_restarts_total") < 1:
                return None
            return now if metric_value(now, "embedded_containerd_running") == 1 else None

        after = wait_for(restarted, timeout=30, what="restarts_total 1 and running 1 again")
        assert metric_value(after, "embedded_containerd_restarts_total") == 1
        assert read_pid(wpaths.containerd_pidfile) != old

        # `warren metrics` asks the endpoint; --from-state renders the state file: both agree.
        for args in (("metrics",), ("metrics", "--from-state")):
            out = run_warren(wpaths, *args)
            assert out.returncode == 0, out.stderr
            via_cli = metric_samples(out.stdout)
            assert metric_value(via_cli, "embedded_containerd_running") == 1, args
            assert metric_value(via_cli, "embedded_containerd_restarts_total") == 1, args

        status = run_warren(wpaths, "containerd", "status")
        assert status.returncode == 0, status.stderr
        assert f"http://{address}/metrics" in status.stdout
        assert f"pid {old} killed by SIGKILL" in status.stdout
    finally:
        assert stop_run(proc) == 0

    with pytest.raises(urllib.error.URLError):
        metrics.scrape(address)  # the endpoint went with the supervisor
    out = run_warren(wpaths, "metrics")
    assert out.returncode == 0, out.stderr
    stopped = metric_samples(out.stdout)
    assert metric_value(stopped, "embedded_containerd_running") == 0
    assert metric_value(stopped, "embedded_containerd_state", state="STOPPED") == 1
    assert metric_value(stopped, "embedded_containerd_restarts_total") == 1
    assert metric_value(stopped, "embedded_containerd_uptime_seconds") == 0


def test_detached_start_passes_the_endpoint_on_and_reports_a_cached_extraction(
    wpaths: Paths, staged_payload: Path, root_required: None
) -> None:
    extracted = run_warren(wpaths, "extract")
    assert extracted.returncode == 0, extracted.stderr

    started = run_warren(
        wpaths, "containerd", "start", "--json", "--metrics-addr", "127.0.0.1:0", timeout=90
    )
    try:
        assert started.returncode == 0, started.stderr
        report = json.loads(started.stdout)
        address = report["metrics_addr"]
        found = scrape(address)
        assert metric_value(found, "embedded_containerd_running") == 1
        assert metric_value(found, "embedded_extraction_duration_seconds", cached="true") >= 0
        assert ("embedded_extraction_duration_seconds", (("cached", "false"),)) not in found
    finally:
        stopped = run_warren(wpaths, "containerd", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert try_scrape(address) is None
