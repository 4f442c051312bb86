"""Archives copied into <data-dir>/images while containerd runs are imported without a restart,
and with a SHA256SUMS only the archives it lists with their digest are (issue 25)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from warren_bundle.paths import Paths

from conftest import Supervised
from support import busybox_image, run_warren, wait_for

pytestmark = pytest.mark.integration


def _report(paths: Paths) -> dict[str, Any]:
    out = run_warren(paths, "images", "status", "--json")
    return json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}


def _result(paths: Paths, name: str) -> dict[str, Any] | None:
    for entry in _report(paths).get("results") or []:
        if Path(entry.get("archive", "")).name == name:
            return dict(entry)
    return None


def _listed(paths: Paths, image: str) -> bool:
    out = run_warren(paths, "ctr", "-n", "k8s.io", "images", "ls", "-q")
    return image in out.stdout.split()


def _watching(paths: Paths) -> bool:
    report = _report(paths)
    return report.get("state") == "done" and bool(report.get("watching"))


def test_an_archive_copied_in_while_running_is_imported_without_a_restart(
    supervised: Supervised, tmp_path: Path
) -> None:
    paths = supervised.paths
    wait_for(lambda: _watching(paths), timeout=60, what="the images watch")
    image = "docker.io/library/busybox:arrived-late"
    source = busybox_image(tmp_path / "late.tar", name=image)
    paths.images_dir.mkdir(parents=True, exist_ok=True)
    pid = json.loads(run_warren(paths, "containerd", "status", "--json").stdout)["containerd_pid"]
    shutil.copyfile(source, paths.images_dir / "late.tar")
    copied = time.monotonic()
    wait_for(lambda: _listed(paths, image), timeout=30, interval=0.1, what="the late image")
    took = time.monotonic() - copied
    print(f"\ncopy finished -> listed in k8s.io: {took:.2f} s")
    entry = _result(paths, "late.tar")
    assert entry is not None and entry["status"] == "imported", entry
    assert took < 15
    after = json.loads(run_warren(paths, "containerd", "status", "--json").stdout)
    assert after["containerd_pid"] == pid  # no restart


def test_a_partial_file_waits_for_its_rename(supervised: Supervised, tmp_path: Path) -> None:
    paths = supervised.paths
    wait_for(lambda: _watching(paths), timeout=60, what="the images watch")
    image = "docker.io/library/busybox:renamed"
    source = busybox_image(tmp_path / "r.tar", name=image)
    partial = paths.images_dir / "r.tar.partial"
    paths.images_dir.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, open(partial, "wb") as out:
        out.write(src.read(1000))  # half a file sits there for more than two polls
        out.flush()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the watch polls meanwhile; nothing may come of it
            assert _result(paths, "r.tar.partial") is None
            time.sleep(0.5)
        out.write(src.read())
    partial.rename(paths.images_dir / "r.tar")
    wait_for(lambda: _listed(paths, image), timeout=30, interval=0.1, what="the renamed image")


def test_only_archives_in_sha256sums_are_imported(supervised: Supervised, tmp_path: Path) -> None:
    paths = supervised.paths
    wait_for(lambda: _watching(paths), timeout=60, what="the images watch")
    trusted_image = "docker.io/library/busybox:trusted"
    rogue_image = "docker.io/library/busybox:rogue"
    trusted = busybox_image(tmp_path / "trusted.tar", name=trusted_image)
    rogue = busybox_image(tmp_path / "rogue.tar", name=rogue_image)
    digest = hashlib.sha256(trusted.read_bytes()).hexdigest()
    paths.images_dir.mkdir(parents=True, exist_ok=True)
    (paths.images_dir / "SHA256SUMS").write_text(f"{digest}  trusted.tar\n")
    shutil.copyfile(rogue, paths.images_dir / "rogue.tar")
    shutil.copyfile(trusted, paths.images_dir / "trusted.tar")
    wait_for(lambda: _listed(paths, trusted_image), timeout=30, what="the trusted image")
    entry = wait_for(lambda: _result(paths, "rogue.tar"), timeout=30, what="the rogue's report")
    assert entry["status"] == "untrusted" and "not listed in SHA256SUMS" in entry["error"]
    assert not _listed(paths, rogue_image)
    text = run_warren(paths, "images", "status")
    assert "rogue.tar: not imported (not listed in SHA256SUMS" in text.stdout
    assert "only archives SHA256SUMS lists are imported" in text.stdout
