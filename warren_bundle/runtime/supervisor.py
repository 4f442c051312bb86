"""ContainerdManager: extract, configure, spawn, wait until ready, monitor, restart, stop.

States and their sets live in states.py, the restart decision in policy.py, every process call in
process.py; this module is the state machine that ties them together. One supervisor per run dir
(flock). containerd runs in its own session and is signalled by pid only, so shims and their
containers survive both a containerd restart and a stop.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from warren_bundle.errors import (
    PlatformError,
    ReadinessTimeout,
    SocketNotFoundError,
    path_error,
)
from warren_bundle.paths import DEFAULT_DATA_DIR, Paths, check_socket_path, system_socket_path
from warren_bundle.runtime import health, logs, pidfile, proxyenv, rundir, statefile
from warren_bundle.runtime.adoption import adoptable_pid, adopted_since
from warren_bundle.runtime.childenv import child_env
from warren_bundle.runtime.config import ConfigOptions
from warren_bundle.runtime.monitor import Monitor
from warren_bundle.runtime.node_setup import NodeReport
from warren_bundle.runtime.node_setup import configure as configure_node
from warren_bundle.runtime.process import OsProcesses, Processes, Watched
from warren_bundle.runtime.readiness import Probe, wait_ready
from warren_bundle.runtime.settings import ExitInfo, Settings, Timings
from warren_bundle.runtime.states import SUPERVISED, State
from warren_bundle.runtime.status import StatusReport, report_of
from warren_bundle.store import install as upgrade
from warren_bundle.store import runtimes

if TYPE_CHECKING:
    from warren_bundle.payload.format import Payload
    from warren_bundle.runtime.hooks import MetricsEndpoint
    from warren_bundle.runtime.options import RunOptions

# Work that needs a ready containerd (air-gap image import): run once per start(), by the
# runtime, so a library user of ensure_containerd() gets what `warren containerd run` gets.
ReadyHook = Callable[["ContainerdManager"], object]
EventListener = Callable[[str], None]


def default_ready_hooks() -> list[ReadyHook]:
    from warren_bundle.runtime.hooks import import_airgap_images

    return [import_airgap_images]


class ContainerdManager:
    """Manages one embedded containerd (or points at the system one with use_external=True)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = DEFAULT_DATA_DIR,
        use_external: bool = False,
        *,
        paths: Paths | None = None,
        payload: Payload | str | os.PathLike[str] | None = None,
        config_options: ConfigOptions | None = None,
        settings: Settings | None = None,
        on_change: Callable[[ContainerdManager], None] | None = None,
        ready_hooks: Sequence[ReadyHook] | None = None,
        metrics_addr: str | None = None,
        processes: Processes | None = None,
        probe: Probe | None = None,
        force_version: bool = False,
        run_options: RunOptions | None = None,
    ) -> None:
        self.paths = paths or Paths.resolve(data_dir=data_dir)
        self.use_external = use_external
        self._payload_arg = payload
        self.config_options = config_options or ConfigOptions()
        self.settings = settings or Settings()
        self._on_change = on_change
        self.ready_hooks = list(default_ready_hooks() if ready_hooks is None else ready_hooks)
        self._metrics_request = metrics_addr
        self._metrics: MetricsEndpoint | None = None
        self._processes = processes or OsProcesses()
        self._is_serving: Probe = probe or health.is_serving
        self.state = State.STOPPED
        self.restarts = 0
        self.adopted = False
        self.last_exit: ExitInfo | None = None
        self.timings = Timings()
        self.started_at: float | None = None  # wall clock of the current containerd's readiness
        self.server_version: str | None = None
        self.payload: Payload | None = None
        self.fatal_reason: str | None = None
        self.metrics_addr: str | None = None  # host:port of a /metrics endpoint serving this
        self._proc: Watched | None = None
        self._lock: ExitStack | None = None
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._mutex = threading.RLock()
        self._listeners: list[EventListener] = []
        self.force_version = force_version
        # The options it was started with, recorded in the state file for a restart to reuse.
        self.run_options = run_options
        # <data>/versions/<digest> containerd runs from (a rollback's pin may differ from ours)
        self.version: upgrade.Installed | None = None
        self.upgrade: str | None = None  # "upgraded containerd 1.6.20 → 1.7.24; …"
        self.node: NodeReport | None = None  # CNI, sandbox image, oom_score_adj, host settings

    # --- public API ---------------------------------------------------------------------------

    @property
    def socket_path(self) -> str:
        return str(system_socket_path() if self.use_external else self.paths.socket)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.alive() else None

    def add_event_listener(self, listener: EventListener) -> None:
        """Receive each supervisor event line (the CLI prints them in the foreground)."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Idempotent: returns once containerd answers health checks on the socket."""
        with self._mutex:
            if self.state in SUPERVISED:
                return
            if self.use_external:
                self._start_external()
            else:
                self._start_embedded()
        self._run_ready_hooks()

    def stop(self) -> None:
        """Idempotent graceful stop; errors are logged, never raised."""
        if self.use_external:
            self._set_state(State.STOPPED)
            return
        # Set before taking the mutex: a restart in progress holds it and polls this flag.
        self._stopping.set()
        with self._mutex:
            fatal = self.state == State.FATAL  # keep it: status must say why we gave up
            if self._lock is None and self._proc is None:
                if not fatal and self.state != State.STOPPED:
                    self._set_state(State.STOPPED)
                self._close_metrics()
                return
            if not fatal:
                self._set_state(State.STOPPING)  # RUNNING -> STOPPING
            proc = self._proc
            if proc is not None:
                self._terminate(proc)
            monitor = self._monitor
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join(timeout=self.settings.stop_timeout + 5)
        with self._mutex:
            self._proc = None
            # Best effort (a read-only run dir): a pidfile of an exited process is never trusted.
            pidfile.discard(self.paths.containerd_pidfile)
            pidfile.discard(self.paths.supervisor_pidfile)
            with suppress(OSError):
                self._remove_stale_socket()
            if not fatal:
                self._set_state(State.STOPPED)  # STOPPING -> STOPPED
            self._release_lock()
            self._close_metrics()

    def request_stop(self) -> None:
        """Make a start in progress give up; call stop() afterwards. Thread-safe, but not for a
        Python signal handler (Event.set takes a lock: runtime/foreground.py)."""
        self._stopping.set()

    @property
    def stop_requested(self) -> bool:
        return self._stopping.is_set()

    def wait(self, timeout: float | None = None) -> State:
        """Block until the supervisor is stopped or FATAL; return that state."""
        monitor = self._monitor
        if monitor is not None:
            monitor.join(timeout)
        return self.state

    def status(self) -> StatusReport:
        return report_of(self)

    # --- starting -----------------------------------------------------------------------------

    def _start_external(self) -> None:
        result = health.probe(self.socket_path, self.settings.health_timeout)
        if not result.serving:
            raise SocketNotFoundError(
                f"socket not found: {self.socket_path} ({result.error})",
                "start the system containerd (systemctl start containerd) or drop --external",
            )
        self.server_version = result.version
        self._set_state(State.RUNNING)

    def _start_embedded(self) -> None:
        from warren_bundle.hostinfo import check_supported
        from warren_bundle.store.extract import check_safe

        begin = time.perf_counter()
        goos, _ = check_supported()
        if goos != "linux":
            raise PlatformError(
                f"embedded containerd runs on Linux only (this host is {goos})",
                "use LimaManager / 'warren lima up' on macOS",
            )
        check_socket_path(self.paths.socket)
        check_safe(self.paths)  # before the first log line: nothing written through a bad dir
        self._stopping.clear()
        self.fatal_reason = None
        self._serve_metrics()  # first: a busy port must leave nothing behind, not even the run dir
        try:
            rundir.make(self.paths)
            self._lock = rundir.lock(self.paths, self.settings.lock_timeout)
        except BaseException:
            self._close_metrics()
            raise
        try:
            for old in runtimes.prune(self.paths):  # of warren files no process runs any more
                self._log(f"removed {old}: a runtime no process uses")
            self.payload = payload = self._resolve_payload()
            before, version = upgrade.install_version(
                self.paths, payload, self.force_version, self._log, self.timings
            )
            self.version = version
            self.node = configure_node(self.paths, version, self.config_options, self._log)
            previous = statefile.read(self.paths)  # the last supervisor's, before we write ours
            self._set_state(State.STARTING)  # STOPPED -> STARTING
            self._log(f"starting containerd {version.containerd} from {version.directory}")
            if not self._adopt(previous):
                self._remove_stale_socket()
                self._spawn_until_ready()
            self.upgrade = upgrade.after_change(self.paths, before, version, self._log)
            self._write_pidfile(self.paths.supervisor_pidfile, pidfile.record_for(os.getpid()))
        except BaseException:
            if self._proc is not None:
                self._terminate(self._proc)
                self._proc = None
            pidfile.discard(self.paths.containerd_pidfile)
            self._set_state(State.STOPPED)  # STARTING -> STOPPED
            self._release_lock()
            self._close_metrics()
            raise
        self.timings.startup_s = time.perf_counter() - begin
        self._set_state(State.RUNNING)  # STARTING -> RUNNING
        monitor = Monitor(self)
        self._monitor = threading.Thread(target=monitor.run, name="monitor", daemon=True)
        self._monitor.start()

    def _resolve_payload(self) -> Payload:
        from warren_bundle.payload.format import Payload, locate

        if isinstance(self._payload_arg, Payload):
            return self._payload_arg
        return locate(self._payload_arg)

    def _write_pidfile(self, path: Path, record: pidfile.PidRecord) -> None:
        try:
            pidfile.write(path, record)
        except OSError as exc:
            raise path_error(exc, path, "--run-dir") from exc

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _serve_metrics(self) -> None:
        # Bound before containerd starts: a busy port fails fast, with nothing started.
        if self._metrics_request is not None and self._metrics is None:
            from warren_bundle.runtime.hooks import MetricsEndpoint

            self._metrics = MetricsEndpoint(self._metrics_request, self)
            self.metrics_addr = self._metrics.address
            self._log(f"metrics on {self._metrics.url}")

    def _close_metrics(self) -> None:
        endpoint, self._metrics = self._metrics, None
        if endpoint is not None:
            endpoint.close()

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
        p = self.paths
        return [
            str(self._bin() / "containerd"),
            *("--config", str(p.config_file), "--address", str(p.socket)),
            *("--root", str(p.containerd_root), "--state", str(p.state_dir)),
        ]

    def _spawn(self) -> Watched:
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

    def _run_ready_hooks(self) -> None:
        for hook in self.ready_hooks:
            try:
                hook(self)
            except Exception as exc:  # a hook must never take the supervisor down
                self._log(f"ready hook {getattr(hook, '__name__', hook)!s} failed: {exc}")

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

    # --- reporting ----------------------------------------------------------------------------

    def _set_state(self, new: State) -> None:
        self.state = new
        if not self.use_external:
            with suppress(OSError):
                statefile.write(self.paths, self.status())
        if self._on_change is not None:
            with suppress(Exception):
                self._on_change(self)

    def _log(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} warren[{os.getpid()}]: {message}"
        with suppress(OSError):
            logs.append_line(self.paths.log_file, line)
        for listener in self._listeners:
            with suppress(Exception):
                listener(message)

    event = _log  # for ready hooks: report a line the way the supervisor does
