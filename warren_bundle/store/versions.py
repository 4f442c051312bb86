"""Extracted versions: what is kept, what is pinned, what is in use (the upgrade rules: compat.py).

Each payload lives in <data>/versions/<digest>/ (extract.py); bin links to the current one. A
version is in use while a running shim (or containerd) came from it: its /proc/<pid>/exe lies
in that dir ("(deleted)" stripped), or a task bundle's shim-binary-path names a file in it.
Only versions nobody uses are pruned, and never the current or the previous one (rollback).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warren_bundle.fsutil import atomic_write, read_json, read_small
from warren_bundle.paths import Paths
from warren_bundle.store.compat import parse_version

if TYPE_CHECKING:
    from warren_bundle.payload.format import Payload

# --- what is extracted ------------------------------------------------------------------------


@dataclass
class Version:
    name: str
    path: Path
    containerd_version: str | None
    runc_version: str | None
    current: bool
    previous: bool
    pinned: bool
    size_bytes: int
    used_by: list[int] = field(default_factory=list)  # pids of running shims / containerd

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.name,
            "path": str(self.path),
            "containerd_version": self.containerd_version,
            "runc_version": self.runc_version,
            "current": self.current,
            "previous": self.previous,
            "pinned": self.pinned,
            "size_bytes": self.size_bytes,
            "in_use_by": self.used_by,
        }


def current_name(paths: Paths) -> str | None:
    from warren_bundle.store.extract import version_link_target

    return version_link_target(paths)


def previous_name(paths: Paths) -> str | None:
    data = read_json(paths.previous_file)
    name = data.get("digest") if data else None
    return (
        name
        if isinstance(name, str) and (paths.version_dir(name) / ".manifest.json").exists()
        else None
    )


def config_target(paths: Paths, payload: Payload) -> tuple[str, Path]:
    """The containerd version and version dir a start would write the config for: the pinned
    version (after a rollback) when one is pinned and extracted, else this payload's."""
    from warren_bundle.store.stamp import read_stamp_in

    pinned = pinned_name(paths)
    if pinned is not None and pinned != payload.digest:
        stamp = read_stamp_in(paths.version_dir(pinned)) or {}
        version = stamp.get("containerd_version")
        if isinstance(version, str):
            return version, paths.version_dir(pinned)
    return payload.manifest.containerd_version, paths.version_dir(payload.digest)


def pinned_name(paths: Paths) -> str | None:
    data = read_json(paths.pin_file)
    name = data.get("digest") if data else None
    return name if isinstance(name, str) else None


def _dir_size(path: Path) -> int:
    total = 0
    for entry in path.iterdir():
        try:
            st = entry.lstat()
        except OSError:
            continue
        total += st.st_blocks * 512
    return total


def _stamp(path: Path) -> dict[str, Any]:
    return read_json(path / ".manifest.json") or {}


def _under(exe: str, versions: Path) -> str | None:
    """The version name of an executable inside <versions>/<name>/, else None."""
    path = Path(exe.removesuffix(" (deleted)"))
    if path.parent.parent == versions:
        return path.parent.name
    return None


def in_use(paths: Paths) -> dict[str, list[int]]:
    """Version name → pids of running processes that came from it (shims, containerd, runc)."""
    versions = paths.versions_dir
    used: dict[str, list[int]] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        name = _under(exe, versions)
        if name is not None:
            used.setdefault(name, []).append(pid)
    # containerd ≥1.7 records the shim it started in each task bundle.
    for record in paths.state_dir.glob("io.containerd.runtime.v2.task/*/*/shim-binary-path"):
        raw = read_small(record, limit=PATH_LIMIT)
        if raw is None:
            continue
        name = _under(raw.decode(errors="replace").strip(), versions)
        alive = _bundle_alive(record.parent)
        if name is not None and alive is not None:
            used.setdefault(name, [])
            if alive not in used[name]:
                used[name].append(alive)
    return {k: sorted(v) for k, v in used.items()}


# A task bundle's records (containerd and runc write them: a pid, a shim's path), read through
# fsutil.read_small: something else in their place (a FIFO, a device, a huge file) is no record.
PID_LIMIT = 32
PATH_LIMIT = 4096


def _bundle_pid(path: Path) -> int | None:
    raw = read_small(path, limit=PID_LIMIT)
    try:
        pid = int(raw) if raw is not None else 0
    except ValueError:
        return None
    return pid if pid > 0 and os.path.exists(f"/proc/{pid}") else None


def _bundle_alive(bundle: Path) -> int | None:
    """The pid of the bundle's shim (or its init process) while it runs."""
    for name in ("shim.pid", "init.pid"):
        pid = _bundle_pid(bundle / name)
        if pid is not None:
            return pid
    return None


def running_containers(paths: Paths) -> int:
    """Tasks whose init process still runs (each bundle under containerd's state dir)."""
    bundles = paths.state_dir.glob("io.containerd.runtime.v2.task/*/*")
    return sum(1 for bundle in bundles if _bundle_pid(bundle / "init.pid") is not None)


def list_versions(paths: Paths) -> list[Version]:
    if not paths.versions_dir.is_dir():
        return []
    current, previous, pinned = current_name(paths), previous_name(paths), pinned_name(paths)
    used = in_use(paths)
    found = []
    for path in sorted(paths.versions_dir.iterdir()):
        if path.name.startswith(".") or not path.is_dir() or path.is_symlink():
            continue
        stamp = _stamp(path)
        found.append(
            Version(
                path.name,
                path,
                stamp.get("containerd_version"),
                stamp.get("runc_version"),
                path.name == current,
                path.name == previous,
                path.name == pinned,
                _dir_size(path),
                used.get(path.name, []),
            )
        )
    return found


def prune(paths: Paths, keep_previous: bool = True) -> list[Version]:
    """Remove version dirs that are not current, not previous, and that no running process
    came from; the removed ones. Under the extraction lock: nobody is extracting meanwhile."""
    from warren_bundle.store.extract import extract_lock

    removed: list[Version] = []
    if not paths.versions_dir.is_dir():
        return removed
    with extract_lock(paths, 30.0):
        for version in list_versions(paths):
            if version.current or version.pinned or version.used_by:
                continue
            if keep_previous and version.previous:
                continue
            shutil.rmtree(version.path)
            removed.append(version)
    return removed


def highest_run(paths: Paths) -> str | None:
    data = read_json(paths.versions_dir / ".highest.json")
    value = data.get("containerd_version") if data else None
    return value if isinstance(value, str) else None


def last_run(paths: Paths) -> tuple[str | None, str | None]:
    """(digest, containerd version) of the last containerd that became ready on this root."""
    data = read_json(paths.versions_dir / ".last-run.json") or {}
    digest, version = data.get("digest"), data.get("containerd_version")
    return (
        digest if isinstance(digest, str) else None,
        version if isinstance(version, str) else None,
    )


def record_run(paths: Paths, version: str, digest: str | None = None) -> None:
    """Remember the containerd that ran on this root last, and the highest one (what a rollback
    must respect)."""
    if digest is not None:
        atomic_write(
            paths.versions_dir / ".last-run.json",
            json.dumps({"digest": digest, "containerd_version": version, "at": time.time()}) + "\n",
            0o644,
        )
    top = parse_version(highest_run(paths))
    mine = parse_version(version)
    if mine is None or (top is not None and top >= mine):
        return
    atomic_write(
        paths.versions_dir / ".highest.json",
        json.dumps({"containerd_version": version, "at": time.time()}) + "\n",
        0o644,
    )


def pin(paths: Paths, name: str | None) -> None:
    if name is None:
        paths.pin_file.unlink(missing_ok=True)
        return
    atomic_write(paths.pin_file, json.dumps({"digest": name, "at": time.time()}) + "\n", 0o644)


def human_size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
