"""The run dir a supervisor owns: created 0711, and held by one supervisor at a time (flock)."""

from __future__ import annotations

from contextlib import ExitStack

from warren_bundle.errors import AlreadyRunning, PermissionDeniedError, path_error
from warren_bundle.fsutil import LockTimeout, check_trusted_dir, locked
from warren_bundle.paths import Paths
from warren_bundle.runtime import pidfile


def check(paths: Paths) -> None:
    """The trust rule (fsutil.check_trusted_dir): the socket, pidfiles and state live here."""
    check_trusted_dir(paths.run_dir, "run dir", "--run-dir")


def make(paths: Paths) -> None:
    check(paths)
    try:
        paths.run_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    except PermissionError as exc:
        raise PermissionDeniedError(
            f"cannot create {paths.run_dir}: permission denied",
            "run warren with sudo (containerd needs root), or pass --run-dir",
        ) from exc
    except OSError as exc:
        raise path_error(exc, paths.run_dir, "--run-dir", "create") from exc


def lock(paths: Paths, timeout: float) -> ExitStack:
    """The run dir's supervisor lock, held until the returned stack is closed."""
    stack = ExitStack()
    try:
        stack.enter_context(locked(paths.supervisor_lock, timeout, mode=0o644))
    except OSError as exc:
        raise path_error(exc, paths.supervisor_lock, "--run-dir", "open") from exc
    except LockTimeout:
        other = pidfile.read(paths.supervisor_pidfile)
        who = f"pid {other.pid}" if other else "another process"
        raise AlreadyRunning(
            f"warren is already running ({who}) for {paths.run_dir}",
            "use 'warren containerd status', or stop it with 'warren containerd stop'",
        ) from None
    return stack
