"""End to end on the linux-arm64 one file (`make release-arm64`), run here through qemu-user.

Runs only where dist/warren-linux-arm64 exists and this host can run aarch64 programs (binfmt
qemu-aarch64 enabled, or an arm64 host); otherwise it skips, in CI too: CI builds no arm64 file.
The file is dynamic, like the amd64 one: qemu finds the arm64 loader and libraries under
QEMU_LD_PREFIX, the root that froze it (build/cache/arm64-root), unless the host has them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from warren_bundle.payload import elf

from support import REPO, make_paths, short_dir

pytestmark = pytest.mark.e2e

ARM64_EXE = REPO / "dist" / "warren-linux-arm64"
ARM64_DESCRIPTOR = REPO / "build" / "payload" / "linux-arm64" / "payload.json"
ARM64_ROOT = REPO / "build" / "cache" / "arm64-root"
BINFMT_ENTRY = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
LOADER = "lib/ld-linux-aarch64.so.1"


def _binfmt_enabled() -> bool:
    try:
        return BINFMT_ENTRY.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def _skip_reason() -> str | None:
    if not ARM64_EXE.is_file():
        return f"no {ARM64_EXE.relative_to(REPO)}: 'make release-arm64' builds it (root, qemu)"
    if not ARM64_DESCRIPTOR.is_file():
        return f"no {ARM64_DESCRIPTOR.relative_to(REPO)}: 'make release-arm64' stages it"
    if platform.machine() != "aarch64" and not _binfmt_enabled():
        return (
            f"this host cannot run aarch64 programs ({BINFMT_ENTRY} is not enabled): "
            "install qemu-user-static and run 'update-binfmts --enable qemu-aarch64'"
        )
    if not (Path("/") / LOADER).exists() and not (ARM64_ROOT / LOADER).exists():
        return f"no arm64 loader /{LOADER} here or in {ARM64_ROOT.relative_to(REPO)}"
    return None


_REASON = _skip_reason()
if _REASON:
    # A plain skip, never conftest's CI failure: CI does not build the arm64 file.
    pytest.skip(_REASON, allow_module_level=True)


def arm64_env(**extra: str) -> dict[str, str]:
    """A user's shell (no repo, no payload override) plus where qemu finds arm64 libraries."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    if not (Path("/") / LOADER).exists():
        env["QEMU_LD_PREFIX"] = str(ARM64_ROOT)
    env.update(extra)
    return env


def run_arm64(exe: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe), *args], env=arm64_env(**env), capture_output=True, text=True, timeout=120
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def descriptor() -> dict[str, Any]:
    return json.loads(ARM64_DESCRIPTOR.read_text())


@pytest.fixture(scope="module")
def arm64_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy, so a rebuild of dist/ during the run cannot change the file under test."""
    exe = tmp_path_factory.mktemp("arm64") / "warren"
    shutil.copy2(ARM64_EXE, exe)
    assert elf.arch_of(str(exe)) == "arm64"
    return exe


def test_version_shows_the_arm64_payload(arm64_exe: Path, descriptor: dict[str, Any]) -> None:
    proc = run_arm64(arm64_exe, "version", "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)["payload"]
    assert shown["arch"] == "arm64"
    assert shown["os"] == "linux"
    assert shown["digest"] == descriptor["digest"]
    assert shown["containerd_version"] == descriptor["manifest"]["containerd_version"]

    text = run_arm64(arm64_exe, "version")
    assert text.returncode == 0, text.stderr
    assert f"payload sha256:{descriptor['digest']} (linux/arm64)" in text.stdout


def test_extract_writes_the_manifest_binaries(arm64_exe: Path, descriptor: dict[str, Any]) -> None:
    base = short_dir("arm")
    try:
        paths = make_paths(base)
        dirs = {
            "WARREN_DATA_DIR": str(paths.data_dir),
            "WARREN_RUN_DIR": str(paths.run_dir),
            "WARREN_CONFIG_DIR": str(paths.config_dir),
        }
        proc = run_arm64(arm64_exe, "extract", "--json", **dirs)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["digest"] == descriptor["digest"]
        files = descriptor["manifest"]["files"]
        assert sorted(report["written"]) == sorted(f["name"] for f in files)
        for entry in files:
            binary = paths.bin_dir / entry["name"]
            assert sha256_of(binary) == entry["sha256"], entry["name"]
            assert binary.stat().st_size == entry["size"]
            assert binary.stat().st_mode & 0o7777 == entry["mode"]
            assert elf.arch_of(str(binary)) == "arm64"

        # The carried containerd runs (under qemu) and is the version the manifest names.
        ctd = subprocess.run(
            [str(paths.bin_dir / "containerd"), "--version"],
            env=arm64_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ctd.returncode == 0, ctd.stderr
        assert descriptor["manifest"]["containerd_version"] in ctd.stdout

        again = run_arm64(arm64_exe, "extract", "--json", **dirs)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["cached"] is True
    finally:
        shutil.rmtree(base, ignore_errors=True)
