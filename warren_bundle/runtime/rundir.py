"""The run dir a supervisor owns: created 0711, and held by one supervisor at a time (flock)."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import ExitStack, suppress
from typing import Any

from warren_bundle.errors import AlreadyRunning, DirsInUse, PermissionDeniedError, path_error
from warren_bundle.fsutil import LockTimeout, check_trusted_dir, locked
from warren_bundle.paths import Paths
from warren_bundle.runtime import pidfile, statefile


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
        check_same_dirs(paths, other.pid if other else None)
        raise AlreadyRunning(
            f"warren is already running ({who}) for {paths.run_dir}",
            "use 'warren containerd status', or stop it with 'warren containerd stop'",
        ) from None
    try:
        claim_data_dir(paths, stack)
    except BaseException:
        stack.close()
        raise
    return stack


def check_same_dirs(paths: Paths, pid: int | None) -> None:
    """Refuse when the supervisor of this run dir (`pid`, as its state says) uses another data or
    config dir: its stop, status and socket are not ours to act on."""
    report = statefile.read(paths) or {}
    if pid is None or report.get("supervisor_pid") != pid:
        return
    their_data, their_config = report.get("data_dir"), report.get("config")
    if not their_data:
        return
    if their_data != str(paths.data_dir) or their_config not in (None, str(paths.config_file)):
        raise DirsInUse(
            f"warren pid {pid} already runs for run dir {paths.run_dir} with data dir "
            f"{their_data} and config {their_config}, not {paths.data_dir} and "
            f"{paths.config_file}",
            "pass the same --data-dir and --config-dir to act on it, or another --run-dir",
        )


def data_dir_holder(paths: Paths) -> dict[str, Any] | None:
    """The marker of a live supervisor holding this data dir's lock, or None when it is free."""
    try:
        fd = os.open(paths.data_lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.read(fd, 4096)
            with suppress(ValueError):
                data = json.loads(raw)
                if isinstance(data, dict):
                    return data
            return {}
        return None
    finally:
        os.close(fd)


def check_data_dir_free(paths: Paths) -> None:
    """Refuse a data dir a supervisor of another run dir holds: one containerd root each."""
    holder = data_dir_holder(paths)
    if holder is None or holder.get("run_dir") == str(paths.run_dir):
        return
    raise DirsInUse(
        f"data dir {paths.data_dir} is in use by warren pid {holder.get('pid', '?')} with run "
        f"dir {holder.get('run_dir', '?')}, not {paths.run_dir}",
        "pass the same --run-dir to act on it, or another --data-dir",
    )


def claim_data_dir(paths: Paths, stack: ExitStack) -> None:
    """Hold <data>/.supervisor.lock for the stack's life, with this supervisor's run dir and pid
    in it, so a second warren on another run dir is refused up front."""
    check_data_dir_free(paths)
    try:
        paths.data_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        # A second of patience: data_dir_holder() elsewhere may hold a shared lock for an
        # instant; a supervisor of another run dir holds it for good.
        lock = locked(paths.data_lock, 1.0, mode=0o644, record_pid=False)
        fd = stack.enter_context(lock)
    except OSError as exc:
        raise path_error(exc, paths.data_lock, "--data-dir", "open") from exc
    except LockTimeout:
        check_data_dir_free(paths)  # taken meanwhile: say by whom
        raise DirsInUse(
            f"data dir {paths.data_dir} is in use by another warren", "pass another --data-dir"
        ) from None
    marker = {
        "pid": os.getpid(),
        "run_dir": str(paths.run_dir),
        "config_dir": str(paths.config_dir),
    }
    with suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(marker).encode() + b"\n", 0)
