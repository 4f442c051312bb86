"""The supervisor never stops supervising, through whatever WARREN_TEST_EXE names (else source).

An error during a restart (EMFILE from idle metrics connections, ELOOP from a log swapped for a
symlink) ends in containerd restarted or in the supervisor exiting FATAL, never in a dead monitor
under a live process; status tells the truth throughout.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from warren_bundle.metrics import MAX_CONNECTIONS
from warren_bundle.paths import Paths

from support import (
    WARREN,
    containerd_started,
    read_pid,
    run_warren,
    start_run,
    stop_run,
    wait_for,
    warren_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("root_required")]


def status_json(paths: Paths) -> dict[str, Any]:
    out = run_warren(paths, "containerd", "status", "--json")
    assert out.stdout, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def idle_connections(address: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections to the metrics endpoint that never send a byte (loopback only)."""
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1"
    conns: list[socket.socket] = []
    try:
        for _ in range(count):
            try:
                conns.append(socket.create_connection((host, int(port)), timeout=2))
            except OSError:  # a server out of fds stops accepting: enough are idle then
                break
        yield conns
    finally:
        for conn in conns:
            conn.close()


def restarted(paths: Paths, restarts: int) -> bool:
    return status_json(paths).get("restarts") == restarts and containerd_started(paths)


def test_idle_metrics_connections_cannot_starve_a_restart(
    wpaths: Paths, staged_payload: Path
) -> None:
    """Idle connections held an fd each until the respawn failed with EMFILE opening the log;
    the monitor died and status said RUNNING with no containerd, for ever."""
    proc = start_run(
        wpaths, staged_payload, "--health-interval", "0.5", "--metrics-addr", "127.0.0.1:0"
    )
    try:
        sup = read_pid(wpaths.supervisor_pidfile)
        address = status_json(wpaths)["metrics_addr"]
        # Room for what the supervisor holds now, a full set of served connections and a
        # respawn; not for one thread and fd per idle connection.
        highest = max(int(fd) for fd in os.listdir(f"/proc/{sup}/fd"))
        limit = highest + 1 + MAX_CONNECTIONS + 48
        resource.prlimit(sup, resource.RLIMIT_NOFILE, (limit, limit))
        with idle_connections(address, 300):
            wait_for(
                lambda: fd_count(sup) >= highest + MAX_CONNECTIONS // 2,
                10,
                what="the supervisor to accept idle connections",
            )
            os.kill(read_pid(wpaths.containerd_pidfile), signal.SIGKILL)
            wait_for(lambda: restarted(wpaths, 1), 40, what="containerd restarted")
            report = status_json(wpaths)
            assert report["state"] == "RUNNING" and report["socket_answers"] is True
            assert fd_count(sup) < limit - 8, "the idle connections still hold the fds"
    finally:
        rc = stop_run(proc)
    assert rc == 0


def log_becomes_a_symlink(paths: Paths, tmp_path: Path) -> Path:
    """Swap the supervisor's live log for a symlink to a file of someone else's (returned): the
    next respawn's open must refuse it (ELOOP) and must never write there."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = paths.logs_dir / ".swap"
    link.symlink_to(victim)
    os.replace(link, paths.log_file)
    return victim


def test_a_log_swapped_for_a_symlink_ends_in_fatal_not_starting_for_ever(
    wpaths: Paths, staged_payload: Path, tmp_path: Path
) -> None:
    proc = start_run(wpaths, staged_payload, "--health-interval", "0.5")
    victim = log_becomes_a_symlink(wpaths, tmp_path)
    try:
        os.kill(read_pid(wpaths.containerd_pidfile), signal.SIGKILL)
        wait_for(lambda: proc.poll() is not None, 60, what="the supervisor to give up")
        assert proc.returncode not in (0, None), "FATAL must exit non-zero"
    finally:
        stop_run(proc)
    report = status_json(wpaths)
    assert report["state"] == "FATAL", report
    assert report["supervisor_alive"] is False and report["containerd_alive"] is False
    assert "restarted" in (report.get("fatal_reason") or "")
    assert report.get("failed_restarts", 0) >= 1, report
    assert run_warren(wpaths, "containerd", "status").returncode == 7
    assert victim.read_text() == "precious\n"


def test_fatal_is_reported_when_the_state_file_cannot_be_written(
    wpaths: Paths, staged_payload: Path, tmp_path: Path
) -> None:
    """The restarts fail (the log is a symlink) and so does every state write (status.json is a
    non-empty directory, so the rename over it fails, as on a full or broken run dir): status
    still says FATAL with the reason, from the supervisor's last words, not STOPPED."""
    proc = start_run(wpaths, staged_payload, "--health-interval", "0.5")
    victim = log_becomes_a_symlink(wpaths, tmp_path)
    try:
        wpaths.state_file.unlink()
        (wpaths.state_file / "held").mkdir(parents=True)
        os.kill(read_pid(wpaths.containerd_pidfile), signal.SIGKILL)
        wait_for(lambda: proc.poll() is not None, 60, what="the supervisor to give up")
        assert proc.returncode not in (0, None), "FATAL must exit non-zero"
    finally:
        stop_run(proc)
    assert (wpaths.state_file / "held").is_dir(), "the state file was written after all"
    report = status_json(wpaths)
    assert report["state"] == "FATAL", report
    assert "restarted" in (report.get("fatal_reason") or ""), report
    out = run_warren(wpaths, "containerd", "status")
    assert out.returncode == 7 and "FATAL" in out.stdout + out.stderr, out
    assert victim.read_text() == "precious\n"


def test_soak_idle_connections_and_repeated_kills(wpaths: Paths, staged_payload: Path) -> None:
    """200 idle metrics connections and four kill -9 of containerd (one fewer than the restart
    policy's budget): containerd answers at the end and status says so. Started with a shell's
    soft fd limit, which the supervisor raises to its hard limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(1024, hard)

    def shell_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    proc = subprocess.Popen(
        [*WARREN, "containerd", "run", "--health-interval", "0.5", "--metrics-addr", "127.0.0.1:0"],
        env=warren_env(wpaths, staged_payload),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=shell_limit,
    )
    try:
        wait_for(lambda: proc.poll() is not None or containerd_started(wpaths), 60)
        assert proc.poll() is None
        sup = read_pid(wpaths.supervisor_pidfile)
        assert resource.prlimit(sup, resource.RLIMIT_NOFILE) == (hard, hard)
        address = status_json(wpaths)["metrics_addr"]
        with idle_connections(address, 200):
            for n in range(1, 5):
                pid = read_pid(wpaths.containerd_pidfile)
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda n=n: restarted(wpaths, n), 40, what=f"restart {n}")  # type: ignore[misc]
                assert read_pid(wpaths.containerd_pidfile) != pid
        report = status_json(wpaths)
        assert report["state"] == "RUNNING" and report["socket_answers"] is True
        assert report["supervisor_alive"] and report["containerd_alive"]
        ctr = run_warren(wpaths, "ctr", "version")
        assert ctr.returncode == 0, ctr.stderr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
