"""Which running containerd a new supervisor may take over, instead of starting a second one.

Only the bundled containerd of this run dir qualifies: the one its pidfile names (trusted only
when the exe and start time still match and it is our containerd binary with our socket on its
command line: pidfile.containerd()), or, when something answers on our socket but the pidfile is
gone, a process running our containerd binary with our socket on its command line.
One that does not answer is killed and replaced; a pidfile naming any other process is removed,
and that process is left alone.
"""

from __future__ import annotations

from collections.abc import Callable

from warren_bundle.paths import Paths
from warren_bundle.runtime import pidfile
from warren_bundle.runtime.process import Processes
from warren_bundle.runtime.readiness import Probe
from warren_bundle.runtime.settings import Settings


def adoptable_pid(
    paths: Paths,
    processes: Processes,
    is_serving: Probe,
    settings: Settings,
    log: Callable[[str], None],
) -> int | None:
    sock = str(paths.socket)
    ours = pidfile.containerd(paths)
    if ours is not None:
        pid: int | None = ours.pid
    else:
        # Scanning every process is only worth it when something answers on our socket.
        binary = str(paths.binary("containerd"))
        pid = processes.find(binary, sock) if is_serving(sock, 0.5) else None
    if pid is None:
        pidfile.discard(paths.containerd_pidfile)
        return None
    if not is_serving(sock, settings.health_timeout):
        log(f"containerd pid {pid} does not answer on {sock}; replacing it")
        processes.kill_and_wait(pid, settings.stop_timeout)
        pidfile.discard(paths.containerd_pidfile)
        return None
    return pid
