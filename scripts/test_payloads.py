#!/usr/bin/env python3
"""Build (or find cached) the three frozen warrens the upgrade tests walk through.

containerd 1.6.20 (bookworm: the default staging in build/payload/linux-<arch>), 1.7.24 (trixie)
and 2.1.9 (sid), each paired with bookworm's runc (one that runs on this Debian 12 host), each
packed into one file with this tree's launcher and runtime (make's LAUNCHER and RUNTIME_TREE). The
staged payloads are cached outside the clone under $WARREN_TEST_CACHE
(/var/cache/warren-test/upgrades); the files are packed again whenever the launcher or the runtime
is newer (a few seconds each).

    scripts/test_payloads.py --launcher L --runtime DIR   # print {version: exe} as JSON
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("WARREN_TEST_CACHE") or "/var/cache/warren-test/upgrades")
PY = REPO / ".venv" / "bin" / "python"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
# (label, Debian suite for containerd or None for the default staging)
SUITES = [("1.6", None), ("1.7", "trixie"), ("2.1", "sid")]


def _stage(suite: str | None) -> Path:
    if suite is None:
        staged = REPO / "build" / "payload" / f"linux-{ARCH}"
        args = ["--debian-suite", "bookworm"]
    else:
        # "-node": staged with the node parts (bin/cni/*, bin/sandbox/pause.tar), which the
        # CRI walk of tests/integration/test_cri.py runs on through the frozen 2.x file.
        staged = CACHE / f"stage-{suite}-node"
        args = ["--debian-suite", suite]
    if not (staged / "payload.tar.zst").is_file():
        subprocess.run(
            [
                str(PY),
                str(REPO / "scripts" / "fetch_and_verify.py"),
                *("--source", "debian", *args, "--debian-runc-suite", "bookworm"),
                *("--out", str(staged), "--level", "3"),
            ],
            check=True,
            cwd=REPO,
        )
    return staged


def _sources_hash() -> str:
    h = hashlib.sha256()
    files = sorted(REPO.glob("warren_bundle/**/*.py")) + sorted(REPO.glob("build/spec/*"))
    for path in files:
        h.update(str(path.relative_to(REPO)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _key(staged: Path) -> str:
    return hashlib.sha256((staged / "manifest.json").read_bytes()).hexdigest()[:16]


LAUNCHER = REPO / "build" / "launcher" / f"warren-launcher-{ARCH}"
RUNTIME = REPO / "build" / "runtime" / f"warren-linux-{ARCH}-onedir"


def build(launcher: Path = LAUNCHER, runtime: Path = RUNTIME) -> dict[str, Path]:
    """{containerd version: one file}, packing those older than the launcher or the runtime
    (make's LAUNCHER and RUNTIME_TREE: `make launcher runtime` builds them)."""
    if not launcher.is_file() or not (runtime / ".loader").is_file():
        raise SystemExit(f"{launcher} or {runtime} is missing: run 'make launcher runtime'")
    CACHE.mkdir(parents=True, exist_ok=True)
    newest = max((launcher.stat().st_mtime, (runtime / ".loader").stat().st_mtime))
    exes: dict[str, Path] = {}
    for _label, suite in SUITES:
        staged = _stage(suite)
        version = json.loads((staged / "manifest.json").read_text())["containerd_version"]
        exe = CACHE / _key(staged) / f"warren-{version}"
        exes[version] = exe
        if not exe.is_file() or exe.stat().st_mtime < newest:
            subprocess.run(
                [
                    str(PY),
                    str(REPO / "scripts" / "onefile.py"),
                    "pack",
                    *("--launcher", str(launcher), "--runtime", str(runtime)),
                    *("--payload-dir", str(staged), "--out", str(exe)),
                ],
                check=True,
                stdout=sys.stderr,
            )
    drop_stale(CACHE, {exe.parent for exe in exes.values()})
    return exes


def drop_stale(cache: Path, keep: set[Path]) -> None:
    """The key dirs in `cache` of older inputs (every source edit makes new ones): only `keep`
    stay (scripts/next_release.py's cache too)."""
    import re
    import shutil

    for entry in cache.iterdir():
        if re.fullmatch(r"[0-9a-f]{16}", entry.name) and entry not in keep:
            shutil.rmtree(entry, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launcher", type=Path, default=LAUNCHER, help="make's LAUNCHER")
    parser.add_argument("--runtime", type=Path, default=RUNTIME, help="make's RUNTIME_TREE")
    args = parser.parse_args()
    found = build(args.launcher.absolute(), args.runtime.absolute())
    json.dump({k: str(v) for k, v in found.items()}, sys.stdout, indent=2)
    print()
