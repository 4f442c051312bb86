"""ContainerdManager: extract, configure, spawn, wait until ready, monitor, restart, stop.

States: STOPPED → STARTING → RUNNING → (unexpected exit or failed liveness) BACKOFF → STARTING …;
too many restarts in a window → FATAL; STOPPING → STOPPED. One supervisor per run dir (flock).
containerd runs in its own session and is signalled by pid only, so shims and their containers
survive both a containerd restart and a stop.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import psutil

from warren_bundle.errors import (
    ExtractionError,
    PermissionDeniedError,
    PlatformError,
    ReadinessTimeout,
    SocketNotFoundError,
    WarrenError,
)
from warren_bundle.extract import ensure_extracted
from warren_bundle.hostinfo import check_supported
from warren_bundle.paths import DEFAULT_DATA_DIR, Paths, system_socket_path
from warren_bundle.payload.format import Payload, locate
from warren_bundle.runtime import health, logs, pidfile
from warren_bundle.runtime import statefile as state
from warren_bundle.runtime.childenv import child_env
from warren_bundle.runtime.config import ConfigOptions, write_config


class State(StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    FATAL = "FATAL"


class AlreadyRunning(WarrenError):
    pass


class ContainerdExited(WarrenError):
    """containerd died while we waited for it to become ready."""


@dataclass
class Settings:
    ready_timeout: float = 30.0
    # A health check costs ~0.5 ms (nothing listening: ~50 µs), so readiness is polled finely.
    poll_interval: float = 0.01
    health_interval: float = 5.0
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


class Backoff:
    """Exponential delay between restarts; back to the first step after a stable run."""

    def __init__(self, initial: float, cap: float, stable_after: float) -> None:
        self.initial, self.cap, self.stable_after = initial, cap, stable_after
        self._next = initial

    def delay(self, ran_for: float) -> float:
        if ran_for >= self.stable_after:
            self._next = self.initial
        current = self._next
        self._next = min(self.cap, self._next * 2)
        return current


class _Watched:
    """A containerd process, ours (Popen) or adopted (psutil), with an event set when it exits."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None) -> None:
        self.pid = pid
        self.popen = popen
        self.returncode: int | None = None
        self.exited = threading.Event()
        self.started = time.monotonic()
        try:
            self.record = pidfile.record_for(pid)
        except psutil.Error:
            # Already gone; the waiter thread reports the exit.
            self.record = pidfile.PidRecord(pid, "", 0.0)
        threading.Thread(target=self._wait, name=f"wait-{pid}", daemon=True).start()

    def _wait(self) -> None:
        if self.popen is not None:
            self.returncode = self.popen.wait()
        else:
            _wait_foreign(self.pid)
        self.exited.set()

    def alive(self) -> bool:
        return not self.exited.is_set()

    def signal(self, sig: int) -> None:
        if self.exited.is_set():
            return
        with suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def describe_exit(self) -> str:
        rc = self.returncode
        if rc is None:
            return "exited"
        if rc < 0:
            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exited with code {rc}"


def _wait_foreign(pid: int) -> None:
    """Block until a process that is not our child exits."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        with suppress(psutil.Error):
            psutil.Process(pid).wait()
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


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
    ) -> None:
        self.paths = paths or Paths.resolve(data_dir=data_dir)
        self.use_external = use_external
        self._payload_arg = payload
        self.config_options = config_options or ConfigOptions()
        self.settings = settings or Settings()
        self._on_change = on_change
        self.state = State.STOPPED
        self.restarts = 0
        self.adopted = False
        self.last_exit: ExitInfo | None = None
        self.timings = Timings()
        self.started_at: float | None = None  # wall clock of the current containerd's readiness
        self.server_version: str | None = None
        self.payload: Payload | None = None
        self._proc: _Watched | None = None
        self._lock_fd: int | None = None
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._restart_times: deque[float] = deque()
        self._backoff = Backoff(
            self.settings.backoff_initial, self.settings.backoff_max, self.settings.stable_after
        )
        self._mutex = threading.RLock()
        self.fatal_reason: str | None = None
        self.metrics_addr: str | None = None  # host:port of a /metrics endpoint serving this

    # --- public API ---------------------------------------------------------------------------

    @property
    def socket_path(self) -> str:
        return str(system_socket_path() if self.use_external else self.paths.socket)

    def get_socket_path(self) -> str:
        return self.socket_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.alive() else None

    def start(self) -> None:
        """Idempotent: returns once containerd answers health checks on the socket."""
        with self._mutex:
            if self.state in (State.RUNNING, State.STARTING, State.BACKOFF):
                return
            if self.use_external:
                self._start_external()
                return
            self._start_embedded()

    def stop(self) -> None:
        """Idempotent graceful stop; errors are logged, never raised."""
        if self.use_external:
            self._set_state(State.STOPPED)
            return
        # Set before taking the mutex: a restart in progress holds it and polls this flag.
        self._stopping.set()
        with self._mutex:
            fatal = self.state == State.FATAL  # keep it: status must say why we gave up
            if self._lock_fd is None and self._proc is None:
                if not fatal:
                    self._set_state(State.STOPPED)
                return
            if not fatal:
                self._set_state(State.STOPPING)
            proc = self._proc
            if proc is not None:
                self._terminate(proc)
            monitor = self._monitor
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join(timeout=self.settings.stop_timeout + 5)
        with self._mutex:
            self._proc = None
            pidfile.remove(self.paths.containerd_pidfile)
            pidfile.remove(self.paths.supervisor_pidfile)
            self._remove_stale_socket()
            if not fatal:
                self._set_state(State.STOPPED)
            self._release_lock()

    def request_stop(self) -> None:
        """Signal-handler safe: make a start in progress give up; call stop() afterwards."""
        self._stopping.set()

    def wait(self, timeout: float | None = None) -> State:
        """Block until the supervisor is stopped or FATAL; return that state."""
        monitor = self._monitor
        if monitor is not None:
            monitor.join(timeout)
        return self.state

    def status(self) -> dict[str, Any]:
        proc = self._proc
        now = time.time()
        return {
            "state": self.state.value,
            "external": self.use_external,
            "supervisor_pid": os.getpid() if not self.use_external else None,
            "containerd_pid": proc.pid if proc is not None and proc.alive() else None,
            "adopted": self.adopted,
            "started_at": self.started_at,
            "uptime_s": (now - self.started_at) if self.started_at and proc else None,
            "restarts": self.restarts,
            "last_exit": asdict(self.last_exit) if self.last_exit else None,
            "fatal_reason": self.fatal_reason,
            "socket": self.socket_path,
            "containerd_version": self.payload.manifest.containerd_version
            if self.payload
            else None,
            "runc_version": self.payload.manifest.runc_version if self.payload else None,
            "payload_digest": self.payload.digest if self.payload else None,
            "server_version": self.server_version,
            "data_dir": str(self.paths.data_dir),
            "run_dir": str(self.paths.run_dir),
            "config": str(self.paths.config_file),
            "log": str(self.paths.log_file),
            "timings": asdict(self.timings),
            "metrics_addr": self.metrics_addr,
            "updated_at": now,
        }

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
        begin = time.perf_counter()
        goos, _ = check_supported()
        if goos != "linux":
            raise PlatformError(
                f"embedded containerd runs on Linux only (this host is {goos})",
                "use LimaManager / 'warren lima up' on macOS",
            )
        self._stopping.clear()
        self.fatal_reason = None
        self._make_run_dir()
        self._acquire_lock()
        try:
            self.payload = self._resolve_payload()
            result = ensure_extracted(self.paths, self.payload)
            self.timings.extraction_s = result.duration_s
            self.timings.extraction_cached = result.cached
            write_config(self.paths, self.payload.manifest.containerd_version, self.config_options)
            self._set_state(State.STARTING)
            self._log(f"starting containerd {self.payload.manifest.containerd_version}")
            if not self._adopt():
                self._remove_stale_socket()
                self._spawn_until_ready()
            pidfile.write(self.paths.supervisor_pidfile, pidfile.record_for(os.getpid()))
        except BaseException:
            if self._proc is not None:
                self._terminate(self._proc)
                self._proc = None
            pidfile.remove(self.paths.containerd_pidfile)
            self._set_state(State.STOPPED)
            self._release_lock()
            raise
        self.timings.startup_s = time.perf_counter() - begin
        self._set_state(State.RUNNING)
        self._monitor = threading.Thread(target=self._monitor_loop, name="monitor", daemon=True)
        self._monitor.start()

    def _resolve_payload(self) -> Payload:
        if isinstance(self._payload_arg, Payload):
            return self._payload_arg
        return locate(self._payload_arg)

    def _make_run_dir(self) -> None:
        try:
            self.paths.run_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        except PermissionError as exc:
            raise PermissionDeniedError(
                f"cannot create {self.paths.run_dir}: permission denied",
                "run warren with sudo (containerd needs root), or pass --run-dir",
            ) from exc

    def _acquire_lock(self) -> None:
        fd = os.open(self.paths.supervisor_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.settings.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                other = pidfile.read(self.paths.supervisor_pidfile)
                who = f"pid {other.pid}" if other else "another process"
                raise AlreadyRunning(
                    f"warren is already running ({who}) for {self.paths.run_dir}",
                    "use 'warren containerd status', or stop it with 'warren containerd stop'",
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _containerd_binary(self) -> Path:
        return self.paths.binary("containerd")

    def _adopt(self) -> bool:
        """Take over a healthy containerd left by a dead supervisor instead of starting another."""
        trusted = pidfile.read_trusted(self.paths.containerd_pidfile)
        if trusted:
            pid: int | None = trusted[0].pid
        else:
            # Scanning every process is only worth it when something answers on our socket.
            pid = self._find_orphan() if health.is_serving(self.paths.socket, 0.5) else None
        if pid is None:
            pidfile.remove(self.paths.containerd_pidfile)
            return False
        if not health.is_serving(self.paths.socket, self.settings.health_timeout):
            self._log(f"containerd pid {pid} does not answer on {self.paths.socket}; replacing it")
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with suppress(psutil.Error):
                psutil.Process(pid).wait(self.settings.stop_timeout)
            pidfile.remove(self.paths.containerd_pidfile)
            return False
        self._proc = _Watched(pid, None)
        pidfile.write(self.paths.containerd_pidfile, self._proc.record)
        self.adopted = True
        self.started_at = time.time()
        self.timings.socket_ready_s = 0.0
        self._probe_version()
        self._log(f"adopted running containerd pid {pid}")
        return True

    def _find_orphan(self) -> int | None:
        binary = str(self._containerd_binary())
        sock = str(self.paths.socket)
        for proc in psutil.process_iter(["exe", "cmdline"]):
            with suppress(psutil.Error):
                exe = (proc.info.get("exe") or "").removesuffix(" (deleted)")
                cmdline = proc.info.get("cmdline") or []
                if exe == binary and sock in cmdline:
                    return int(proc.pid)
        return None

    def _remove_stale_socket(self) -> None:
        sock = self.paths.socket
        if os.path.lexists(sock) and not health.is_serving(sock, 0.5):
            with suppress(FileNotFoundError):
                sock.unlink()

    def _command(self) -> list[str]:
        return [
            str(self._containerd_binary()),
            "--config",
            str(self.paths.config_file),
            "--address",
            str(self.paths.socket),
            "--root",
            str(self.paths.containerd_root),
            "--state",
            str(self.paths.state_dir),
        ]

    def _spawn(self) -> _Watched:
        log_fd = logs.open_for_child(self.paths.log_file)
        try:
            popen = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                env=child_env(prepend_path=self.paths.bin_dir),
                cwd="/",
                start_new_session=True,
                close_fds=True,
            )
        except PermissionError as exc:
            raise PermissionDeniedError(
                f"permission denied running {self._containerd_binary()}",
                "run warren with sudo; if the data dir is on a noexec mount, pass --data-dir",
            ) from exc
        except OSError as exc:
            raise ExtractionError(
                f"cannot run {self._containerd_binary()}: {exc.strerror}",
                "run 'warren extract --verify' to repair the binaries",
            ) from exc
        finally:
            os.close(log_fd)
        proc = _Watched(popen.pid, popen)
        pidfile.write(self.paths.containerd_pidfile, proc.record)
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

    def _wait_ready(self, proc: _Watched) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        while True:
            if self._stopping.is_set():
                raise ContainerdExited("stop requested while containerd was starting")
            if health.is_serving(self.paths.socket, min(1.0, self.settings.health_timeout)):
                return
            if time.monotonic() >= deadline:
                self._terminate(proc)
                raise ReadinessTimeout(
                    f"containerd did not answer on {self.paths.socket} within "
                    f"{self.settings.ready_timeout:.0f}s{self._last_log_hint()}",
                    f"see {self.paths.log_file}; raise --ready-timeout on slow hosts",
                )
            if proc.exited.wait(self.settings.poll_interval):
                raise ContainerdExited(
                    f"containerd {proc.describe_exit()} before it was ready{self._last_log_hint()}",
                    f"see {self.paths.log_file}",
                )

    def _last_log_hint(self) -> str:
        for line in reversed(logs.tail(self.paths.log_file, 20)):
            # containerd reports fatal config errors as a bare "containerd: ..." line.
            if "level=fatal" in line or line.startswith("containerd: "):
                return f" (log: {line.strip()[:200]})"
        return ""

    def _probe_version(self) -> None:
        with suppress(Exception):
            self.server_version = health.containerd_version(self.paths.socket, 2.0)[0]

    # --- monitoring ---------------------------------------------------------------------------

    def _monitor_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            if proc.exited.wait(self.settings.health_interval):
                if self._stopping.is_set():
                    return
                self._handle_exit(proc, proc.describe_exit())
                failures = 0
                continue
            if self._stopping.is_set():
                return
            with suppress(OSError):
                logs.rotate_if_needed(self.paths.log_file)
            if health.is_serving(self.paths.socket, self.settings.health_timeout):
                failures = 0
                continue
            failures += 1
            self._log(f"health check failed ({failures}/{self.settings.health_failures})")
            if failures >= self.settings.health_failures:
                self._log(f"containerd pid {proc.pid} is alive but unhealthy; killing it")
                proc.signal(signal.SIGKILL)
                proc.exited.wait(self.settings.stop_timeout)
                self._handle_exit(proc, "killed after failing health checks")
                failures = 0

    def _handle_exit(self, proc: _Watched, reason: str) -> None:
        """Restart after an unexpected exit, with backoff, until it sticks or we give up."""
        ran_for = time.monotonic() - proc.started
        with self._mutex:
            if self._stopping.is_set():
                return
            self.last_exit = ExitInfo(time.time(), proc.pid, proc.returncode, reason)
            self._log(f"containerd pid {proc.pid} {reason} after {ran_for:.1f}s")
            pidfile.remove(self.paths.containerd_pidfile)
            self.started_at = None
        while not self._stopping.is_set():
            now = time.monotonic()
            self._restart_times.append(now)
            while (
                self._restart_times and now - self._restart_times[0] > self.settings.restart_window
            ):
                self._restart_times.popleft()
            if len(self._restart_times) > self.settings.max_restarts:
                self._go_fatal(
                    f"containerd restarted {len(self._restart_times) - 1} times in "
                    f"{self.settings.restart_window:.0f}s"
                )
                return
            delay = self._backoff.delay(ran_for)
            self._set_state(State.BACKOFF)
            if self._stopping.wait(delay):
                return
            with self._mutex:
                if self._stopping.is_set():
                    return
                self._set_state(State.STARTING)
                self.restarts += 1
                self._remove_stale_socket()
                try:
                    self._spawn_until_ready()
                except WarrenError as exc:
                    self._log(f"restart failed: {exc.one_line()}")
                    ran_for = 0.0
                    if self._proc is not None and self._proc.alive():
                        self._terminate(self._proc)
                    continue
                self._set_state(State.RUNNING)
                return

    def _go_fatal(self, reason: str) -> None:
        with self._mutex:
            self.fatal_reason = reason
            self._log(f"FATAL: {reason}; giving up so the service manager can take over")
            self._set_state(State.FATAL)
            self._stopping.set()
            pidfile.remove(self.paths.containerd_pidfile)
            pidfile.remove(self.paths.supervisor_pidfile)
            self._release_lock()

    # --- stopping -----------------------------------------------------------------------------

    def _terminate(self, proc: _Watched) -> None:
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
                state.write(self.paths, self.status())
        if self._on_change is not None:
            with suppress(Exception):
                self._on_change(self)

    def _log(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} warren[{os.getpid()}]: {message}"
        logs.append_line(self.paths.log_file, line)
        for listener in _listeners:
            with suppress(Exception):
                listener(message)


_listeners: list[Callable[[str], None]] = []


def add_event_listener(listener: Callable[[str], None]) -> None:
    """Receive each supervisor event line (the CLI prints them in the foreground)."""
    _listeners.append(listener)


def ensure_containerd(
    data_dir: str | os.PathLike[str] | None = DEFAULT_DATA_DIR,
    use_external: bool = False,
    *,
    prefer_system: bool = False,
    **kwargs: Any,
) -> ContainerdManager:
    """A started manager: the system containerd when preferred and answering, else the embedded.

    If the embedded one cannot start and a system containerd answers, use that, with a warning.
    """
    from warren_bundle.hostinfo import host_os

    if host_os() == "darwin" and not use_external:
        from warren_bundle.lima.manager import ensure_lima

        return ensure_lima(data_dir)  # type: ignore[return-value]
    if use_external or (prefer_system and health.is_serving(system_socket_path())):
        mgr = ContainerdManager(data_dir, use_external=True, **kwargs)
        mgr.start()
        return mgr
    mgr = ContainerdManager(data_dir, **kwargs)
    try:
        mgr.start()
    except WarrenError as exc:
        if not health.is_serving(system_socket_path()):
            raise
        import warnings

        warnings.warn(
            f"embedded containerd failed ({exc.one_line()}); using {system_socket_path()}",
            stacklevel=2,
        )
        mgr = ContainerdManager(data_dir, use_external=True, **kwargs)
        mgr.start()
    return mgr
