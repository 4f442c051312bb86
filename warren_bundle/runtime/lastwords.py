"""A supervisor's last words: FATAL recorded where it needs no new fd and no new disk block.

The state file is replaced by write-to-temp and rename, which needs a free fd, free space and a
writable path: the EMFILE or ENOSPC that made the restarts fail can fail the FATAL state write
too, and status then took the gone supervisor's last state (BACKOFF, STARTING) for STOPPED.
So a supervisor, once it holds the run dir's lock, opens <run>/warren.last-words and fills it with
SIZE blanks; at FATAL it overwrites them in place through that open fd, before the state file.
Status believes the record only when no supervisor runs; the next supervisor blanks it, and a
clean stop removes it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from contextlib import suppress
from typing import Any

from warren_bundle.fsutil import read_json
from warren_bundle.paths import Paths

SIZE = 4096


class LastWords:
    """The reserved record of one supervisor; say() writes it, close() lets go of the fd."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    @classmethod
    def reserve(cls, paths: Paths) -> LastWords | None:
        """Blank (or create) the record and keep it open; None when it cannot be (best effort:
        status then knows FATAL from the state file alone, as before)."""
        # O_NONBLOCK: a FIFO in its place fails the open (no reader) instead of holding the
        # start until one comes; what is not a regular file is removed and not used.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(paths.last_words, flags, 0o644)
        except OSError:
            with suppress(OSError):  # an older FATAL must not outlive this supervisor's start
                paths.last_words.unlink()
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            os.pwrite(fd, b" " * SIZE, 0)
        except OSError:
            os.close(fd)
            with suppress(OSError):
                paths.last_words.unlink()
            return None
        return cls(fd)

    def say(self, reason: str) -> bool:
        """Record FATAL with `reason` in the reserved blocks; False when even that failed."""
        if self.fd is None:
            return False
        data = encode(reason)
        try:
            return os.pwrite(self.fd, data.ljust(SIZE), 0) == SIZE
        except OSError:
            return False

    def close(self) -> None:
        if self.fd is not None:
            with suppress(OSError):
                os.close(self.fd)
            self.fd = None


def encode(reason: str) -> bytes:
    """The FATAL record as JSON of at most SIZE bytes (the reason shortened to fit)."""
    while True:
        record = {"state": "FATAL", "pid": os.getpid(), "reason": reason, "at": time.time()}
        data = json.dumps(record, sort_keys=True).encode()
        if len(data) <= SIZE:
            return data
        reason = reason[: len(reason) // 2]


def fatal_reason(paths: Paths) -> str | None:
    """The reason of the FATAL recorded here, or None when there is none (blank, absent)."""
    record: dict[str, Any] | None = read_json(paths.last_words)
    if not record or record.get("state") != "FATAL":
        return None
    return str(record.get("reason") or "unknown (see the log)")


def discard(paths: Paths) -> None:
    with suppress(OSError):
        paths.last_words.unlink()
