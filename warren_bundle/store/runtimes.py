"""The runtime cache: the frozen runtimes the launcher extracted, one dir per digest.

The launcher (launcher/launcher.c) extracts the one file's runtime into <root>/<digest>/ under
<root>/.lock, and every process that runs from a runtime dir holds a shared flock on that dir for
its whole life (the launcher takes it and passes the fd through exec). So a dir whose exclusive
flock can be taken is used by nobody; prune() takes <root>/.lock (no launcher extracts meanwhile),
then that exclusive lock, renames the dir aside (a launcher that looks now finds nothing and
extracts anew, rather than half a tree), and removes it.

Roots: the one this process runs from, WARREN_RUNTIME_DIR, root's /var/cache/warren/runtime and the
user's ~/.cache/warren/runtime (paths.runtime_roots).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from warren_bundle import launcher
from warren_bundle.paths import Paths, runtime_roots

_DIGEST = re.compile(r"[0-9a-f]{64}")
_LOCK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Runtime:
    path: Path
    in_use: bool
    own: bool
    size: int

    @property
    def digest(self) -> str:
        return self.path.name

    def to_dict(self) -> dict[str, object]:
        return {
            "digest": self.digest,
            "path": str(self.path),
            "in_use": self.in_use,
            "own": self.own,
            "size_bytes": self.size,
        }


def roots(paths: Paths) -> list[Path]:
    """Where runtimes of this warren may be: each at most once, those that exist."""
    del paths  # one runtime cache serves every data dir
    found: list[Path] = []
    own = launcher.runtime_dir()
    for root in [*([Path(own).parent] if own else []), *runtime_roots()]:
        if root.is_dir() and not root.is_symlink() and root not in found:
            found.append(root)
    return found


def _in_use(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _own() -> Path | None:
    own = launcher.runtime_dir()
    return Path(own).resolve() if own else None


def _entries(root: Path) -> list[Path]:
    return [
        entry
        for entry in sorted(root.iterdir())
        if _DIGEST.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink()
    ]


def listing(paths: Paths) -> list[Runtime]:
    """Every runtime dir, with whether a process runs from it and its size."""
    own = _own()
    return [
        Runtime(entry, _in_use(entry), entry.resolve() == own, _size(entry))
        for root in roots(paths)
        for entry in _entries(root)
    ]


@contextmanager
def _root_lock(root: Path) -> Iterator[bool]:
    """The launcher's <root>/.lock, or False when another warren holds it past the timeout."""
    try:
        fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        yield False
        return
    try:
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)


def prune(paths: Paths) -> list[Path]:
    """Remove the runtimes no process uses (never this process's own); what was removed."""
    removed = []
    for root in roots(paths):
        with _root_lock(root) as locked:
            if not locked:
                continue
            for entry in _entries(root):
                if entry.resolve() != _own() and _remove_unused(root, entry):
                    removed.append(entry)
    return removed


def _remove_unused(root: Path, path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a warren runs from it
        aside = root / f".tmp-old-{path.name[:16]}-{os.getpid()}"
        try:
            os.rename(path, aside)
        except OSError:
            return False
    finally:
        os.close(fd)
    shutil.rmtree(aside, ignore_errors=True)
    return True
