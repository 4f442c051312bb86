"""Signed one files for `warren upgrade`'s tests: this tree's launcher and runtime (make build's)
packed with a release key and one of three payloads, and release folders of them.

- "current": the default staging (build/payload/linux-<arch>, containerd 1.6.20 on Debian 12);
- "next": trixie's containerd 1.7.24 (make test-payloads's staging), the next supported step;
- "broken": the default staging with bin/containerd replaced by a script that answers
  `--version` as 1.6.20 and exits at once otherwise (format.py takes any bytes whose SHA-256 the
  manifest records; the same containerd version, so the compat rule lets it through).

Packed files are cached under /var/cache/warren-test/upgrade-releases/<key>, the key a hash of
every input's content (launcher, runtime tree, payload descriptor, public key, onefile.py): never
reused by mtime, and built aside then renamed into place, so worktrees sharing the cache do not
see half-written files. The test key is made once in the cache (it signs nothing anyone installs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from warren_bundle.hostinfo import host_arch

from support import STAGED, make_release_key, public_key, sign_release

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("WARREN_TEST_CACHE") or "/var/cache/warren-test") / "upgrade-releases"
LAUNCHER = REPO / "build" / "launcher" / f"warren-launcher-{host_arch()}"
RUNTIME = REPO / "build" / "runtime" / f"warren-linux-{host_arch()}-onedir"
NEXT_STAGED = CACHE.parent / "upgrades" / "stage-trixie-node"
ASSET = f"warren-linux-{host_arch()}"
BROKEN_CONTAINERD = b"""#!/bin/sh
# A containerd that cannot start: warren upgrade's tests go back from it.
if [ "${1:-}" = --version ] || [ "${1:-}" = -v ]; then
    echo "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1"
    exit 0
fi
echo "containerd: broken on purpose (a test release)" >&2
exit 1
"""


def missing_inputs() -> list[str]:
    wanted = [LAUNCHER, RUNTIME / ".loader", STAGED / "payload.tar.zst"]
    wanted.append(NEXT_STAGED / "payload.tar.zst")
    return [str(p) for p in wanted if not p.exists()]


def test_key() -> Path:
    """The cache's test release key (made once; an atomic rename settles a race)."""
    key = CACHE / "test-release-key.pem"
    if not key.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            made = make_release_key(Path(tmp) / "key.pem")
            if not key.exists():
                os.replace(made, key)
    return key


def _tree_hash(h: Any, root: Path) -> None:
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(hashlib.sha256(path.read_bytes()).digest())


def _broken_stage(dest: Path) -> Path:
    """The default staging with the script containerd, packed (payload.tar.zst + payload.json)."""
    from warren_bundle.payload.format import pack

    shutil.copytree(STAGED / "bin", dest / "bin", symlinks=True)
    (dest / "bin" / "containerd").write_bytes(BROKEN_CONTAINERD)
    manifest = json.loads((STAGED / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["name"] == "containerd":
            entry["sha256"] = hashlib.sha256(BROKEN_CONTAINERD).hexdigest()
            entry["size"] = len(BROKEN_CONTAINERD)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    pack(dest, level=1)
    return dest


def signed_files() -> dict[str, Path]:
    """{"current", "next", "broken"}: one files carrying the test key (cached by content)."""
    key = test_key()
    pub = public_key(key)
    h = hashlib.sha256()
    for part in (LAUNCHER, REPO / "scripts" / "onefile.py", pub):
        h.update(hashlib.sha256(part.read_bytes()).digest())
    _tree_hash(h, RUNTIME)
    for staged in (STAGED, NEXT_STAGED):
        h.update((staged / "payload.json").read_bytes())
    h.update(BROKEN_CONTAINERD)
    folder = CACHE / h.hexdigest()[:16]
    names = ("current", "next", "broken")
    if not all((folder / n).is_file() for n in names):
        CACHE.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=CACHE))
        try:
            payloads = {
                "current": STAGED,
                "next": NEXT_STAGED,
                "broken": _broken_stage(work / "broken-stage"),
            }
            out = work / "files"
            out.mkdir()
            for name, staged in payloads.items():
                subprocess.run(
                    [sys.executable, str(REPO / "scripts" / "onefile.py"), "pack",
                     "--launcher", str(LAUNCHER), "--runtime", str(RUNTIME),
                     "--payload-dir", str(staged), "--out", str(out / name),
                     "--release-key", str(pub)],
                    check=True, capture_output=True,
                )  # fmt: skip
            with contextlib.suppress(OSError):  # another session put the same files first
                os.rename(out, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    _drop_old(folder)
    return {n: folder / n for n in names}


def _drop_old(keep: Path, age: float = 86400.0) -> None:
    """Remove other key dirs untouched for `age` seconds (each source edit makes a new one of
    ~120 MB; another worktree's current one is younger, so it stays)."""
    import re
    import time

    os.utime(keep)
    for entry in CACHE.iterdir():
        if re.fullmatch(r"[0-9a-f]{16}", entry.name) and entry != keep:
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime > age:
                    shutil.rmtree(entry, ignore_errors=True)


def release_dir(dest: Path, exe: Path, key: Path | None = None) -> Path:
    """dest/ as `make release` publishes it, holding `exe` as this host's file, signed by `key`
    (default: the cache's test key, which the signed files carry)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(exe, dest / ASSET)
    shutil.copyfile(REPO / "scripts" / "install.sh", dest / "install.sh")
    return sign_release(dest, key or test_key())
