"""Leftover one-file unpack dirs: removed only when provably ours and provably unused.

Real dirs in a private temp dir and real processes that use them (a `cat` waiting on its stdin
holds a cwd, an open file, a mapped binary or an environment variable there until we close it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.runtime import leftovers
from warren_bundle.runtime.leftovers import MARKER, MIN_AGE_S, remove_stale_unpack_dirs

from support import REPO

AN_HOUR_AGO = time.time() - 3600


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    where = tmp_path / "tmp"
    where.mkdir()
    return where


def unpack_dir(
    parent: Path,
    name: str = "_MEI123abc",
    *,
    marker: bool = True,
    pyinstaller: bool = True,
    mode: int = 0o700,
    mtime: float = AN_HOUR_AGO,
) -> Path:
    """A dir laid out as the bootloader leaves warren's (a few of its 16 MB of files)."""
    path = parent / name
    (path / "python3.11" / "lib-dynload").mkdir(parents=True)
    (path / "libpython3.11.so.1.0").write_bytes(b"\x7fELF")
    if pyinstaller:
        (path / "base_library.zip").write_bytes(b"PK")
    if marker:
        (path / MARKER).write_text("warren\n")
    path.chmod(mode)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes that use a dir until the test ends (cat exits when its stdin closes)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(10)


def hold(procs: list[subprocess.Popen[bytes]], argv: list[str], **kwargs: object) -> None:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
    procs.append(proc)


def test_an_unused_leftover_of_ours_is_removed(tmp: Path) -> None:
    leftover = unpack_dir(tmp)
    assert remove_stale_unpack_dirs(tmp) == [leftover]
    assert not leftover.exists()


def test_what_is_not_provably_ours_is_kept(tmp: Path) -> None:
    kept = [
        unpack_dir(tmp, "_MEIother1", marker=False),  # another PyInstaller program's
        unpack_dir(tmp, "_MEIother2", pyinstaller=False),  # not an unpack dir
        unpack_dir(tmp, "_MEIshared", mode=0o755),  # not as mkdtemp makes it
        unpack_dir(tmp, "notMEI1234"),  # not the bootloader's name
    ]
    target = unpack_dir(tmp.parent, "_MEItarget")
    (tmp / "_MEIlink").symlink_to(target)  # a symlink could point anywhere
    kept += [tmp / "_MEIlink", target]
    (tmp / "_MEIfile").write_text("")
    assert remove_stale_unpack_dirs(tmp) == []
    assert all(os.path.lexists(p) for p in kept)


@pytest.mark.usefixtures("root_required")
def test_another_users_dir_is_kept(tmp: Path) -> None:
    theirs = unpack_dir(tmp, "_MEItheirs")
    os.chown(theirs, 65534, 65534)
    os.utime(theirs, (AN_HOUR_AGO, AN_HOUR_AGO))
    assert remove_stale_unpack_dirs(tmp) == []
    assert theirs.exists()


def test_a_dir_written_in_the_last_minute_is_kept(tmp: Path) -> None:
    """A bootloader between its last file and its child's start has nothing open there."""
    young = unpack_dir(tmp, "_MEIyoung", mtime=time.time() - MIN_AGE_S / 2)
    old = unpack_dir(tmp, "_MEIold", mtime=time.time() - MIN_AGE_S - 5)
    assert remove_stale_unpack_dirs(tmp) == [old]
    assert young.exists()


def test_a_dir_a_live_process_uses_is_kept(
    tmp: Path, holders: list[subprocess.Popen[bytes]]
) -> None:
    as_cwd = unpack_dir(tmp, "_MEIcwd")
    hold(holders, ["cat"], cwd=as_cwd)

    mapped = unpack_dir(tmp, "_MEImapped")
    shutil.copy2("/bin/cat", mapped / "cat")
    os.utime(mapped, (AN_HOUR_AGO, AN_HOUR_AGO))
    hold(holders, [str(mapped / "cat")])  # maps its executable from the dir

    opened = unpack_dir(tmp, "_MEIopen")
    with open(opened / "being-written", "wb") as fp:  # a bootloader still unpacking
        os.utime(opened, (AN_HOUR_AGO, AN_HOUR_AGO))
        hold(holders, ["cat"], stdout=fp)

    named = unpack_dir(tmp, "_MEIenv")  # a child between its exec and loading libpython
    hold(holders, ["cat"], env={"_PYI_APPLICATION_HOME_DIR": str(named), "PATH": "/usr/bin:/bin"})
    libpath = unpack_dir(tmp, "_MEIlibpath")
    hold(holders, ["cat"], env={"LD_LIBRARY_PATH": f"/opt/lib:{libpath}", "PATH": "/bin"})

    unused = unpack_dir(tmp, "_MEIunused")
    assert remove_stale_unpack_dirs(tmp) == [unused]
    for path in (as_cwd, mapped, opened, named, libpath):
        assert path.exists(), path
    # Once they are gone, the dirs are leftovers like any other.
    for proc in holders:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    holders.clear()
    assert sorted(remove_stale_unpack_dirs(tmp)) == sorted([as_cwd, mapped, opened, named, libpath])


def test_a_name_that_only_extends_a_used_dir_is_not_taken_for_it(
    tmp: Path, holders: list[subprocess.Popen[bytes]]
) -> None:
    used = unpack_dir(tmp, "_MEIab")
    hold(holders, ["cat"], cwd=used)
    longer = unpack_dir(tmp, "_MEIabc")
    assert remove_stale_unpack_dirs(tmp) == [longer]


def in_a_fresh_python(
    setup: str, call: str, arg: Path, env: dict[str, str] | None = None
) -> list[str]:
    """The paths `leftovers.<call>` returns in a new interpreter, after `setup` (statements
    that give it a frozen warren's state; sys.argv[1] is `arg`)."""
    code = (
        "import json, pathlib, sys; sys.path.insert(0, sys.argv[2]);" + setup
        + "from warren_bundle.runtime import leftovers;"
        + f"print(json.dumps([str(p) for p in leftovers.{call}]))"
    )  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code, str(arg), str(REPO)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    return list(json.loads(out.stdout))


def test_the_running_process_own_unpack_dir_is_never_touched(tmp: Path) -> None:
    """A frozen warren's own dir (sys._MEIPASS), set here as the bootloader sets it."""
    own = unpack_dir(tmp, "_MEIown")
    other = unpack_dir(tmp, "_MEIother")
    removed = in_a_fresh_python("sys._MEIPASS = sys.argv[1];", "remove_stale_unpack_dirs()", own)
    assert removed == [str(other)]  # its parent, the bootloader's choice
    assert own.exists()


def test_the_temp_dir_is_the_one_the_bootloader_picks(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(var, raising=False)
    assert leftovers.unpack_parent() == Path("/tmp")
    monkeypatch.setenv("TMP", str(tmp))
    assert leftovers.unpack_parent() == tmp
    monkeypatch.setenv("TMPDIR", str(tmp / "missing"))  # the bootloader's mkdtemp fails there
    assert leftovers.unpack_parent() == tmp
    monkeypatch.setenv("TMPDIR", str(tmp.parent))
    assert leftovers.unpack_parent() == tmp.parent


def test_the_spec_adds_the_marker_at_the_top_of_the_unpack_dir() -> None:
    spec = (REPO / "build" / "spec" / "warren.spec").read_text()
    assert f'"{MARKER}"), ".")' in spec
    assert (REPO / "build" / "spec" / MARKER).is_file()


# --- the static flavour: staticx's bundle dirs ----------------------------------------------


def staticx_dir(
    parent: Path,
    name: str = "staticx-AbC123",
    prog: str | None = "warren-linux-amd64",
    mode: int = 0o700,
    mtime: float = AN_HOUR_AGO,
) -> Path:
    """A dir laid out as staticx's bootloader leaves it: the program, its libc, two links."""
    path = parent / name
    path.mkdir()
    (path / "libc.so.6").write_bytes(b"\x7fELF")
    (path / ".staticx.interp").symlink_to("ld-linux-x86-64.so.2")
    if prog is not None:
        (path / prog).write_bytes(b"\x7fELF")
        (path / ".staticx.prog").symlink_to(prog)
    path.chmod(mode)
    os.utime(path, (mtime, mtime))
    return path


def test_an_unused_staticx_dir_of_a_warren_is_removed(tmp: Path) -> None:
    leftover = staticx_dir(tmp)
    assert remove_stale_unpack_dirs(tmp) == [leftover]
    assert not leftover.exists()


def test_staticx_dirs_that_are_not_provably_warrens_are_kept(tmp: Path) -> None:
    kept = [
        staticx_dir(tmp, "staticx-other", prog="someapp"),  # another program's
        staticx_dir(tmp, "staticx-nolink", prog=None),
        staticx_dir(tmp, "staticx-fresh", mtime=time.time()),
        staticx_dir(tmp, "staticx-open", mode=0o755),
    ]
    assert remove_stale_unpack_dirs(tmp) == []
    assert all(p.exists() for p in kept)


def test_a_staticx_dir_named_in_a_live_process_environment_is_kept(
    tmp: Path, holders: list[subprocess.Popen[bytes]]
) -> None:
    used = staticx_dir(tmp, "staticx-used")
    unused = staticx_dir(tmp, "staticx-unused")
    hold(holders, ["cat"], env={**os.environ, "STATICX_BUNDLE_DIR": str(used)})
    assert remove_stale_unpack_dirs(tmp) == [unused]
    assert used.exists()


def test_the_running_static_warren_own_bundle_dir_is_never_touched(tmp: Path) -> None:
    own = staticx_dir(tmp, "staticx-own")
    env = {**os.environ, "STATICX_BUNDLE_DIR": str(own)}
    assert in_a_fresh_python("", "candidates(pathlib.Path(sys.argv[1]))", tmp, env) == []
