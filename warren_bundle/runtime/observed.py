"""What runs now, as seen from another process (`warren containerd status`): the supervisor's own
report checked against the live processes and the socket."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import psutil

from warren_bundle.errors import NotRunningError
from warren_bundle.paths import Paths
from warren_bundle.runtime import health, lastwords, pidfile
from warren_bundle.runtime import statefile as state
from warren_bundle.runtime.states import SERVING, SUPERVISED, UP, State
from warren_bundle.runtime.states import parse as parse_state
from warren_bundle.runtime.status import StatusReport


def status(paths: Paths, timeout: float = 2.0) -> StatusReport:
    """The supervisor's own report, checked against the live processes and socket.

    It says what is true now, in the in-between states too: ORPHANED when containerd runs and
    answers with no supervisor, UNRESPONSIVE as soon as containerd's process lives but its socket
    does not answer (a supervisor only notices after several failed health checks).
    """
    report: StatusReport = state.read(paths) or {}
    sup = pidfile.supervisor(paths)
    ctrd = pidfile.containerd(paths)
    probe = health.probe(paths.socket, timeout)
    recorded_pid = report.get("containerd_pid")
    report.update(
        {
            "supervisor_alive": sup is not None,
            "containerd_alive": ctrd is not None,
            "supervisor_pid": sup.pid if sup else None,
            "containerd_pid": ctrd.pid if ctrd else None,
            "socket": str(paths.socket),
            "socket_answers": probe.serving,
            "socket_error": probe.error,
            "server_version": probe.version or report.get("server_version"),
            "data_dir": str(paths.data_dir),
            "log": str(paths.log_file),
        }
    )
    current = parse_state(report.get("state"))
    report["state_recorded"] = current.value  # what the supervisor last wrote
    if sup is None and current != State.FATAL and (words := lastwords.fatal_reason(paths)):
        # It gave up but could not write the state file: its last words say so.
        current = State.FATAL
        report["fatal_reason"] = words
    if sup is None:
        gone = State.FATAL if current == State.FATAL else State.STOPPED
        current = State.ORPHANED if ctrd else gone
    denied = isinstance(health.connect_error(paths.socket), PermissionError)
    if current in SERVING and not probe.serving and not denied:
        # Never RUNNING while nothing answers: a containerd hung, or gone with a supervisor
        # that says otherwise.
        current = State.UNRESPONSIVE
    report["state"] = current.value
    report["state_detail"] = _detail(current, ctrd, sup is not None, paths)
    if current == State.STOPPED and parse_state(report.get("state_recorded")) in SUPERVISED:
        report["state_detail"] = (
            f"the supervisor ended without a clean stop (last state "
            f"{report['state_recorded']}); see {paths.log_file}"
        )
    started = report.get("started_at")
    up = current in SERVING or current == State.UNRESPONSIVE
    if ctrd is not None and up and (not started or recorded_pid != ctrd.pid):
        # The state file is about another containerd (or none): its own start time is true.
        with suppress(psutil.Error):
            started = ctrd.create_time()
    report["uptime_s"] = (time.time() - started) if started and ctrd else None
    return report


def _detail(
    current: State, ctrd: psutil.Process | None, supervised: bool, paths: Paths
) -> str | None:
    if current == State.ORPHANED:
        return (
            "containerd runs, no supervisor (it was killed or died): nothing restarts "
            "containerd if it fails; 'warren containerd start' adopts it"
        )
    if current == State.UNRESPONSIVE and ctrd is None:
        return (
            f"no containerd process, and nothing answers on {paths.socket}, though the "
            "supervisor says it runs; see the log, then 'warren containerd stop' and "
            "'warren containerd start'"
        )
    if current == State.UNRESPONSIVE and ctrd is not None:
        then = (
            "the supervisor kills and restarts it after failed health checks"
            if supervised
            else "'warren containerd stop' then 'warren containerd start' replaces it"
        )
        return (
            f"containerd pid {ctrd.pid} is alive but does not answer on {paths.socket} "
            f"(hung?); {then}"
        )
    return None


def require_running(report: Mapping[str, Any]) -> None:
    if parse_state(report.get("state")) not in UP:
        raise NotRunningError(
            f"containerd is not running (state {report.get('state')})",
            "start it with 'warren containerd start'",
        )
