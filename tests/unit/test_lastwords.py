"""A supervisor's last words (runtime/lastwords.py): FATAL written in place, through an fd opened
at start, so it lands when no new fd can be opened; any reason fits the reserved size."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

from warren_bundle import fsutil
from warren_bundle.runtime import lastwords

from support import make_paths


def test_the_record_is_blank_until_fatal_and_then_names_the_reason(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)
    paths.run_dir.mkdir()
    paths.last_words.write_text('{"state": "FATAL", "reason": "an older supervisor"}')
    words = lastwords.LastWords.reserve(paths)
    assert words is not None
    assert lastwords.fatal_reason(paths) is None, "a new supervisor blanks the old record"
    assert paths.last_words.stat().st_size == lastwords.SIZE
    assert words.say("containerd restarted 5 times in 60s")
    assert lastwords.fatal_reason(paths) == "containerd restarted 5 times in 60s"
    assert paths.last_words.stat().st_size == lastwords.SIZE, "written in place"
    words.close()
    lastwords.discard(paths)
    assert lastwords.fatal_reason(paths) is None


def test_it_is_written_when_no_fd_is_left(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)
    paths.run_dir.mkdir()
    words = lastwords.LastWords.reserve(paths)
    assert words is not None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        while True:
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        assert words.say("EMFILE at the respawn")
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        words.close()
    assert lastwords.fatal_reason(paths) == "EMFILE at the respawn"


def test_any_reason_fits_the_reserved_size() -> None:
    data = lastwords.encode("\x01" * 100_000)  # escaped as \u0001: six bytes each
    assert len(data) <= lastwords.SIZE
    assert b'"state": "FATAL"' in data


def _within(seconds: float, code: str) -> str:
    """Run `code` in a fresh interpreter; its stdout. A hang fails at the deadline."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds, check=True
    )
    return out.stdout.strip()


def test_a_fifo_in_place_of_the_record_or_a_state_file_holds_nothing_up(tmp_path: Path) -> None:
    # A FIFO where the record or a state file belongs used to hold the supervisor's start (its
    # open for writing waits for a reader) and every status (its read waits for a writer).
    paths = make_paths(tmp_path)
    paths.run_dir.mkdir()
    os.mkfifo(paths.last_words)
    os.mkfifo(paths.state_file)
    os.mkfifo(paths.containerd_pidfile)
    got = _within(
        20,
        "import sys; sys.path[:0] = " + repr(sys.path) + "\n"
        "from pathlib import Path\n"
        "from warren_bundle.fsutil import read_json\n"
        "from warren_bundle.runtime import lastwords, pidfile\n"
        "from support import make_paths\n"
        f"paths = make_paths(Path({str(tmp_path)!r}))\n"
        "print(read_json(paths.state_file), lastwords.fatal_reason(paths),"
        " pidfile.read(paths.containerd_pidfile), lastwords.LastWords.reserve(paths) is None)\n",
    )
    assert got == "None None None True"
    assert not paths.last_words.exists(), "the FIFO is removed: the next start makes the record"


def test_a_state_file_that_is_a_device_or_too_big_reads_as_absent(tmp_path: Path) -> None:
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")  # read whole, it would fill the memory
    big = tmp_path / "big.json"
    with open(big, "wb") as fp:
        fp.truncate(fsutil.READ_JSON_LIMIT + 1)
    assert fsutil.read_json(zero) is None
    assert fsutil.read_json(big) is None
    small = tmp_path / "small.json"
    small.write_text('{"state": "RUNNING"}')
    assert fsutil.read_json(small) == {"state": "RUNNING"}
