"""The supervisor's timing knobs, and what it measured; plain data."""

from __future__ import annotations

import math
from dataclasses import dataclass

# The one definition of each default a user can change (`--ready-timeout`, `--health-interval`):
# the CLI's options, RunOptions and Settings all read these.
DEFAULT_READY_TIMEOUT = 30.0
DEFAULT_HEALTH_INTERVAL = 5.0

# Every duration a user gives (--health-interval, --ready-timeout, ...): below 50 ms a loop burns
# a core, above a day a timer overflows (Event.wait(1e10): "timestamp out of range").
MIN_SECONDS = 0.05
MAX_SECONDS = 86400.0


def duration_problem(value: float) -> str | None:
    """Why `value` is not a usable number of seconds, or None."""
    if not math.isfinite(value) or not MIN_SECONDS <= value <= MAX_SECONDS:
        return (
            f"{value} is not a number of seconds from {MIN_SECONDS} to {MAX_SECONDS:.0f} "
            "(a day), e.g. 5 or 0.5"
        )
    return None


@dataclass
class Settings:
    ready_timeout: float = DEFAULT_READY_TIMEOUT
    # A health check costs ~0.5 ms (nothing listening: ~50 µs), so readiness is polled finely.
    poll_interval: float = 0.01
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    health_timeout: float = 2.0
    health_failures: int = 3
    stop_timeout: float = 10.0
    backoff_initial: float = 0.1
    backoff_max: float = 15.0
    stable_after: float = 30.0
    max_restarts: int = 5
    restart_window: float = 60.0
    lock_timeout: float = 0.0

    def __post_init__(self) -> None:
        # What a user sets (the CLI checks these at parse time; a library caller gets this).
        # Finer than the CLI's floor is allowed (tests run the monitor at 10 ms); a timer that
        # overflows, or never fires, is not.
        for name in ("ready_timeout", "health_interval", "health_timeout", "stop_timeout"):
            value = float(getattr(self, name))
            if not 0 < value <= MAX_SECONDS:  # False for nan too
                from warren_bundle.errors import UsageError

                raise UsageError(f"Settings.{name}: {value} is not in (0, {MAX_SECONDS:.0f}] s")


@dataclass
class ExitInfo:
    at: float
    pid: int
    returncode: int | None
    reason: str


@dataclass
class Timings:
    extraction_s: float | None = None
    extraction_cached: bool | None = None
    socket_ready_s: float | None = None
    startup_s: float | None = None
