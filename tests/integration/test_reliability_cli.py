"""What the command line says when input is bad or containerd is down, through whatever
WARREN_TEST_EXE names (else source): usage errors in one line (exit 2) before anything starts,
the socket group checked at parse time, `logs -n` of any size, JSON whenever --json is asked,
the log named once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths

from support import run_warren

pytestmark = pytest.mark.integration


def one_line(out: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert out.returncode == code, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("warren: removed /tmp/_MEI")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("warren: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("containerd", "run", "--bogus"), "No such option '--bogus'"),
        (("nosuchcommand",), "No such command 'nosuchcommand'"),
        (("containerd", "logs", "-n", "x"), "'x' is not a valid integer"),
        (("containerd", "logs", "-n", "-1"), "-1 is not in the range x>=0"),
    ],
)
def test_usage_errors_are_one_line(wpaths: Paths, args: tuple[str, ...], says: str) -> None:
    out = run_warren(wpaths, *args)
    line = one_line(out, ExitCode.USAGE, says, "--help'")
    assert "Usage:" not in out.stderr and "Try " not in out.stderr, line


@pytest.mark.parametrize(
    ("group", "says"),
    [
        ("4294967296", "is not a gid"),  # wrapped to gid 0, root's group
        ("99999", "no group has gid 99999"),
        ("\uff11\uff12", "does not exist"),  # full-width digits are not a gid
        ("no-such-group-w", "does not exist"),
    ],
)
@pytest.mark.parametrize("command", ["start", "run", "config"])
def test_a_socket_group_that_does_not_exist_is_a_usage_error(
    wpaths: Paths, group: str, says: str, command: str
) -> None:
    out = run_warren(wpaths, "containerd", command, "--socket-group", group)
    one_line(out, ExitCode.USAGE, "--socket-group", says)
    for d in (wpaths.data_dir, wpaths.run_dir, wpaths.config_dir):
        assert not d.exists(), f"{d} was created"


def test_logs_with_a_huge_n_prints_everything_without_a_traceback(wpaths: Paths) -> None:
    wpaths.logs_dir.mkdir(parents=True)
    wpaths.log_file.write_text("".join(f"line {i}\n" for i in range(1000)))
    out = run_warren(wpaths, "containerd", "logs", "-n", "99999999999999999999999")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.splitlines() == [f"line {i}" for i in range(1000)]


def test_logs_of_a_big_log_prints_every_line(wpaths: Paths) -> None:
    """1 000 000 lines from the end of a 60 MB log: the old tail re-copied everything it had
    read at every 64 KiB block (quadratic) and did not finish within the timeout. How much it
    holds at once is tests/unit/test_reliability_units.py's (bounded memory); no timed
    assertion here."""
    wpaths.logs_dir.mkdir(parents=True)
    line = b"x" * 59 + b"\n"
    with open(wpaths.log_file, "wb") as fp:
        block = line * 100000
        for _ in range(10):
            fp.write(block)
    out = run_warren(wpaths, "containerd", "logs", "-n", "1000000", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1000000


def test_images_status_json_prints_json_when_containerd_is_down(wpaths: Paths) -> None:
    out = run_warren(wpaths, "images", "status", "--json")
    assert out.returncode == ExitCode.NOT_RUNNING, out.stderr
    report = json.loads(out.stdout)
    assert report["state"] == "not-running" and "not running" in report["error"]


def test_a_failed_start_names_the_log_once(
    wpaths: Paths, staged_payload: Path, root_required: None
) -> None:
    wpaths.config_d.mkdir(parents=True)
    (wpaths.config_d / "bad.toml").write_text('oom_score = "high"\n')
    out = run_warren(wpaths, "containerd", "start")
    line = one_line(out, ExitCode.ERROR, "before containerd was ready")
    assert line.count(str(wpaths.log_file)) == 1, line


def test_start_json_prints_json_when_it_fails(
    wpaths: Paths, staged_payload: Path, root_required: None
) -> None:
    wpaths.config_d.mkdir(parents=True)
    (wpaths.config_d / "bad.toml").write_text('oom_score = "high"\n')
    out = run_warren(wpaths, "containerd", "start", "--json")
    assert out.returncode == ExitCode.ERROR, out.stderr
    report = json.loads(out.stdout)
    assert report["state"] == "error" and "before containerd was ready" in report["error"]
