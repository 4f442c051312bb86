"""What extraction checks before it writes or execs anything under the data dir.

Refuses a dir another user could swap or write into (we exec what lies in it as root), a bin that
is a symlink other than our own link into versions/, noexec and full filesystems; and turns OS
errors into one-line messages with their remedy.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import suppress
from pathlib import Path

from warren_bundle.errors import (
    ExtractionError,
    PermissionDeniedError,
    UnsafePathError,
    WarrenError,
    path_error,
)
from warren_bundle.paths import Paths
from warren_bundle.payload.format import Manifest


def check_dir_safe(path: Path, what: str) -> None:
    """Refuse a dir another user could swap or write into: we exec what lies in it as root."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(
            f"{what} {path} is a symlink; refusing to write through it",
            f"replace it with a real directory (rm {path}) or pass --data-dir",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(
            f"{what} {path} is not a directory", f"remove {path} or pass --data-dir"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePathError(
            f"{what} {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})",
            f"run 'chmod go-w {path}'",
        )
    # Owned by root is as safe as owned by us: root could replace anything anyway.
    if st.st_uid not in (os.geteuid(), 0):
        raise UnsafePathError(
            f"{what} {path} is owned by uid {st.st_uid}, not by the caller (uid {os.geteuid()})",
            f"run 'chown {os.geteuid()} {path}' or pass --data-dir",
        )


def _check_ancestors_safe(path: Path) -> None:
    """Refuse a data dir reached through a path another user could redirect.

    Each existing ancestor is checked as the kernel walks it: a symlink is followed only when
    root or we own it and it sits in a directory nobody else may write (so nobody else could
    have placed or replaced it); a directory writable by group or others must be sticky (as
    /tmp is), so others cannot rename what we own out of it.
    """
    current = Path(path.anchor or "/")
    for part in path.parts[1:]:
        parent, current = current, current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            pst = os.stat(parent)
            others_write = pst.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            if st.st_uid not in (os.geteuid(), 0) or others_write:
                raise UnsafePathError(
                    f"{current} (on the way to {path}) is a symlink another user could replace",
                    f"use the real path ({os.path.realpath(current)}) for --data-dir",
                )
            # Follow it: what it points at must pass the same checks.
            _check_ancestors_safe(Path(os.path.realpath(current)))
            continue
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if current != path and writable and not st.st_mode & stat.S_ISVTX:
            raise UnsafePathError(
                f"{current} (on the way to {path}) is writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):o})",
                f"run 'chmod go-w {current}' or pass --data-dir elsewhere",
            )


def version_link_target(paths: Paths) -> str | None:
    """The version name bin points at when bin is our own link (versions/<name>), else None."""
    try:
        target = os.readlink(paths.bin_dir)
    except OSError:
        return None
    head, _, name = target.partition("/")
    if head != paths.versions_dir.name or not name or "/" in name or name.startswith("."):
        return None
    return name


def _check_bin_safe(paths: Paths) -> None:
    """bin is a real dir (the old layout), or our own link into versions/: nothing else."""
    try:
        st = os.lstat(paths.bin_dir)
    except FileNotFoundError:
        return
    if not stat.S_ISLNK(st.st_mode):
        check_dir_safe(paths.bin_dir, "bin dir")
        return
    name = version_link_target(paths)
    if name is None or st.st_uid not in (os.geteuid(), 0):
        raise UnsafePathError(
            f"bin dir {paths.bin_dir} is a symlink to {_readlink(paths.bin_dir)}, not to one of "
            f"warren's own {paths.versions_dir.name}/<digest> dirs; refusing to write through it",
            f"replace it with a real directory (rm {paths.bin_dir}) or pass --data-dir",
        )
    check_dir_safe(paths.version_dir(name), "version dir")


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def check_safe(paths: Paths) -> None:
    """Everything warren writes or execs as root under the data dir: checked before any write."""
    _check_ancestors_safe(paths.data_dir.absolute())
    check_dir_safe(paths.data_dir, "data dir")
    check_dir_safe(paths.versions_dir, "versions dir")
    _check_bin_safe(paths)
    check_dir_safe(paths.logs_dir, "logs dir")


def unsafe_names(paths: Paths, manifest: Manifest) -> list[str]:
    names = []
    for entry in manifest.files:
        with suppress(OSError):
            if unsafe_file(os.lstat(paths.binary(entry.name))):
                names.append(entry.name)
    return names


def unsafe_file(st: os.stat_result) -> bool:
    """A binary another user could have written: group/other-writable, or owned by them."""
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) or st.st_uid not in (os.geteuid(), 0)


def make_dirs(path: Path) -> None:
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    except PermissionError as exc:
        raise PermissionDeniedError(
            f"cannot create {path}: permission denied",
            "run warren with sudo, or pass --data-dir to a directory you own",
        ) from exc
    except OSError as exc:  # a read-only data dir, a file in the way
        raise path_error(exc, path, "--data-dir", "create") from exc


def check_exec_allowed(path: Path) -> None:
    if os.statvfs(path).f_flag & os.ST_NOEXEC:
        raise ExtractionError(
            f"data dir {path} is on a noexec filesystem: containerd could not be run from it",
            "remount it with exec (mount -o remount,exec) or pass --data-dir elsewhere",
        )


def check_free_space(path: Path, needed: int) -> None:
    vfs = os.statvfs(path)
    free = vfs.f_bavail * vfs.f_frsize
    if free < needed:
        raise ExtractionError(
            f"not enough space in {path}: {needed // 2**20} MiB needed, {free // 2**20} MiB free",
            "free some space or pass --data-dir on a larger filesystem",
        )


def os_error_at(exc: OSError, where: Path) -> WarrenError:
    if exc.errno == errno.ENOSPC:
        return ExtractionError(
            f"no space left on device writing {where}",
            "free some space or pass --data-dir on a larger filesystem",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return path_error(exc, where, "--data-dir")
    return ExtractionError(f"cannot write {where}: {exc.strerror or exc}")
