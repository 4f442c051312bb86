#!/usr/bin/env python3
"""Build (or find cached) the next release's static file, for the VM layer's warren-only upgrade.

The next release is this tree's sources with the patch version bumped (0.1.0 -> 0.1.1), frozen
the way `make` builds dist/warren-linux-<arch>-static: the runtime venv's PyInstaller in onedir
mode, the runtime made self-contained (scripts/onefile.py runtime), packed behind the launcher with
the static payload. The payload is the same, so installing it over the release changes
warren alone: the bullseye guest (tests/vm/harness.py), where the containerd-1.7 warren of
scripts/test_payloads.py cannot run, upgrades to it with a container running. Cached outside the
clone under $WARREN_TEST_CACHE/next-static/<key> (/var/cache/warren-test), keyed by a hash of
the sources, the payload's manifest and the venv's Python.

    scripts/next_release.py --runtime-venv DIR --launcher FILE --payload-dir DIR   # prints its path
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("WARREN_TEST_CACHE") or "/var/cache/warren-test") / "next-static"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
NAME = f"warren-linux-{ARCH}"
VERSION_LINE = re.compile(r'(?m)^__version__ = "(\d+)\.(\d+)\.(\d+)"$')


def next_version(init_text: str) -> str:
    """The patch release after the one warren_bundle/__init__.py declares."""
    found = VERSION_LINE.search(init_text)
    if found is None:
        raise SystemExit('warren_bundle/__init__.py has no __version__ = "X.Y.Z" line')
    major, minor, patch = found.groups()
    return f"{major}.{minor}.{int(patch) + 1}"


sys.path.insert(0, str(REPO / "scripts"))
from test_payloads import _sources_hash, drop_stale  # noqa: E402


def _key(venv: Path, launcher: Path, payload_dir: Path) -> str:
    h = hashlib.sha256(_sources_hash().encode())
    h.update(launcher.read_bytes())
    h.update((REPO / "scripts" / "onefile.py").read_bytes())
    h.update((payload_dir / "manifest.json").read_bytes())  # it names every file's hash
    h.update(str((venv / "bin" / "python").resolve()).encode())
    return h.hexdigest()[:16]


def _copy_sources(src: Path, version: str) -> None:
    """warren_bundle and the spec, as in the tree, with `version` declared."""
    shutil.rmtree(src, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "warren_bundle", src / "warren_bundle", ignore=ignore)
    shutil.copytree(REPO / "build" / "spec", src / "build" / "spec", ignore=ignore)
    init = src / "warren_bundle" / "__init__.py"
    init.write_text(VERSION_LINE.sub(f'__version__ = "{version}"', init.read_text(), count=1))


def build(venv: Path, launcher: Path, payload_dir: Path) -> Path:
    out = CACHE / _key(venv, launcher, payload_dir) / f"{NAME}-static"
    if out.is_file():
        return out
    version = next_version((REPO / "warren_bundle" / "__init__.py").read_text())
    work = CACHE / "work"
    src = work / "src"
    _copy_sources(src, version)
    # As the Makefile's REPRODUCIBLE, with its own PyInstaller cache (--clean empties it).
    env = dict(
        os.environ,
        PYTHONHASHSEED="0",
        WARREN_ONEDIR="1",
        WARREN_EXE_NAME=NAME,
        PYINSTALLER_CONFIG_DIR=str(work / "config"),
        PYINSTALLER_ZLIB_COMPRESSION_LEVEL="0",  # the Makefile's PYZ_STORED
    )
    if "SOURCE_DATE_EPOCH" not in env:  # the commit's time, as the Makefile's REPRODUCIBLE
        git = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=REPO,
                             stdout=subprocess.PIPE, text=True, check=False)  # fmt: skip
        env["SOURCE_DATE_EPOCH"] = git.stdout.strip() or "315532800"  # 1980: zip's first year
    subprocess.run(
        [str(venv / "bin" / "pyinstaller"), "--noconfirm", "--clean", "--log-level", "WARN",
         "--workpath", str(work / "build"), "--distpath", str(work / "dist"),
         str(src / "build" / "spec" / "warren.spec")],
        check=True, cwd=src, env=env, stdout=sys.stderr,
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tree = work / "dist" / f"{NAME}-onedir"
    onefile = str(REPO / "scripts" / "onefile.py")
    subprocess.run([sys.executable, onefile, "runtime", str(tree)], check=True, stdout=sys.stderr)
    subprocess.run(
        [sys.executable, onefile, "pack", "--launcher", str(launcher), "--runtime", str(tree),
         "--payload-dir", str(payload_dir), "--out", str(tmp)],
        check=True, stdout=sys.stderr,
    )  # fmt: skip
    said = subprocess.run([str(tmp), "version"], check=True, stdout=subprocess.PIPE, text=True)
    first = said.stdout.splitlines()[0] if said.stdout else ""
    if first != f"warren {version} (static build)":
        tmp.unlink()
        raise SystemExit(f"the next release says {first!r}, not warren {version} (static build)")
    tmp.rename(out)
    drop_stale(CACHE, {out.parent})
    shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-venv", type=Path, required=True, help="make's RUNTIME_VENV")
    parser.add_argument("--launcher", type=Path, required=True, help="make's LAUNCHER")
    parser.add_argument("--payload-dir", type=Path, required=True, help="its STATIC_PAYLOAD_DIR")
    args = parser.parse_args()
    # Absolute: PyInstaller runs in the copy of the sources.
    print(
        build(args.runtime_venv.absolute(), args.launcher.absolute(), args.payload_dir.absolute())
    )


if __name__ == "__main__":
    main()
