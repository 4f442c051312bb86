"""The one seam between the supervisor and the operating system's processes.

`Processes` spawns containerd, adopts one left by a dead supervisor, and finds orphans; each
`Watched` process reports its exit through an event. The supervisor's state machine talks only
to this interface, so its restart, liveness and FATAL paths are unit-tested with a stand-in
(tests/unit/test_supervisor_policy.py) and integration-tested with the real containerd.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Protocol

import psutil

from warren_bundle.errors import ExtractionError, PermissionDeniedError
from warren_bundle.runtime import pidfile


class Watched(Protocol):
    pid: int
    returncode: int | None
    exited: threading.Event
    started: float  # monotonic
    record: pidfile.PidRecord

    def alive(self) -> bool: ...
    def signal(self, sig: int) -> None: ...
    def describe_exit(self) -> str: ...


class Processes(Protocol):
    def spawn(self, argv: Sequence[str], log_fd: int, env: dict[str, str]) -> Watched: ...
    def adopt(self, pid: int) -> Watched: ...
    def find(self, exe: str, arg: str) -> int | None: ...
    def kill_and_wait(self, pid: int, timeout: float) -> None: ...


def describe_returncode(rc: int | None) -> str:
    if rc is None:
        return "exited"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with code {rc}"


def executable_of(binary: str) -> str:
    """What /proc/<pid>/exe shows once `binary` (an argv[0]) is exec'd: its resolved path."""
    found = binary if os.sep in binary else shutil.which(binary) or binary
    return os.path.realpath(found)


class OsProcess:
    """A containerd process, ours (Popen) or adopted (by pid), with an event set when it exits."""

    def __init__(
        self, pid: int, popen: subprocess.Popen[bytes] | None, exe: str | None = None
    ) -> None:
        """`exe`: what a process we spawned runs (pidfile.record_for: not read from /proc,
        where it may still be our own image)."""
        self.pid = pid
        self.popen = popen
        self.returncode: int | None = None
        self.exited = threading.Event()
        self.started = time.monotonic()
        try:
            self.record = pidfile.record_for(pid, exe)
        except psutil.Error:
            # Already gone; the waiter thread reports the exit.
            self.record = pidfile.PidRecord(pid, "", 0.0)
        threading.Thread(target=self._wait, name=f"wait-{pid}", daemon=True).start()

    def _wait(self) -> None:
        if self.popen is not None:
            self.returncode = self.popen.wait()
        else:
            _wait_foreign(self.pid)
        self.exited.set()

    def alive(self) -> bool:
        return not self.exited.is_set()

    def signal(self, sig: int) -> None:
        if self.exited.is_set():
            return
        with suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def describe_exit(self) -> str:
        return describe_returncode(self.returncode)


def _wait_foreign(pid: int) -> None:
    """Block until a process that is not our child exits."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        with suppress(psutil.Error):
            psutil.Process(pid).wait()
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the (soft, hard) now.

    A supervisor started from a shell gets a soft limit of 1024: a few hundred idle metrics
    connections, or a busy host, would leave it unable to open containerd's log at a restart.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft, hard


class OsProcesses:
    """The real seam: subprocess, psutil and signals."""

    def spawn(self, argv: Sequence[str], log_fd: int, env: dict[str, str]) -> Watched:
        binary = argv[0]
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                env=env,
                cwd="/",
                # Its own session: a Ctrl-C or a SIGTERM to our group never reaches containerd,
                # whose shims and containers must outlive it.
                start_new_session=True,
                close_fds=True,
            )
        except PermissionError as exc:
            raise PermissionDeniedError(
                f"permission denied running {binary}",
                "run warren with sudo; if the data dir is on a noexec mount, pass --data-dir",
            ) from exc
        except OSError as exc:
            raise ExtractionError(
                f"cannot run {binary}: {exc.strerror}",
                "run 'warren extract --verify' to repair the binaries",
            ) from exc
        return OsProcess(popen.pid, popen, executable_of(binary))

    def adopt(self, pid: int) -> Watched:
        return OsProcess(pid, None)

    def find(self, exe: str, arg: str) -> int | None:
        """A process running `exe` with `arg` on its command line (an orphaned containerd)."""
        for proc in psutil.process_iter(["exe", "cmdline"]):
            with suppress(psutil.Error):
                found = (proc.info.get("exe") or "").removesuffix(" (deleted)")
                if found == exe and arg in (proc.info.get("cmdline") or []):
                    return int(proc.pid)
        return None

    def kill_and_wait(self, pid: int, timeout: float) -> None:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with suppress(psutil.Error):
            psutil.Process(pid).wait(timeout)
