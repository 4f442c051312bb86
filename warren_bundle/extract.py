"""Cached, locked, atomic, verified extraction of the payload's binaries, one dir per digest.

Each payload is extracted once into <data>/versions/<digest>/; <data>/bin (what users, configs and
the unit see) is a symlink to the current one, switched atomically (a symlink under a temp name,
then rename), and the previous one is kept: a new warren never rewrites a file that a running
containerd or shim came from.

Fast path (no lock, a few stat calls): the stamp <data>/bin/.manifest.json names this payload's
digest and every file still has the size and mtime_ns recorded when it was written. Otherwise the
slow path streams the payload into a temp dir beside the version dir, checks every hash, replaces
the files one by one (a process running one keeps its old inode), writes the stamp last, and only
then points bin at the version.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warren_bundle.errors import (
    ExtractionError,
    PayloadError,
    PermissionDeniedError,
    PlatformError,
    UnsafePathError,
    WarrenError,
    path_error,
)
from warren_bundle.fsutil import (
    LockTimeout,
    atomic_write,
    fsync_dir,
    locked,
    read_json,
    sha256_file,
)
from warren_bundle.hostinfo import host_arch
from warren_bundle.paths import Paths
from warren_bundle.payload.format import MANIFEST_FILE, Manifest, Payload

MANIFEST_STAMP = ".manifest.json"  # in each version dir (and so, through the link, in bin/)

if TYPE_CHECKING:
    import queue

    from warren_bundle.payload.tarstream import MemberStream

# hashlib, shutil, tempfile, queue and threading are imported by the slow path that needs them:
# the cached check, run before every containerd start, is a few stat calls and must stay so.

STAMP_FORMAT = 1
LOCK_TIMEOUT = 120.0
_TMP_PREFIX = ".bin-new-"
_LINK_PREFIX = ".bin-link-"
_LEGACY_PREFIX = "legacy-"
_CHUNK = 1 << 20


@dataclass
class ExtractResult:
    bin_dir: Path
    digest: str
    cached: bool
    duration_s: float
    written: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    version_dir: Path | None = None
    previous: str | None = None  # the digest bin pointed at before, when this call switched it


# --- safety checks ----------------------------------------------------------------------------


def _check_dir_safe(path: Path, what: str) -> None:
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
        _check_dir_safe(paths.bin_dir, "bin dir")
        return
    name = version_link_target(paths)
    if name is None or st.st_uid not in (os.geteuid(), 0):
        raise UnsafePathError(
            f"bin dir {paths.bin_dir} is a symlink to {_readlink(paths.bin_dir)}, not to one of "
            f"warren's own {paths.versions_dir.name}/<digest> dirs; refusing to write through it",
            f"replace it with a real directory (rm {paths.bin_dir}) or pass --data-dir",
        )
    _check_dir_safe(paths.version_dir(name), "version dir")


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def check_safe(paths: Paths) -> None:
    """Everything warren writes or execs as root under the data dir: checked before any write."""
    _check_ancestors_safe(paths.data_dir.absolute())
    _check_dir_safe(paths.data_dir, "data dir")
    _check_dir_safe(paths.versions_dir, "versions dir")
    _check_bin_safe(paths)
    _check_dir_safe(paths.logs_dir, "logs dir")


def _unsafe_names(paths: Paths, manifest: Manifest) -> list[str]:
    names = []
    for entry in manifest.files:
        with suppress(OSError):
            if _unsafe_file(os.lstat(paths.binary(entry.name))):
                names.append(entry.name)
    return names


def _unsafe_file(st: os.stat_result) -> bool:
    """A binary another user could have written: group/other-writable, or owned by them."""
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) or st.st_uid not in (os.geteuid(), 0)


def _makedirs(path: Path) -> None:
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    except PermissionError as exc:
        raise PermissionDeniedError(
            f"cannot create {path}: permission denied",
            "run warren with sudo, or pass --data-dir to a directory you own",
        ) from exc
    except OSError as exc:  # a read-only data dir, a file in the way
        raise path_error(exc, path, "--data-dir", "create") from exc


def _check_exec_allowed(path: Path) -> None:
    if os.statvfs(path).f_flag & os.ST_NOEXEC:
        raise ExtractionError(
            f"data dir {path} is on a noexec filesystem: containerd could not be run from it",
            "remount it with exec (mount -o remount,exec) or pass --data-dir elsewhere",
        )


def _check_free_space(path: Path, needed: int) -> None:
    vfs = os.statvfs(path)
    free = vfs.f_bavail * vfs.f_frsize
    if free < needed:
        raise ExtractionError(
            f"not enough space in {path}: {needed // 2**20} MiB needed, {free // 2**20} MiB free",
            "free some space or pass --data-dir on a larger filesystem",
        )


# --- the stamp (fast path) --------------------------------------------------------------------


def read_stamp(paths: Paths) -> dict[str, Any] | None:
    """The current version's stamp (read through bin)."""
    return read_stamp_in(paths.bin_dir)


def read_stamp_in(directory: Path) -> dict[str, Any] | None:
    data = read_json(directory / MANIFEST_STAMP)
    return data if data is not None and data.get("format") == STAMP_FORMAT else None


def _stamp_matches(paths: Paths, payload: Payload) -> bool:
    return stamp_matches_in(paths.bin_dir, payload.digest, payload.manifest)


def stamp_matches_in(directory: Path, digest: str, manifest: Manifest) -> bool:
    """directory holds exactly these binaries, judged by its stamp and stat calls alone."""
    stamp = read_stamp_in(directory)
    if stamp is None or stamp.get("digest") != digest:
        return False
    recorded = stamp.get("files")
    if not isinstance(recorded, dict):
        return False
    for entry in manifest.files:
        rec = recorded.get(entry.name)
        try:
            st = os.lstat(directory / entry.name)
        except OSError:
            return False
        if (
            not isinstance(rec, dict)
            or not stat.S_ISREG(st.st_mode)
            or _unsafe_file(st)
            or st.st_size != rec.get("size")
            or st.st_mtime_ns != rec.get("mtime_ns")
        ):
            return False
    return True


def is_current(paths: Paths, payload: Payload) -> bool:
    """True when bin/ holds exactly this payload's binaries, judged by stat calls alone."""
    check_safe(paths)
    return _stamp_matches(paths, payload)


def _write_stamp(directory: Path, payload: Payload) -> None:
    files = {}
    for entry in payload.manifest.files:
        st = os.stat(directory / entry.name)
        files[entry.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": entry.sha256}
    data = {
        "format": STAMP_FORMAT,
        "digest": payload.digest,
        "containerd_version": payload.manifest.containerd_version,
        "runc_version": payload.manifest.runc_version,
        "manifest": payload.manifest.to_dict(),
        "files": files,
        "written_at": time.time(),
    }
    stamp = directory / MANIFEST_STAMP
    atomic_write(stamp, json.dumps(data, indent=2, sort_keys=True), 0o644, durable=True)


# --- verification -----------------------------------------------------------------------------


def damaged_files(paths: Paths, manifest: Manifest) -> list[str]:
    """Names of installed binaries whose content no longer matches the manifest, or that
    another user could have written (group/other-writable, or not ours)."""
    return damaged_files_in(paths.bin_dir, manifest)


def damaged_files_in(directory: Path, manifest: Manifest) -> list[str]:
    bad = []
    for entry in manifest.files:
        path = directory / entry.name
        try:
            ok = not _unsafe_file(os.lstat(path)) and sha256_file(path) == entry.sha256
        except OSError:
            ok = False
        if not ok:
            bad.append(entry.name)
    return bad


# --- the slow path ----------------------------------------------------------------------------


@contextmanager
def _extract_lock(paths: Paths, timeout: float) -> Iterator[None]:
    with ExitStack() as stack:
        try:
            stack.enter_context(locked(paths.extract_lock, timeout))
        except LockTimeout:
            raise ExtractionError(
                f"timed out after {timeout:.0f}s waiting for {paths.extract_lock}: "
                "another warren is extracting into the same data dir",
                "wait for it to finish, or stop the other warren process",
            ) from None
        except OSError as exc:  # a read-only or foreign data dir
            raise _os_error(exc, paths.extract_lock) from exc
        yield


def _remove_stale_temp_dirs(paths: Paths) -> None:
    import shutil

    for parent in (paths.data_dir, paths.versions_dir):
        for leftover in parent.glob(f"{_TMP_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for link in parent.glob(f"{_LINK_PREFIX}*"):
            with suppress(OSError):
                link.unlink()
    # atomic_write's temp file from a stamp write that was killed (..manifest.json.XXXXXXXX);
    # under the lock nobody else writes a stamp.
    for directory in (paths.bin_dir, *paths.versions_dir.glob("*")):
        for leftover in directory.glob(f".{MANIFEST_STAMP}.*"):
            with suppress(OSError):
                leftover.unlink()


def _os_error(exc: OSError, where: Path) -> WarrenError:
    if exc.errno == errno.ENOSPC:
        return ExtractionError(
            f"no space left on device writing {where}",
            "free some space or pass --data-dir on a larger filesystem",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return path_error(exc, where, "--data-dir")
    return ExtractionError(f"cannot write {where}: {exc.strerror or exc}")


class _Syncer:
    """fsync and close finished files in a background thread while later members are written.

    The disk writes of one binary then overlap the decompression of the next, instead of
    stalling the pipeline once per file; everything is synced before anything is installed.
    """

    def __init__(self) -> None:
        import queue
        import threading

        self._queue: queue.SimpleQueue[tuple[int, Path] | None] = queue.SimpleQueue()
        self._errors: list[tuple[Path, OSError]] = []
        self._thread = threading.Thread(target=self._run, name="extract-fsync", daemon=True)
        self._thread.start()

    def submit(self, fd: int, path: Path) -> None:
        """Takes ownership of fd."""
        self._queue.put((fd, path))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fd, path = item
            try:
                os.fsync(fd)
            except OSError as exc:
                self._errors.append((path, exc))
            finally:
                os.close(fd)

    def finish(self) -> list[tuple[Path, OSError]]:
        """Wait for every submitted file; the failures."""
        self._queue.put(None)
        self._thread.join()
        return self._errors


def _write_member(stream: MemberStream, dest: Path, size: int, syncer: _Syncer) -> str:
    """Write one member to dest (new file), hashing as it goes; hand it to the syncer, 0755."""
    import hashlib

    digest = hashlib.sha256()
    written = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        for chunk in stream.chunks():
            digest.update(chunk)
            written += len(chunk)
            while chunk:
                chunk = chunk[os.write(fd, chunk) :]
        if written != size:
            raise PayloadError(f"member {dest.name} is {written} bytes, expected {size}")
        os.fchmod(fd, 0o755)
    except BaseException:
        os.close(fd)
        raise
    syncer.submit(fd, dest)
    return digest.hexdigest()


def _unpack_to(payload: Payload, tmp: Path) -> None:
    """Stream every member into tmp/, checking each file's hash and the payload digest, fsynced."""
    from warren_bundle.payload.format import open_members

    expected = {f.name: f for f in payload.manifest.files}
    seen: set[str] = set()
    syncer = _Syncer()
    try:
        with open_members(payload) as members:
            for member in members:
                if member.name == MANIFEST_FILE:
                    inner = Manifest.from_dict(json.loads(member.stream.read()))
                    if inner != payload.manifest:
                        raise PayloadError(
                            f"{payload.origin}: manifest differs from its descriptor"
                        )
                    continue
                entry = expected.get(member.name)
                if entry is None:
                    raise PayloadError(f"{payload.origin}: {member.name} is not in the manifest")
                if member.size != entry.size:
                    raise PayloadError(
                        f"{member.name} is {member.size} bytes in {payload.origin}, "
                        f"the manifest says {entry.size}"
                    )
                dest = tmp / member.name
                try:
                    actual = _write_member(member.stream, dest, entry.size, syncer)
                except OSError as exc:
                    raise _os_error(exc, dest) from exc
                if actual != entry.sha256:
                    raise PayloadError(
                        f"{member.name} fails its SHA-256 (expected {entry.sha256}, got {actual})"
                    )
                seen.add(member.name)
    finally:
        failures = syncer.finish()
    if failures:
        path, error = failures[0]
        raise _os_error(error, path) from error
    missing = sorted(set(expected) - seen)
    if missing:
        raise PayloadError(f"{payload.origin} lacks {', '.join(missing)}")


def _install(target: Path, payload: Payload, tmp: Path) -> list[str]:
    """Move the checked files from tmp into the version dir `target`, stamp last."""
    _makedirs(target)
    # Drop the stamp first: if we die between two replaces, the next run sees no stamp and repairs.
    with suppress(FileNotFoundError):
        (target / MANIFEST_STAMP).unlink()
    names = [f.name for f in payload.manifest.files]
    for name in names:
        os.replace(tmp / name, target / name)
    fsync_dir(target)
    _write_stamp(target, payload)
    return names


def _migrate_legacy_bin(paths: Paths) -> None:
    """The old layout (bin a real dir): move it into versions/ and leave bin a link to it.

    A rename keeps every inode, so a containerd or shim running from it is untouched.
    """
    if not os.path.isdir(paths.bin_dir) or os.path.islink(paths.bin_dir):
        return
    stamp = read_stamp_in(paths.bin_dir)
    digest = stamp.get("digest") if stamp else None
    name = digest if isinstance(digest, str) and len(digest) == 64 else None
    if name is None or paths.version_dir(name).exists():
        name = f"{_LEGACY_PREFIX}{time.time_ns()}"
    os.rename(paths.bin_dir, paths.version_dir(name))
    switch_to(paths, name)


def switch_to(paths: Paths, name: str) -> str | None:
    """Point bin at versions/<name> atomically (a link under a temp name, then rename).

    Returns the version bin pointed at before (recorded as the previous one), if it changed.
    Call under the extraction lock.
    """
    before = version_link_target(paths)
    if before == name and os.path.islink(paths.bin_dir):
        return None
    link = paths.data_dir / f"{_LINK_PREFIX}{os.getpid()}-{time.time_ns()}"
    os.symlink(f"{paths.versions_dir.name}/{name}", link)
    try:
        os.replace(link, paths.bin_dir)
    except BaseException:
        with suppress(OSError):
            link.unlink()
        raise
    fsync_dir(paths.data_dir)
    if before is not None:
        atomic_write(
            paths.previous_file,
            json.dumps({"digest": before, "switched_at": time.time()}) + "\n",
            0o644,
            durable=True,
        )
    return before


def _check_arch(payload: Payload) -> None:
    want = host_arch()
    if payload.manifest.arch != want:
        raise PlatformError(
            f"this warren carries {payload.manifest.os}/{payload.manifest.arch} binaries "
            f"but the host is {want}",
            f"download warren-linux-{want} instead",
        )


def ensure_extracted(
    paths: Paths,
    payload: Payload,
    *,
    verify: bool = False,
    force: bool = False,
    lock_timeout: float = LOCK_TIMEOUT,
) -> ExtractResult:
    """Make <data>/bin hold this payload's binaries, doing as little as it can."""
    started = time.perf_counter()
    _check_arch(payload)
    check_safe(paths)
    # Binaries another user could have written are re-extracted, and said to be repaired.
    repaired = _unsafe_names(paths, payload.manifest)
    if repaired:
        force = True
    if not force and _stamp_matches(paths, payload):
        if not verify:
            return ExtractResult(paths.bin_dir, payload.digest, True, time.perf_counter() - started)
        repaired = damaged_files(paths, payload.manifest)
        if not repaired:
            return ExtractResult(paths.bin_dir, payload.digest, True, time.perf_counter() - started)
        force = True
    _makedirs(paths.data_dir)
    check_safe(paths)
    with _extract_lock(paths, lock_timeout):
        if not force and _stamp_matches(paths, payload):
            return ExtractResult(paths.bin_dir, payload.digest, True, time.perf_counter() - started)
        _remove_stale_temp_dirs(paths)
        _makedirs(paths.versions_dir)
        check_safe(paths)
        try:
            _migrate_legacy_bin(paths)
        except OSError as exc:
            raise _os_error(exc, paths.bin_dir) from exc
        check_safe(paths)
        target = paths.version_dir(payload.digest)
        written: list[str] = []
        if force or not stamp_matches_in(target, payload.digest, payload.manifest):
            written = _extract_into(paths, payload, target)
        try:
            previous = switch_to(paths, payload.digest)
        except OSError as exc:
            raise _os_error(exc, paths.bin_dir) from exc
    return ExtractResult(
        paths.bin_dir,
        payload.digest,
        False,
        time.perf_counter() - started,
        written,
        repaired,
        target,
        previous,
    )


def _extract_into(paths: Paths, payload: Payload, target: Path) -> list[str]:
    _check_dir_safe(target, "version dir")
    _check_exec_allowed(paths.data_dir)
    _check_free_space(paths.data_dir, sum(f.size for f in payload.manifest.files))
    import shutil
    import tempfile

    try:
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=paths.versions_dir))
    except OSError as exc:
        raise _os_error(exc, paths.versions_dir) from exc
    try:
        _unpack_to(payload, tmp)
        try:
            return _install(target, payload, tmp)
        except OSError as exc:
            raise _os_error(exc, target) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
