"""One directory per digest under a root, built once, atomically: the store's one primitive.

`ensure_dir(root, name, ...)` makes `root/name` complete, or leaves it as it was: check (no
lock) → lock → re-check → build aside → verify → fsync → rename. The payload's binaries
(extract.py: `ensure_extracted` and `prepare`) are stored with it; so can anything else kept by
digest (a launcher's runtime dir): only the callbacks differ.

The race it closes, process by process (A and B both want root/<digest>, which is missing):

1. A and B both check without a lock and see root/<digest> incomplete. Checking first costs a
   few stat calls, and lets every later start that finds the dir complete take no lock at all.
2. A takes the lock (an flock on a file beside the dirs, so a killed holder never leaves it
   taken); B blocks on it, up to its timeout.
3. A checks again under the lock: still incomplete, so A builds. Without this re-check, B would
   build the same dir a second time once A released the lock, replacing files A's caller may
   already run.
4. A builds into root/.<prefix>XXXXXXXX, a temp dir beside the target on the same filesystem.
   Nothing reads a temp dir: a crash leaves only a leftover, which the next holder of the lock
   removes (`setup`, under the lock, when nobody else can be building one).
5. The builder verifies what it wrote (hashes against a manifest) before anything is installed;
   a failure raises, the temp dir is removed, and root/<digest> is untouched.
6. The files are fsynced (the builder may do it as it writes), then the temp dir, so that the
   rename cannot be persisted before the data it names.
7. A installs: by default one rename of the temp dir onto root/<digest> (a leftover incomplete
   root/<digest> is first moved aside and removed), then an fsync of root. A caller that must
   keep a running process's files in place installs file by file instead, dropping its
   completeness stamp first and writing it last (`install`).
8. A's `then` runs, still under the lock (extract.py points bin at the version there, so a
   prune cannot remove a dir between its build and its switch). A releases the lock.
9. B gets the lock, re-checks: root/<digest> is complete. B builds nothing and runs its own
   `then`. Had B died instead while building, A's next run would find its leftover and remove it.

`complete(dir)` is the only judge of a finished dir: a stamp written last, compared with what
the digest promises. A dir without it is treated as absent and rebuilt.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from warren_bundle.fsutil import fsync_dir

T = TypeVar("T")
R = TypeVar("R")

TMP_PREFIX = ".new-"
# shutil and tempfile are imported when a dir is built: the check that finds it complete, run
# before every containerd start, is a few stat calls and must stay so.


@dataclass(frozen=True)
class Ensured(Generic[T, R]):
    path: Path  # root/name
    built: T | None  # what `build` returned; None when the dir was already complete
    then: R | None  # what `then` returned (None without one)


def rename_into(tmp: Path, target: Path) -> None:
    """The default install: one rename. A leftover incomplete `target` is moved aside first
    (a directory cannot be renamed over a non-empty one) and removed after."""
    import shutil

    aside = None
    if target.exists() or target.is_symlink():
        aside = target.with_name(f"{TMP_PREFIX}old-{target.name}-{time.time_ns()}")
        os.rename(target, aside)
    os.rename(tmp, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def fsync_tree(top: Path) -> None:
    """fsync every file and directory under `top`, directories after what they hold."""
    for dirpath, _dirs, files in os.walk(top, topdown=False):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def root_lock(root: Path, timeout: float) -> Callable[[], AbstractContextManager[object]]:
    """The simplest store lock: an flock on <root>/.lock (created with root), for callers with
    no lock of their own. A timeout raises fsutil.LockTimeout, naming the lock file."""
    from warren_bundle.fsutil import locked

    def lock() -> AbstractContextManager[object]:
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        return locked(root / ".lock", timeout)

    return lock


def remove_leftovers(root: Path, prefix: str = TMP_PREFIX) -> None:
    """Temp dirs of builds that were killed. Call under the lock: then nobody is building one."""
    import shutil

    for leftover in root.glob(f"{prefix}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def ensure_dir(
    root: Path,
    name: str,
    *,
    lock: Callable[[], AbstractContextManager[object]],
    complete: Callable[[Path], bool],
    build: Callable[[Path], T],
    install: Callable[[Path, Path], None] = rename_into,
    then: Callable[[Path], R] | None = None,
    setup: Callable[[], None] | None = None,
    before_build: Callable[[Path], None] | None = None,
    force: bool = False,
    tmp_prefix: str = TMP_PREFIX,
    fsync_files: bool = True,
    os_error: Callable[[OSError, Path], Exception] | None = None,
) -> Ensured[T, R]:
    """Make `root/name` complete (see the module's docstring for the race this closes).

    lock: the store's lock, as a context manager (its timeout and message are the caller's).
    complete: whether a dir is finished (a stamp written last); checked before and under it.
    build: writes the dir's contents into the empty temp dir it is given and verifies them;
      raises to abandon (the temp dir is removed, the target untouched).
    install: moves the built temp dir to the target (default: one rename).
    then: runs under the lock once the target is complete, built now or before.
    setup: runs first under the lock (remove leftovers, migrate an old layout).
    before_build: checks, with the target's path, run before anything is written.
    force: build even when the target is complete (a repair).
    fsync_files: False when `build` fsyncs what it writes itself (directories are still synced).
    os_error: turns an OSError creating the temp dir (about root) or installing (about the
      target) into the caller's error.
    """
    target = root / name
    if not force and then is None and complete(target):  # 1. check, no lock
        return Ensured(target, None, None)
    with lock():  # 2. lock
        if setup is not None:
            setup()
        built: T | None = None
        if force or not complete(target):  # 3. re-check: another process may have built it
            built = _build_aside(
                root, target, build, install, before_build, tmp_prefix, fsync_files, os_error
            )
        after = then(target) if then is not None else None  # 8. under the same lock
    return Ensured(target, built, after)


def _build_aside(
    root: Path,
    target: Path,
    build: Callable[[Path], T],
    install: Callable[[Path, Path], None],
    before_build: Callable[[Path], None] | None,
    tmp_prefix: str,
    fsync_files: bool,
    os_error: Callable[[OSError, Path], Exception] | None,
) -> T:
    import shutil
    import tempfile

    if before_build is not None:
        before_build(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=root))  # 4. build aside
    except OSError as exc:
        raise (os_error(exc, root) if os_error else exc) from exc
    try:
        result = build(tmp)  # 5. the builder writes and verifies
        try:
            if fsync_files:  # 6. fsync
                fsync_tree(tmp)
            else:
                for dirpath, _dirs, _files in os.walk(tmp, topdown=False):
                    fsync_dir(Path(dirpath))
            install(tmp, target)  # 7. rename
            fsync_dir(root)
        except OSError as exc:
            raise (os_error(exc, target) if os_error else exc) from exc
        return result
    finally:
        with suppress(OSError):
            shutil.rmtree(tmp, ignore_errors=True)
