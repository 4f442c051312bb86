"""Liveness and restarts of a running containerd: the supervisor's monitor thread.

It waits on the process and health-checks it every `health_interval`; an exit, or
`health_failures` failed checks in a row (a hung containerd), leads to RestartPolicy's decision:
a restart after its backoff delay (BACKOFF → STARTING → RUNNING), or FATAL. The manager owns
the process, the state and every transition; this thread only decides when to ask for them,
through the manager's small interface (current, healthy, on_exit, enter_backoff, restart,
give_up).

The thread never dies under a live supervisor: any exception in a restart (EMFILE opening the
log, ELOOP on a log swapped for a symlink, a bug) is logged, counted as a failed restart and
retried with backoff, ending in FATAL; anything escaping the loop itself ends in FATAL too, so
the process exits non-zero and the service manager takes over.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from warren_bundle.errors import WarrenError
from warren_bundle.runtime.policy import GiveUp, RestartPolicy
from warren_bundle.runtime.process import Watched

if TYPE_CHECKING:
    from warren_bundle.runtime.supervisor import ContainerdManager


def describe_error(exc: BaseException) -> str:
    """One line for any exception: a WarrenError's own, an OSError's reason and file."""
    if isinstance(exc, WarrenError):
        return exc.one_line()
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


class Monitor:
    def __init__(self, mgr: ContainerdManager) -> None:
        self.mgr = mgr
        s = mgr.settings
        self.policy = RestartPolicy(
            initial=s.backoff_initial,
            cap=s.backoff_max,
            stable_after=s.stable_after,
            max_restarts=s.max_restarts,
            window=s.restart_window,
        )

    def run(self) -> None:
        try:
            self._watch()
        except BaseException as exc:
            self.mgr.give_up(f"the monitor failed: {describe_error(exc)}")

    def _watch(self) -> None:
        mgr, settings = self.mgr, self.mgr.settings
        failures = 0
        while not self._stopped():
            proc = mgr.current()
            if proc is None:
                return
            if proc.exited.wait(settings.health_interval):
                self._recover(proc, proc.describe_exit())
                failures = 0
                continue
            if self._stopped():
                return
            if mgr.healthy():
                failures = 0
                continue
            failures += 1
            mgr.event(f"health check failed ({failures}/{settings.health_failures})")
            if failures >= settings.health_failures:
                mgr.kill_unhealthy(proc)
                self._recover(proc, "killed after failing health checks")
                failures = 0

    def _stopped(self) -> bool:
        return self.mgr.stop_requested

    def _recover(self, proc: Watched, reason: str) -> None:
        """Restart after an unexpected exit, with backoff, until it sticks or we give up."""
        mgr = self.mgr
        ran_for = mgr.on_exit(proc, reason)
        if ran_for is None:
            return  # a stop was asked: the exit was ours
        while not mgr.stop_requested:
            decision = self.policy.after_exit(time.monotonic(), ran_for)
            if isinstance(decision, GiveUp):
                mgr.give_up(decision.reason)  # BACKOFF -> FATAL
                return
            if mgr.enter_backoff(decision.delay):  # RUNNING -> BACKOFF, then the delay
                return
            try:
                mgr.restart()  # BACKOFF -> STARTING -> RUNNING
                return
            except Exception as exc:  # every failure is counted and retried, never fatal here
                mgr.restart_failed(f"restart failed: {describe_error(exc)}")
                ran_for = 0.0
