"""A supervisor's side of versions: which version dir containerd runs from, and what changed.

Before anything is switched, a change containerd does not support is refused (compat.py); a
version `warren rollback` pinned is kept whatever warren starts it. Once the new containerd is
ready: "upgraded containerd 1.6.20 → 1.7.24; 3 containers kept running", the run is recorded
(the last and the highest version on this root) and the version dirs no shim uses are pruned.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from warren_bundle.paths import Paths
from warren_bundle.store import compat, versions

if TYPE_CHECKING:
    from warren_bundle.payload.format import Manifest, Payload
    from warren_bundle.runtime.settings import Timings

Log = Callable[[str], None]
Before = tuple[str | None, str | None]  # (digest, containerd version) that ran last


@dataclass(frozen=True)
class Installed:
    directory: Path  # <data>/versions/<digest>
    digest: str
    containerd: str
    runc: str


def _before(paths: Paths) -> Before:
    from warren_bundle.store.stamp import read_stamp

    # What last ran on this root (a `warren extract` alone changes nothing containerd read).
    last = versions.last_run(paths)
    if last[0] is not None:
        return last
    stamp = read_stamp(paths) or {}
    return stamp.get("digest"), stamp.get("containerd_version")


def _pinned(paths: Paths, payload: Payload, before: Before, log: Log) -> Installed | None:
    from warren_bundle.payload.format import Manifest
    from warren_bundle.store.extract import extract_lock, switch_to
    from warren_bundle.store.stamp import read_stamp_in, stamp_matches_in

    pinned = versions.pinned_name(paths)
    if pinned is None or pinned == payload.digest:
        return None
    pin_dir = paths.version_dir(pinned)
    manifest: Manifest | None
    try:
        manifest = Manifest.from_dict((read_stamp_in(pin_dir) or {})["manifest"])
    except (KeyError, TypeError, ValueError):
        manifest = None
    if manifest is None or not stamp_matches_in(pin_dir, pinned, manifest):
        log(f"the pinned version {pinned[:12]} is gone or damaged; unpinned")
        versions.pin(paths, None)
        return None
    if before[0] != pinned:
        with extract_lock(paths, 30.0):
            switch_to(paths, pinned)
    log(
        f"containerd {manifest.containerd_version} is pinned by 'warren rollback'; this warren "
        f"carries {payload.manifest.containerd_version} ('warren versions --unpin' lets it run)"
    )
    return Installed(pin_dir, pinned, manifest.containerd_version, manifest.runc_version)


def install_version(
    paths: Paths, payload: Payload, force: bool, log: Log, timings: Timings
) -> tuple[Before, Installed]:
    """Extract our payload (or keep the pinned version) and point bin at it; refuse, before
    anything is switched, a change containerd does not support. Also what ran before."""
    from warren_bundle.store.extract import ensure_extracted

    before = _before(paths)
    pinned = _pinned(paths, payload, before, log)
    if pinned is not None:
        return before, pinned
    if before[0] != payload.digest:
        warning = compat.check_upgrade(before[1], payload.manifest.containerd_version, force)
        if warning:
            log(warning)
    result = ensure_extracted(paths, payload)
    timings.extraction_s = result.duration_s
    timings.extraction_cached = result.cached
    installed = Installed(
        paths.version_dir(payload.digest),
        payload.digest,
        payload.manifest.containerd_version,
        payload.manifest.runc_version,
    )
    return before, installed


def after_change(paths: Paths, before: Before, now: Installed, log: Log) -> str | None:
    """Once containerd is ready: record the run; on a change, say what it kept running and
    prune the versions nobody uses. The sentence, when the version changed."""
    with suppress(OSError):
        versions.record_run(paths, now.containerd, now.digest)
    if before[0] is None or before[0] == now.digest:
        return None
    kept = versions.running_containers(paths)
    old = before[1] or "?"
    up = (compat.parse_version(old) or (0, 0, 0)) <= (
        compat.parse_version(now.containerd) or (0, 0, 0)
    )
    said = (
        f"{'upgraded' if up else 'switched'} containerd {old} → {now.containerd}; "
        f"{kept} container{'' if kept == 1 else 's'} kept running"
    )
    log(said)
    try:
        removed = versions.prune(paths)
    except Exception as exc:  # pruning must never fail a start
        log(f"could not prune old versions: {exc}")
        return said
    for version in removed:
        log(
            f"removed unused version {version.containerd_version} ({version.path}, "
            f"{versions.human_size(version.size_bytes)})"
        )
    return said
