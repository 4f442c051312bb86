"""Air-gapped images: the import of <data-dir>/images at start, its cache, and `warren images`."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
import zstandard

from warren_bundle.images import (
    ArchiveResult,
    find_archives,
    image_names,
    open_archive,
)
from warren_bundle.imagewatch import ImportCache
from warren_bundle.paths import Paths

from conftest import Supervised
from support import busybox_image, run_warren

IMAGE_A = "docker.io/library/busybox:airgap-a"
IMAGE_B = "docker.io/library/busybox:airgap-b"
IMAGE_C = "docker.io/library/busybox:airgap-c"
NAMESPACES = ("default", "k8s.io")


def ctr_images(paths: Paths, namespace: str) -> set[str]:
    done = run_warren(paths, "ctr", "-n", namespace, "images", "ls", "-q")
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def images_status(paths: Paths, wait: float = 60) -> tuple[int, dict]:
    done = run_warren(paths, "images", "status", "--wait", str(wait), "--json")
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def by_name(report: dict) -> dict[str, dict]:
    return {Path(r["archive"]).name: r for r in report["results"]}


# --- unit: files, formats, cache --------------------------------------------------------------


def test_find_archives_takes_the_three_formats_sorted_and_ignores_the_rest(tmp_path: Path) -> None:
    for name in ("b.tar.zst", "a.tar", "c.tar.gz", "notes.txt", ".hidden.tar", "x.tgz.part"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.tar").mkdir()

    assert [p.name for p in find_archives(tmp_path)] == ["a.tar", "b.tar.zst", "c.tar.gz"]
    assert find_archives(tmp_path / "missing") == []


def test_open_archive_decompresses_by_magic_not_by_name(tmp_path: Path) -> None:
    tar = busybox_image(tmp_path / "image.tar")
    raw = tar.read_bytes()
    (tmp_path / "gz.tar").write_bytes(gzip.compress(raw))  # misnamed on purpose
    (tmp_path / "z.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))

    for name in ("image.tar", "gz.tar", "z.tar.zst"):
        with open_archive(tmp_path / name) as stream:
            assert stream.read() == raw, name


def test_image_names_from_ctr_output() -> None:
    out = (
        "unpacking docker.io/library/busybox:1 (sha256:0a1b)...done\n"
        "unpacking docker.io/library/alpine:3 (sha256:9f8e)...done\n"
    )
    assert image_names(out) == ["docker.io/library/busybox:1", "docker.io/library/alpine:3"]
    assert image_names("docker.io/library/busybox:1  saved\n") == ["docker.io/library/busybox:1"]


def test_cache_matches_name_size_mtime_and_namespaces(tmp_path: Path) -> None:
    archive = tmp_path / "app.tar"
    archive.write_bytes(b"one")
    cache = ImportCache(tmp_path / "cache.json")
    cache.record(archive, ArchiveResult(str(archive), "imported", list(NAMESPACES), [IMAGE_A]))
    cache.save()

    reloaded = ImportCache(tmp_path / "cache.json")
    assert reloaded.lookup(archive, NAMESPACES) is not None
    assert reloaded.lookup(archive, ("default", "other")) is None
    os.utime(archive, ns=(1, 1))
    assert reloaded.lookup(archive, NAMESPACES) is None

    (tmp_path / "cache.json").write_text("{not json")
    assert ImportCache(tmp_path / "cache.json").entries == {}


# --- integration: a real containerd -----------------------------------------------------------


@pytest.fixture
def staged_images(wpaths: Paths, busybox_tar: Path) -> Path:
    """<data>/images with one archive per format, a broken one and a file to ignore."""
    images = wpaths.images_dir
    images.mkdir(parents=True)
    busybox_image(images / "a.tar", IMAGE_A)
    raw_b = busybox_image(wpaths.data_dir / "b.tar", IMAGE_B).read_bytes()
    (images / "b.tar.gz").write_bytes(gzip.compress(raw_b))
    raw_c = busybox_image(wpaths.data_dir / "c.tar", IMAGE_C).read_bytes()
    (images / "c.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(raw_c))
    (images / "broken.tar").write_bytes(b"this is not a tar archive\n" * 40)
    (images / "README.txt").write_text("archives go here\n")
    return images


@pytest.mark.integration
def test_archives_are_imported_once_ready_and_a_bad_one_does_not_stop_the_rest(
    staged_images: Path, supervised: Supervised
) -> None:
    paths = supervised.paths

    rc, report = images_status(paths)

    assert report["state"] == "done"
    results = by_name(report)
    assert sorted(results) == ["a.tar", "b.tar.gz", "broken.tar", "c.tar.zst"]
    for name, image in (("a.tar", IMAGE_A), ("b.tar.gz", IMAGE_B), ("c.tar.zst", IMAGE_C)):
        assert results[name]["status"] == "imported", results[name]
        assert results[name]["images"] == [image]
        assert results[name]["namespaces"] == list(NAMESPACES)
    broken = results["broken.tar"]
    assert broken["status"] == "failed"
    assert "import into namespace default failed" in broken["error"]
    assert f"remove it from {staged_images}" in broken["error"]
    assert rc == 1, "status must fail while an archive failed"
    for namespace in NAMESPACES:
        assert {IMAGE_A, IMAGE_B, IMAGE_C} <= ctr_images(paths, namespace), namespace


@pytest.mark.integration
def test_restart_skips_cached_archives_and_reimports_changed_or_missing_ones(
    staged_images: Path, supervised: Supervised
) -> None:
    paths = supervised.paths
    assert images_status(paths)[1]["state"] == "done"
    (staged_images / "broken.tar").unlink()
    assert supervised.stop() == 0

    started = run_warren(paths, "containerd", "start")
    assert started.returncode == 0, started.stderr
    rc, report = images_status(paths)
    assert rc == 0, report
    assert {n: r["status"] for n, r in by_name(report).items()} == {
        "a.tar": "cached",
        "b.tar.gz": "cached",
        "c.tar.zst": "cached",
    }

    # A new file under the same name, and an image deleted from containerd: both imported again.
    os.utime(staged_images / "a.tar", ns=(10**18, 10**18))
    removed = run_warren(paths, "ctr", "-n", "k8s.io", "images", "rm", IMAGE_B)
    assert removed.returncode == 0, removed.stderr
    assert run_warren(paths, "containerd", "stop").returncode == 0
    assert run_warren(paths, "containerd", "start").returncode == 0
    rc, report = images_status(paths)
    assert rc == 0, report
    assert {n: r["status"] for n, r in by_name(report).items()} == {
        "a.tar": "imported",
        "b.tar.gz": "imported",
        "c.tar.zst": "cached",
    }
    assert IMAGE_B in ctr_images(paths, "k8s.io")
    assert run_warren(paths, "containerd", "stop").returncode == 0


@pytest.mark.integration
def test_images_import_by_hand(supervised: Supervised, busybox_tar: Path, tmp_path: Path) -> None:
    paths = supervised.paths
    zst = tmp_path / "app.tar.zst"
    zst.write_bytes(
        zstandard.ZstdCompressor().compress(busybox_image(tmp_path / "x.tar", IMAGE_A).read_bytes())
    )

    done = run_warren(paths, "images", "import", str(zst), "--namespace", "team1")

    assert done.returncode == 0, done.stderr
    assert f"imported app.tar.zst into team1: {IMAGE_A}" in done.stdout
    assert IMAGE_A in ctr_images(paths, "team1")
    assert IMAGE_A not in ctr_images(paths, "default")

    both = run_warren(paths, "images", "import", str(busybox_tar))
    assert both.returncode == 0, both.stderr
    assert "into default, k8s.io" in both.stdout


@pytest.mark.integration
def test_images_import_reports_a_bad_file_and_imports_the_others(
    supervised: Supervised, tmp_path: Path
) -> None:
    paths = supervised.paths
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    good = busybox_image(tmp_path / "good.tar", IMAGE_C)

    done = run_warren(paths, "images", "import", str(bad), str(good), "-n", "default")

    assert done.returncode == 1
    assert "bad.tar.gz: cannot read the archive" in done.stderr
    assert "1 of 2 image archive(s) failed to import" in done.stderr
    assert "the others were imported" in done.stderr
    assert IMAGE_C in ctr_images(paths, "default")


def test_images_import_usage_and_not_running_errors(wpaths: Paths, tmp_path: Path) -> None:
    missing = run_warren(wpaths, "images", "import", str(tmp_path / "nope.tar"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr

    archive = tmp_path / "a.tar"
    archive.write_bytes(b"x")
    nobody = run_warren(
        wpaths, "images", "import", str(archive), WARREN_SYSTEM_SOCKET=str(tmp_path / "no.sock")
    )
    assert nobody.returncode == 7
    assert nobody.stderr.startswith("warren: socket not found")
    assert len(nobody.stderr.strip().splitlines()) == 1

    status = run_warren(wpaths, "images", "status")
    assert status.returncode == 7
    assert "containerd is not running" in status.stderr
