"""The restart policy and the supervisor's restart, liveness and FATAL paths, without root.

The manager talks to processes only through runtime/process.py's seam; here a stand-in process
exits when told, and the health probe answers what the test says, so each path runs in
milliseconds. The same paths run against the real containerd in test_supervisor_lifecycle.py.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from warren_bundle.paths import Paths
from warren_bundle.runtime import pidfile
from warren_bundle.runtime.monitor import Monitor
from warren_bundle.runtime.policy import GiveUp, Restart, RestartPolicy
from warren_bundle.runtime.process import describe_returncode
from warren_bundle.runtime.settings import Settings
from warren_bundle.runtime.states import State
from warren_bundle.runtime.supervisor import ContainerdManager

# --- the pure policy ---------------------------------------------------------------------------


def test_backoff_grows_to_cap_and_resets_after_stable_run() -> None:
    policy = RestartPolicy(initial=0.1, cap=1.0, stable_after=30, max_restarts=100, window=60)
    delays = [policy.after_exit(now=i * 100.0, ran_for=0) for i in range(6)]
    assert delays == [Restart(d) for d in (0.1, 0.2, 0.4, 0.8, 1.0, 1.0)]
    assert policy.after_exit(now=700.0, ran_for=60) == Restart(0.1)


def test_too_many_restarts_in_the_window_gives_up() -> None:
    policy = RestartPolicy(max_restarts=3, window=60)
    decisions = [policy.after_exit(now=float(t), ran_for=0) for t in range(4)]
    assert all(isinstance(d, Restart) for d in decisions[:3])
    assert decisions[3] == GiveUp("containerd restarted 3 times in 60s")


def test_restarts_outside_the_window_do_not_count() -> None:
    policy = RestartPolicy(max_restarts=2, window=10)
    assert isinstance(policy.after_exit(now=0.0, ran_for=0), Restart)
    assert isinstance(policy.after_exit(now=1.0, ran_for=0), Restart)
    # The first two have left the window by t=20: this is the first of a new window.
    assert isinstance(policy.after_exit(now=20.0, ran_for=0), Restart)
    assert isinstance(policy.after_exit(now=21.0, ran_for=0), Restart)
    assert isinstance(policy.after_exit(now=22.0, ran_for=0), GiveUp)


def test_exit_descriptions() -> None:
    assert describe_returncode(-9) == "killed by SIGKILL"
    assert describe_returncode(2) == "exited with code 2"
    assert describe_returncode(None) == "exited"


# --- the state machine, through the process seam ----------------------------------------------


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.exited = threading.Event()
        self.started = time.monotonic()
        self.record = pidfile.PidRecord(pid, "/fake/containerd", 0.0)
        self.signals: list[int] = []

    def alive(self) -> bool:
        return not self.exited.is_set()

    def exit(self, returncode: int) -> None:
        self.returncode = returncode
        self.exited.set()

    def signal(self, sig: int) -> None:
        self.signals.append(sig)
        if sig in (signal.SIGTERM, signal.SIGKILL):
            self.exit(-sig)

    def describe_exit(self) -> str:
        return describe_returncode(self.returncode)


class FakeProcesses:
    """Spawns FakeProcess; `crash_on_spawn` makes each new one exit at once with code 1."""

    def __init__(self) -> None:
        self.spawned: list[FakeProcess] = []
        self.crash_on_spawn = False
        self.next_pid = 40000

    def spawn(self, argv: Sequence[str], log_fd: int, env: dict[str, str]) -> FakeProcess:
        self.next_pid += 1
        proc = FakeProcess(self.next_pid)
        if self.crash_on_spawn:
            proc.exit(1)
        self.spawned.append(proc)
        return proc

    def adopt(self, pid: int) -> FakeProcess:
        return FakeProcess(pid)

    def find(self, exe: str, arg: str) -> int | None:
        return None

    def kill_and_wait(self, pid: int, timeout: float) -> None:
        pass


class Answers:
    """The health probe: serving unless told otherwise."""

    def __init__(self) -> None:
        self.serving = True

    def __call__(self, path: str, timeout: float) -> bool:
        return self.serving


FAST = Settings(
    poll_interval=0.001,
    health_interval=0.01,
    health_failures=3,
    stop_timeout=0.5,
    backoff_initial=0.001,
    backoff_max=0.01,
    max_restarts=3,
    restart_window=60,
)


def _running_manager(
    tmp_path: Path, settings: Settings = FAST
) -> tuple[ContainerdManager, FakeProcesses, Answers, threading.Thread]:
    paths = Paths.resolve(tmp_path / "data", tmp_path / "run", tmp_path / "etc")
    paths.run_dir.mkdir(parents=True)
    processes, answers = FakeProcesses(), Answers()
    mgr = ContainerdManager(
        paths=paths, settings=settings, ready_hooks=[], processes=processes, probe=answers
    )
    # As _start_embedded leaves it: one containerd spawned and ready, the monitor watching it.
    mgr._spawn_until_ready()
    mgr._set_state(State.RUNNING)
    monitor = threading.Thread(target=Monitor(mgr).run, daemon=True)
    mgr._monitor = monitor
    monitor.start()
    return mgr, processes, answers, monitor


def _poll(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def test_a_crash_is_restarted_and_counted(tmp_path: Path) -> None:
    mgr, processes, _, _ = _running_manager(tmp_path)
    first = processes.spawned[0]
    first.exit(-signal.SIGKILL)
    _poll(lambda: mgr.restarts == 1 and mgr.state == State.RUNNING)
    assert len(processes.spawned) == 2 and processes.spawned[1].alive()
    assert mgr.last_exit is not None and mgr.last_exit.reason == "killed by SIGKILL"
    assert mgr.pid == processes.spawned[1].pid
    assert pidfile.read(mgr.paths.containerd_pidfile) == processes.spawned[1].record
    mgr.stop()
    assert mgr.state == State.STOPPED and not processes.spawned[1].alive()


def test_a_hung_containerd_is_killed_after_failed_checks_and_replaced(tmp_path: Path) -> None:
    mgr, processes, answers, _ = _running_manager(tmp_path)
    hung = processes.spawned[0]
    answers.serving = False
    _poll(lambda: not hung.alive())
    assert hung.signals == [signal.SIGKILL]
    answers.serving = True
    _poll(lambda: mgr.restarts == 1 and mgr.state == State.RUNNING)
    assert mgr.last_exit is not None
    assert mgr.last_exit.reason == "killed after failing health checks"
    log = mgr.paths.log_file.read_text()
    assert "health check failed (3/3)" in log and "alive but unhealthy; killing it" in log
    mgr.stop()


def test_crash_loop_goes_fatal_and_says_why(tmp_path: Path) -> None:
    mgr, processes, _, monitor = _running_manager(tmp_path)
    processes.crash_on_spawn = True
    processes.spawned[0].exit(1)
    monitor.join(5)
    assert not monitor.is_alive()
    assert mgr.state == State.FATAL
    assert mgr.fatal_reason == "containerd restarted 3 times in 60s"
    assert not mgr.paths.containerd_pidfile.exists()
    # FATAL survives the stop that follows it: status must say why we gave up.
    mgr.stop()
    assert mgr.state == State.FATAL
    assert "FATAL: containerd restarted 3 times" in mgr.paths.log_file.read_text()


def test_stop_during_backoff_does_not_restart(tmp_path: Path) -> None:
    slow = Settings(**{**FAST.__dict__, "backoff_initial": 30.0, "backoff_max": 30.0})
    mgr, processes, _, _ = _running_manager(tmp_path, slow)
    processes.spawned[0].exit(1)
    _poll(lambda: mgr.state == State.BACKOFF)
    mgr.stop()
    assert mgr.state == State.STOPPED
    assert len(processes.spawned) == 1 and mgr.restarts == 0


@pytest.mark.parametrize("hooks_fail", [False, True])
def test_ready_hooks_run_once_after_ready(tmp_path: Path, hooks_fail: bool) -> None:
    paths = Paths.resolve(tmp_path / "data", tmp_path / "run", tmp_path / "etc")
    calls: list[State] = []

    def hook(mgr: ContainerdManager) -> None:
        calls.append(mgr.state)
        if hooks_fail:
            raise RuntimeError("boom")

    mgr = ContainerdManager(
        paths=paths, ready_hooks=[hook], processes=FakeProcesses(), probe=Answers()
    )
    mgr._start_embedded = lambda: mgr._set_state(State.RUNNING)  # type: ignore[method-assign]
    mgr.start()
    mgr.start()  # idempotent: already running, hooks do not run again
    assert calls == [State.RUNNING]
    if hooks_fail:
        assert "ready hook hook failed: boom" in paths.log_file.read_text()
    assert mgr.state == State.RUNNING  # a failing hook does not take the supervisor down


@pytest.mark.parametrize(
    "error",
    [
        OSError(24, "Too many open files", "containerd.log"),  # EMFILE opening the log
        OSError(40, "Too many levels of symbolic links"),  # the log swapped for a symlink
        RuntimeError("a bug in a restart"),
    ],
)
def test_any_error_in_a_restart_is_retried_then_fatal_never_a_dead_monitor(
    tmp_path: Path, error: Exception
) -> None:
    """The monitor caught WarrenError only: EMFILE or ELOOP at a respawn killed its thread
    under a live supervisor that said RUNNING (or STARTING) for ever."""
    mgr, processes, _, monitor = _running_manager(tmp_path)

    def failing_spawn(argv: Sequence[str], log_fd: int, env: dict[str, str]) -> FakeProcess:
        raise error

    processes.spawn = failing_spawn  # type: ignore[method-assign]
    processes.spawned[0].exit(-signal.SIGKILL)
    monitor.join(5)
    assert not monitor.is_alive()
    assert mgr.state == State.FATAL
    assert mgr.fatal_reason == "containerd restarted 3 times in 60s"
    log = mgr.paths.log_file.read_text()
    assert log.count("restart failed: ") == 3, log
    assert mgr.failed_restarts == 3 and mgr.status()["failed_restarts"] == 3
    mgr.stop()
    assert mgr.state == State.FATAL


def test_a_failed_restart_that_later_succeeds_keeps_supervising(tmp_path: Path) -> None:
    mgr, processes, _, monitor = _running_manager(tmp_path)
    real_spawn = processes.spawn
    failures = [OSError(24, "Too many open files")]

    def flaky_spawn(argv: Sequence[str], log_fd: int, env: dict[str, str]) -> FakeProcess:
        if failures:
            raise failures.pop()
        return real_spawn(argv, log_fd, env)

    processes.spawn = flaky_spawn  # type: ignore[method-assign]
    processes.spawned[0].exit(-signal.SIGKILL)
    _poll(lambda: mgr.state == State.RUNNING and len(processes.spawned) == 2)
    assert monitor.is_alive() and mgr.restarts == 2
    assert "restart failed: Too many open files" in mgr.paths.log_file.read_text()
    mgr.stop()


def test_an_error_escaping_the_monitor_loop_is_fatal(tmp_path: Path) -> None:
    mgr, _, answers, monitor = _running_manager(tmp_path)

    def broken(proc: object) -> None:
        raise SystemError("unexpected")

    mgr.kill_unhealthy = broken  # type: ignore[assignment,method-assign]
    answers.serving = False
    monitor.join(5)
    assert not monitor.is_alive() and mgr.state == State.FATAL
    assert mgr.fatal_reason is not None and "the monitor failed" in mgr.fatal_reason
    mgr.stop()
