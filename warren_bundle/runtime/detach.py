"""A supervisor detached by `containerd start` (or a rollback) in a frozen warren: a fork.

The fork has every module its parent loaded: the start pays one launch, not two (a second
launch of the frozen runtime costs ~100 ms of CPU). It keeps its parent's command line
(`containerd start`); pidfile.is_warren_supervisor knows a supervisor by the run dir's lock.
"""

from __future__ import annotations

import os
import sys
from contextlib import suppress
from typing import TYPE_CHECKING, Protocol

from warren_bundle.errors import WarrenError

if TYPE_CHECKING:
    from warren_bundle.paths import Paths
    from warren_bundle.runtime.options import RunOptions


class Child(Protocol):
    pid: int

    def poll(self) -> int | None: ...


class Forked:
    """A forked supervisor, polled like a Popen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            with suppress(ChildProcessError):
                done, status = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def fork_supervisor(
    options: RunOptions, paths: Paths, payload: str | None, log_fd: int, ready_fd: int
) -> int:
    """Fork; the child becomes the supervisor (stdin /dev/null, output to the log, own session)
    and never returns. No thread runs in this process yet: the fork copies only this one.

    `ready_fd`: the write end of a pipe; the child writes one byte to it once containerd is
    ready and its state says RUNNING, then closes it, so the parent waits on a read instead of
    polling (an exit before readiness closes it unwritten)."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(null)
        os.close(log_fd)
        from warren_bundle.runtime.foreground import serve_detached

        code = serve_detached(options, paths, payload, ReadyPipe(ready_fd).tell)
    except BaseException as exc:  # the child's last word goes to the log, never up the stack
        code = last_word(exc)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


class ReadyPipe:
    """The write end of the parent's pipe: `tell` writes one byte and closes it, once (a later
    call must not write to whatever file reuses that fd number)."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def tell(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with suppress(OSError):
                os.write(fd, b"1")
            os.close(fd)


def wait_readable(fd: int, timeout: float) -> bytes | None:
    """Up to one byte from `fd` within `timeout` s: b"" at EOF, None when nothing came yet."""
    import select

    readable, _, _ = select.select([fd], [], [], max(0.0, timeout))
    if not readable:
        return None
    return os.read(fd, 1)


def last_word(exc: BaseException) -> int:
    if isinstance(exc, WarrenError):
        print(f"warren: {exc.one_line()}", file=sys.stderr)
        return int(exc.exit_code)
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    import traceback

    traceback.print_exc()
    return 1
