"""Metrics rendering, the address option, the live endpoint on 127.0.0.1, `warren metrics`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from warren_bundle import metrics
from warren_bundle.errors import WarrenError
from warren_bundle.paths import Paths
from warren_bundle.payload.format import read_file

from support import WARREN, metric_samples, metric_value, run_warren, warren_env


def running_report(**overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "state": "RUNNING",
        "containerd_pid": 4242,
        "uptime_s": 12.5,
        "restarts": 3,
        "timings": {
            "extraction_s": 0.25,
            "extraction_cached": True,
            "socket_ready_s": 0.07,
            "startup_s": 0.4,
        },
        "containerd_version": "1.6.20",
        "runc_version": "1.1.5",
        "payload_digest": "ab" * 32,
    }
    report.update(overrides)
    return report


def test_running_report_renders_every_seed_metric() -> None:
    found = metric_samples(metrics.render(running_report()))

    assert metric_value(found, "embedded_containerd_running") == 1
    assert metric_value(found, "embedded_containerd_restarts_total") == 3
    assert metric_value(found, "embedded_containerd_uptime_seconds") == 12.5
    assert metric_value(found, "embedded_startup_duration_seconds") == 0.4
    assert metric_value(found, "embedded_socket_ready_duration_seconds") == 0.07
    assert metric_value(found, "embedded_extraction_duration_seconds", cached="true") == 0.25
    assert metric_value(found, "embedded_containerd_state", state="RUNNING") == 1
    assert metric_value(found, "embedded_containerd_state", state="BACKOFF") == 0
    info = metric_value(
        found,
        "embedded_build_info",
        containerd_version="1.6.20",
        runc_version="1.1.5",
        payload_digest="ab" * 32,
        warren_version="0.1.0",
    )
    assert info == 1
    assert not any(name.startswith("embedded_lima") for name, _ in found)


def test_a_fresh_extraction_is_labelled_not_cached() -> None:
    report = running_report()
    report["timings"]["extraction_cached"] = False
    found = metric_samples(metrics.render(report))
    assert metric_value(found, "embedded_extraction_duration_seconds", cached="false") == 0.25
    assert ("embedded_extraction_duration_seconds", (("cached", "true"),)) not in found


@pytest.mark.parametrize(
    "overrides",
    [
        {"state": "BACKOFF", "containerd_pid": None},
        {"state": "STOPPED", "containerd_pid": None},
        # A state file says RUNNING but no containerd process backs it: not running.
        {"state": "RUNNING", "containerd_pid": None},
    ],
)
def test_not_running_reports_zero_running_and_zero_uptime(overrides: dict[str, Any]) -> None:
    found = metric_samples(metrics.render(running_report(**overrides)))
    assert metric_value(found, "embedded_containerd_running") == 0
    assert metric_value(found, "embedded_containerd_uptime_seconds") == 0
    assert metric_value(found, "embedded_containerd_restarts_total") == 3
    assert metric_value(found, "embedded_containerd_state", state=overrides["state"]) == 1


def test_timings_not_yet_measured_have_no_sample() -> None:
    found = metric_samples(metrics.render({"state": "STARTING", "timings": {"extraction_s": None}}))
    names = {name for name, _ in found}
    assert "embedded_containerd_running" in names
    assert not names & {
        "embedded_startup_duration_seconds",
        "embedded_socket_ready_duration_seconds",
        "embedded_extraction_duration_seconds",
        "embedded_build_info",
    }


def write_lima_status(paths: Paths, **data: Any) -> None:
    paths.lima_dir.mkdir(parents=True)
    (paths.lima_dir / "status.json").write_text(json.dumps(data))


def test_lima_metrics_come_from_the_lima_status_file(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "etc")
    write_lima_status(
        paths,
        instance="warren",
        status="Running",
        running=True,
        restarts=2,
        memory_bytes=2 * 2**30,
        socket="/x/sock/containerd.sock",
        updated_at=1.0,
    )
    found = metric_samples(metrics.render({"state": "STOPPED"}, metrics.read_lima_status(paths)))
    assert metric_value(found, "embedded_lima_running") == 1
    assert metric_value(found, "embedded_lima_restarts_total") == 2
    assert metric_value(found, "embedded_lima_memory_bytes") == 2 * 2**30


def test_a_stopped_vm_reports_zero_and_no_file_means_no_lima_metrics(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "etc")
    assert metrics.read_lima_status(paths) is None
    write_lima_status(paths, instance="warren", status="Stopped", running=False, restarts=0)
    found = metric_samples(metrics.render({"state": "STOPPED"}, metrics.read_lima_status(paths)))
    assert metric_value(found, "embedded_lima_running") == 0
    assert ("embedded_lima_memory_bytes", ()) not in found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9323", ("127.0.0.1", 9323)),
        ("127.0.0.1:9323", ("127.0.0.1", 9323)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9323", ("::1", 9323)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_metrics_addr_parses(text: str, expected: tuple[str, int]) -> None:
    assert metrics.parse_addr(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (":9323", "names no host"),
        ("127.0.0.1:http", "not a number"),
        ("127.0.0.1:70000", "out of range"),
        ("example.com:9323", "not an IP address"),
    ],
)
def test_bad_metrics_addr_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        metrics.parse_addr(text)


def test_ipv6_addresses_are_bracketed() -> None:
    assert metrics.format_addr("::1", 9323) == "[::1]:9323"
    assert metrics.format_addr("127.0.0.1", 9323) == "127.0.0.1:9323"


def test_endpoint_reads_the_report_at_every_scrape(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "etc")
    report = running_report(restarts=0)
    server = metrics.MetricsServer("127.0.0.1", 0, lambda: report, paths)
    try:
        assert server.address.startswith("127.0.0.1:")
        first = metric_samples(metrics.scrape(server.address))
        report.update(restarts=1, state="BACKOFF", containerd_pid=None)
        write_lima_status(paths, instance="warren", running=True, restarts=0, memory_bytes=1)
        second = metric_samples(metrics.scrape(server.address))
    finally:
        server.close()

    assert metric_value(first, "embedded_containerd_running") == 1
    assert metric_value(first, "embedded_containerd_restarts_total") == 0
    assert metric_value(second, "embedded_containerd_running") == 0
    assert metric_value(second, "embedded_containerd_restarts_total") == 1
    assert metric_value(second, "embedded_lima_running") == 1
    # Only the report's metrics: no python/process collectors from the default registry.
    assert not any(name.startswith(("python_", "process_")) for name, _ in second)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)


def test_a_busy_port_is_one_clear_error(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "etc")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(WarrenError) as caught:
            metrics.MetricsServer("127.0.0.1", port, dict, paths)
    line = caught.value.one_line()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in line
    assert "--metrics-addr" in line


# --- the CLI ----------------------------------------------------------------------------------


def make_tmp_paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "data", tmp_path / "run", tmp_path / "etc")


def test_metrics_before_any_start_says_not_running_and_what_is_bundled(
    tmp_path: Path, staged_payload: Path
) -> None:
    paths = make_tmp_paths(tmp_path)
    out = run_warren(paths, "metrics")
    assert out.returncode == 0, out.stderr
    found = metric_samples(out.stdout)
    assert metric_value(found, "embedded_containerd_running") == 0
    assert metric_value(found, "embedded_containerd_state", state="STOPPED") == 1
    digest = read_file(staged_payload).digest
    info = [dict(labels) for name, labels in found if name == "embedded_build_info"]
    assert info and info[0]["payload_digest"] == digest
    assert not paths.data_dir.exists() and not paths.run_dir.exists(), "metrics wrote files"


def test_metrics_does_not_believe_a_state_file_left_by_a_dead_supervisor(
    tmp_path: Path, staged_payload: Path
) -> None:
    paths = make_tmp_paths(tmp_path)
    paths.run_dir.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = running_report(containerd_pid=gone.pid, supervisor_pid=gone.pid, started_at=1.0)
    stale["metrics_addr"] = "127.0.0.1:1"
    paths.state_file.write_text(json.dumps(stale))

    out = run_warren(paths, "metrics")

    assert out.returncode == 0, out.stderr
    found = metric_samples(out.stdout)
    assert metric_value(found, "embedded_containerd_running") == 0
    assert metric_value(found, "embedded_containerd_state", state="STOPPED") == 1
    assert metric_value(found, "embedded_containerd_restarts_total") == 3
    assert "does not answer" not in out.stderr, "tried the endpoint of a dead supervisor"


def test_run_refuses_a_bad_metrics_addr_as_a_usage_error(tmp_path: Path) -> None:
    paths = make_tmp_paths(tmp_path)
    out = run_warren(paths, "containerd", "run", "--metrics-addr", ":9323")
    assert out.returncode == 2
    assert "--metrics-addr" in out.stderr and "names no host" in out.stderr
    assert not paths.data_dir.exists()


def test_run_on_a_busy_metrics_port_starts_nothing(
    tmp_path: Path, staged_payload: Path, root_required: None
) -> None:
    paths = make_tmp_paths(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [*WARREN, "containerd", "run", "--metrics-addr", f"127.0.0.1:{port}"],
            env=warren_env(paths, staged_payload),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines == [
        f"warren: cannot serve metrics on 127.0.0.1:{port}: Address already in use; "
        "pick a free address with --metrics-addr HOST:PORT, or omit it"
    ]
    assert not paths.data_dir.exists() and not paths.run_dir.exists()
    assert not os.path.lexists(paths.socket)


def test_idle_connections_are_capped_and_timed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each idle connection held a thread and an fd for ever: 200 of them took the supervisor
    towards EMFILE. Now at most MAX_CONNECTIONS are served, and each only for IO_TIMEOUT."""
    import threading
    import time

    monkeypatch.setattr(metrics, "IO_TIMEOUT", 0.5)
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "etc")
    before = threading.active_count()
    server = metrics.MetricsServer("127.0.0.1", 0, running_report, paths)
    host, port = server.address.rsplit(":", 1)
    idle: list[socket.socket] = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection((host, int(port)), timeout=5))
        deadline = time.monotonic() + 10
        closed = 0
        for conn in idle:  # every one is closed by the server: at once, or at its timeout
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                if conn.recv(1) == b"":
                    closed += 1
            except (TimeoutError, ConnectionResetError):
                pass
            peak = threading.active_count() - before
            assert peak <= metrics.MAX_CONNECTIONS + 2, f"{peak} threads for idle connections"
        assert closed == len(idle)
        assert (
            metric_value(
                metric_samples(metrics.scrape(server.address)), "embedded_containerd_running"
            )
            == 1
        )
    finally:
        for conn in idle:
            conn.close()
        server.close()


def test_a_fifo_in_place_of_the_lima_status_is_no_status_and_holds_nothing_up(
    tmp_path: Path,
) -> None:
    # Its own json.loads(read_text()) waited for a writer: every scrape and `status` hung.
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "etc")
    paths.lima_dir.mkdir(parents=True)
    os.mkfifo(paths.lima_dir / metrics.LIMA_STATUS_FILE)
    code = (
        "import sys; sys.path[:0] = " + repr(sys.path) + "\n"
        "from pathlib import Path\n"
        "from warren_bundle import metrics\n"
        "from warren_bundle.paths import Paths\n"
        f"base = Path({str(tmp_path)!r})\n"
        "print(metrics.read_lima_status(Paths(base / 'data', base / 'run', base / 'etc')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=20, check=True)  # fmt: skip
    assert out.stdout.strip() == "None"
