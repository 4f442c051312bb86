"""The frozen file an e2e test runs, and running it on private dirs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from warren_bundle.paths import Paths

from support import TEST_EXE, warren_env


def exe_under_test(request: pytest.FixtureRequest) -> Path:
    """WARREN_TEST_EXE when set (the file under test), else dist/'s (the `frozen_exe` fixture)."""
    if TEST_EXE:
        return Path(TEST_EXE).resolve()
    return Path(request.getfixturevalue("frozen_exe"))


def frozen_env(paths: Paths, **extra: str) -> dict[str, str]:
    """warren_env for a frozen file: the payload it carries, no override."""
    return warren_env(paths, payload=None, **extra)


def run_frozen(
    exe: Path, paths: Paths, *args: str, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe), *args],
        env=frozen_env(paths, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )
