"""Small file helpers every part shares: atomic writes, the one lock, JSON reads, file hashes."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
_LOCK_POLL = 0.05


def atomic_write(
    path: Path, data: bytes | str, mode: int = 0o644, *, durable: bool = False
) -> None:
    """Replace `path` with `data` in one step (temp file + rename), creating its parent.

    `durable` also fsyncs the file and its directory: for what must survive a power cut (the
    extraction stamp, containerd's config), not for status files rewritten every few seconds.
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    if durable:
        from warren_bundle.safewrite import holds_already

        if holds_already(path, raw, mode):
            return  # containerd's config, the same at every start: no second fsync
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(raw)
            if durable:
                fp.flush()
                os.fsync(fp.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def written_path(exc: OSError) -> Path | None:
    """The file an OSError from atomic_write() is about: its target, not the temp file beside it
    (".NAME.xxxxxxxx" is NAME), so an error names the path the user knows."""
    if not exc.filename:
        return None
    path = Path(os.fsdecode(exc.filename))
    name = path.name
    if name.startswith(".") and name.count(".") >= 2:
        return path.with_name(name[1:].rsplit(".", 1)[0])
    return path


def write_json(path: Path, data: Any, mode: int = 0o644) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object.

    Every state, stamp, cache and report file is read through this: a torn or foreign file is
    treated as absent, never as a crash, and never as a hang (read_small).
    """
    raw = read_small(path)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def read_small(path: Path, limit: int | None = None) -> bytes | None:
    """The bytes of `path`, or None when it is missing or unreadable, is not a regular file (a
    FIFO, whose open and read would wait for a writer; a device), or is over `limit` bytes
    (READ_JSON_LIMIT by default). For files in dirs that others (a containerd, a runc, another
    user) may write: a pid or record file there must never hang or fill a reader."""
    limit = READ_JSON_LIMIT if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew while read
                return None
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)


# The largest state file is a version dir's manifest, a few KiB.
READ_JSON_LIMIT = 16 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    import hashlib  # loads libcrypto: kept off the path of `warren version`

    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while chunk := fp.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class LockTimeout(Exception):
    """`locked()` gave up waiting; the caller turns this into its own user-facing error."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__(f"timed out after {timeout:.0f}s waiting for the lock {path}")
        self.path = path
        self.timeout = timeout


@contextmanager
def locked(
    path: Path,
    timeout: float | None,
    *,
    mode: int = 0o600,
    on_wait: Callable[[], None] | None = None,
    record_pid: bool = True,
) -> Iterator[int]:
    """Hold an exclusive flock on `path` (created if missing) for the body; yields its fd.

    `timeout` None waits for ever, 0 tries once. `on_wait` is called once, when the lock is
    found taken (to tell the user why we pause). The holder's pid is written into the file so
    that a stuck lock can be traced to its process. The lock dies with the fd: a killed holder
    never leaves it taken.
    """
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(path, timeout or 0.0) from None
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                time.sleep(_LOCK_POLL)
        if record_pid:
            with suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        os.close(fd)


# --- the one trust rule for warren's directories ------------------------------------------------


def _trusted_owner(uid: int) -> bool:
    """Root, or the user warren runs as: root could replace anything anyway."""
    return uid in (0, os.geteuid())


def _others_write(mode: int) -> bool:
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def check_trusted_dir(path: Path, what: str, option: str, *, ancestors: bool = True) -> None:
    """Refuse a directory warren reads config from or writes into that another user controls.

    The one rule for the data, run and config dirs and those inside them (config.d, cni/net.d,
    images, logs, certs.d...): the directory, if it exists, is a real directory (not a symlink),
    owned by root or by the user warren runs as, and not writable by group or others; and, with
    `ancestors`, no directory on the way to it is a symlink another user could swap or a
    directory others may write without the sticky bit. Checked before the first read or write.
    Missing is fine: warren creates it with its own modes. `option` moves it elsewhere.

    The remedies never tell anyone to remove what warren may not have made.
    """
    from warren_bundle.errors import UnsafePathError

    if ancestors:
        _check_ancestors(path.absolute(), option)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    elsewhere = f"pass {option} a directory of warren's own"
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(
            f"{what} {path} is a symlink; refusing to write through it",
            f"make it a real directory, or {elsewhere}",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{what} {path} is not a directory", elsewhere)
    if _others_write(st.st_mode):
        raise UnsafePathError(
            f"{what} {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})",
            f"run 'chmod go-w {path}' if it is warren's, or {elsewhere}",
        )
    if not _trusted_owner(st.st_uid):
        raise UnsafePathError(
            f"{what} {path} is owned by uid {st.st_uid}, not by root or the caller "
            f"(uid {os.geteuid()})",
            elsewhere,
        )


def _check_ancestors(path: Path, option: str) -> None:
    """Each existing ancestor as the kernel walks it: a symlink is followed only when root or we
    own it and it sits in a directory nobody else may write (so nobody else could have placed
    or replaced it); a directory writable by group or others must be sticky (as /tmp is), so
    others cannot rename what we own out of it."""
    from warren_bundle.errors import UnsafePathError

    current = Path(path.anchor or "/")
    for part in path.parts[1:]:
        parent, current = current, current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            if not _trusted_owner(st.st_uid) or _others_write(os.stat(parent).st_mode):
                raise UnsafePathError(
                    f"{current} (on the way to {path}) is a symlink another user could replace",
                    f"use the real path ({os.path.realpath(current)}) for {option}",
                )
            # Follow it: what it points at must pass the same checks.
            _check_ancestors(Path(os.path.realpath(current)), option)
            continue
        if current != path and _others_write(st.st_mode) and not st.st_mode & stat.S_ISVTX:
            raise UnsafePathError(
                f"{current} (on the way to {path}) is writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):o})",
                f"run 'chmod go-w {current}' or pass {option} elsewhere",
            )


def check_trusted_file(st: os.stat_result, path: Path, what: str) -> None:
    """A file warren reads config from: written by root or the caller only."""
    from warren_bundle.errors import UnsafePathError

    if not _trusted_owner(st.st_uid) or _others_write(st.st_mode):
        raise UnsafePathError(
            f"{what} {path} is owned by uid {st.st_uid} (mode {stat.S_IMODE(st.st_mode):o}): "
            "another user could have written it; not read",
            f"have root own it with mode 0644 (chown root {path}; chmod go-w {path})",
        )
