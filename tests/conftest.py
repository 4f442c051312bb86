"""Fixtures shared by every test layer (unit/, integration/, e2e/); helpers in tests/support/."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from warren_bundle.paths import Paths

from support import (
    FROZEN,
    STAGED,
    busybox_image,
    cleanup_runtime,
    make_paths,
    short_dir,
    start_run,
    stop_run,
)

IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, reason: str) -> None:
    """Skip locally; in CI a missing prerequisite is a failure, never a silent skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI prerequisite missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def staged_payload() -> Path:
    require((STAGED / "payload.tar.zst").is_file(), f"no staged payload at {STAGED}: make payload")
    return STAGED


@pytest.fixture(scope="session")
def frozen_exe() -> Path:
    require(FROZEN.is_file(), f"no frozen executable at {FROZEN}: make build")
    return FROZEN


@pytest.fixture
def root_required() -> None:
    require(os.geteuid() == 0, "needs root (containerd mounts and cgroups)")


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(Path("/bin/busybox").is_file(), "busybox-static is not installed")
    return busybox_image(tmp_path_factory.mktemp("image") / "busybox.tar")


@pytest.fixture
def wpaths() -> Iterator[Paths]:
    """Data, run and config dirs under one short /tmp dir, torn down with anything left running."""
    base = short_dir()
    paths = make_paths(base)
    yield paths
    cleanup_runtime(paths, base)


@dataclass
class Supervised:
    proc: subprocess.Popen[str]
    paths: Paths

    def stop(self, timeout: float = 30) -> int:
        return stop_run(self.proc, timeout)


@pytest.fixture
def supervised(wpaths: Paths, staged_payload: Path, root_required: None) -> Iterator[Supervised]:
    """`warren containerd run` from source, in the foreground, ready on its socket."""
    proc = start_run(wpaths, staged_payload, "--health-interval", "0.5")
    try:
        yield Supervised(proc, wpaths)
    finally:
        stop_run(proc)


def have(binary: str) -> bool:
    return shutil.which(binary) is not None
