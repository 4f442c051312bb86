"""A warren knows its own supervisor by the runtime's real executable (runtime/pidfile.py), not
by the one file's name: with the file renamed (not warren*), its supervisor still counts, and a
process of another executable holding the lock still does not.

The launcher names the runtime's executable `warren` today, so the name check would catch it too;
here it is named otherwise, so that only the comparison with the real executable can match (it
compared with the one file before, which a supervisor's /proc/<pid>/exe never is)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from warren_bundle import launcher
from warren_bundle.paths import Paths
from warren_bundle.runtime import pidfile

from support import make_paths, wait_for

HOLD_THE_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def runtime_exe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process as a frozen warren would see itself: its executable in a runtime dir, named
    otherwise than warren*, started by the launcher from a one file renamed `cbundle`."""
    runtime = tmp_path / "runtime" / ("d" * 64)
    runtime.mkdir(parents=True)
    exe = runtime / "containerd-bundle"
    shutil.copy2(os.path.realpath(sys.executable), exe)
    onefile = tmp_path / "cbundle"
    onefile.write_bytes(b"")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(exe))
    monkeypatch.setenv(launcher.RUNTIME_ENV, str(runtime))
    monkeypatch.setenv(launcher.ONEFILE_ENV, str(onefile))
    assert launcher.onefile() == str(onefile)
    return exe


@contextmanager
def holder(exe: str, paths: Paths) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [exe, "-c", HOLD_THE_LOCK, str(paths.supervisor_lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        wait_for(lambda: proc.pid in pidfile.lock_holders(paths.supervisor_lock), 10)
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def test_a_renamed_file_knows_its_own_supervisor(tmp_path: Path, runtime_exe: Path) -> None:
    paths = make_paths(tmp_path / "w")
    paths.run_dir.mkdir(parents=True)
    with holder(str(runtime_exe), paths) as proc:
        found = pidfile.supervisor(paths)
        assert found is not None and found.pid == proc.pid


def test_another_executable_holding_the_lock_is_not_ours(tmp_path: Path, runtime_exe: Path) -> None:
    paths = make_paths(tmp_path / "w")
    paths.run_dir.mkdir(parents=True)
    other = tmp_path / "other-tool"
    shutil.copy2(runtime_exe, other)
    with holder(str(other), paths):
        assert pidfile.supervisor(paths) is None
