"""Cached, locked, atomic, verified extraction of the payload's binaries, one dir per digest.

Each payload is extracted once into <data>/versions/<digest>/; <data>/bin (what users, configs and
the unit see) is a symlink to the current one, switched atomically (a symlink under a temp name,
then rename), and the previous one is kept: a new warren never rewrites a file that a running
containerd or shim came from.

Fast path (no lock, a few stat calls): the stamp <data>/bin/.manifest.json names this payload's
digest and every file still has the size and mtime_ns recorded when it was written (stamp.py).
Otherwise the slow path is the store's one primitive (atomic.ensure_dir: lock, re-check, build
aside, verify, fsync, install): it streams the payload into a temp dir beside the version dir,
checks every hash, replaces the files one by one (a process running one keeps its old inode),
writes the stamp last, and only then, under the same lock, points bin at the version. `prepare`
is the same without the switch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from warren_bundle.errors import (
    ExtractionError,
    PlatformError,
)
from warren_bundle.fsutil import (
    LockTimeout,
    atomic_write,
    fsync_dir,
    locked,
)
from warren_bundle.hostinfo import host_arch
from warren_bundle.paths import Paths
from warren_bundle.payload.format import Payload
from warren_bundle.store.atomic import Ensured, ensure_dir
from warren_bundle.store.checks import (
    check_dir_safe,
    check_exec_allowed,
    check_free_space,
    make_dirs,
    os_error_at,
    unsafe_names,
)
from warren_bundle.store.checks import check_safe as check_safe  # re-exported
from warren_bundle.store.checks import version_link_target as version_link_target
from warren_bundle.store.stamp import (
    MANIFEST_STAMP,
    bin_matches,
    damaged_files,
    read_stamp_in,
    stamp_matches_in,
    write_stamp,
)

# shutil, tempfile and unpack (hashlib, queue, threading) are imported by the slow path only:
# the cached check, run before every containerd start, is a few stat calls and must stay so.

LOCK_TIMEOUT = 120.0
_TMP_PREFIX = ".bin-new-"
_LINK_PREFIX = ".bin-link-"
_LEGACY_PREFIX = "legacy-"
_CHUNK = 1 << 20


@dataclass
class ExtractResult:
    bin_dir: Path
    digest: str
    cached: bool  # nothing was written
    duration_s: float
    written: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    version_dir: Path | None = None
    previous: str | None = None  # the digest bin pointed at before, when this call switched it


# --- the slow path ----------------------------------------------------------------------------


@contextmanager
def extract_lock(paths: Paths, timeout: float) -> Iterator[None]:
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
            raise os_error_at(exc, paths.extract_lock) from exc
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


def _install(target: Path, payload: Payload, tmp: Path) -> None:
    """Move the checked files from tmp into the version dir `target`, stamp last."""
    make_dirs(target)
    # Drop the stamp first: if we die between two replaces, the next run sees no stamp and repairs.
    with suppress(FileNotFoundError):
        (target / MANIFEST_STAMP).unlink()
    names = [f.name for f in payload.manifest.files]
    subdirs = sorted({name.split("/", 1)[0] for name in names if "/" in name})
    for sub in subdirs:
        make_dirs(target / sub)
        check_dir_safe(target / sub, "version subdir")
    for name in names:
        os.replace(tmp / name, target / name)
    for sub in subdirs:
        fsync_dir(target / sub)
    fsync_dir(target)
    write_stamp(target, payload)


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


def _check_libc(payload: Payload) -> None:
    """Refuse, before writing anything, a payload whose binaries cannot run on this host's C
    library (a dynamic payload on an older glibc or on musl): containerd would fail later, and
    less clearly."""
    from warren_bundle.payload import libc

    libc.check(libc.Requirement.from_dict(payload.manifest.requires))


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
    repaired = unsafe_names(paths, payload.manifest)
    if repaired:
        force = True
    if not force and bin_matches(paths, payload):  # the fast path: bin is this payload
        if not verify:
            return ExtractResult(paths.bin_dir, payload.digest, True, time.perf_counter() - started)
        repaired = damaged_files(paths, payload.manifest)
        if not repaired:
            return ExtractResult(paths.bin_dir, payload.digest, True, time.perf_counter() - started)
        force = True

    def setup() -> None:
        _setup_locked(paths)
        try:
            _migrate_legacy_bin(paths)
        except OSError as exc:
            raise os_error_at(exc, paths.bin_dir) from exc
        check_safe(paths)

    def switch(target: Path) -> str | None:
        try:
            return switch_to(paths, payload.digest)
        except OSError as exc:
            raise os_error_at(exc, paths.bin_dir) from exc

    ensured = _store(paths, payload, lock_timeout, force=force, setup=setup, then=switch)
    written = ensured.built or []
    # Cached: nothing written, as when bin only switched to a version dir already extracted (by
    # `extract --prepare` before a restart, or one kept from before).
    return ExtractResult(
        paths.bin_dir,
        payload.digest,
        not written and not repaired,
        time.perf_counter() - started,
        written,
        repaired,
        ensured.path,
        ensured.then,
    )


def prepare(paths: Paths, payload: Payload, lock_timeout: float = LOCK_TIMEOUT) -> list[str]:
    """Extract the payload into its own version dir without pointing bin at it (done while the
    containerd of another version still runs, so that its replacement only switches). The files
    written; none when the version dir is already complete."""
    _check_arch(payload)
    check_safe(paths)
    return _store(paths, payload, lock_timeout, setup=lambda: _setup_locked(paths)).built or []


def _setup_locked(paths: Paths) -> None:
    _remove_stale_temp_dirs(paths)
    make_dirs(paths.versions_dir)
    check_safe(paths)


def _store(
    paths: Paths,
    payload: Payload,
    lock_timeout: float,
    *,
    setup: Callable[[], None],
    then: Callable[[Path], str | None] | None = None,
    force: bool = False,
) -> Ensured[list[str], str | None]:
    """<data>/versions/<digest> through the store's one primitive (atomic.py): the checks
    before writing, the unpack into a temp dir, the file-by-file install with the stamp last."""
    digest, manifest = payload.digest, payload.manifest

    @contextmanager
    def lock() -> Iterator[None]:
        make_dirs(paths.data_dir)
        check_safe(paths)
        with extract_lock(paths, lock_timeout):
            yield

    def before_build(target: Path) -> None:
        _check_libc(payload)
        check_dir_safe(target, "version dir")
        check_exec_allowed(paths.data_dir)
        check_free_space(paths.data_dir, sum(f.size for f in manifest.files))

    return ensure_dir(
        paths.versions_dir,
        digest,
        lock=lock,
        complete=lambda target: stamp_matches_in(target, digest, manifest),
        build=lambda tmp: _unpack_checked(payload, tmp),
        install=lambda tmp, target: _install(target, payload, tmp),
        then=then,
        setup=setup,
        before_build=before_build,
        force=force,
        tmp_prefix=_TMP_PREFIX,
        fsync_files=False,  # unpack_to fsyncs each file as it is written
        os_error=os_error_at,
    )


def _unpack_checked(payload: Payload, tmp: Path) -> list[str]:
    """Stream the members into `tmp`, each hashed against the manifest (unpack.py)."""
    from warren_bundle.store.unpack import unpack_to

    unpack_to(payload, tmp)
    if not payload.manifest.requires:  # staged before it was recorded: read the files
        from warren_bundle.payload import libc

        libc.check_files((f.name, tmp / f.name) for f in payload.manifest.files)
    return [f.name for f in payload.manifest.files]
