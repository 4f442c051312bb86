"""The status report: what the supervisor writes to <run-dir>/status.json and what `status`,
`metrics` and `images` read back. One shape, typed, for every reader."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypedDict, cast

from warren_bundle import __version__
from warren_bundle.paths import rootless_user
from warren_bundle.payload.format import flavour

if TYPE_CHECKING:
    from warren_bundle.runtime.node_setup import NodeReport
    from warren_bundle.runtime.supervisor import ContainerdManager


class ExitReport(TypedDict):
    at: float
    pid: int
    returncode: int | None
    reason: str


class TimingsReport(TypedDict):
    extraction_s: float | None
    extraction_cached: bool | None
    socket_ready_s: float | None
    startup_s: float | None


class StatusReport(TypedDict, total=False):
    state: str
    external: bool
    supervisor_pid: int | None
    # The warren that runs the supervisor (after a new file is installed, until the restart, not
    # the one a CLI runs): "0.1.1", and "static", "dynamic" or "source".
    warren_version: str | None
    warren_flavour: str | None
    containerd_pid: int | None  # rootless: RootlessKit's (containerd is its child)
    rootless: bool  # a user's containerd, in RootlessKit's user namespace
    adopted: bool
    started_at: float | None  # wall clock of the current containerd's readiness (or adoption)
    uptime_s: float | None
    restarts: int
    failed_restarts: int  # restarts that raised before containerd ran (each retried)
    last_exit: ExitReport | None
    fatal_reason: str | None
    socket: str
    containerd_version: str | None
    runc_version: str | None
    payload_digest: str | None
    version_dir: str | None  # <data>/versions/<digest> that containerd runs from
    upgrade: str | None  # "upgraded containerd 1.6.20 → 1.7.24; 3 containers kept running"
    server_version: str | None
    data_dir: str
    run_dir: str
    config: str
    log: str
    timings: TimingsReport
    metrics_addr: str | None
    run_options: dict[str, Any] | None  # how it was started (runtime/options.py), for restarts
    events: list[str]
    updated_at: float
    # Added by a reader in another process (runtime/control.py), checked against live processes.
    state_detail: str | None  # what the state means now, in words (ORPHANED, UNRESPONSIVE)
    state_recorded: str  # the state the supervisor last wrote (before the reader's checks)
    supervisor_alive: bool
    containerd_alive: bool
    socket_answers: bool
    socket_error: str | None
    already_running: bool
    replaced: str | None  # what `start` stopped to replace a supervisor of another version
    images: dict[str, object] | None
    node: NodeReport | None  # what the start set up for pods (runtime/node_setup.py)


def _run_options(mgr: ContainerdManager) -> dict[str, Any] | None:
    """How this supervisor runs containerd (runtime/options.py), for a restart to keep."""
    if mgr.use_external:
        return None
    from warren_bundle.runtime.options import RunOptions

    options = mgr.run_options or RunOptions.of(mgr.config_options, mgr.settings, mgr.metrics_addr)
    return options.to_dict()


def report_of(mgr: ContainerdManager) -> StatusReport:
    """The supervisor's own view of itself (the state file's content)."""
    proc = mgr.current()
    alive = proc is not None and proc.alive()
    now = time.time()
    payload = mgr.payload
    version = mgr.version
    last = cast("ExitReport", asdict(mgr.last_exit)) if mgr.last_exit else None
    return {
        "state": mgr.state.value,
        "external": mgr.use_external,
        "supervisor_pid": os.getpid() if not mgr.use_external else None,
        "warren_version": __version__,
        "warren_flavour": flavour(),
        "containerd_pid": proc.pid if proc is not None and alive else None,
        "rootless": rootless_user() and not mgr.use_external,
        "adopted": mgr.adopted,
        "started_at": mgr.started_at,
        "uptime_s": (now - mgr.started_at) if mgr.started_at and proc else None,
        "restarts": mgr.restarts,
        "failed_restarts": mgr.failed_restarts,
        "last_exit": last,
        "fatal_reason": mgr.fatal_reason,
        "socket": mgr.socket_path,
        "containerd_version": version.containerd
        if version
        else (payload.manifest.containerd_version if payload else None),
        "runc_version": version.runc
        if version
        else (payload.manifest.runc_version if payload else None),
        "payload_digest": payload.digest if payload else None,
        "version_dir": str(version.directory) if version else None,
        "upgrade": mgr.upgrade,
        "server_version": mgr.server_version,
        "data_dir": str(mgr.paths.data_dir),
        "run_dir": str(mgr.paths.run_dir),
        "config": str(mgr.paths.config_file),
        "log": str(mgr.paths.log_file),
        "timings": cast("TimingsReport", asdict(mgr.timings)),
        "metrics_addr": mgr.metrics_addr,
        "run_options": _run_options(mgr),
        "node": mgr.node,
        "updated_at": now,
    }
