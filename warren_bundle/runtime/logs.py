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
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import BinaryIO

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


_BLOCK = 1 << 16


def _start_of_last(fp: BinaryIO, lines: int) -> tuple[int, int, int]:
    """Where the last `lines` lines of `fp` begin, how many there are (at most `lines`), and
    where the file ends now: read backwards a block at a time, so memory stays one block and
    time is bounded by what lies after that offset (the file's size for "all of it")."""
    end = fp.seek(0, os.SEEK_END)
    if end == 0 or lines <= 0:
        return end, 0, end
    fp.seek(end - 1)
    pos = end - 1 if fp.read(1) == b"\n" else end  # a final newline ends the last line
    needed = lines  # the newline before each of the last lines (the file's first has none)
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        fp.seek(pos)
        block = fp.read(step)
        count = block.count(b"\n")
        if count < needed:
            needed -= count
            continue
        idx = len(block)
        for _ in range(needed):
            idx = block.rindex(b"\n", 0, idx)
        return pos + idx + 1, lines, end
    return 0, lines - needed + 1, end


def _lines_between(fp: BinaryIO, start: int, end: int) -> Iterator[str]:
    fp.seek(start)
    left = end - start
    while left > 0:
        raw = fp.readline(min(left, _BLOCK))
        if not raw:
            return
        left -= len(raw)
        while not raw.endswith(b"\n") and left > 0:  # a line longer than a block
            more = fp.readline(min(left, _BLOCK))
            if not more:
                break
            left -= len(more)
            raw += more
            if len(raw) > 16 * _BLOCK:
                break
        yield raw.decode("utf-8", "replace").rstrip("\n")


def tail(path: Path, lines: int, backups: int = BACKUPS) -> Iterator[str]:
    """The last `lines` lines, oldest first, reaching into rotated backups when the current file
    is short. Streamed: `lines` may exceed what the files hold (then all of it is printed)."""
    if lines <= 0:
        return
    with ExitStack() as stack:
        parts: list[tuple[BinaryIO, int, int]] = []
        left = lines
        for candidate in [path, *(backup(path, n) for n in range(1, backups + 1))]:
            if left <= 0:
                break
            try:
                fp = stack.enter_context(open(candidate, "rb"))
            except FileNotFoundError:
                if candidate == path:
                    continue
                break
            start, found, end = _start_of_last(fp, left)
            parts.append((fp, start, end))
            left -= found
        for part, start, end in reversed(parts):
            yield from _lines_between(part, start, end)


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
    for line in reversed(list(tail(path, 20))):
        # containerd reports fatal config errors as a bare "containerd: ..." line.
        if "level=fatal" in line or line.startswith("containerd: "):
            return f" (log: {line.strip()[:200]})"
    return ""
