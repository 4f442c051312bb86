"""The supervisor's timing knobs, and what it measured; plain data."""

from __future__ import annotations

from dataclasses import dataclass

# The one definition of each default a user can change (`--ready-timeout`, `--health-interval`):
# the CLI's options, RunOptions and Settings all read these.
DEFAULT_READY_TIMEOUT = 30.0
DEFAULT_HEALTH_INTERVAL = 5.0


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
