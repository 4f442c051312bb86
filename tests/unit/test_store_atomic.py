"""store/atomic.py: one digest-named dir under a root, built once, whole or not at all."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from warren_bundle.fsutil import locked
from warren_bundle.store.atomic import TMP_PREFIX, ensure_dir, remove_leftovers, root_lock

STAMP = "done"


def _complete(d: Path) -> bool:
    return (d / STAMP).is_file()


def _lock(root: Path) -> object:
    @contextmanager
    def lock() -> Iterator[None]:
        with locked(root / ".lock", 10.0):
            yield

    return lock


def _builder(calls: list[Path], gate: threading.Event | None = None) -> object:
    def build(tmp: Path) -> str:
        calls.append(tmp)
        if gate is not None:
            gate.wait(10)
        (tmp / "runtime").write_text("bits")
        (tmp / STAMP).write_text("ok")  # the stamp last
        return "built"

    return build


def test_builds_once_then_finds_it_complete_without_building(tmp_path: Path) -> None:
    calls: list[Path] = []
    first = ensure_dir(
        tmp_path, "abc123", lock=_lock(tmp_path), complete=_complete, build=_builder(calls)
    )
    assert first.built == "built" and first.path == tmp_path / "abc123"
    assert (tmp_path / "abc123" / "runtime").read_text() == "bits"
    again = ensure_dir(
        tmp_path, "abc123", lock=_lock(tmp_path), complete=_complete, build=_builder(calls)
    )
    assert again.built is None and len(calls) == 1
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


def test_the_second_process_rechecks_under_the_lock_and_builds_nothing(tmp_path: Path) -> None:
    # A builds slowly while holding the lock; B, which saw the dir missing before locking, waits
    # and then finds it complete: the builder ran once.
    calls: list[Path] = []
    gate = threading.Event()
    results: list[object] = []

    def run() -> None:
        results.append(
            ensure_dir(
                tmp_path, "d", lock=_lock(tmp_path), complete=_complete, build=_builder(calls, gate)
            ).built
        )

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(20)
    assert sorted(map(str, results)) == ["None", "built"]
    assert len(calls) == 1


def test_a_failed_build_leaves_no_target_and_no_temp_dir(tmp_path: Path) -> None:
    def build(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise ValueError("hash mismatch")

    with pytest.raises(ValueError, match="hash mismatch"):
        ensure_dir(tmp_path, "d", lock=_lock(tmp_path), complete=_complete, build=build)
    assert not (tmp_path / "d").exists()
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


def test_an_incomplete_target_is_replaced_whole(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "stale").write_text("from a killed run")
    calls: list[Path] = []
    ensure_dir(tmp_path, "d", lock=_lock(tmp_path), complete=_complete, build=_builder(calls))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [STAMP, "runtime"]


def test_then_runs_under_the_lock_also_when_complete(tmp_path: Path) -> None:
    calls: list[Path] = []
    kw = {"lock": _lock(tmp_path), "complete": _complete, "build": _builder(calls)}
    ensure_dir(tmp_path, "d", **kw)  # type: ignore[arg-type]
    seen = ensure_dir(tmp_path, "d", then=lambda d: d.name, **kw)  # type: ignore[arg-type]
    assert seen.then == "d" and seen.built is None and len(calls) == 1


def test_a_generic_root_with_its_own_lock(tmp_path: Path) -> None:
    # What a launcher's runtime cache needs: a digest-named dir under a root it may not have
    # created yet, a builder, and nothing else.
    root = tmp_path / "cache" / "runtime"
    calls: list[Path] = []
    lock = root_lock(root, 5.0)
    done = ensure_dir(root, "f00d", lock=lock, complete=_complete, build=_builder(calls))
    assert done.built == "built" and (root / "f00d" / STAMP).is_file()
    assert (root / ".lock").is_file() and len(calls) == 1


def test_leftovers_of_killed_builds_are_removed(tmp_path: Path) -> None:
    (tmp_path / f"{TMP_PREFIX}dead").mkdir()
    (tmp_path / "keep").mkdir()
    remove_leftovers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]
