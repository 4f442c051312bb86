"""The launcher (launcher/launcher.c) runs only a runtime built for its own machine.

A file packed with another architecture's runtime (an arm64 launcher with the amd64 runtime, or
the reverse) is refused in one line at extraction, before its executable is patched or run,
instead of execve failing with ENOEXEC. The runtime here is a crafted ELF header of the other
machine with a PT_INTERP placeholder, packed by scripts/onefile.py behind this host's launcher.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.hostinfo import host_arch

from conftest import require
from support import REPO, short_dir

pytestmark = pytest.mark.e2e

LAUNCHER = REPO / "build" / "launcher" / f"warren-launcher-{host_arch()}"
EM_X86_64, EM_AARCH64 = 62, 183
OTHER = {"amd64": ("arm64", EM_AARCH64), "arm64": ("amd64", EM_X86_64)}


def elf_with_interp(machine: int, interp_len: int = 200) -> bytes:
    """An ELF64 little-endian executable header for `machine`, one PT_INTERP program header and
    a placeholder interpreter path of `interp_len` bytes: all set_interp() reads."""
    ehsize, phentsize = 64, 56
    interp_off = ehsize + phentsize
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, machine, 1, 0, ehsize, 0, 0, ehsize, phentsize, 1, 0, 0, 0
    )
    phdr = struct.pack("<IIQQQQQQ", 3, 4, interp_off, 0, 0, interp_len, interp_len, 1)
    return header + phdr + b"/" + b"_" * (interp_len - 2) + b"\0"


@pytest.fixture
def base() -> Iterator[Path]:
    path = short_dir("wa")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pack_with_runtime_of(machine: int, base: Path) -> Path:
    tree = base / "tree"
    (tree / "_internal").mkdir(parents=True)
    (tree / "warren").write_bytes(elf_with_interp(machine))
    (tree / "warren").chmod(0o755)
    (tree / "_internal" / "ld-linux.so").write_bytes(b"not a loader")
    (tree / ".loader").write_text("_internal/ld-linux.so\n")
    exe = base / "warren"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "onefile.py"), "pack", "--launcher",
         str(LAUNCHER), "--runtime", str(tree), "--out", str(exe)],
        check=True, capture_output=True,
    )  # fmt: skip
    return exe


def launch_version(exe: Path, rt: Path) -> subprocess.CompletedProcess[str]:
    """`exe version` with its runtime unpacked into rt, nothing else in its environment."""
    return subprocess.run(
        [str(exe), "version"],
        env={"PATH": "/usr/bin:/bin", "WARREN_RUNTIME_DIR": str(rt)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_runtime_of_another_machine_is_refused_in_one_line(base: Path) -> None:
    require(LAUNCHER.is_file(), f"no launcher at {LAUNCHER}: make launcher")
    other, machine = OTHER[host_arch()]
    exe = pack_with_runtime_of(machine, base)
    rt = base / "rt"
    proc = launch_version(exe, rt)
    assert proc.returncode == ExitCode.PAYLOAD, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"is not a linux-{host_arch()} executable (ELF machine {machine})" in lines[0]
    assert f"download the warren-linux-{host_arch()} file again" in lines[0]
    assert other not in lines[0]
    # The half-made runtime dir is removed: the next launch starts clean.
    assert sorted(p.name for p in rt.iterdir()) == [".lock"]


def test_a_runtime_of_this_machine_gets_past_the_check(base: Path) -> None:
    """The same crafted runtime for this host's machine is patched and handed to execve: the
    failure is then the fake loader's, not the machine check's."""
    require(LAUNCHER.is_file(), f"no launcher at {LAUNCHER}: make launcher")
    mine = {"amd64": EM_X86_64, "arm64": EM_AARCH64}[host_arch()]
    exe = pack_with_runtime_of(mine, base)
    rt = base / "rt"
    proc = launch_version(exe, rt)
    assert proc.returncode != 0
    assert "ELF machine" not in proc.stderr
    patched = next(p for p in rt.iterdir() if p.name != ".lock") / "warren"
    interp = str(patched.parent / "_internal" / "ld-linux.so").encode()
    assert interp + b"\0" in patched.read_bytes()
