"""Images that arrive while containerd runs, and which archives are trusted.

After the import at start (airgap.auto_import), the same thread polls <data-dir>/images every
POLL_S seconds and imports an archive that is new or changed (by size and mtime) once it is
complete: its size and mtime the same on two polls in a row. `*.partial` files (and hidden ones)
are never archives, so a copy that ends in a rename is picked up whole. Results go into the
same <run-dir>/images.json that `warren images status` reads, one entry per archive.

Trusted archives: when <data-dir>/images/SHA256SUMS exists (sha256sum's format), only archives
listed there whose SHA-256 matches are imported; any other is reported as "untrusted" and left
alone.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warren_bundle.fsutil import read_json, write_json
from warren_bundle.images import DEFAULT_NAMESPACES, ArchiveResult, find_archives
from warren_bundle.paths import Paths

POLL_S = 2.0
SUMS_FILE = "SHA256SUMS"
_SUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


# --- trust ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sums:
    """SHA256SUMS of an images dir; `present` False when there is none (all archives trusted)."""

    present: bool
    digests: dict[str, str]
    error: str | None = None

    def verdict(self, archive: Path) -> str | None:
        """None when `archive` may be imported, else why not (one line)."""
        if not self.present:
            return None
        if self.error:
            return f"{SUMS_FILE} cannot be used ({self.error}); nothing is imported until it can"
        wanted = self.digests.get(archive.name)
        if wanted is None:
            return f"not listed in {SUMS_FILE}; left alone"
        from warren_bundle.fsutil import sha256_file

        if sha256_file(archive) != wanted:
            return f"its SHA-256 does not match {SUMS_FILE}; left alone"
        return None


def load_sums(images_dir: Path) -> Sums:
    path = images_dir / SUMS_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return Sums(False, {})
    except OSError as exc:
        return Sums(True, {}, exc.strerror or str(exc))
    with os.fdopen(fd, "rb") as fp:
        raw = fp.read(1 << 20)
    digests: dict[str, str] = {}
    for n, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _SUM_LINE.match(line.strip())
        if not match:
            return Sums(True, {}, f"line {n} is not '<sha256>  <file>'")
        name = match.group(2).removeprefix("./")
        digests[name] = match.group(1).lower()
    return Sums(True, digests)


def sums_key(images_dir: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(images_dir / SUMS_FILE)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


# --- the watch ------------------------------------------------------------------------------------


def _stat(archive: Path) -> tuple[int, int] | None:
    try:
        st = archive.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def wait_complete(archive: Path, should_continue: Callable[[], bool], quiet_s: float = 1.0) -> bool:
    """For the import at start: True once `archive` is complete (not modified for `quiet_s`, or
    the same size and mtime `quiet_s` apart); False if it vanished or a stop was asked."""
    while should_continue():
        before = _stat(archive)
        if before is None:
            return False
        if time.time() - before[1] / 1e9 >= quiet_s:
            return True
        time.sleep(quiet_s)
        if _stat(archive) == before:
            return True
    return False


CACHE_FILE = ".images-imported.json"


def cache_path(paths: Paths) -> Path:
    return paths.data_dir / CACHE_FILE


# --- the cache of imported archives -----------------------------------------------------------


class ImportCache:
    """name -> size, mtime_ns and what was imported where; a changed file is imported again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = read_json(path) or {}
        archives = data.get("archives")
        self.entries: dict[str, dict[str, Any]] = archives if isinstance(archives, dict) else {}

    @staticmethod
    def _key(archive: Path) -> tuple[int, int]:
        st = archive.stat()
        return st.st_size, st.st_mtime_ns

    def lookup(self, archive: Path, namespaces: Iterable[str]) -> dict[str, Any] | None:
        entry = self.entries.get(archive.name)
        if not entry:
            return None
        size, mtime_ns = self._key(archive)
        wanted = set(namespaces)
        if entry.get("size") != size or entry.get("mtime_ns") != mtime_ns:
            return None
        if not wanted.issubset(entry.get("namespaces") or []):
            return None
        return entry

    def record(self, archive: Path, result: ArchiveResult) -> None:
        size, mtime_ns = self._key(archive)
        self.entries[archive.name] = {
            "size": size,
            "mtime_ns": mtime_ns,
            "namespaces": result.namespaces,
            "images": result.images,
            "imported_at": time.time(),
        }

    def save(self) -> None:
        write_json(self.path, {"archives": self.entries})


class Watcher:
    """One poll at a time (`poll()`), so tests can drive it; `run()` loops until told to stop."""

    def __init__(
        self,
        paths: Paths,
        socket: str,
        on_result: Callable[[ArchiveResult], None],
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.paths = paths
        self.socket = socket
        self.on_result = on_result
        self.ready = ready
        self.cache = ImportCache(cache_path(paths))
        self.seen: dict[str, tuple[int, int]] = {}  # name -> (size, mtime_ns) at the last poll
        # name -> (file stat, SHA256SUMS stat) of a result that needs no retry until one changes
        self.settled: dict[str, tuple[tuple[int, int], tuple[int, int] | None]] = {}

    def settle(self, result: ArchiveResult) -> None:
        """An archive the import at start already dealt with (imported, cached, failed,
        untrusted) is not looked at again until it or SHA256SUMS changes."""
        if result.status == "skipped":
            return
        archive = Path(result.archive)
        key = _stat(archive)
        if key is not None:
            self.settled[archive.name] = (key, sums_key(archive.parent))

    def poll(self) -> list[ArchiveResult]:
        images_dir = self.paths.images_dir
        sums_now = sums_key(images_dir)
        current: dict[str, tuple[int, int]] = {}
        due: list[Path] = []
        for archive in find_archives(images_dir):
            key = _stat(archive)
            if key is None:
                continue
            current[archive.name] = key
            if self.settled.get(archive.name) == (key, sums_now):
                continue
            if self.seen.get(archive.name) != key:
                continue  # new or still changing: wait for one more poll with the same stat
            if self.cache.lookup(archive, DEFAULT_NAMESPACES) is not None:
                self.settled[archive.name] = (key, sums_now)
                continue
            due.append(archive)
        self.seen = current
        if not due or not self.ready():
            return []
        sums = load_sums(images_dir)
        results = []
        for archive in due:
            result = self._import(archive, sums)
            key = _stat(archive)
            if key is not None and key == current.get(archive.name):
                self.settled[archive.name] = (key, sums_now)
            results.append(result)
            self.on_result(result)
        return results

    def _import(self, archive: Path, sums: Sums) -> ArchiveResult:
        import subprocess

        from warren_bundle.images import import_archive

        try:
            reason = sums.verdict(archive)
            if reason is not None:
                return ArchiveResult(str(archive), "untrusted", error=reason)
            result = import_archive(
                self.paths.binary("ctr"), self.socket, archive, DEFAULT_NAMESPACES
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return ArchiveResult(str(archive), "failed", error=f"cannot import: {exc}")
        if result.status == "imported":
            result.note = "arrived while running"
            self.cache.record(archive, result)
            self.cache.save()
        return result

    def run(self, should_continue: Callable[[], bool], interval: float = POLL_S) -> None:
        while should_continue():
            try:
                self.poll()
            except Exception as exc:
                self.on_result(
                    ArchiveResult(str(self.paths.images_dir), "failed", error=f"watch: {exc}")
                )
            deadline = time.monotonic() + interval
            while should_continue() and time.monotonic() < deadline:
                time.sleep(min(0.2, interval))
