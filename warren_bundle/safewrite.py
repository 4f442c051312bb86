"""Writes into directories another user might plant a symlink in (certs.d/<host>, cni/net.d).

Every directory from the root down is opened with O_NOFOLLOW|O_DIRECTORY and each step is
relative to the one before (dir_fd), so a symlink anywhere on the way is refused, never followed;
the file is created O_EXCL|O_NOFOLLOW beside its target with its final mode (0600 for a secret)
before a byte is written, then renamed over the target (which replaces a symlink, never writes
through it). A directory that is not ours or is writable by others is refused too.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import suppress
from pathlib import Path

from warren_bundle.errors import UnsafePathError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _refuse(path: Path, why: str) -> UnsafePathError:
    return UnsafePathError(
        f"refusing to write into {path}: {why}",
        "remove it (it is not warren's) or pass --config-dir to a directory only you can write",
    )


def _open_dir(parent_fd: int | None, name: str, shown: Path, mode: int) -> int:
    """Open (creating with `mode`) one directory level without following a symlink."""
    target = name if parent_fd is not None else str(shown)
    for _ in range(2):
        try:
            fd = os.open(target, _DIR_FLAGS, dir_fd=parent_fd)
            break
        except FileNotFoundError:
            with suppress(FileExistsError):
                os.mkdir(target, mode, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                kind = "a symlink" if _is_link(parent_fd, target) else "not a directory"
                raise _refuse(shown, f"it is {kind}") from None
            raise
    else:  # pragma: no cover - created and gone again at once
        raise _refuse(shown, "it vanished while being created")
    st = os.fstat(fd)
    if why := _not_ours(st):
        os.close(fd)
        raise _refuse(shown, why)
    if stat.S_IMODE(st.st_mode) != mode:
        os.fchmod(fd, mode)
    return fd


def _not_ours(st: os.stat_result) -> str | None:
    """Why a directory is not one to write into: another user's, or writable by others."""
    if st.st_uid != os.geteuid():
        return f"it is owned by uid {st.st_uid}, not by {os.geteuid()}"
    if st.st_mode & 0o022:
        return f"it is writable by group or others (mode {st.st_mode & 0o777:o})"
    return None


def _is_link(parent_fd: int | None, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=parent_fd).st_mode)
    except OSError:
        return False


def open_tree(root: Path, parts: list[str], dir_mode: int) -> int:
    """An fd of root/parts... with every level opened without following a symlink."""
    fd = _open_dir(None, str(root), root, dir_mode if not parts else _root_mode(root))
    shown = root
    for part in parts:
        if part in ("", ".", "..") or "/" in part:
            os.close(fd)
            raise _refuse(shown / part, "not a plain name")
        shown = shown / part
        try:
            child = _open_dir(fd, part, shown, dir_mode)
        finally:
            os.close(fd)
        fd = child
    return fd


def _root_mode(root: Path) -> int:
    """Keep an existing root's mode (tightened to drop group/other write); new ones get 0755."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return 0o755
    return stat.S_IMODE(st.st_mode) & ~0o022


def write_file(
    root: Path, relative: str, data: bytes | str, mode: int, *, dir_mode: int = 0o755
) -> Path:
    """Atomically write root/relative with `mode`, never through a symlink; its path."""
    parts = relative.split("/")
    name = parts.pop()
    raw = data.encode() if isinstance(data, str) else data
    dir_fd = open_tree(root, parts, dir_mode)
    target = root.joinpath(*parts, name)
    try:
        if holds_already(name, raw, mode, dir_fd):
            return target  # each start writes these: no fsync for what is already there
        tmp = f".{name}.{os.urandom(4).hex()}"  # not `secrets`: it loads OpenSSL, ~15 ms
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
            dir_fd=dir_fd,
        )  # fmt: skip
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it; never widened beyond `mode`
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.close(fd)
        try:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)
    return target


def holds_already(name: str | Path, data: bytes, mode: int, dir_fd: int | None = None) -> bool:
    """`name` is already a regular file of ours (owned by this user, exactly `mode`), not a
    symlink, holding exactly `data`: writing it again would change nothing but its inode."""
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_uid != os.geteuid()
            or stat.S_IMODE(st.st_mode) != mode
            or st.st_size != len(data)
        ):
            return False
        return os.read(fd, len(data) + 1) == data
    except OSError:
        return False
    finally:
        os.close(fd)


def read_file(root: Path, relative: str) -> str | None:
    """root/relative's text if every level is a real directory and it is a regular file."""
    parts = relative.split("/")
    name = parts.pop()
    try:
        fd = _walk(root, parts)
        try:
            ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        finally:
            os.close(fd)
        with os.fdopen(ffd, "rb") as fp:
            return fp.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return None


def unlink(root: Path, relative: str) -> None:
    """Remove root/relative (a file or a link, never what a link points to) if present."""
    parts = relative.split("/")
    name = parts.pop()
    try:
        fd = _walk(root, parts)
    except OSError:
        return
    try:
        with suppress(FileNotFoundError):
            os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def _walk(root: Path, parts: list[str]) -> int:
    """An fd of the existing root/parts..., no level followed if it is a symlink; OSError when
    a level is missing or not a directory."""
    fd = os.open(root, _DIR_FLAGS)
    for part in parts:
        try:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd
