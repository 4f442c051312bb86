"""Edges of the second reliability round that need no containerd: the log's tail in bounded
memory, the socket group, durations, dir options."""

from __future__ import annotations

import grp
import tracemalloc
from pathlib import Path

import pytest

from warren_bundle.errors import ConfigError, UsageError
from warren_bundle.paths import dir_option_problem
from warren_bundle.runtime import health, logs
from warren_bundle.runtime.config import gid_of
from warren_bundle.runtime.settings import Settings, duration_problem


def _lines(n: int, prefix: str = "line") -> str:
    return "".join(f"{prefix} {i}\n" for i in range(n))


@pytest.mark.parametrize("content", ["", "\n", "a", "a\n", "a\nb", "a\nb\n", "\n\n", "a\n\nb\n"])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 10])
def test_tail_agrees_with_splitlines(tmp_path: Path, content: str, n: int) -> None:
    log = tmp_path / "l"
    log.write_text(content)
    expected = content.splitlines()[-n:] if n else []
    assert list(logs.tail(log, n)) == expected


def test_tail_across_block_boundaries(tmp_path: Path) -> None:
    log = tmp_path / "l"
    log.write_text(_lines(50000))  # ~0.5 MB: several 64 KiB blocks
    for n in (1, 4000, 6554, 49999, 50000, 10**30):
        got = list(logs.tail(log, n))
        assert got == [f"line {i}" for i in range(max(0, 50000 - n), 50000)], n


def test_tail_of_everything_streams_in_bounded_memory(tmp_path: Path) -> None:
    """`logs -n 1000000` on a big log read it all into one bytes object (and re-copied it at
    every block); a huge -n overflowed a deque. Now: one block in memory, lines streamed."""
    log = tmp_path / "big.log"
    with open(log, "w") as fp:
        for chunk in range(40):
            fp.write(_lines(10000, f"chunk {chunk:02} line"))  # ~24 MB in all
    size = log.stat().st_size
    tracemalloc.start()
    try:
        count = 0
        last = ""
        for line in logs.tail(log, 99999999999999999999999):
            count += 1
            last = line
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 400000 and last == "chunk 39 line 9999"
    assert peak < size // 8, f"peak {peak} bytes for a {size}-byte log"


def test_tail_with_backups_keeps_order(tmp_path: Path) -> None:
    log = tmp_path / "containerd.log"
    logs.backup(log, 2).write_text("b2 1\nb2 2\n")
    logs.backup(log, 1).write_text("b1 1\n")
    log.write_text("cur 1\ncur 2\n")
    assert list(logs.tail(log, 4)) == ["b2 2", "b1 1", "cur 1", "cur 2"]
    assert list(logs.tail(log, 100)) == ["b2 1", "b2 2", "b1 1", "cur 1", "cur 2"]


def test_socket_group_must_exist_and_fit_a_gid() -> None:
    root = grp.getgrgid(0).gr_name
    assert gid_of(root) == 0
    assert gid_of("0") == 0
    for bad in ("4294967296", "4294967295", "99999999999999999999", "\uff11", "no-such-group-x"):
        with pytest.raises(ConfigError):
            gid_of(bad)
    unused = next(g for g in range(60000, 65000) if g not in {e.gr_gid for e in grp.getgrall()})
    with pytest.raises(ConfigError, match=f"no group has gid {unused}"):
        gid_of(str(unused))


@pytest.mark.parametrize("value", [0.0, 0.000001, 0.049, 86400.1, 1e10, float("nan"), -1.0])
def test_durations_out_of_bounds(value: float) -> None:
    assert duration_problem(value)
    if not 0 < value <= 86400:  # a library caller may go finer than the CLI's 50 ms
        with pytest.raises(UsageError):
            Settings(health_interval=value)


@pytest.mark.parametrize("value", [0.05, 0.5, 5.0, 86400.0])
def test_durations_in_bounds(value: float) -> None:
    assert duration_problem(value) is None
    assert Settings(ready_timeout=value).ready_timeout == value


def test_dir_options_empty_or_relative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARREN_DATA_DIR", raising=False)
    assert dir_option_problem(None, "--data-dir", "WARREN_DATA_DIR") is None
    assert dir_option_problem("/abs", "--data-dir", "WARREN_DATA_DIR") is None
    assert "empty" in (dir_option_problem("", "--data-dir", "WARREN_DATA_DIR") or "")
    assert "relative" in (dir_option_problem("d", "--data-dir", "WARREN_DATA_DIR") or "")
    monkeypatch.setenv("WARREN_DATA_DIR", "")
    assert "set but empty" in (dir_option_problem(None, "--data-dir", "WARREN_DATA_DIR") or "")


def test_a_non_root_user_is_never_told_to_join_group_root(tmp_path: Path) -> None:
    import os

    from warren_bundle.sockets import permission_denied

    sock = tmp_path / "containerd.sock"
    sock.write_text("")
    if os.geteuid() == 0:
        os.chown(sock, -1, 0)
    if os.stat(sock).st_gid == 0:
        line = permission_denied(str(sock)).one_line()
        assert "'root'" not in line and "--socket-group GROUP" in line, line
    other = next((g for g in grp.getgrall() if g.gr_gid != 0), None)
    if other is not None and os.geteuid() == 0:
        os.chown(sock, -1, other.gr_gid)
        line = permission_denied(str(sock)).one_line()
        assert f"add you to group {other.gr_name!r}" in line, line


def test_a_hang_is_several_missed_checks_with_no_wait_after_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # health.answers_within is the one rule the supervisor (adopting an orphan) and clients
    # (before "not responding") both apply. Nothing answers on a missing socket: each check
    # fails at once, waits out the rest of its timeout, and nothing waits after the last one
    # (clients' copy of the rule did, 2 s for nothing).
    waits: list[float] = []
    monkeypatch.setattr(health.time, "sleep", waits.append)
    missed: list[int] = []
    sock = str(tmp_path / "none.sock")
    assert not health.answers_within(sock, 3, 2.0, still_alive=lambda: True, on_miss=missed.append)
    assert missed == [1, 2]
    assert len(waits) == 2 and all(0 < w <= 2.0 for w in waits)
    # The process is gone after the first miss: no second check, no wait.
    waits.clear()
    assert not health.answers_within(sock, 3, 2.0, still_alive=lambda: False)
    assert waits == []
    # The first that answers ends it.
    calls: list[str] = []

    def second_answers(path: str, timeout: float) -> bool:
        calls.append(path)
        return len(calls) == 2

    assert health.answers_within(sock, 3, 2.0, still_alive=lambda: True, is_serving=second_answers)
    assert len(calls) == 2
