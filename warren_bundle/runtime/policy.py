"""When to restart containerd, and when to give up: pure, so it is tested without a process.

Exponential backoff (initial → cap, doubling) that starts over after a run longer than
`stable_after`; more than `max_restarts` restarts within `window` seconds is FATAL, so the
service manager (systemd's Restart=) takes over from a supervisor that cannot help.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from warren_bundle.runtime.settings import Settings


@dataclass(frozen=True)
class Restart:
    delay: float


@dataclass(frozen=True)
class GiveUp:
    reason: str


class RestartPolicy:
    def __init__(
        self,
        *,
        # Settings' defaults, so that the policy and the supervisor's knobs cannot drift apart.
        initial: float = Settings.backoff_initial,
        cap: float = Settings.backoff_max,
        stable_after: float = Settings.stable_after,
        max_restarts: int = Settings.max_restarts,
        window: float = Settings.restart_window,
    ) -> None:
        self.initial, self.cap, self.stable_after = initial, cap, stable_after
        self.max_restarts, self.window = max_restarts, window
        self._next = initial
        self._times: deque[float] = deque()

    def after_exit(self, now: float, ran_for: float) -> Restart | GiveUp:
        """Decide what follows an exit at monotonic time `now` of a process that ran `ran_for`."""
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) > self.max_restarts:
            # BACKOFF -> FATAL
            return GiveUp(
                f"containerd restarted {len(self._times) - 1} times in {self.window:.0f}s"
            )
        if ran_for >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        # RUNNING/STARTING -> BACKOFF
        return Restart(delay)
