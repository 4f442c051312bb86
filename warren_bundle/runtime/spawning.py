"""The manager's hands on containerd's process: spawn it and wait until it is ready, adopt one a
dead supervisor left, terminate it. A base of ContainerdManager (runtime/supervisor.py), which
owns the state machine; every OS call goes through the Processes seam (runtime/process.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from warren_bundle.errors import ReadinessTimeout
from warren_bundle.paths import Paths, rootless_user
from warren_bundle.runtime import grpc_unix, health, logs, pidfile, proxyenv, rootless
from warren_bundle.runtime.adoption import adoptable_pid, adopted_since
from warren_bundle.runtime.childenv import child_env
from warren_bundle.runtime.options import RunOptions
from warren_bundle.runtime.process import Processes, Watched
from warren_bundle.runtime.readiness import Probe, wait_ready
from warren_bundle.runtime.settings import Settings, Timings
from warren_bundle.runtime.status import StatusReport
from warren_bundle.store import install as upgrade


class ProcessOwner:
    """Spawning, adoption and termination of the one containerd a manager watches."""

    paths: Paths
    settings: Settings
    timings: Timings
    adopted: bool
    started_at: float | None
    server_version: str | None
    version: upgrade.Installed | None
    _processes: Processes
    _is_serving: Probe
    _proc: Watched | None
    _stopping: threading.Event
    _log: Callable[[str], None]
    run_options: RunOptions | None
    _write_pidfile: Callable[[Path, pidfile.PidRecord], None]

    def _adopt(self, previous: StatusReport | None) -> bool:
        """Take over a healthy containerd left by a dead supervisor instead of starting another."""
        seams = (self._processes, self._is_serving, self.settings, self._log)
        pid = adoptable_pid(self.paths, *seams, self._bin() / "containerd")
        if pid is None:
            return False
        self._proc = self._processes.adopt(pid)
        self._write_pidfile(self.paths.containerd_pidfile, self._proc.record)
        self.adopted = True
        self.started_at = adopted_since(previous, self._proc.record)
        self.timings.socket_ready_s = 0.0
        self._probe_version()
        self._log(f"adopted running containerd pid {pid}")
        return True

    def _remove_stale_socket(self) -> None:
        sock = self.paths.socket
        if os.path.lexists(sock) and not self._is_serving(str(sock), 0.5):
            with suppress(FileNotFoundError):
                sock.unlink()

    def _bin(self) -> Path:
        """The version dir containerd runs from (its shims and runc come from there too)."""
        return self.version.directory if self.version else self.paths.bin_dir

    def _command(self) -> list[str]:
        """containerd's command line; a user's runs inside RootlessKit (runtime/rootless.py)."""
        p = self.paths
        argv = [
            str(self._bin() / "containerd"),
            *("--config", str(p.config_file), "--address", str(p.socket)),
            *("--root", str(p.containerd_root), "--state", str(p.state_dir)),
        ]
        if not rootless_user():
            return argv
        publish = self.run_options.publish if self.run_options else ()
        return rootless.command(p, argv, publish)

    def _spawn(self) -> Watched:
        if rootless_user():
            left = rootless.prepare(self.paths)
            if left:
                self._log(
                    f"rootless: killed {len(left)} shim(s) of the previous RootlessKit's "
                    "namespaces (their containers are gone with them)"
                )
        log_fd = logs.open_for_child(self.paths.log_file)
        try:
            env = proxyenv.for_containerd(child_env(prepend_path=self._bin()))
            proc = self._processes.spawn(self._command(), log_fd, env)
        finally:
            os.close(log_fd)
        try:
            self._write_pidfile(self.paths.containerd_pidfile, proc.record)
        except BaseException:
            self._terminate(proc)
            raise
        return proc

    def _spawn_until_ready(self) -> None:
        spawned_at = time.perf_counter()
        proc = self._spawn()
        self._proc = proc
        self.adopted = False
        grpc_unix.preload()  # while containerd starts: it takes ~50 ms to listen
        self._wait_ready(proc)
        self.timings.socket_ready_s = time.perf_counter() - spawned_at
        self.started_at = time.time()
        self._probe_version()
        self._log(f"containerd pid {proc.pid} ready on {self.paths.socket}")

    def _wait_ready(self, proc: Watched) -> None:
        try:
            wait_ready(proc, self.paths, self.settings, self._is_serving, self._stopping)
        except ReadinessTimeout:
            self._terminate(proc)
            raise

    def _probe_version(self) -> None:
        with suppress(Exception):
            self.server_version = health.containerd_version(self.paths.socket, 2.0)[0]

    # --- stopping -----------------------------------------------------------------------------

    def _terminate(self, proc: Watched) -> None:
        """SIGTERM to containerd's pid only (never its group: shims must survive), then SIGKILL."""
        if not proc.alive():
            return
        proc.signal(signal.SIGTERM)
        if proc.exited.wait(self.settings.stop_timeout):
            return
        self._log(f"containerd pid {proc.pid} ignored SIGTERM for {self.settings.stop_timeout}s")
        proc.signal(signal.SIGKILL)
        proc.exited.wait(self.settings.stop_timeout)
