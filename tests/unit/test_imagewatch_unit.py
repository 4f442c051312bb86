"""The watch of <data-dir>/images: complete files only, changed files again, SHA256SUMS trust."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.support import make_paths
from warren_bundle import images
from warren_bundle.images import ArchiveResult
from warren_bundle.imagewatch import Watcher, load_sums
from warren_bundle.paths import Paths


@pytest.fixture
def imported(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stands in for ctr: records which archives would have been imported."""
    names: list[str] = []

    def fake(_ctr: Path, _socket: str, archive: Path, namespaces: Iterable[str]) -> ArchiveResult:
        names.append(archive.name)
        return ArchiveResult(str(archive), "imported", list(namespaces), [f"img/{archive.name}"])

    monkeypatch.setattr(images, "import_archive", fake)
    return names


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = make_paths(tmp_path)
    p.images_dir.mkdir(parents=True)
    return p


def _watcher(paths: Paths) -> tuple[Watcher, list[ArchiveResult]]:
    results: list[ArchiveResult] = []
    return Watcher(paths, "/nonexistent.sock", results.append), results


def test_a_new_archive_is_imported_once_its_stat_holds_for_two_polls(
    paths: Paths, imported: list[str]
) -> None:
    watcher, results = _watcher(paths)
    archive = paths.images_dir / "a.tar"
    archive.write_bytes(b"x" * 10)
    assert watcher.poll() == []  # first sight: maybe still being copied
    assert imported == []
    with open(archive, "ab") as fp:  # still growing
        fp.write(b"y")
    assert watcher.poll() == []
    assert watcher.poll()[0].status == "imported"
    assert imported == ["a.tar"] and results[0].note == "arrived while running"
    assert watcher.poll() == [] and imported == ["a.tar"]  # not again


def test_a_changed_archive_is_imported_again(paths: Paths, imported: list[str]) -> None:
    watcher, _ = _watcher(paths)
    archive = paths.images_dir / "a.tar"
    archive.write_bytes(b"one")
    watcher.poll()
    watcher.poll()
    archive.write_bytes(b"second")
    os.utime(archive, ns=(1, 2))
    watcher.poll()
    watcher.poll()
    assert imported == ["a.tar", "a.tar"]


def test_partial_and_hidden_files_are_never_imported(paths: Paths, imported: list[str]) -> None:
    watcher, _ = _watcher(paths)
    (paths.images_dir / "a.tar.partial").write_bytes(b"x")
    (paths.images_dir / ".a.tar.tmp").write_bytes(b"x")
    (paths.images_dir / ".b.tar").write_bytes(b"x")
    for _ in range(3):
        watcher.poll()
    assert imported == []


def test_only_archives_listed_in_sha256sums_with_their_digest_are_imported(
    paths: Paths, imported: list[str]
) -> None:
    good, bad, unlisted = (paths.images_dir / n for n in ("good.tar", "bad.tar", "other.tar"))
    for f in (good, bad, unlisted):
        f.write_bytes(f.name.encode())
    (paths.images_dir / "SHA256SUMS").write_text(
        f"{hashlib.sha256(b'good.tar').hexdigest()}  good.tar\n"
        f"{hashlib.sha256(b'something else').hexdigest()} *bad.tar\n"
    )
    watcher, results = _watcher(paths)
    watcher.poll()
    watcher.poll()
    assert imported == ["good.tar"]
    why = {Path(r.archive).name: (r.status, r.error or "") for r in results}
    assert why["bad.tar"][0] == "untrusted" and "does not match" in why["bad.tar"][1]
    assert why["other.tar"][0] == "untrusted" and "not listed" in why["other.tar"][1]
    watcher.poll()
    assert len(results) == 3  # an untrusted archive is not looked at again while unchanged


def test_a_malformed_sha256sums_trusts_nothing(paths: Paths) -> None:
    (paths.images_dir / "SHA256SUMS").write_text("not a sum line\n")
    sums = load_sums(paths.images_dir)
    assert sums.verdict(paths.images_dir / "a.tar") is not None


def test_no_sha256sums_trusts_every_archive(paths: Paths) -> None:
    assert load_sums(paths.images_dir).verdict(paths.images_dir / "a.tar") is None


def test_nothing_is_imported_while_containerd_is_not_running(
    paths: Paths, imported: list[str]
) -> None:
    running = False
    watcher = Watcher(paths, "/x.sock", lambda _r: None, lambda: running)
    (paths.images_dir / "a.tar").write_bytes(b"x")
    watcher.poll()
    watcher.poll()
    assert imported == []
    running = True
    watcher.poll()
    assert imported == ["a.tar"]


def test_the_import_at_start_honours_sha256sums_too(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warren_bundle import airgap

    names: list[str] = []

    def fake(_ctr: Path, _socket: str, archive: Path, namespaces: Iterable[str]) -> ArchiveResult:
        names.append(archive.name)
        return ArchiveResult(str(archive), "imported", list(namespaces), ["img"])

    monkeypatch.setattr(airgap, "import_archive", fake)
    good = paths.images_dir / "good.tar"
    good.write_bytes(b"good")
    (paths.images_dir / "rogue.tar").write_bytes(b"rogue")
    (paths.images_dir / "SHA256SUMS").write_text(
        f"{hashlib.sha256(b'good').hexdigest()}  good.tar\n"
    )
    for f in paths.images_dir.iterdir():
        os.utime(f, (1, 1))  # long complete: no wait for a copy in progress
    results = {Path(r.archive).name: r.status for r in airgap.import_directory(paths, "/x.sock")}
    assert results == {"good.tar": "imported", "rogue.tar": "untrusted"}
    assert names == ["good.tar"]
