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
from warren_bundle.fsutil import check_trusted_dir
from warren_bundle.paths import DEFAULT_DATA_DIR, Paths
from warren_bundle.payload.format import Manifest


def check_dir_safe(path: Path, what: str) -> None:
    """Refuse a dir another user could swap or write into: we exec what lies in it as root."""
    check_trusted_dir(path, what, "--data-dir", ancestors=False)


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
            f"pass --data-dir a directory of warren's own (default {DEFAULT_DATA_DIR})",
        )
    check_dir_safe(paths.version_dir(name), "version dir")


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def check_safe(paths: Paths) -> None:
    """Everything warren writes or execs as root under the data dir: checked before any write."""
    check_trusted_dir(paths.data_dir, "data dir", "--data-dir")
    check_dir_safe(paths.versions_dir, "versions dir")
    _check_bin_safe(paths)
    check_dir_safe(paths.logs_dir, "logs dir")
    check_dir_safe(paths.images_dir, "images dir")


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
