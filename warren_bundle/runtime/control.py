"""Acting on a supervisor from another process: start it detached, stop it, read its status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil

from warren_bundle import launcher
from warren_bundle.errors import (
    ExitCode,
    PermissionDeniedError,
    WarrenError,
    path_error,
)
from warren_bundle.paths import Paths
from warren_bundle.runtime import detach, health, logs, pidfile, rundir
from warren_bundle.runtime import statefile as state
from warren_bundle.runtime.childenv import child_env
from warren_bundle.runtime.observed import require_running as require_running
from warren_bundle.runtime.observed import status as status
from warren_bundle.runtime.options import RunOptions
from warren_bundle.runtime.process import describe_returncode
from warren_bundle.runtime.states import State
from warren_bundle.runtime.status import StatusReport

STOP_GRACE = 10.0
# The supervisor stops containerd within STOP_GRACE (SIGTERM, then SIGKILL); it gets this long more.
SUPERVISOR_EXTRA = 5.0
# A detached start waits for containerd's ready timeout plus this: the launch, extraction, config.
START_EXTRA = 15.0


def self_command() -> list[str]:
    """How to run this same warren again (the frozen file, or python -m warren_bundle)."""
    if getattr(sys, "frozen", False):
        return [launcher.executable()]
    return [sys.executable, "-m", "warren_bundle"]


def require_root(action: str, paths: Paths | None = None) -> None:
    if os.geteuid() != 0:
        from warren_bundle.sockets import socket_group_remedy

        remedy = "run it with sudo"
        if paths is not None and os.path.exists(paths.socket):
            remedy = socket_group_remedy(paths.socket).replace("run warren with sudo", remedy)
        raise PermissionDeniedError(
            f"permission denied: {action} needs root (containerd mounts filesystems and "
            "manages cgroups)",
            remedy,
        )


def require_can_start(action: str, paths: Paths) -> None:
    """Root starts containerd; a user starts it rootless when the host allows it (its own run
    dir, subordinate ids, RootlessKit: runtime/rootless.py), else exit 4 naming the fix."""
    from warren_bundle.paths import rootless_user

    if rootless_user():
        from warren_bundle.runtime.rootless import check_can_start

        check_can_start(paths)
        return
    require_root(action, paths)


def supervisor_process(paths: Paths) -> psutil.Process | None:
    """This run dir's warren supervisor (pidfile.supervisor: never another process)."""
    return pidfile.supervisor(paths)


def containerd_process(paths: Paths) -> psutil.Process | None:
    """This run dir's bundled containerd (pidfile.containerd: never another process)."""
    return pidfile.containerd(paths)


def start_detached(
    global_args: list[str],
    options: RunOptions,
    paths: Paths,
    timeout: float,
    payload: str | None = None,
) -> StatusReport:
    """Start the supervisor (`containerd run`'s body) detached, in its own session; return its
    status once ready.

    Frozen, the supervisor is a fork of this process: it has every module loaded already, so a
    start pays one launch, not two; its command line stays this one's (`containerd start`).
    From source it is `python -m warren_bundle … containerd run`, spawned.

    Idempotent: when a supervisor of this run dir is already on the job (ready, or still
    starting, perhaps launched by a concurrent start), wait for its readiness instead and report
    "already running". A failure is explained only by the log lines of this attempt.
    """
    deadline = time.monotonic() + timeout
    existing = supervisor_process(paths)
    if existing is not None:
        return _await_other(paths, existing, deadline, timeout)
    rundir.check_data_dir_free(paths)  # a supervisor of another run dir uses this data dir
    try:
        offset = _log_size(paths.log_file)
        log_fd = logs.open_for_child(paths.log_file)
    except OSError as exc:
        raise path_error(exc, paths.log_file, "--data-dir", "open") from exc
    ready_r: int | None = None
    try:
        if getattr(sys, "frozen", False):
            ready_r, ready_w = os.pipe()
            try:
                child: detach.Child = detach.Forked(
                    detach.fork_supervisor(options, paths, payload, log_fd, ready_w)
                )
            finally:
                os.close(ready_w)
        else:
            child = subprocess.Popen(
                # containerd's command line is built here, once, from the typed options.
                [*self_command(), *global_args, "containerd", "run", *options.args()],
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                close_fds=True,
                env=child_env(),
            )
    except BaseException:
        if ready_r is not None:
            os.close(ready_r)
        raise
    finally:
        os.close(log_fd)
    try:
        report = _await_child(paths, child, ready_r, deadline, timeout, offset)
    finally:
        if ready_r is not None:
            os.close(ready_r)
    if report is not None:
        return report
    raise WarrenError(
        f"the detached supervisor (pid {child.pid}) was not ready within {timeout:.0f}s",
        f"see {paths.log_file} and 'warren containerd status'",
    )


def _await_child(
    paths: Paths,
    child: detach.Child,
    ready_r: int | None,
    deadline: float,
    timeout: float,
    offset: int,
) -> StatusReport | None:
    """Wait for our detached supervisor: its report once RUNNING, the other supervisor's when
    ours lost the race for the run dir, None at the deadline. With `ready_r` (a forked
    supervisor's pipe) it sleeps on a read; the child's RUNNING state is then the readiness
    (it wrote it after its own health check), with no second check from here."""
    while time.monotonic() < deadline:
        rc = child.poll()
        if rc is not None:
            # It lost the race for the run dir's lock to a supervisor started beside it: wait
            # for that one, as if it had been running when we looked.
            other = supervisor_process(paths)
            if other is not None and other.pid != child.pid:
                return _await_other(paths, other, deadline, timeout)
            raise _child_failed(paths, rc, offset)
        report = state.read(paths)
        if (
            report
            and report.get("supervisor_pid") == child.pid
            and report.get("state") == State.RUNNING
            and (ready_r is not None or health.is_serving(paths.socket, 1.0))
        ):
            return report
        if ready_r is None:
            time.sleep(0.01)
        elif detach.wait_readable(ready_r, min(0.5, deadline - time.monotonic())) == b"":
            ready_r = None  # closed unwritten: it exited (polled above) or is exiting
    return None


def _await_other(
    paths: Paths, sup: psutil.Process, deadline: float, timeout: float
) -> StatusReport:
    """Wait until the supervisor `sup` (not ours) has containerd ready; its report. Refused
    when it runs with another data or config dir (rundir.check_same_dirs)."""
    while True:
        rundir.check_same_dirs(paths, sup.pid)
        report = state.read(paths) or {}
        if (
            report.get("supervisor_pid") == sup.pid
            and report.get("state") == State.RUNNING
            and health.is_serving(paths.socket, 1.0)
        ):
            report["already_running"] = True
            return report
        if not _running(sup):
            successor = supervisor_process(paths)
            if successor is not None and successor.pid != sup.pid:
                sup = successor
                continue
            last = report.get("state") if report.get("supervisor_pid") == sup.pid else None
            raise WarrenError(
                f"the warren supervisor pid {sup.pid} of {paths.run_dir} exited before "
                "containerd was ready" + (f" (last state {last})" if last else ""),
                f"see {paths.log_file}, then run 'warren containerd start' again",
            )
        if time.monotonic() >= deadline:
            raise WarrenError(
                f"warren supervisor pid {sup.pid} is running for {paths.run_dir} but containerd "
                f"was not ready within {timeout:.0f}s (state {report.get('state', 'unknown')})",
                f"see {paths.log_file} and 'warren containerd status'",
            )
        time.sleep(0.01)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _lines_since(path: Path, offset: int, limit: int = 1 << 16) -> list[str]:
    """The log's lines written after it was `offset` bytes long (all of it, if rotated since)."""
    try:
        with open(path, "rb") as fp:
            end = fp.seek(0, os.SEEK_END)
            start = offset if offset <= end else 0
            start = max(start, end - limit)
            fp.seek(start)
            data = fp.read(end - start)
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()


def _child_failed(paths: Paths, rc: int, offset: int) -> WarrenError:
    reason = ""
    for line in reversed(_lines_since(paths.log_file, offset)):
        if line.startswith("warren: "):
            reason = line.removeprefix("warren: ")
            break
    # The supervisor's own line may already point at the log: say it once.
    err = WarrenError(
        f"the supervisor {describe_returncode(rc)} before containerd was ready"
        + (f": {reason}" if reason else ""),
        None if str(paths.log_file) in reason else f"see {paths.log_file}",
    )
    with suppress(ValueError):
        err.exit_code = ExitCode(rc)
    return err


def stop(paths: Paths, timeout: float = STOP_GRACE) -> str:
    """Stop the supervisor (it stops containerd), then any containerd still running. Idempotent.

    Only this run dir's supervisor and bundled containerd are ever signalled (pidfile.py). A
    supervisor that does not exit within its grace (hung) is killed; containerd, if it still
    runs then, gets SIGTERM, its grace, SIGKILL: its pid only, so containers keep running.
    Returns what was done; raises when something could not be stopped. A run dir another user
    controls (fsutil.check_trusted_dir) is refused before anything in it is read: its pidfiles
    could name any process.
    """
    rundir.check(paths)
    done: list[str] = []
    sup = supervisor_process(paths)
    if sup is not None:
        rundir.check_same_dirs(paths, sup.pid)  # not ours to stop
        grace = timeout + SUPERVISOR_EXTRA
        exited = _terminate(sup, grace, timeout)
        if exited is None:
            raise WarrenError(
                f"warren supervisor pid {sup.pid} did not exit after SIGTERM and SIGKILL",
                f"check 'ps -o pid,stat,cmd -p {sup.pid}' (a process stuck in the kernel "
                "exits only when its I/O returns)",
            )
        done.append(
            f"stopped warren supervisor pid {sup.pid}"
            if exited
            else f"killed warren supervisor pid {sup.pid} (no exit {grace:.0f}s after SIGTERM)"
        )
    ctrd = containerd_process(paths)
    if ctrd is not None:
        exited = _terminate(ctrd, timeout, timeout)
        if exited is None:
            raise WarrenError(
                ("; ".join(done) + "; but " if done else "")
                + f"containerd pid {ctrd.pid} did not exit after SIGTERM and SIGKILL",
                f"check 'ps -o pid,stat,cmd -p {ctrd.pid}'; see {paths.log_file}",
            )
        done.append(
            f"stopped containerd pid {ctrd.pid}"
            if exited
            else f"killed containerd pid {ctrd.pid} (ignored SIGTERM for {timeout:.0f}s)"
        )
        if sup is None:
            done[-1] += " (no supervisor was running)"
    _remove_pidfiles(paths, done)
    return "; ".join(done) if done else "not running"


def _terminate(proc: psutil.Process, grace: float, kill_wait: float) -> bool | None:
    """SIGTERM and up to `grace` s, then SIGKILL and up to `kill_wait` s. True: it exited on
    SIGTERM; False: it needed the SIGKILL; None: it outlived both."""
    _signal(proc, signal.SIGTERM)
    if _wait_gone(proc, grace):
        return True
    _signal(proc, signal.SIGKILL)
    return False if _wait_gone(proc, kill_wait) else None


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """True once `proc` has exited (a zombie counts: it runs no more), False at the deadline."""
    deadline = time.monotonic() + timeout
    while _running(proc):
        if time.monotonic() >= deadline:
            return False
        with suppress(psutil.Error):
            proc.wait(min(0.05, max(0.0, deadline - time.monotonic())))
    return True


def _remove_pidfiles(paths: Paths, done: list[str]) -> None:
    for path in (paths.supervisor_pidfile, paths.containerd_pidfile):
        try:
            pidfile.remove(path)
        except OSError as exc:
            err = path_error(exc, path, "--run-dir", "remove")
            if done:
                err.message = f"{'; '.join(done)}; but {err.message}"
            raise err from exc


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass
    except psutil.AccessDenied as exc:
        raise PermissionDeniedError(
            f"permission denied signalling pid {proc.pid}", "run it with sudo"
        ) from exc


def wait_for_images(paths: Paths, timeout: float) -> dict[str, Any] | None:
    """Return once the supervisor imported <data-dir>/images, so the next command finds them."""
    if not os.path.isdir(paths.images_dir):  # most starts: nothing to import, no module to load
        return None
    from warren_bundle.images import find_archives

    if not find_archives(paths.images_dir):
        return None
    from warren_bundle.airgap import wait_for_report

    return wait_for_report(paths, timeout)
