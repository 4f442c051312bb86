"""The launcher's runtime cache (store/runtimes.py): prune removes only the runtime dirs no
process holds, under the root's .lock (fsutil.locked), and skips a root it cannot lock."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.store import runtimes


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One root only: never the host's own caches."""
    root = tmp_path / "runtime"
    root.mkdir()
    monkeypatch.setattr(runtimes, "runtime_roots", lambda: [root])
    monkeypatch.setattr(runtimes, "_LOCK_TIMEOUT", 0.2)
    return root


@pytest.fixture
def dirs(root: Path) -> Iterator[tuple[Path, Path]]:
    """A free runtime dir, and one a process runs from (a shared flock, as the launcher's)."""
    free, used = root / ("a" * 64), root / ("b" * 64)
    for d in (free, used):
        (d / "bin").mkdir(parents=True)
        (d / "bin" / "warren").write_bytes(b"x" * 10)
    fd = os.open(used, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    yield free, used
    os.close(fd)


def test_listing_says_which_is_in_use(dirs: tuple[Path, Path]) -> None:
    free, used = dirs
    found = {rt.path: rt for rt in runtimes.listing()}
    assert set(found) == {free, used}
    assert not found[free].in_use and found[used].in_use
    assert found[free].size == 10


def test_prune_removes_only_what_no_process_holds(root: Path, dirs: tuple[Path, Path]) -> None:
    free, used = dirs
    assert runtimes.prune() == [free]
    assert not free.exists() and used.is_dir()
    assert sorted(p.name for p in root.iterdir()) == [".lock", used.name]


def test_prune_skips_a_root_another_warren_holds(root: Path, dirs: tuple[Path, Path]) -> None:
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a launcher extracting
        assert runtimes.prune() == []
    finally:
        os.close(fd)
    assert dirs[0].is_dir()


def test_prune_skips_a_root_whose_lock_is_a_symlink(
    root: Path, dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    (root / ".lock").symlink_to(tmp_path / "victim")
    assert runtimes.prune() == []
    assert not (tmp_path / "victim").exists() and dirs[0].is_dir()
