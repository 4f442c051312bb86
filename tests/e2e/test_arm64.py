"""End to end on the linux-arm64 one file (`make release-arm64`), run here through qemu-user.

The file has the amd64 file's shape (static musl launcher, self-contained runtime, payload), so
it runs here through binfmt alone; qemu finds the arm64 libraries of the extracted Debian
containerd and runc under QEMU_LD_PREFIX, the root that froze the runtime (build/cache/arm64-root,
a link into /var/cache/warren-build/arm64), unless the host has them. It needs the file and an
enabled binfmt qemu-aarch64 entry: it skips without them locally, and fails in CI, where .ci/run
builds the file (make test ARM64=1).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from warren_bundle.payload import elf, signing

from conftest import require
from support import (
    REPO,
    containerd_started,
    kill_processes_under,
    make_paths,
    short_dir,
    unmount_under,
    wait_for,
)

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
    require(_REASON is None, _REASON or "")
    return json.loads(ARM64_DESCRIPTOR.read_text())


@pytest.fixture(scope="module")
def arm64_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy, so a rebuild of dist/ during the run cannot change the file under test."""
    require(_REASON is None, _REASON or "")
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
            if not entry["name"].endswith(".tar"):  # bin/sandbox/pause.tar: an image
                assert elf.arch_of(str(binary)) == "arm64", entry["name"]

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


def test_containerd_runs_supervised_and_ctr_reaches_it(
    arm64_exe: Path, descriptor: dict[str, Any], root_required: None
) -> None:
    """`warren containerd run` of the arm64 file starts its arm64 containerd under qemu, the
    bundled ctr talks to it, and SIGTERM stops both."""
    base = short_dir("arr")
    paths = make_paths(base)
    dirs = {
        "WARREN_DATA_DIR": str(paths.data_dir),
        "WARREN_RUN_DIR": str(paths.run_dir),
        "WARREN_CONFIG_DIR": str(paths.config_dir),
    }
    proc = subprocess.Popen(
        [str(arm64_exe), "containerd", "run"],
        env=arm64_env(**dirs),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: proc.poll() is not None or containerd_started(paths),
            timeout=120,
            what="the arm64 containerd to answer",
        )
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        ctr = run_arm64(arm64_exe, "ctr", "version", **dirs)
        assert ctr.returncode == 0, ctr.stderr
        server = ctr.stdout.split("Server:", 1)[1]
        assert descriptor["manifest"]["containerd_version"] in server

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not paths.socket.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        kill_processes_under(paths.data_dir, paths.run_dir)
        unmount_under(paths.data_dir, paths.run_dir)
        shutil.rmtree(base, ignore_errors=True)


def test_the_release_signs_the_arm64_file_and_its_sbom(arm64_exe: Path) -> None:
    """`make release ARM64=1` (make test in CI, RELEASE_DIR=dist): the arm64 file and its SBOM
    are listed in the one signed SHA256SUMS beside amd64's; the SBOM is the arm64 runtime's."""
    release = REPO / "dist"
    sums_path = release / "SHA256SUMS"
    require(
        sums_path.is_file() and "warren-linux-arm64" in sums_path.read_text(),
        "no dist/SHA256SUMS listing warren-linux-arm64: make release ARM64=1",
    )
    sums: dict[str, str] = {}
    for line in sums_path.read_text().splitlines():
        digest, name = line.split(None, 1)
        sums[name] = digest
    for name in ("warren-linux-arm64", "warren-linux-arm64.spdx.json", "warren-linux-amd64"):
        assert sums[name] == sha256_of(release / name), name
    signing.verify(
        sums_path.read_bytes(),
        (release / "SHA256SUMS.sig").read_text(),
        (release / "release-key.pub").read_text(),
    )
    sbom = json.loads((release / "warren-linux-arm64.spdx.json").read_text())
    names = {p["name"] for p in sbom["packages"]}
    assert "ld-linux-aarch64.so.1" in names
    assert "warren-launcher" in names
    assert "ld-linux-x86-64.so.2" not in names
