"""Timing primitives: interleaved median-of-N, so that noise on a shared machine hits every
contender of a comparison alike instead of whichever happened to run during a busy spell."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """Seconds (or any unit) of repeated measurements of one thing."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def scaled(self, factor: float) -> dict[str, float | int]:
        return {
            "median": self.median * factor,
            "min": self.low * factor,
            "max": self.high * factor,
            "n": len(self.values),
        }


def interleaved(
    contenders: Mapping[str, Callable[[], float]],
    runs: int,
    warmup: int = 1,
    between: Callable[[], None] | None = None,
) -> dict[str, Sample]:
    """Call each contender once per round, rotating the order; each call returns its own duration.

    Rotation keeps one contender from always running right after another's side effects (page
    cache, writeback). `between` runs untimed after every call (cleanup).
    """
    names = list(contenders)
    got: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(warmup + runs):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            duration = contenders[name]()
            if between is not None:
                between()
            if round_no >= warmup:
                got[name].append(duration)
    return {name: Sample(tuple(values)) for name, values in got.items()}


def time_call(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def time_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> float:
    """Wall time of one run of argv with output discarded; fails loudly on a non-zero exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2),
        ]
        started = time.perf_counter()
        pid = os.posix_spawnp(
            argv[0], list(argv), dict(os.environ if env is None else env), file_actions=actions
        )
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - started
    finally:
        os.close(devnull)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {code}")
    return elapsed


def per_call(func: Callable[[], object], calls: int) -> Sample:
    """Duration of each of `calls` back-to-back in-process calls (for microsecond-scale work)."""
    values = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        func()
        values.append((time.perf_counter_ns() - started) / 1e9)
    return Sample(tuple(values))
