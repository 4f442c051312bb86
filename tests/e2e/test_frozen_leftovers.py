"""`kill -9` of the one-file bootloader leaves its unpack dir; the next extract or start removes it.

The bootloader (the pid a user or systemd starts) unpacks the Python runtime into
$TMPDIR/_MEIxxxxxx, runs the Python supervisor as its child, and removes the dir when that child
exits. SIGKILL gives it no chance: the supervisor lives on, and when it stops the dir stays.
Every frozen warren here unpacks into a private TMPDIR.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from warren_bundle.paths import Paths

from support import (
    cleanup_runtime,
    containerd_started,
    make_paths,
    read_pid,
    short_dir,
    wait_for,
)
from support.frozen import exe_under_test, frozen_env, run_frozen

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("root_required")]

AN_HOUR_AGO = time.time() - 3600


@pytest.fixture
def exe(request: pytest.FixtureRequest) -> Path:
    return exe_under_test(request)


@pytest.fixture
def tmpdir_env() -> Iterator[Path]:
    where = short_dir("mei")
    yield where
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def node_paths() -> Iterator[list[Paths]]:
    """Private data/run/config dirs, made on demand, each torn down with what runs on it."""
    made: list[Paths] = []
    yield made
    for paths in made:
        cleanup_runtime(paths, paths.data_dir.parent)


def new_paths(made: list[Paths]) -> Paths:
    paths = make_paths(short_dir("lo"))
    made.append(paths)
    return paths


def unpack_dirs(tmpdir: Path) -> set[Path]:
    return set(tmpdir.glob("_MEI*"))


@dataclass
class Running:
    bootloader: subprocess.Popen[bytes]
    supervisor_pid: int
    unpack_dir: Path


def run_frozen_containerd(exe: Path, paths: Paths, tmpdir: Path) -> Running:
    """`containerd run` of the frozen file, ready; with its bootloader, supervisor and dir."""
    before = unpack_dirs(tmpdir)
    proc = subprocess.Popen(
        [str(exe), "containerd", "run"],
        env=frozen_env(paths, TMPDIR=str(tmpdir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    wait_for(
        lambda: proc.poll() is not None or containerd_started(paths),
        timeout=60,
        what="the frozen warren to start containerd",
    )
    assert proc.poll() is None, f"containerd run exited {proc.returncode}"
    supervisor = read_pid(paths.supervisor_pidfile)
    assert psutil.Process(supervisor).ppid() == proc.pid, "the supervisor is the bootloader's child"
    (unpacked,) = unpack_dirs(tmpdir) - before
    return Running(proc, supervisor, unpacked)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def leave_unpack_dir(exe: Path, paths: Paths, tmpdir: Path) -> Path:
    """kill -9 the bootloader of a `containerd run`, then stop its orphaned supervisor."""
    run = run_frozen_containerd(exe, paths, tmpdir)
    run.bootloader.send_signal(signal.SIGKILL)
    assert run.bootloader.wait(10) == -signal.SIGKILL
    assert not gone(run.supervisor_pid), "SIGKILL of the bootloader leaves its child running"
    os.kill(run.supervisor_pid, signal.SIGTERM)
    wait_for(lambda: gone(run.supervisor_pid), timeout=60, what="the supervisor to stop")
    assert run.unpack_dir.is_dir(), "nobody removed the unpack dir"
    assert (run.unpack_dir / "base_library.zip").is_file()
    return run.unpack_dir


def age(*dirs: Path) -> None:
    """As if unpacked an hour ago: then only use, not age, can keep a dir."""
    for path in dirs:
        os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))


def stop(run: Running) -> None:
    run.bootloader.send_signal(signal.SIGTERM)
    assert run.bootloader.wait(60) == 0
    assert not run.unpack_dir.exists(), "a bootloader that exits removes its own dir"


def test_extract_removes_the_dir_a_killed_bootloader_left_not_a_running_ones(
    exe: Path, tmpdir_env: Path, node_paths: list[Paths]
) -> None:
    leftover = leave_unpack_dir(exe, new_paths(node_paths), tmpdir_env)
    running = run_frozen_containerd(exe, new_paths(node_paths), tmpdir_env)
    age(leftover, running.unpack_dir)

    out = run_frozen(exe, new_paths(node_paths), "extract", "--json", TMPDIR=str(tmpdir_env))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["cached"] is False
    assert f"removed {leftover}: an unpack dir no process uses" in out.stderr
    assert not leftover.exists()
    assert running.unpack_dir.is_dir(), "a running warren's own unpack dir was removed"
    assert unpack_dirs(tmpdir_env) == {running.unpack_dir}  # extract's own went with it
    stop(running)


def test_start_removes_the_dir_a_killed_bootloader_left_while_the_child_lived_on(
    exe: Path, tmpdir_env: Path, node_paths: list[Paths]
) -> None:
    paths = new_paths(node_paths)
    run = run_frozen_containerd(exe, paths, tmpdir_env)
    run.bootloader.send_signal(signal.SIGKILL)
    assert run.bootloader.wait(10) == -signal.SIGKILL
    age(run.unpack_dir)
    # The orphaned supervisor still runs from the dir: an extract meanwhile keeps it.
    out = run_frozen(exe, new_paths(node_paths), "extract", TMPDIR=str(tmpdir_env))
    assert out.returncode == 0, out.stderr
    assert run.unpack_dir.is_dir(), "removed the unpack dir of a live supervisor"
    other = run_frozen_containerd(exe, new_paths(node_paths), tmpdir_env)  # a start, likewise
    assert run.unpack_dir.is_dir(), "removed the unpack dir of a live supervisor"

    os.kill(run.supervisor_pid, signal.SIGTERM)
    wait_for(lambda: gone(run.supervisor_pid), timeout=60, what="the supervisor to stop")
    assert run.unpack_dir.is_dir()
    age(other.unpack_dir)
    started = run_frozen(exe, paths, "containerd", "start", TMPDIR=str(tmpdir_env))
    assert started.returncode == 0, started.stderr
    try:
        assert not run.unpack_dir.exists()
        assert other.unpack_dir.is_dir(), "a running warren's own unpack dir was removed"
        log = paths.log_file.read_text()
        assert f"removed {run.unpack_dir}: an unpack dir no process uses" in log
        supervisor = read_pid(paths.supervisor_pidfile)
        own = {
            p
            for p in unpack_dirs(tmpdir_env)
            if f"{p}/" in Path(f"/proc/{supervisor}/maps").read_text()
        }
        assert len(own) == 1, "the started supervisor runs from a dir of its own, kept"
    finally:
        stopped = run_frozen(exe, paths, "containerd", "stop", TMPDIR=str(tmpdir_env))
    assert stopped.returncode == 0, stopped.stderr
    stop(other)
