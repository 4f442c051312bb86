"""The two Linux builds `make release` publishes: warren-linux-<arch> (a payload linked against
the host's glibc) and warren-linux-<arch>-static (a payload that needs no libc). Both share the
launcher and the runtime, which carries its own libc.

Both must start where there is no libc at all (a chroot holding nothing but the file); only the
static one can extract its binaries there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode

from conftest import require
from support import FROZEN_STATIC, short_dir

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def static_exe() -> Path:
    require(FROZEN_STATIC.is_file(), f"no static build at {FROZEN_STATIC}: make release")
    return FROZEN_STATIC


def _version(exe: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARREN_", "_WARREN_"))}
    return subprocess.run(
        [str(exe), "version", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_each_build_says_which_flavour_it_is(frozen_exe: Path, static_exe: Path) -> None:
    dynamic, static = _version(frozen_exe), _version(static_exe)

    assert dynamic.returncode == 0 and static.returncode == 0, (dynamic.stderr, static.stderr)
    assert dynamic.stdout.splitlines()[0].endswith("(dynamic build)")
    assert static.stdout.splitlines()[0].endswith("(static build)")
    assert json.loads(_version(static_exe, "--json").stdout)["flavour"] == "static"
    # Where the payload is read from: the file the user ran, not the runtime dir it runs from.
    assert f"from embedded in {static_exe}" in static.stdout, static.stdout


def test_inherited_launcher_variables_are_replaced(frozen_exe: Path, tmp_path: Path) -> None:
    # As a warren's child sees them: another file and another runtime dir.
    env = {**os.environ, "_WARREN_ONEFILE": "/bin/true", "_WARREN_RUNTIME": str(tmp_path)}
    done = subprocess.run(
        [str(frozen_exe), "version", "--json"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["flavour"] == "dynamic"
    assert info["payload"]["origin"] == f"embedded in {frozen_exe}"


@pytest.fixture
def libc_free_root(root_required: None) -> Iterator[Path]:
    """A root with the warrens, an empty /tmp and /proc: no libc, no loader, no shell."""
    root = short_dir("nolibc")
    for d in ("bin", "tmp", "proc"):
        (root / d).mkdir()
    (root / "tmp").chmod(0o1777)
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_the_static_build_runs_and_extracts_where_there_is_no_libc(
    static_exe: Path, frozen_exe: Path, libc_free_root: Path
) -> None:
    root = libc_free_root
    shutil.copy2(static_exe, root / "bin" / "warren")
    shutil.copy2(frozen_exe, root / "bin" / "warren-dynamic")
    # What the root holds besides /proc (never walk /proc: its entries vanish as processes exit).
    held = [p for d in ("bin", "tmp") for p in (root / d).rglob("*")]
    assert not [p for p in held if p.name.startswith(("libc.so", "ld-"))]
    env = {"PATH": "/bin", "HOME": "/"}

    def chrooted(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [shutil.which("chroot") or "chroot", str(root), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    # The default build starts too (its runtime carries its libc), but its payload needs glibc.
    dynamic = chrooted("/bin/warren-dynamic", "version")
    assert dynamic.returncode == 0 and "(dynamic build)" in dynamic.stdout, dynamic.stderr
    refused = chrooted("/bin/warren-dynamic", "--data-dir", "/data-dynamic", "extract")
    assert refused.returncode == ExitCode.PLATFORM, refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and "glibc" in refused.stderr

    version = chrooted("/bin/warren", "version")
    assert version.returncode == 0, version.stderr
    assert "(static build)" in version.stdout
    assert "from embedded in /bin/warren" in version.stdout

    extracted = chrooted("/bin/warren", "--data-dir", "/data", "extract")
    assert extracted.returncode == 0, extracted.stderr
    for name in ("containerd", "containerd-shim-runc-v2", "ctr", "runc"):
        assert (root / "data" / "bin" / name).is_file(), name
    # Nothing was written to /tmp: the runtime lives in root's cache dir.
    assert list((root / "tmp").iterdir()) == []
    assert (root / "var" / "cache" / "warren" / "runtime").is_dir()
