"""The sandbox (pause) image the payload carries: imported into k8s.io at every start (when it
is not there already) and labelled pinned, so the kubelet's image GC never removes it and no
pod start ever needs a registry."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from warren_bundle.images import ArchiveResult, ctr_image_list, ctr_import
from warren_bundle.runtime.childenv import child_env

NAMESPACE = "k8s.io"
PINNED_LABEL = "io.cri-containerd.pinned=pinned"


def carried(version_dir: Path) -> dict[str, Any] | None:
    """{"ref", "file", ...} of the sandbox image in this version dir's stamp, if it has one."""
    from warren_bundle.extract import read_stamp_in
    from warren_bundle.payload.format import Manifest

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


def _label_pinned(ctr: Path, socket: str, ref: str) -> str | None:
    done = subprocess.run(
        [str(ctr), "--address", socket, "-n", NAMESPACE, "images", "label", ref, PINNED_LABEL],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    return None if done.returncode == 0 else (done.stderr.strip() or f"ctr exit {done.returncode}")


def _is_pinned(ctr: Path, socket: str, ref: str) -> bool:
    done = subprocess.run(
        [str(ctr), "--address", socket, "-n", NAMESPACE, "images", "ls", f"name=={ref}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    return done.returncode == 0 and PINNED_LABEL in done.stdout


def ensure_imported(version_dir: Path, socket: str) -> ArchiveResult | None:
    """Import and pin the carried sandbox image unless it is there and pinned already."""
    image = carried(version_dir)
    if image is None:
        return None
    ref, archive = str(image["ref"]), version_dir / str(image["file"])
    ctr = version_dir / "ctr"
    started = time.monotonic()
    present = ctr_image_list(ctr, socket, NAMESPACE) or set()
    if ref in present and _is_pinned(ctr, socket, ref):
        note = f"sandbox image {ref} present in {NAMESPACE} and pinned"
        return ArchiveResult(str(archive), "cached", [NAMESPACE], [ref], note=note)
    result = ArchiveResult(str(archive), "imported", [NAMESPACE], [ref], note="pinned")
    try:
        if ref not in present:
            ctr_import(ctr, socket, NAMESPACE, archive)
        error = _label_pinned(ctr, socket, ref)
    except Exception as exc:  # an ImageImportError, or ctr itself failing to run
        error = str(getattr(exc, "message", exc))
    if error:
        result.status, result.error = "failed", f"sandbox image {ref}: {error}"
    result.duration_s = time.monotonic() - started
    return result
