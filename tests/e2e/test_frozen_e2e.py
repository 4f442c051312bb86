"""End to end: the real one-file executable from `make build`, copied where nothing else lies."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.hostinfo import host_arch
from warren_bundle.paths import DEFAULT_RUNTIME_ROOT, Paths
from warren_bundle.payload import onefile
from warren_bundle.runtime import health

from support import cleanup_runtime, make_paths, short_dir, wait_for

pytestmark = pytest.mark.e2e


def clean_env(**extra: str) -> dict[str, str]:
    """What a user's shell has: no repo on PYTHONPATH, no payload override, no venv."""
    keep = ("PATH", "HOME", "LANG", "TERM")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(extra)
    return env


@pytest.fixture
def lone_exe(frozen_exe: Path, tmp_path: Path) -> Path:
    """The executable alone in an empty directory."""
    home = tmp_path / "alone"
    home.mkdir()
    exe = home / "warren"
    shutil.copy2(frozen_exe, exe)
    return exe


def staged_descriptor(staged: Path) -> dict:
    return json.loads((staged / "payload.json").read_text())


def test_version_works_alone_from_any_directory(
    lone_exe: Path, staged_payload: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    out = subprocess.run(
        [str(lone_exe), "version", "--json"],
        cwd=elsewhere,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    desc = staged_descriptor(staged_payload)
    assert info["payload"]["digest"] == desc["digest"]
    assert info["payload"]["containerd_version"] == desc["manifest"]["containerd_version"]
    assert info["payload"]["origin"] == f"embedded in {lone_exe}"

    text = subprocess.run(
        [str(lone_exe), "version"], cwd="/", env=clean_env(), capture_output=True, text=True
    )
    assert text.returncode == 0
    assert f"containerd {desc['manifest']['containerd_version']}" in text.stdout
    assert f"runc {desc['manifest']['runc_version']}" in text.stdout
    assert desc["digest"] in text.stdout


def test_the_payload_sits_whole_behind_the_runtime(frozen_exe: Path, staged_payload: Path) -> None:
    trailer = onefile.read_trailer(frozen_exe)
    assert trailer.payload_length == (staged_payload / "payload.tar.zst").stat().st_size
    with open(frozen_exe, "rb") as fp:
        fp.seek(trailer.payload_offset)
        digest = hashlib.sha256(fp.read(trailer.payload_length)).hexdigest()
        fp.seek(trailer.descriptor_offset)
        descriptor = json.loads(fp.read(trailer.descriptor_length))
    assert digest == staged_descriptor(staged_payload)["digest"] == descriptor["digest"]


@pytest.fixture
def frozen_paths() -> Iterator[Paths]:
    base = short_dir("f")
    paths = make_paths(base)
    yield paths
    cleanup_runtime(paths, base)


def path_env(paths: Paths) -> dict[str, str]:
    return clean_env(
        WARREN_DATA_DIR=str(paths.data_dir),
        WARREN_RUN_DIR=str(paths.run_dir),
        WARREN_CONFIG_DIR=str(paths.config_dir),
    )


def test_carried_binaries_match_the_manifest(
    lone_exe: Path, frozen_paths: Paths, staged_payload: Path
) -> None:
    out = subprocess.run(
        [str(lone_exe), "extract", "--json"],
        env=path_env(frozen_paths),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["cached"] is False
    manifest = json.loads((staged_payload / "manifest.json").read_text())
    for entry in manifest["files"]:
        installed = frozen_paths.binary(entry["name"]).read_bytes()
        assert hashlib.sha256(installed).hexdigest() == entry["sha256"], entry["name"]
        assert installed == (staged_payload / "bin" / entry["name"]).read_bytes()


REPO = Path(__file__).resolve().parents[2]


def pack_without_payload(dest: Path, name: str) -> Path:
    """The one file with no payload, packed the way `make build` packs (same launcher, runtime)."""
    arch = host_arch()
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "python"),
            str(REPO / "scripts" / "onefile.py"),
            "pack",
            *("--launcher", str(REPO / "build" / "launcher" / f"warren-launcher-{arch}")),
            *("--runtime", str(REPO / "build" / "runtime" / f"warren-linux-{arch}-onedir")),
            *("--out", str(dest / name)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dest / name


@pytest.fixture(scope="module")
def empty_launcher(tmp_path_factory: pytest.TempPathFactory, frozen_exe: Path) -> Path:
    return pack_without_payload(tmp_path_factory.mktemp("launcher-a"), "warren-empty")


def test_no_payload_entry_is_exit_3(empty_launcher: Path, frozen_paths: Paths) -> None:
    """A launcher frozen without a payload says so and names the remedy."""
    out = subprocess.run(
        [str(empty_launcher), "extract"], env=path_env(frozen_paths), capture_output=True, text=True
    )
    assert out.returncode == ExitCode.PAYLOAD
    assert out.stderr.strip() == (
        f"warren: failed to read embedded binary: no payload entry in {empty_launcher} "
        "(this build has no binaries); run 'make build' to download and embed containerd"
    )
    assert not frozen_paths.bin_dir.exists()


def test_same_inputs_pack_to_the_same_bytes(empty_launcher: Path, tmp_path: Path) -> None:
    again = pack_without_payload(tmp_path / "elsewhere", "warren-empty")
    assert again.read_bytes() == empty_launcher.read_bytes()


@pytest.mark.usefixtures("root_required")
def test_frozen_containerd_run_serves_ctr_and_stops_cleanly(
    lone_exe: Path, frozen_paths: Paths, tmp_path: Path
) -> None:
    meipass_root = tmp_path / "tmp"
    meipass_root.mkdir()
    env = path_env(frozen_paths)
    env["TMPDIR"] = str(meipass_root)
    proc = subprocess.Popen(
        [str(lone_exe), "containerd", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: proc.poll() is not None or health.is_serving(frozen_paths.socket),
            timeout=60,
            what="frozen warren to serve containerd",
        )
        assert proc.poll() is None, proc.communicate()[1]

        # The launcher wrote nothing under TMPDIR: the runtime runs from the data dir.
        assert list(meipass_root.iterdir()) == []
        digest = onefile.read_trailer(lone_exe).runtime_digest
        assert (Path(DEFAULT_RUNTIME_ROOT) / digest).is_dir()

        version = subprocess.run(
            [str(lone_exe), "ctr", "version"], env=env, capture_output=True, text=True, timeout=60
        )
        assert version.returncode == 0, version.stderr
        assert "Server:" in version.stdout

        status = subprocess.run(
            [str(lone_exe), "containerd", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["state"] == "RUNNING"
        assert report["socket_answers"] is True
        containerd_pid = report["containerd_pid"]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not health.is_serving(frozen_paths.socket)
        wait_for(
            lambda: not os.path.exists(f"/proc/{containerd_pid}"),
            timeout=15,
            what="containerd to exit",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
