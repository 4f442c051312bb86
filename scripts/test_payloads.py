#!/usr/bin/env python3
"""Build (or find cached) the three frozen warrens the upgrade tests walk through.

containerd 1.6.20 (bookworm: the default staging in build/payload/linux-<arch>), 1.7.24 (trixie)
and 2.1.9 (sid), each paired with bookworm's runc (one that runs on this Debian 12 host), each
frozen into one file. Cached outside the clone under $WARREN_TEST_CACHE
(/var/cache/warren-test/upgrades), keyed by a hash of the staged manifest and of the sources that
go into the frozen file: a fresh machine builds them (a few minutes), a second run finds them.

    scripts/test_payloads.py            # build what is missing, print {version: exe} as JSON
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


def _key(staged: Path, sources: str) -> str:
    h = hashlib.sha256((staged / "manifest.json").read_bytes())  # it names every file's hash
    h.update(sources.encode())
    return h.hexdigest()[:16]


def _freeze(staged: Path, version: str, dist: Path) -> subprocess.Popen[bytes]:
    work = CACHE / "work" / version
    env = dict(
        os.environ,
        PYTHONHASHSEED="0",
        WARREN_PAYLOAD_DIR=str(staged),
        WARREN_EXE_NAME=f"warren-{version}",
        # Its own cache: --clean empties it, and the three builds run side by side.
        PYINSTALLER_CONFIG_DIR=str(work / "config"),
    )
    return subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "pyinstaller"),
            *("--noconfirm", "--clean", "--log-level", "WARN"),
            *("--workpath", str(work), "--distpath", str(dist)),
            str(REPO / "build" / "spec" / "warren.spec"),
        ],
        env=env,
        cwd=REPO,
    )


def build() -> dict[str, Path]:
    """{containerd version: frozen warren}, building the missing ones (in parallel)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    sources = _sources_hash()
    exes: dict[str, Path] = {}
    jobs = []
    for _label, suite in SUITES:
        staged = _stage(suite)
        version = json.loads((staged / "manifest.json").read_text())["containerd_version"]
        dist = CACHE / _key(staged, sources)
        exe = dist / f"warren-{version}"
        exes[version] = exe
        if not exe.is_file():
            jobs.append((exe, _freeze(staged, version, dist)))
    for exe, job in jobs:
        if job.wait() != 0 or not exe.is_file():
            raise SystemExit(f"pyinstaller failed for {exe}")
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
    found = build()
    json.dump({k: str(v) for k, v in found.items()}, sys.stdout, indent=2)
    print()
