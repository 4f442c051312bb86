"""4–5, 7. A real containerd: start-to-ready against bare containerd, restart after kill -9, RSS.

Every process started here is stopped by its pid (or through `warren containerd stop`, which
signals its own supervisor) before the next measurement starts.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import psutil

from warren_bundle.paths import Paths
from warren_bundle.payload.format import Payload
from warren_bundle.runtime import health, pidfile
from warren_bundle.runtime import statefile as state
from warren_bundle.runtime.childenv import child_env
from warren_bundle.runtime.config import ConfigOptions, write_config
from warren_bundle.store.extract import ensure_extracted

from .context import Bench
from .rows import Row, Target
from .timing import interleaved, time_call, time_command

# ms over bare containerd, same config and health check (the launcher issue's target: one
# launch of the one file, then the supervisor's work before containerd answers)
START_TARGET = Target("over", 150.0)
RESTART_TARGET = Target("at_most", 1000.0)  # ms
RSS_TARGET = Target("at_most", 40.0)  # MB
POLL = 0.005  # how often the bench itself looks: 5 ms of resolution at most
DEADLINE = 60.0
AT_REST_AFTER = 2.0


class Runtime:
    """One data/run/config triple with the payload extracted (a warm cache), and its processes."""

    def __init__(self, bench: Bench, payload: Payload) -> None:
        self.bench = bench
        self.payload = payload
        area = bench.scratch("runtime")
        self.paths = Paths(area / "data", bench.run_dir(), area / "etc")
        ensure_extracted(self.paths, payload)
        write_config(self.paths, payload.manifest.containerd_version, ConfigOptions())
        self.env = bench.env(
            WARREN_DATA_DIR=str(self.paths.data_dir),
            WARREN_RUN_DIR=str(self.paths.run_dir),
            WARREN_CONFIG_DIR=str(self.paths.config_dir),
        )

    # --- the contenders -------------------------------------------------------------------------

    def bare(self) -> float:
        """The same containerd binary, config and flags, polled with the same health check."""
        p = self.paths
        argv = [
            str(p.binary("containerd")),
            "--config",
            str(p.config_file),
            "--address",
            str(p.socket),
            "--root",
            str(p.containerd_root),
            "--state",
            str(p.state_dir),
        ]
        with open(p.data_dir / "bare-containerd.log", "ab") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=child_env(prepend_path=p.bin_dir),
                cwd="/",
                start_new_session=True,
            )
        try:
            self._poll(lambda: health.is_serving(p.socket), proc.poll, "bare containerd")
            return time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(30)

    def frozen_start(self) -> float:
        """`warren containerd start`: returns once the detached supervisor reports ready."""
        try:
            return time_command([str(self.bench.exe), "containerd", "start"], self.env)
        finally:
            self.stop_frozen()

    def frozen_run(self) -> float:
        """`warren containerd run` in the foreground until it prints the socket (its ready line)."""
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(self.bench.exe), "containerd", "run"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            elapsed = time.perf_counter() - started
            if line.strip() != str(self.paths.socket).encode():
                raise RuntimeError(f"warren containerd run exited {proc.wait()} before ready")
            return elapsed
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            if proc.stdout:
                proc.stdout.close()

    def library(self) -> float:
        """ContainerdManager.start() in this process: the supervisor without any launch."""
        from warren_bundle.runtime.supervisor import ContainerdManager

        mgr = ContainerdManager(paths=self.paths, payload=self.payload)
        try:
            return time_call(mgr.start)
        finally:
            mgr.stop()

    # --- helpers --------------------------------------------------------------------------------

    def start_frozen(self) -> dict[str, object]:
        subprocess.run(
            [str(self.bench.exe), "containerd", "start"],
            env=self.env,
            check=True,
            capture_output=True,
        )
        report = state.read(self.paths)
        if not report or report.get("state") != "RUNNING":
            raise RuntimeError(f"warren containerd start returned but the state is {report}")
        return report

    def stop_frozen(self) -> None:
        subprocess.run(
            [str(self.bench.exe), "containerd", "stop"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def containerd_pid(self) -> int | None:
        record = pidfile.read(self.paths.containerd_pidfile)
        return record.pid if record else None

    @staticmethod
    def _poll(
        ready: Callable[[], bool], exited: Callable[[], int | None] | None, what: str
    ) -> None:
        deadline = time.monotonic() + DEADLINE
        while not ready():
            if exited is not None and exited() is not None:
                raise RuntimeError(f"{what} exited before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready within {DEADLINE:.0f}s")
            time.sleep(POLL)

    def settle(self) -> None:
        """Untimed, between contenders: nothing of ours may still hold the socket."""
        self._poll(lambda: not health.is_serving(self.paths.socket, 0.5), None, "shutdown")
        with suppress(FileNotFoundError):
            self.paths.socket.unlink()

    def teardown(self) -> None:
        with suppress(subprocess.SubprocessError, OSError):
            self.stop_frozen()


def measure_start(rt: Runtime) -> tuple[list[Row], float]:
    samples = interleaved(
        {
            "bare": rt.bare,
            "library": rt.library,
            "run": rt.frozen_run,
            "start": rt.frozen_start,
        },
        runs=rt.bench.runs.start,
        warmup=1,
        between=rt.settle,
    )
    ms = {name: s.median * 1000 for name, s in samples.items()}
    detail = {name: s.scaled(1000) for name, s in samples.items()}
    group = "start-to-ready"
    bare = "bare containerd, same config, same health check"
    rows = [
        Row(
            group,
            "`warren containerd start` (one file, detached supervisor)",
            ms["start"],
            "ms",
            bare,
            ms["bare"],
            START_TARGET,
            detail={"start": detail["start"], "bare": detail["bare"]},
        ),
        Row(
            group,
            "`warren containerd run` until it prints the socket (one file)",
            ms["run"],
            "ms",
            bare,
            ms["bare"],
            detail={"run": detail["run"]},
        ),
        Row(
            group,
            "`ContainerdManager.start()` in process (no launch)",
            ms["library"],
            "ms",
            bare,
            ms["bare"],
            detail={"library": detail["library"]},
        ),
    ]
    return rows, ms["bare"]


def measure_restart(rt: Runtime, bare_ms: float) -> list[Row]:
    """kill -9 containerd under a supervisor that has run stably, until a new one answers."""
    values = []
    for _ in range(rt.bench.runs.restart):
        rt.start_frozen()
        try:
            old = rt.containerd_pid()
            if old is None:
                raise RuntimeError("no containerd pidfile after start")
            started = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            Runtime._poll(
                lambda o=old: (
                    rt.containerd_pid() not in (None, o) and health.is_serving(rt.paths.socket)
                ),
                None,
                "restarted containerd",
            )
            values.append((time.perf_counter() - started) * 1000)
        finally:
            rt.stop_frozen()
        rt.settle()
    return [
        Row(
            "restart",
            "kill -9 containerd → a new one answers (one file supervisor)",
            statistics.median(values),
            "ms",
            "bare containerd start-to-ready",
            bare_ms,
            RESTART_TARGET,
            detail={"restart_ms": values},
        )
    ]


def _rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2**20


def _supervisor_processes(pid: int, exe: Path) -> list[psutil.Process]:
    """The Python supervisor and, in a one-file build, the bootloader process, its parent."""
    proc = psutil.Process(pid)
    procs = [proc]
    parent = proc.parent()
    with suppress(psutil.Error):
        if parent is not None and Path(parent.exe()).resolve() == exe.resolve():
            procs.append(parent)
    return procs


def measure_memory(rt: Runtime) -> list[Row]:
    report = rt.start_frozen()
    try:
        sup_pid, ctrd_pid = report.get("supervisor_pid"), rt.containerd_pid()
        if not isinstance(sup_pid, int) or ctrd_pid is None:
            raise RuntimeError(f"no pids in {report}")
        procs = _supervisor_processes(sup_pid, rt.bench.exe)
        containerd = psutil.Process(ctrd_pid)
        time.sleep(AT_REST_AFTER)  # "at rest": past the start-up burst, not a synchronisation
        sup, python_only, ctrd = [], [], []
        for _ in range(rt.bench.runs.memory_samples):
            sup.append(sum(_rss_mb(p) for p in procs))
            python_only.append(_rss_mb(procs[0]))
            ctrd.append(_rss_mb(containerd))
            time.sleep(0.5)
    finally:
        rt.stop_frozen()
    rt.settle()
    return [
        Row(
            "memory",
            "supervisor RSS at rest (Python process + one-file bootloader)",
            statistics.median(sup),
            "MB",
            "containerd RSS at rest",
            statistics.median(ctrd),
            RSS_TARGET,
            detail={
                "python_process_mb": statistics.median(python_only),
                "bootloader_mb": statistics.median(sup) - statistics.median(python_only),
            },
        )
    ]
