"""A supervisor's last words (runtime/lastwords.py): FATAL written in place, through an fd opened
at start, so it lands when no new fd can be opened; any reason fits the reserved size."""

from __future__ import annotations

import os
import resource
from pathlib import Path

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
