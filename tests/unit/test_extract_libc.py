"""extract and doctor refuse a payload this host's C library cannot run, naming both versions,
before anything is written; on real ELF files (a dynamic one whose GLIBC_ need is raised by
patching its version string, the static busybox)."""

from __future__ import annotations

from pathlib import Path

import pytest

from warren_bundle.doctor.base import Inputs, Level
from warren_bundle.doctor.payload_checks import check_libc
from warren_bundle.errors import ExitCode, PlatformError
from warren_bundle.paths import Paths
from warren_bundle.payload import elf, libc
from warren_bundle.payload.format import BINARIES, Payload, pack
from warren_bundle.store.extract import ensure_extracted

from conftest import require
from support import make_paths, stage_payload

BUSYBOX = Path("/bin/busybox")
TRUE = Path("/bin/true")


def _host() -> str:
    host = libc.host_glibc()
    require(host is not None, "this host has no glibc")
    assert host is not None
    return host


def _future_elf() -> bytes:
    """/bin/true with every GLIBC_2.x it needs renamed GLIBC_9.x: a real ELF no glibc runs."""
    data = TRUE.read_bytes()
    patched = data.replace(b"GLIBC_2.", b"GLIBC_9.")
    assert patched != data
    return patched


def _payload(base: Path, contents: dict[str, bytes], requires: dict[str, object] | None) -> Payload:
    base.mkdir(mode=0o755)
    return pack(stage_payload(base / "staged", contents, None, requires), level=1)


def _static_contents() -> dict[str, bytes]:
    require(BUSYBOX.is_file(), "busybox-static is not installed")
    return {name: BUSYBOX.read_bytes() for name in BINARIES}


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    tmp_path.chmod(0o755)
    return make_paths(tmp_path / "home")


def test_the_patched_binary_needs_glibc_9(tmp_path: Path) -> None:
    f = tmp_path / "true"
    f.write_bytes(_future_elf())
    assert elf.glibc_key(elf.linkage_of(str(f)).glibc or "0") >= (9,)


def test_recorded_requirement_is_refused_before_anything_is_written(
    tmp_path: Path, paths: Paths
) -> None:
    host = _host()
    req = {"linkage": "dynamic", "glibc": "9.1", "binary": "containerd", "dynamic": ["containerd"]}
    payload = _payload(tmp_path / "p", _static_contents(), req)
    with pytest.raises(PlatformError) as err:
        ensure_extracted(paths, payload)
    assert err.value.exit_code == ExitCode.PLATFORM
    assert err.value.message == f"containerd needs GLIBC_9.1, this host has {host}"
    assert "static payload" in (err.value.remedy or "")
    assert not paths.bin_dir.exists()
    assert not paths.versions_dir.exists() or not any(paths.versions_dir.iterdir())


def test_unrecorded_requirement_is_read_from_the_files_written(
    tmp_path: Path, paths: Paths
) -> None:
    host = _host()
    contents = _static_contents()
    contents["runc"] = _future_elf()
    payload = _payload(tmp_path / "p", contents, None)  # staged before "requires" existed
    with pytest.raises(PlatformError) as err:
        ensure_extracted(paths, payload)
    assert err.value.message.startswith("runc needs GLIBC_9.")
    assert err.value.message.endswith(f", this host has {host}")
    assert not paths.bin_dir.exists()
    leftovers = list(paths.versions_dir.iterdir()) if paths.versions_dir.exists() else []
    assert leftovers == []


def test_static_payload_extracts(tmp_path: Path, paths: Paths) -> None:
    payload = _payload(tmp_path / "p", _static_contents(), {"linkage": "static"})
    result = ensure_extracted(paths, payload)
    assert sorted(result.written) == sorted(BINARIES)


def test_doctor_fails_with_both_versions_and_exit_5(tmp_path: Path, paths: Paths) -> None:
    host = _host()
    req = {"linkage": "dynamic", "glibc": "9.1", "binary": "containerd", "dynamic": ["containerd"]}
    payload = _payload(tmp_path / "p", _static_contents(), req)
    check = check_libc(Inputs(paths, str(payload.path)))
    assert check.level == Level.FAIL
    assert check.exit_code == ExitCode.PLATFORM
    assert check.message == f"containerd needs GLIBC_9.1, this host has {host}"


def test_doctor_passes_a_static_payload_and_reads_unrecorded_ones_from_bin(
    tmp_path: Path, paths: Paths
) -> None:
    static = _payload(tmp_path / "s", _static_contents(), {"linkage": "static"})
    check = check_libc(Inputs(paths, str(static.path)))
    assert check.level == Level.PASS
    assert check.message.startswith("static binaries: no C library needed")
    old = _payload(tmp_path / "o", _static_contents(), None)
    assert check_libc(Inputs(paths, str(old.path))).level == Level.WARN  # not extracted yet
    ensure_extracted(paths, old)
    check = check_libc(Inputs(paths, str(old.path)))
    assert check.level == Level.PASS
    assert "read from" in check.message
