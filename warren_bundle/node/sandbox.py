"""The sandbox (pause) image the payload carries: imported into k8s.io at every start (when it
is not there already) and labelled pinned, so the kubelet's image GC never removes it and no
pod start ever needs a registry."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from warren_bundle.images import ArchiveResult, ctr_import
from warren_bundle.runtime.childenv import child_env

NAMESPACE = "k8s.io"
PINNED_LABEL = "io.cri-containerd.pinned=pinned"
# ctr's own deadline for each call: a containerd stopped meanwhile must not leave a ctr waiting.
CTR_TIMEOUT = 60.0


def carried(version_dir: Path) -> dict[str, Any] | None:
    """{"ref", "file", ...} of the sandbox image in this version dir's stamp, if it has one."""
    from warren_bundle.payload.format import Manifest
    from warren_bundle.store.stamp import read_stamp_in

    stamp = read_stamp_in(version_dir)
    if stamp is None or not isinstance(stamp.get("manifest"), dict):
        return None
    image = Manifest.from_dict(stamp["manifest"]).sandbox_image
    if image is None or not (version_dir / str(image["file"])).is_file():
        return None
    return image


def sandbox_ref(version_dir: Path) -> str | None:
    image = carried(version_dir)
    return str(image["ref"]) if image else None


def _ctr(ctr: Path, socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ctr), "--address", socket, "--timeout", f"{CTR_TIMEOUT:g}s", "-n", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=CTR_TIMEOUT + 10,
        env=child_env(),
    )


def _label_pinned(ctr: Path, socket: str, ref: str) -> str | None:
    done = _ctr(ctr, socket, "images", "label", ref, PINNED_LABEL)
    return None if done.returncode == 0 else (done.stderr.strip() or f"ctr exit {done.returncode}")


def _state(ctr: Path, socket: str, ref: str) -> tuple[bool, bool]:
    """(present, pinned) from one `ctr images ls name==REF` (its LABELS column)."""
    done = _ctr(ctr, socket, "images", "ls", f"name=={ref}")
    rows = [line.split() for line in done.stdout.splitlines()[1:]] if done.returncode == 0 else []
    row = next((r for r in rows if r and r[0] == ref), None)
    return row is not None, row is not None and PINNED_LABEL in row[-1]


def ensure_imported(version_dir: Path, socket: str) -> ArchiveResult | None:
    """Import and pin the carried sandbox image unless it is there and pinned already."""
    image = carried(version_dir)
    if image is None:
        return None
    ref, archive = str(image["ref"]), version_dir / str(image["file"])
    ctr = version_dir / "ctr"
    started = time.monotonic()
    present, pinned = _state(ctr, socket, ref)
    if present and pinned:
        note = f"sandbox image {ref} present in {NAMESPACE} and pinned"
        return ArchiveResult(str(archive), "cached", [NAMESPACE], [ref], note=note)
    result = ArchiveResult(str(archive), "imported", [NAMESPACE], [ref], note="pinned")
    try:
        if not present:
            ctr_import(ctr, socket, NAMESPACE, archive, timeout=CTR_TIMEOUT)
        error = _label_pinned(ctr, socket, ref)
    except Exception as exc:  # an ImageImportError, or ctr itself failing to run
        error = str(getattr(exc, "message", exc))
    if error:
        result.status, result.error = "failed", f"sandbox image {ref}: {error}"
    result.duration_s = time.monotonic() - started
    return result
