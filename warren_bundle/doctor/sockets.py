"""The running containerd: its pidfiles, its socket, and a system containerd beside it."""

from __future__ import annotations

from warren_bundle.doctor.base import Check, Inputs, failed, passed, warned
from warren_bundle.errors import ExitCode, WarrenError
from warren_bundle.paths import SHORTER_RUN_DIR, socket_path_problem, system_socket_path
from warren_bundle.runtime import health, pidfile


def check_pidfiles(inputs: Inputs) -> Check:
    name = "pidfiles"
    paths = inputs.paths
    stale, live = [], []
    # A pidfile counts as live only when it leads to what warren would signal: the bundled
    # containerd of this run dir, or the supervisor holding its lock (runtime/pidfile.py).
    ours = {"supervisor": pidfile.supervisor(paths), "containerd": pidfile.containerd(paths)}
    for label, path in (
        ("supervisor", paths.supervisor_pidfile),
        ("containerd", paths.containerd_pidfile),
    ):
        if not path.exists():
            continue
        record = pidfile.read(path)
        proc = ours[label]
        if record is None:
            stale.append(f"{path} is unreadable")
        elif proc is None or proc.pid != record.pid:
            stale.append(f"{path} names pid {record.pid}, which is gone or another program")
        else:
            live.append(f"{label} pid {record.pid}")
    if stale:
        return warned(
            name,
            f"stale pidfile: {'; '.join(stale)}",
            "the next start removes it ('warren containerd stop' or rm does it now)",
        )
    if live:
        return passed(name, f"{', '.join(live)} alive")
    return passed(name, "none (nothing running)")


def check_socket_path(inputs: Inputs) -> Check:
    """A run dir too deep for a unix socket fails deep inside containerd (its ttrpc listener)."""
    name = "socket path"
    problem = socket_path_problem(inputs.paths.socket)
    if problem:
        return failed(name, problem, SHORTER_RUN_DIR, ExitCode.USAGE)
    return passed(name, f"{inputs.paths.socket} fits a unix socket address")


def check_socket(inputs: Inputs) -> Check:
    """Seed case "Socket Not Found": containerd runs but its socket does not answer."""
    name = "socket"
    sock = inputs.paths.socket
    running = [
        f"{label} pid {trusted[0].pid}"
        for label, path in (
            ("supervisor", inputs.paths.supervisor_pidfile),
            ("containerd", inputs.paths.containerd_pidfile),
        )
        if (trusted := pidfile.read_trusted(path)) is not None
    ]
    probe = health.probe(sock, 2.0)
    if probe.serving:
        owner = "" if running else " (no warren supervisor: not managed)"
        return passed(name, f"containerd {probe.version or '?'} answers on {sock}{owner}")
    if running:
        return failed(
            name,
            f"{probe.error or f'socket not found: {sock}'} while {' and '.join(running)} run",
            f"check 'ls -l {sock}' and 'warren containerd status'; restart containerd or Warren "
            "('warren containerd stop', then 'warren containerd start')",
            ExitCode.NOT_RUNNING,
        )
    if probe.exists:
        return warned(
            name,
            f"stale socket {sock}: nothing answers and no containerd runs",
            f"the next start removes it (or rm {sock})",
        )
    return warned(
        name,
        f"the embedded containerd is not running (no socket at {sock})",
        "start it with 'warren containerd start'",
    )


def check_system_containerd(inputs: Inputs) -> Check:
    from warren_bundle.sockets import detect

    name = "system containerd"
    system = system_socket_path()
    probe = health.probe(system, 1.0)
    try:
        chosen = detect(inputs.paths, timeout=1.0)
        used = f"clients ('warren socket') use the {chosen.kind} one at {chosen.path}"
    except WarrenError:
        used = "no socket answers for clients yet"
    if probe.serving:
        return passed(name, f"containerd {probe.version or '?'} answers at {system}; {used}")
    if probe.exists:
        return warned(
            name,
            f"{system} exists but does not answer ({probe.error})",
            "start the system containerd (systemctl start containerd); it is not warren's",
        )
    return passed(name, f"none at {system}; {used}")
