"""Two warrens that would share a run dir or a data dir, through whatever WARREN_TEST_EXE names
(else source): the second refuses at once with one line naming the other's dirs and pid, and
acts on nothing of the first's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.paths import Paths

from support import cleanup_runtime, containerd_started, read_pid, run_warren, short_dir

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("root_required")]


@pytest.fixture
def two() -> Iterator[tuple[Path, Path]]:
    a, b = short_dir("wa"), short_dir("wb")
    yield a, b
    for base in (a, b):
        paths = Paths(base / "data", base / "run", base / "etc")
        run_warren(paths, "containerd", "stop")
        cleanup_runtime(paths, base)


def one_line(stderr: str, *needles: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("warren: removed /tmp/_MEI")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def start(paths: Paths) -> int:
    out = run_warren(paths, "containerd", "start")
    assert out.returncode == 0, out.stderr
    return read_pid(paths.supervisor_pidfile)


def test_same_run_dir_other_data_dir_is_refused_and_its_stop_stops_nothing(
    two: tuple[Path, Path], staged_payload: Path
) -> None:
    """It said "already running", exit 0, and its stop stopped the first warren."""
    a, b = two
    first = Paths(a / "data", a / "run", a / "etc")
    second = Paths(b / "data", a / "run", b / "etc")
    sup = start(first)
    for command in ("start", "stop", "run"):
        out = run_warren(second, "containerd", command, timeout=60)
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        one_line(out.stderr, f"warren pid {sup} already runs", str(first.data_dir), str(a / "run"))
        assert containerd_started(first), f"{command} acted on the first warren"
    assert read_pid(first.supervisor_pidfile) == sup
    assert not second.data_dir.exists() or not any(second.data_dir.iterdir())


def test_same_data_dir_other_run_dir_is_refused_at_once(
    two: tuple[Path, Path], staged_payload: Path
) -> None:
    """It waited out the ready timeout (containerd's root was taken) and blamed slowness."""
    a, b = two
    first = Paths(a / "data", a / "run", a / "etc")
    second = Paths(a / "data", b / "run", b / "etc")
    sup = start(first)
    for command in ("start", "run"):
        begin = time.monotonic()
        out = run_warren(second, "containerd", command, "--ready-timeout", "60", timeout=90)
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        one_line(
            out.stderr, f"data dir {first.data_dir} is in use by warren pid {sup}", str(a / "run")
        )
        assert time.monotonic() - begin < 30, "waited instead of refusing"
    assert containerd_started(first) and not second.socket.exists()
