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


def fork_supervisor(options: RunOptions, paths: Paths, payload: str | None, log_fd: int) -> int:
    """Fork; the child becomes the supervisor (stdin /dev/null, output to the log, own session)
    and never returns. No thread runs in this process yet: the fork copies only this one."""
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

        code = serve_detached(options, paths, payload)
    except BaseException as exc:  # the child's last word goes to the log, never up the stack
        code = last_word(exc)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def last_word(exc: BaseException) -> int:
    if isinstance(exc, WarrenError):
        print(f"warren: {exc.one_line()}", file=sys.stderr)
        return int(exc.exit_code)
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    import traceback

    traceback.print_exc()
    return 1
