"""containerd's log file: opened O_APPEND for the child, rotated by size, tailed and followed.

containerd writes straight into the file rather than through a pipe to the supervisor: a Go program
dies of SIGPIPE when its stderr pipe breaks, and containerd must outlive a crashed supervisor. So
rotation is copy-then-truncate (with O_APPEND, containerd's next write lands at the new end).
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections import deque
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

MAX_BYTES = 10 * 2**20
BACKUPS = 3


def open_for_child(path: Path) -> int:
    """The log, for appending. Never through a symlink: we run as root, and a link planted in
    the logs dir would make us append to whatever file it names (O_NOFOLLOW: ELOOP instead)."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    return os.open(path, flags, 0o640)


def append_line(path: Path, line: str) -> None:
    """One event line from the supervisor, interleaved with containerd's own."""
    with suppress(OSError):
        fd = open_for_child(path)
        try:
            os.write(fd, (line.rstrip("\n") + "\n").encode())
        finally:
            os.close(fd)


def backup(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def rotate_if_needed(path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> bool:
    try:
        if path.stat().st_size < max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(backups - 1, 0, -1):
        with suppress(FileNotFoundError):
            os.replace(backup(path, n), backup(path, n + 1))
    _copy_keeping_mode(path, backup(path, 1))
    with open(path, "r+b") as fp:
        fp.truncate(0)
    return True


def _copy_keeping_mode(path: Path, dest: Path) -> None:
    """Copy the log to its first backup with the live log's mode (0640) from the first byte, and
    never through a symlink planted where the backup goes."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    with suppress(FileNotFoundError):
        os.unlink(dest)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(dest, flags, mode)
    os.fchmod(fd, mode)
    with open(path, "rb") as src, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(src, out)


def _tail_one(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as fp:
            fp.seek(0, os.SEEK_END)
            pos = fp.tell()
            data = b""
            while pos > 0 and data.count(b"\n") <= lines:
                step = min(65536, pos)
                pos -= step
                fp.seek(pos)
                data = fp.read(step) + data
    except FileNotFoundError:
        return []
    return list(deque(data.decode("utf-8", "replace").splitlines(), maxlen=lines))


def tail(path: Path, lines: int, backups: int = BACKUPS) -> list[str]:
    """The last `lines` lines, reaching into rotated backups when the current file is short."""
    if lines <= 0:
        return []
    out = _tail_one(path, lines)
    for n in range(1, backups + 1):
        if len(out) >= lines:
            break
        out = _tail_one(backup(path, n), lines - len(out)) + out
    return out


def follow(path: Path, poll: float = 0.2) -> Iterator[str]:
    """Yield lines appended to `path`, surviving truncation by rotation."""
    fp = None
    try:
        while True:
            if fp is None:
                try:
                    fp = open(path, "rb")  # noqa: SIM115 - reopened across rotations
                    fp.seek(0, os.SEEK_END)
                except FileNotFoundError:
                    time.sleep(poll)
                    continue
            line = fp.readline()
            if line:
                yield line.decode("utf-8", "replace").rstrip("\n")
                continue
            try:
                if os.stat(path).st_size < fp.tell():
                    fp.seek(0)
            except FileNotFoundError:
                fp.close()
                fp = None
            time.sleep(poll)
    finally:
        if fp is not None:
            fp.close()


def fatal_hint(path: Path) -> str:
    """ " (log: <containerd's fatal line>)" from the log's tail, or "" when there is none."""
    for line in reversed(tail(path, 20)):
        # containerd reports fatal config errors as a bare "containerd: ..." line.
        if "level=fatal" in line or line.startswith("containerd: "):
            return f" (log: {line.strip()[:200]})"
    return ""
