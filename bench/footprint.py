"""6. Size: the one file against the upstream artifacts it carries (as fetched and verified)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from warren_bundle.payload.format import Payload

from .context import REPO, Bench
from .rows import Row, Target

SIZE_TARGET = Target("ratio", 1.25)
DOWNLOADS = REPO / "build" / "downloads"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def carried_artifacts(payload: Payload, cache: Path = DOWNLOADS) -> tuple[list[Path], list[str]]:
    """The artifacts the manifest's provenance names, found in the fetch cache by name and hash."""
    found, missing = [], []
    artifacts: list[dict[str, Any]] = list(payload.manifest.provenance.get("artifacts") or [])
    for art in artifacts:
        name, want = str(art.get("name")), str(art.get("sha256"))
        match = next(
            (p for p in sorted(cache.rglob(name)) if p.is_file() and _sha256(p) == want), None
        )
        if match is None:
            missing.append(name)
        else:
            found.append(match)
    return found, missing


def measure(bench: Bench, payload: Payload) -> list[Row]:
    mb = 1e6
    exe = bench.exe.stat().st_size / mb
    floor = bench.floor_exe.stat().st_size / mb
    launcher = exe - payload.size / mb
    found, missing = carried_artifacts(payload)
    carried = sum(p.stat().st_size for p in found) / mb if found and not missing else None
    names = ", ".join(p.name for p in found)
    rows = [
        Row(
            "size",
            "the one file",
            exe,
            "MB",
            f"the artifacts it carries ({names})" if carried else "the artifacts it carries",
            carried,
            SIZE_TARGET,
            note=f"not in {DOWNLOADS.relative_to(REPO)}: {', '.join(missing)}" if missing else "",
            detail={"artifacts": [str(p.relative_to(REPO)) for p in found]},
        ),
        Row(
            "size",
            "its payload (zstd tar of bin/*)",
            payload.size / mb,
            "MB",
            "the artifacts it carries",
            carried,
            detail={"uncompressed_mb": sum(f.size for f in payload.manifest.files) / mb},
        ),
        Row(
            "size",
            "the one file without its payload (launcher)",
            launcher,
            "MB",
            "hello-world click app, same spec",
            floor,
        ),
    ]
    return rows
