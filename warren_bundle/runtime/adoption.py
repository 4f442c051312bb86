"""Which running containerd a new supervisor may take over, instead of starting a second one.

Only the bundled containerd of this run dir qualifies: the one its pidfile names (trusted only
when the exe and start time still match and it is our containerd binary with our socket on its
command line: pidfile.containerd()), or, when something answers on our socket but the pidfile is
gone, a process running our containerd binary with our socket on its command line.
One that does not answer is killed and replaced; a pidfile naming any other process is removed,
and that process is left alone.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import psutil

from warren_bundle.paths import Paths
from warren_bundle.runtime import health, pidfile
from warren_bundle.runtime.process import Processes
from warren_bundle.runtime.readiness import Probe
from warren_bundle.runtime.settings import Settings
from warren_bundle.runtime.status import StatusReport


def adoptable_pid(
    paths: Paths,
    processes: Processes,
    is_serving: Probe,
    settings: Settings,
    log: Callable[[str], None],
    binary_path: Path | None = None,
) -> int | None:
    """binary_path: the containerd we would run (<data>/versions/<digest>/containerd). A bundled
    containerd of another version is stopped gracefully (its shims keep running), not adopted."""
    sock = str(paths.socket)
    binary = str(binary_path or paths.binary("containerd"))
    ours = pidfile.containerd(paths)
    if ours is not None:
        pid: int | None = ours.pid
        if binary_path is not None and pidfile.exe_of(ours) not in (binary, None):
            log(
                f"containerd pid {ours.pid} runs {pidfile.exe_of(ours)}, not {binary}; "
                "stopping it to start this version (its containers keep running)"
            )
            _stop_gracefully(ours, settings.stop_timeout)
            pidfile.discard(paths.containerd_pidfile)
            return None
    else:
        # Scanning every process is only worth it when something answers on our socket.
        pid = processes.find(binary, sock) if is_serving(sock, 0.5) else None
    if pid is None:
        pidfile.discard(paths.containerd_pidfile)
        return None
    if not _answers(pid, sock, is_serving, settings, log):
        log(
            f"containerd pid {pid} did not answer on {sock} in {settings.health_failures} "
            "checks; replacing it"
        )
        processes.kill_and_wait(pid, settings.stop_timeout)
        pidfile.discard(paths.containerd_pidfile)
        return None
    return pid


def _answers(
    pid: int, sock: str, is_serving: Probe, settings: Settings, log: Callable[[str], None]
) -> bool:
    """The monitor's rule for a hang (health.answers_within), logging each missed check."""

    def missed(check: int) -> None:
        log(
            f"containerd pid {pid} does not answer on {sock} (check {check} of "
            f"{settings.health_failures}); checking again"
        )

    return health.answers_within(
        sock,
        settings.health_failures,
        settings.health_timeout,
        still_alive=lambda: psutil.pid_exists(pid),
        is_serving=is_serving,
        on_miss=missed,
    )


def _stop_gracefully(proc: psutil.Process, timeout: float) -> None:
    """SIGTERM to containerd's pid only (shims survive), its grace, then SIGKILL."""
    with suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout)


def adopted_since(previous: StatusReport | None, record: pidfile.PidRecord) -> float:
    """When the adopted containerd became ready: what the last supervisor recorded for this same
    process, else the process's own start time. Adoption does not make containerd younger."""
    started = (previous or {}).get("started_at")
    same = (previous or {}).get("containerd_pid") == record.pid
    if same and isinstance(started, int | float) and started >= record.create_time - 1:
        return float(started)
    return record.create_time or time.time()
