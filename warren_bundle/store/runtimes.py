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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from warren_bundle import launcher
from warren_bundle.fsutil import LockTimeout, locked
from warren_bundle.paths import runtime_roots

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


def roots() -> list[Path]:
    """Where runtimes of this warren may be: each at most once, those that exist. One runtime
    cache serves every data dir."""
    found: list[Path] = []
    own = launcher.runtime_dir()
    for root in [*([Path(own).parent] if own else []), *runtime_roots()]:
        if root.is_dir() and not root.is_symlink() and root not in found:
            found.append(root)
    return found


@contextmanager
def _held(path: Path) -> Iterator[bool | None]:
    """The runtime dir's exclusive flock for the body: True when it was free (no process runs
    from the dir), False when a process holds it, None when the dir cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _in_use(path: Path) -> bool:
    with _held(path) as free:
        return free is False


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


def listing() -> list[Runtime]:
    """Every runtime dir, with whether a process runs from it and its size."""
    own = _own()
    return [
        Runtime(entry, _in_use(entry), entry.resolve() == own, _size(entry))
        for root in roots()
        for entry in _entries(root)
    ]


def prune() -> list[Path]:
    """Remove the runtimes no process uses (never this process's own); what was removed.

    Under the launcher's <root>/.lock, so no launcher extracts meanwhile; a root whose lock
    another warren holds past the timeout, or that cannot be opened, is skipped."""
    removed = []
    for root in roots():
        with ExitStack() as stack:
            try:
                stack.enter_context(locked(root / ".lock", _LOCK_TIMEOUT, record_pid=False))
            except (LockTimeout, OSError):
                continue
            for entry in _entries(root):
                if entry.resolve() != _own() and _remove_unused(root, entry):
                    removed.append(entry)
    return removed


def _remove_unused(root: Path, path: Path) -> bool:
    with _held(path) as free:
        if not free:
            return False  # a warren runs from it, or it is gone
        aside = root / f".tmp-old-{path.name[:16]}-{os.getpid()}"
        try:
            os.rename(path, aside)
        except OSError:
            return False
    shutil.rmtree(aside, ignore_errors=True)
    return True
