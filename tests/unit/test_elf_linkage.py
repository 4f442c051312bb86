"""ELF linkage in Python (payload/elf.py) and the host-libc verdict (payload/libc.py), on real
files: Debian's dynamic containerd and runc, the static busybox, and objdump as the oracle."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode, FetchError, PlatformError
from warren_bundle.fetch.staging import check_static
from warren_bundle.payload import elf, libc

from conftest import require

CONTAINERD = Path("/usr/bin/containerd")  # Debian bookworm's, dynamically linked
RUNC = Path("/usr/sbin/runc")
BUSYBOX = Path("/bin/busybox")  # busybox-static: no interpreter, no DT_NEEDED


def _need(path: Path) -> Path:
    require(path.is_file(), f"{path} is not installed (.ci/run installs it)")
    return path


def _objdump_glibc(path: Path) -> str | None:
    """The highest GLIBC_x.y in objdump -p's version references: the oracle for our parser."""
    out = subprocess.run(
        ["objdump", "-p", str(path)], capture_output=True, text=True, check=True
    ).stdout
    found = re.findall(r"\bGLIBC_(\d+(?:\.\d+)+)\b", out.split("Version References:")[-1])
    return max(found, key=elf.glibc_key) if "Version References:" in out and found else None


@pytest.mark.parametrize(
    "path", [CONTAINERD, RUNC, Path("/usr/bin/python3.11"), Path("/bin/ls"), BUSYBOX]
)
def test_glibc_needed_matches_objdump(path: Path) -> None:
    require(shutil.which("objdump") is not None, "binutils (objdump) is not installed")
    assert elf.linkage_of(str(_need(path))).glibc == _objdump_glibc(path)


def test_debian_containerd_is_dynamic_and_needs_glibc_2_34() -> None:
    link = elf.linkage_of(str(_need(CONTAINERD)))
    assert link.interpreter is not None and link.interpreter.startswith("/lib")
    assert "libc.so.6" in link.needed
    assert link.glibc == "2.34"
    assert not link.static


def test_debian_runc_needs_libseccomp() -> None:
    assert "libseccomp.so.2" in elf.linkage_of(str(_need(RUNC))).needed


def test_static_busybox_needs_nothing() -> None:
    link = elf.linkage_of(str(_need(BUSYBOX)))
    assert link == elf.Linkage(None, (), None)
    assert link.static


def test_not_elf_and_truncated_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "script"
    text.write_text("#!/bin/sh\n")
    with pytest.raises(elf.NotElfError):
        elf.linkage_of(str(text))
    cut = tmp_path / "cut"
    cut.write_bytes(_need(CONTAINERD).read_bytes()[:4096])
    with pytest.raises(elf.NotElfError):
        elf.linkage_of(str(cut))


def test_requirement_keeps_the_most_demanding_binary() -> None:
    req = libc.requirement_of([("busybox", _need(BUSYBOX)), ("containerd", _need(CONTAINERD))])
    assert req == libc.Requirement("containerd", "2.34", ("containerd",))
    assert libc.Requirement.from_dict(req.to_dict()) == req
    data = Path(__file__)  # not an ELF file: skipped, it does not hide the others
    assert libc.requirement_of([("data", data), ("containerd", CONTAINERD)]).glibc == "2.34"
    static = libc.requirement_of([("busybox", BUSYBOX)])
    assert static.to_dict() == {"linkage": "static"}
    assert libc.Requirement.from_dict({}) is None


def test_problem_names_both_versions() -> None:
    req = libc.Requirement("containerd", "2.34", ("containerd", "runc"))
    assert libc.problem(req, "2.31") == "containerd needs GLIBC_2.34, this host has 2.31"
    assert libc.problem(req, "2.34") is None
    assert libc.problem(req, "2.36") is None
    musl = libc.problem(req, None, "musl and no glibc")
    assert musl == (
        "containerd is dynamically linked and needs GLIBC_2.34, this host has musl and no glibc"
    )
    assert libc.problem(libc.Requirement(None, None, ()), None) is None


def test_check_raises_platform_error_with_the_static_remedy() -> None:
    host = libc.host_glibc()
    require(host is not None, "this host has no glibc")
    assert host is not None
    major, minor = elf.glibc_key(host)[:2]
    newer = libc.Requirement("containerd", f"{major}.{minor + 1}", ("containerd",))
    with pytest.raises(PlatformError) as err:
        libc.check(newer)
    assert err.value.exit_code == ExitCode.PLATFORM
    assert f"needs GLIBC_{major}.{minor + 1}, this host has {host}" in err.value.message
    assert "static" in (err.value.remedy or "")
    libc.check(libc.requirement_of([("containerd", _need(CONTAINERD))]))  # runs here: no raise


def test_check_static_refuses_a_dynamic_binary(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as err:
        check_static(_need(CONTAINERD), "a test build")
    assert "dynamically linked" in err.value.message
    assert "libc.so.6" in err.value.message
    check_static(_need(BUSYBOX), "a test build")


def test_host_glibc_from_its_libc_file_matches_confstr(tmp_path: Path) -> None:
    """What the frozen runtime (its own glibc) reads instead of os.confstr."""
    host = libc.host_glibc()
    require(host is not None, "this host has no glibc")
    assert libc.glibc_of_host_files() == host
    assert libc.glibc_of_host_files(tmp_path) is None  # a root without libc.so.6
