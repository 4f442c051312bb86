"""`warren ctr run` keeps its IO FIFOs under warren's run dir, not the system containerd's
/run/containerd/fifo (issue 25)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Supervised
from support import TEST_IMAGE, run_warren, wait_for

pytestmark = pytest.mark.integration


def test_ctr_run_makes_its_fifos_under_the_run_dir(
    supervised: Supervised, busybox_tar: Path
) -> None:
    paths = supervised.paths
    imported = run_warren(paths, "ctr", "images", "import", str(busybox_tar))
    assert imported.returncode == 0, imported.stderr
    fifos = paths.run_dir / "fifo"
    started = run_warren(paths, "ctr", "run", "-d", TEST_IMAGE, "fifo-test", "sleep", "60")
    assert started.returncode == 0, started.stderr
    try:
        made = wait_for(
            lambda: [p for p in fifos.rglob("*") if p.is_fifo()], timeout=10, what="FIFOs"
        )
        assert all(paths.run_dir in p.parents for p in made)
        assert (fifos.stat().st_mode & 0o777) == 0o700
    finally:
        run_warren(paths, "ctr", "tasks", "kill", "-s", "SIGKILL", "fifo-test")

        def gone() -> bool:
            if run_warren(paths, "ctr", "tasks", "delete", "fifo-test").returncode == 0:
                return True
            return "fifo-test" not in run_warren(paths, "ctr", "tasks", "ls", "-q").stdout

        wait_for(gone, timeout=20, what="the task to go")
        run_warren(paths, "ctr", "containers", "delete", "fifo-test")
