"""Streaming the payload's members into a temp dir: hashed while written, fsynced, checked."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from warren_bundle.errors import PayloadError
from warren_bundle.payload.format import MANIFEST_FILE, Manifest, Payload
from warren_bundle.store.checks import os_error_at

if TYPE_CHECKING:
    from warren_bundle.payload.tarstream import MemberStream

# hashlib, queue and threading are imported when a payload is unpacked: the cached check, run
# before every containerd start, never needs them.


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


def _write_member(
    stream: MemberStream, dest: Path, size: int, syncer: _Syncer, mode: int = 0o755
) -> str:
    """Write one member to dest (new file), hashing as it goes; hand it to the syncer."""
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
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    syncer.submit(fd, dest)
    return digest.hexdigest()


def unpack_to(payload: Payload, tmp: Path) -> None:
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
                    if dest.parent != tmp:  # cni/, sandbox/: one level, names from SUBDIRS
                        dest.parent.mkdir(mode=0o755, exist_ok=True)
                    mode = 0o755 if entry.mode & 0o111 else 0o644
                    actual = _write_member(member.stream, dest, entry.size, syncer, mode)
                except OSError as exc:
                    raise os_error_at(exc, dest) from exc
                if actual != entry.sha256:
                    raise PayloadError(
                        f"{member.name} fails its SHA-256 (expected {entry.sha256}, got {actual})"
                    )
                seen.add(member.name)
    finally:
        failures = syncer.finish()
    if failures:
        path, error = failures[0]
        raise os_error_at(error, path) from error
    missing = sorted(set(expected) - seen)
    if missing:
        raise PayloadError(f"{payload.origin} lacks {', '.join(missing)}")
