"""Acting on a supervisor from another process when things are half broken, through whatever
WARREN_TEST_EXE names (else source).

A hung supervisor still ends with containerd stopped; a pidfile naming a process that is not ours
never gets it signalled; concurrent starts all succeed with one supervisor; read-only dirs give
one-line errors (exit 4); status, `warren socket` and `warren ctr` tell the truth while the
supervisor is dead or containerd is hung.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil
import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.fsutil import locked
from warren_bundle.paths import Paths
from warren_bundle.runtime import pidfile

from support import WARREN, read_pid, run_warren, wait_for, warren_env

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("root_required")]

STALE = "warren: stale reason from an earlier run"


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def status_json(paths: Paths) -> dict[str, Any]:
    out = run_warren(paths, "containerd", "status", "--json")
    assert out.stdout, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def one_error_line(stderr: str) -> str:
    """The one error line."""
    errors = [line for line in stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert errors[0].startswith("warren: "), stderr
    return errors[0]


def start(paths: Paths, *args: str) -> None:
    out = run_warren(paths, "containerd", "start", *args)
    assert out.returncode == 0, out.stderr
    assert "containerd started" in out.stdout, out.stdout


def supervisors(paths: Paths) -> list[psutil.Process]:
    """The processes holding the run dir's supervisor lock: what a start launches (spawned from
    source, forked by a frozen file)."""
    found = []
    for pid in pidfile.lock_holders(paths.supervisor_lock):
        with suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def seed_log(paths: Paths) -> None:
    """An earlier run's reason in the log: no later failure may be explained by it."""
    paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.log_file, "a") as fp:
        fp.write(f"{STALE}\n")


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` as a read-only bind mount of itself, for the body only."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not ours: a pidfile naming it must never get it signalled."""
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def name_in_pidfiles(paths: Paths, proc: subprocess.Popen[bytes]) -> None:
    """Both pidfiles name `proc` with its exact exe and start time (what a stale pid reused by
    another program, or a hostile writer, would leave)."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    record = pidfile.record_for(proc.pid)
    assert record.exe.endswith("/sleep")
    pidfile.write(paths.supervisor_pidfile, record)
    pidfile.write(paths.containerd_pidfile, record)


# --- case 3: a hung supervisor -----------------------------------------------------------------


def test_stop_kills_a_hung_supervisor_and_then_stops_containerd(
    wpaths: Paths, staged_payload: Path
) -> None:
    start(wpaths)
    sup = read_pid(wpaths.supervisor_pidfile)
    ctrd = read_pid(wpaths.containerd_pidfile)
    os.kill(sup, signal.SIGSTOP)

    out = run_warren(wpaths, "containerd", "stop")
    assert out.returncode == 0, out.stderr
    assert f"killed warren supervisor pid {sup}" in out.stdout
    assert f"stopped containerd pid {ctrd}" in out.stdout
    assert "stopped warren supervisor" not in out.stdout
    assert gone(sup) and gone(ctrd)
    after = run_warren(wpaths, "containerd", "status")
    assert after.returncode == ExitCode.NOT_RUNNING, after.stdout


# --- case 4: pidfiles naming a process that is not ours ----------------------------------------


def test_start_leaves_a_foreign_process_named_by_the_pidfiles_alone(
    wpaths: Paths, staged_payload: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    name_in_pidfiles(wpaths, sleeper)
    start(wpaths)
    assert sleeper.poll() is None, "start signalled a process that is not ours"
    assert "replacing it" not in wpaths.log_file.read_text()
    assert read_pid(wpaths.containerd_pidfile) != sleeper.pid

    out = run_warren(wpaths, "containerd", "stop")
    assert out.returncode == 0, out.stderr
    assert sleeper.poll() is None


def test_stop_and_status_leave_a_foreign_process_named_by_the_pidfiles_alone(
    wpaths: Paths, staged_payload: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    name_in_pidfiles(wpaths, sleeper)
    out = run_warren(wpaths, "containerd", "stop")
    assert out.returncode == 0, out.stderr
    assert sleeper.poll() is None, "stop signalled a process that is not ours"
    assert out.stdout.strip() == "not running"

    name_in_pidfiles(wpaths, sleeper)
    report = status_json(wpaths)
    assert report.get("state") == "STOPPED"
    assert report["supervisor_pid"] is None and report["containerd_pid"] is None


# --- case 7: concurrent starts -----------------------------------------------------------------


def test_concurrent_starts_all_succeed_with_one_supervisor(
    wpaths: Paths, staged_payload: Path
) -> None:
    seed_log(wpaths)
    env = warren_env(wpaths, staged_payload)
    procs = [
        subprocess.Popen(
            [*WARREN, "containerd", "start"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    results = [(p.wait(180), *p.communicate()) for p in procs]
    for rc, out, err in results:
        assert rc == 0, f"exit {rc}: {err}"
        assert "stale reason" not in out + err
    outs = [out for _rc, out, _err in results]
    assert sum("containerd started" in out for out in outs) == 1, outs
    assert sum("containerd already running" in out for out in outs) == 5, outs
    report = status_json(wpaths)
    assert report["state"] == "RUNNING"
    # Every caller names the one supervisor and its containerd.
    for out in outs:
        assert f"(pid {report['containerd_pid']}, " in out
        assert f"supervisor pid {report['supervisor_pid']})" in out
    stopped = run_warren(wpaths, "containerd", "stop")
    assert stopped.returncode == 0, stopped.stderr


def test_a_failed_start_is_explained_by_its_own_log_lines_only(
    wpaths: Paths, staged_payload: Path
) -> None:
    seed_log(wpaths)
    # Holding the extraction lock keeps the new supervisor from getting far enough to say
    # anything; it is then killed, so its attempt leaves no reason at all in the log.
    with locked(wpaths.extract_lock, 0):
        caller = subprocess.Popen(
            [*WARREN, "containerd", "start"],
            env=warren_env(wpaths, staged_payload),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        launched = wait_for(
            lambda: supervisors(wpaths),
            timeout=60,
            what="the supervisor",
        )
        for proc in launched:
            proc.kill()
        rc = caller.wait(60)
        _out, err = caller.communicate()
    assert rc != 0
    line = one_error_line(err)
    assert "before containerd was ready" in line
    assert "stale reason" not in line


# --- case 9: read-only dirs --------------------------------------------------------------------


def test_read_only_run_dir_gives_one_line_errors(wpaths: Paths, staged_payload: Path) -> None:
    seed_log(wpaths)
    wpaths.run_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write(wpaths.supervisor_pidfile, pidfile.PidRecord(dead.pid, "/bin/true", 1.0))
    with read_only(wpaths.run_dir):
        stop = run_warren(wpaths, "containerd", "stop")
        assert stop.returncode == ExitCode.PERMISSION, stop.stderr
        line = one_error_line(stop.stderr)
        assert f"cannot remove {wpaths.supervisor_pidfile}: Read-only file system" in line
        assert "remount it read-write, or pass --run-dir" in line

        started = run_warren(wpaths, "containerd", "start")
        assert started.returncode == ExitCode.PERMISSION, started.stderr
        line = one_error_line(started.stderr)
        assert f"{wpaths.supervisor_lock}: Read-only file system" in line
        assert "--run-dir" in line and "stale reason" not in line


def test_read_only_data_dir_gives_one_line_errors(wpaths: Paths, staged_payload: Path) -> None:
    with read_only(wpaths.data_dir):
        extract = run_warren(wpaths, "extract")
        assert extract.returncode == ExitCode.PERMISSION, extract.stderr
        line = one_error_line(extract.stderr)
        assert f"{wpaths.extract_lock}: Read-only file system" in line
        assert "remount it read-write, or pass --data-dir" in line

        started = run_warren(wpaths, "containerd", "start")
        assert started.returncode == ExitCode.PERMISSION, started.stderr
        line = one_error_line(started.stderr)
        assert f"cannot open {wpaths.log_file}: Read-only file system" in line
        assert "remount it read-write, or pass --data-dir" in line


def test_read_only_config_dir_fails_start_with_this_attempts_reason(
    wpaths: Paths, staged_payload: Path
) -> None:
    seed_log(wpaths)
    with read_only(wpaths.config_dir):
        started = run_warren(wpaths, "containerd", "start")
    assert started.returncode == ExitCode.PERMISSION, started.stderr
    line = one_error_line(started.stderr)
    # The file or dir that could not be written, under the config dir (config.toml, certs.d…).
    assert f"cannot write {wpaths.config_dir}/" in line
    assert ": Read-only file system; remount it read-write, or pass --config-dir" in line
    assert "stale reason" not in line
    assert pidfile.containerd(wpaths) is None, "nothing may run after a failed start"


# --- case 10: status in the in-between states -------------------------------------------------


def test_killed_supervisor_is_orphaned_and_adoption_keeps_the_uptime(
    wpaths: Paths, staged_payload: Path
) -> None:
    start(wpaths)
    before = status_json(wpaths)
    sup, ctrd = before["supervisor_pid"], before["containerd_pid"]
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: gone(sup), timeout=10, what="the supervisor to die")

    text = run_warren(wpaths, "containerd", "status")
    assert text.returncode == 0, text.stderr
    assert "ORPHANED" in text.stdout
    assert "containerd runs, no supervisor" in text.stdout
    orphaned = status_json(wpaths)
    assert orphaned["state"] == "ORPHANED" and orphaned["containerd_pid"] == ctrd
    assert orphaned["socket_answers"]

    again = run_warren(wpaths, "containerd", "start")
    assert again.returncode == 0, again.stderr
    adopted = status_json(wpaths)
    assert adopted["state"] == "RUNNING" and adopted["adopted"]
    assert adopted["containerd_pid"] == ctrd
    assert adopted["started_at"] == before["started_at"]
    assert adopted["uptime_s"] >= orphaned["uptime_s"]


def pending_connections(sock: Path) -> int:
    """Connections waiting in the accept queue of the listener at `sock` (ss's Recv-Q)."""
    out = subprocess.run(["ss", "-xlH", "src", str(sock)], capture_output=True, text=True)
    rows = [line.split() for line in out.stdout.splitlines() if str(sock) in line]
    return int(rows[0][2]) if rows else 0


def test_a_slow_containerd_is_waited_for_not_called_hung(
    wpaths: Paths, staged_payload: Path
) -> None:
    # On a loaded booted guest `warren ctr run` right after a restart said "does not answer
    # ... not responding" after one 1 s check: an alive containerd gets the supervisor's rule
    # (3 checks of 2 s) before a client calls it hung.
    start(wpaths, "--health-interval", "600")
    ctrd = read_pid(wpaths.containerd_pidfile)
    os.kill(ctrd, signal.SIGSTOP)  # it accepts nothing until we let it
    try:
        client = subprocess.Popen(
            [*WARREN, "ctr", "version"],
            env=warren_env(wpaths),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The first check, the connect probe after it, then the next check: it waits on.
        wait_for(lambda: pending_connections(wpaths.socket) >= 3 or client.poll() is not None,
                 timeout=60, what="a second check")  # fmt: skip
    finally:
        os.kill(ctrd, signal.SIGCONT)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert "Server:" in out and "not responding" not in err


def test_hung_containerd_is_unresponsive_and_clients_say_so(
    wpaths: Paths, staged_payload: Path
) -> None:
    # A long health interval: the supervisor must not replace the hung containerd mid-test.
    start(wpaths, "--health-interval", "600")
    ctrd = read_pid(wpaths.containerd_pidfile)
    os.kill(ctrd, signal.SIGSTOP)
    try:
        report = status_json(wpaths)
        assert report["state"] == "UNRESPONSIVE"
        assert report["containerd_alive"] and not report["socket_answers"]
        text = run_warren(wpaths, "containerd", "status")
        assert "UNRESPONSIVE" in text.stdout
        assert f"containerd pid {ctrd} is alive but does not answer" in text.stdout

        expected = (
            f"containerd does not answer on {wpaths.socket} "
            f"(pid {ctrd} is alive but not responding)"
        )
        for args in (("socket",), ("ctr", "version")):
            out = run_warren(wpaths, *args)
            assert out.returncode == ExitCode.NOT_RUNNING, out.stderr
            line = one_error_line(out.stderr)
            assert expected in line
            assert "warren containerd status" in line
            assert "socket not found" not in line
    finally:
        os.kill(ctrd, signal.SIGCONT)
    stopped = run_warren(wpaths, "containerd", "stop")
    assert stopped.returncode == 0, stopped.stderr
