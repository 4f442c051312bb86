"""A version dir's stamp (.manifest.json, written last): the judge of a complete version dir
by stat calls alone (the fast path), and the re-hash that finds damaged binaries (--verify)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from warren_bundle.fsutil import atomic_write, read_json, sha256_file
from warren_bundle.paths import Paths
from warren_bundle.payload.format import Manifest, Payload
from warren_bundle.store.checks import check_safe, unsafe_file

MANIFEST_STAMP = ".manifest.json"  # in each version dir (and so, through the link, in bin/)
STAMP_FORMAT = 1


# --- the stamp (fast path) --------------------------------------------------------------------


def read_stamp(paths: Paths) -> dict[str, Any] | None:
    """The current version's stamp (read through bin)."""
    return read_stamp_in(paths.bin_dir)


def read_stamp_in(directory: Path) -> dict[str, Any] | None:
    data = read_json(directory / MANIFEST_STAMP)
    return data if data is not None and data.get("format") == STAMP_FORMAT else None


def bin_matches(paths: Paths, payload: Payload) -> bool:
    # Current only in the versioned layout (bin a link into versions/): an old single-dir bin
    # holding this very payload must still take the slow path, which moves it into versions/,
    # or containerd would be started from a version dir that does not exist.
    return paths.bin_dir.is_symlink() and stamp_matches_in(
        paths.bin_dir, payload.digest, payload.manifest
    )


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
            or unsafe_file(st)
            or st.st_size != rec.get("size")
            or st.st_mtime_ns != rec.get("mtime_ns")
        ):
            return False
    return True


def is_current(paths: Paths, payload: Payload) -> bool:
    """True when bin/ holds exactly this payload's binaries, judged by stat calls alone."""
    check_safe(paths)
    return bin_matches(paths, payload)


def write_stamp(directory: Path, payload: Payload) -> None:
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
            ok = not unsafe_file(os.lstat(path)) and sha256_file(path) == entry.sha256
        except OSError:
            ok = False
        if not ok:
            bad.append(entry.name)
    return bad
