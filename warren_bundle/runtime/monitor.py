"""Liveness and restarts of a running containerd: the supervisor's monitor thread.

It waits on the process and health-checks it every `health_interval`; an exit, or
`health_failures` failed checks in a row (a hung containerd), leads to RestartPolicy's decision:
a restart after its backoff delay (BACKOFF → STARTING → RUNNING), or FATAL. The manager owns
the process and the state; this thread only drives them, under the manager's mutex.
"""

from __future__ import annotations

import signal
import time
from contextlib import suppress
from typing import TYPE_CHECKING

from warren_bundle.errors import WarrenError
from warren_bundle.runtime import logs, pidfile
from warren_bundle.runtime.policy import GiveUp, RestartPolicy
from warren_bundle.runtime.process import Watched
from warren_bundle.runtime.settings import ExitInfo
from warren_bundle.runtime.states import State

if TYPE_CHECKING:
    from warren_bundle.runtime.supervisor import ContainerdManager


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
        mgr, settings = self.mgr, self.mgr.settings
        stopping = mgr._stopping
        sock = str(mgr.paths.socket)
        failures = 0
        while not stopping.is_set():
            proc = mgr._proc
            if proc is None:
                return
            if proc.exited.wait(settings.health_interval):
                if stopping.is_set():
                    return
                self._handle_exit(proc, proc.describe_exit())
                failures = 0
                continue
            if stopping.is_set():
                return
            with suppress(OSError):
                logs.rotate_if_needed(mgr.paths.log_file)
            if mgr._is_serving(sock, settings.health_timeout):
                failures = 0
                continue
            failures += 1
            mgr._log(f"health check failed ({failures}/{settings.health_failures})")
            if failures >= settings.health_failures:
                mgr._log(f"containerd pid {proc.pid} is alive but unhealthy; killing it")
                proc.signal(signal.SIGKILL)
                proc.exited.wait(settings.stop_timeout)
                self._handle_exit(proc, "killed after failing health checks")
                failures = 0

    def _handle_exit(self, proc: Watched, reason: str) -> None:
        """Restart after an unexpected exit, with backoff, until it sticks or we give up."""
        mgr = self.mgr
        stopping = mgr._stopping
        ran_for = time.monotonic() - proc.started
        with mgr._mutex:
            if stopping.is_set():
                return
            mgr.last_exit = ExitInfo(time.time(), proc.pid, proc.returncode, reason)
            mgr._log(f"containerd pid {proc.pid} {reason} after {ran_for:.1f}s")
            pidfile.discard(mgr.paths.containerd_pidfile)
            mgr.started_at = None
        while not stopping.is_set():
            decision = self.policy.after_exit(time.monotonic(), ran_for)
            if isinstance(decision, GiveUp):
                self._go_fatal(decision.reason)  # BACKOFF -> FATAL
                return
            mgr._set_state(State.BACKOFF)  # RUNNING -> BACKOFF
            if stopping.wait(decision.delay):
                return
            with mgr._mutex:
                if stopping.is_set():
                    return
                mgr._set_state(State.STARTING)  # BACKOFF -> STARTING
                mgr.restarts += 1
                mgr._remove_stale_socket()
                try:
                    mgr._spawn_until_ready()
                except WarrenError as exc:
                    mgr._log(f"restart failed: {exc.one_line()}")
                    ran_for = 0.0
                    if mgr._proc is not None and mgr._proc.alive():
                        mgr._terminate(mgr._proc)
                    continue
                mgr._set_state(State.RUNNING)  # STARTING -> RUNNING
                return

    def _go_fatal(self, reason: str) -> None:
        mgr = self.mgr
        with mgr._mutex:
            mgr.fatal_reason = reason
            mgr._log(f"FATAL: {reason}; giving up so the service manager can take over")
            mgr._set_state(State.FATAL)
            mgr._stopping.set()
            pidfile.discard(mgr.paths.containerd_pidfile)
            pidfile.discard(mgr.paths.supervisor_pidfile)
            mgr._release_lock()
