"""ContainerdManager: extract, configure, spawn, wait until ready, monitor, restart, stop.

States and their sets live in states.py, the restart decision in policy.py, every process call in
process.py, spawning and termination in spawning.py; this module is the state machine that ties
them together, and every transition is made here (the monitor thread asks through current,
healthy, on_exit, enter_backoff, restart and give_up). One supervisor per run dir and per data
dir (flock). containerd runs in its own session and is signalled by pid only, so shims and their
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
    SocketNotFoundError,
    path_error,
)
from warren_bundle.paths import DEFAULT_DATA_DIR, Paths, check_socket_path, system_socket_path
from warren_bundle.runtime import health, lastwords, logs, pidfile, rundir, statefile
from warren_bundle.runtime.config import ConfigOptions, check_config_dirs
from warren_bundle.runtime.monitor import Monitor
from warren_bundle.runtime.node_setup import NodeReport
from warren_bundle.runtime.node_setup import configure as configure_node
from warren_bundle.runtime.process import OsProcesses, Processes, Watched, raise_fd_limit
from warren_bundle.runtime.readiness import Probe
from warren_bundle.runtime.settings import ExitInfo, Settings, Timings
from warren_bundle.runtime.spawning import ProcessOwner
from warren_bundle.runtime.states import SUPERVISED, State
from warren_bundle.runtime.status import StatusReport, report_of
from warren_bundle.store import install as upgrade

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


class ContainerdManager(ProcessOwner):
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
        self.failed_restarts = 0  # restarts that raised (EMFILE, ELOOP, ...): each retried
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
        self._last_words: lastwords.LastWords | None = None
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
                lastwords.discard(self.paths)
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
        rundir.check(self.paths)
        check_config_dirs(self.paths)
        raise_fd_limit()  # a shell's soft 1024 is not a supervisor's budget
        self._stopping.clear()
        self.fatal_reason = None
        self._serve_metrics()  # first: a busy port must leave nothing behind, not even the run dir
        try:
            rundir.make(self.paths)
            self._lock = rundir.lock(self.paths, self.settings.lock_timeout)
            self._last_words = lastwords.LastWords.reserve(self.paths)  # ours now: blanked
        except BaseException:
            self._close_metrics()
            raise
        try:
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
        if self._last_words is not None:
            self._last_words.close()
            self._last_words = None
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

    def _run_ready_hooks(self) -> None:
        for hook in self.ready_hooks:
            try:
                hook(self)
            except Exception as exc:  # a hook must never take the supervisor down
                self._log(f"ready hook {getattr(hook, '__name__', hook)!s} failed: {exc}")

    # --- the monitor's interface: each transition of a running supervisor, in one home ------

    def current(self) -> Watched | None:
        """The containerd process being watched (None once stopped)."""
        return self._proc

    def healthy(self) -> bool:
        """One liveness check (rotating the log by size on the way)."""
        with suppress(OSError):
            logs.rotate_if_needed(self.paths.log_file)
        try:
            return self._is_serving(str(self.paths.socket), self.settings.health_timeout)
        except Exception as exc:  # a probe that cannot even try (EMFILE) is a failed check
            self._log(f"health check could not run: {exc}")
            return False

    def kill_unhealthy(self, proc: Watched) -> None:
        self._log(f"containerd pid {proc.pid} is alive but unhealthy; killing it")
        proc.signal(signal.SIGKILL)
        proc.exited.wait(self.settings.stop_timeout)

    def on_exit(self, proc: Watched, reason: str) -> float | None:
        """Record an unexpected exit; how long the process ran, or None when a stop was asked
        (the exit was ours: nothing to restart)."""
        ran_for = time.monotonic() - proc.started
        with self._mutex:
            if self._stopping.is_set():
                return None
            self.last_exit = ExitInfo(time.time(), proc.pid, proc.returncode, reason)
            self._log(f"containerd pid {proc.pid} {reason} after {ran_for:.1f}s")
            pidfile.discard(self.paths.containerd_pidfile)
            self.started_at = None
        return ran_for

    def enter_backoff(self, delay: float) -> bool:
        """BACKOFF for `delay` seconds; True when a stop was asked meanwhile."""
        self._set_state(State.BACKOFF)  # RUNNING/STARTING -> BACKOFF
        return self._stopping.wait(delay)

    def restart(self) -> None:
        """Spawn containerd again and wait until it is ready; raises what went wrong, with no
        containerd of this attempt left running."""
        with self._mutex:
            if self._stopping.is_set():
                return
            self._set_state(State.STARTING)  # BACKOFF -> STARTING
            self.restarts += 1
            try:
                self._remove_stale_socket()
                self._spawn_until_ready()
            except BaseException:
                if self._proc is not None and self._proc.alive():
                    self._terminate(self._proc)
                raise
            self._set_state(State.RUNNING)  # STARTING -> RUNNING

    def restart_failed(self, message: str) -> None:
        self.failed_restarts += 1
        self._log(message)

    def give_up(self, reason: str) -> None:
        """FATAL: stop supervising so the process exits non-zero and the service manager
        takes over (runtime/foreground.py)."""
        with self._mutex:
            self.fatal_reason = reason
            self._log(f"FATAL: {reason}; giving up so the service manager can take over")
            self._stopping.set()
            if self._last_words is not None:  # first: the state file may not be writable
                self._last_words.say(reason)
            self._set_state(State.FATAL)  # BACKOFF -> FATAL
            pidfile.discard(self.paths.containerd_pidfile)
            pidfile.discard(self.paths.supervisor_pidfile)
            self._release_lock()

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
