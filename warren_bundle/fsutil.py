"""File writes that a crash cannot leave half done, and file hashing."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def atomic_write(
    path: Path, data: bytes | str, mode: int = 0o644, *, durable: bool = False
) -> None:
    """Replace `path` with `data` in one step (temp file + rename), creating its parent.

    `durable` also fsyncs the file and its directory: for what must survive a power cut (the
    extraction stamp, containerd's config), not for status files rewritten every few seconds.
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(raw)
            if durable:
                fp.flush()
                os.fsync(fp.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_json(path: Path, data: Any, mode: int = 0o644) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    import hashlib  # loads libcrypto: kept off the path of `warren version`

    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while chunk := fp.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
