"""Ready means: the process is alive AND Health/Check answers SERVING on a fresh connection.

A socket file alone is not readiness: containerd creates it before its services are up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from warren_bundle.errors import ContainerdExited, ReadinessTimeout
from warren_bundle.paths import Paths
from warren_bundle.runtime import logs
from warren_bundle.runtime.process import Watched
from warren_bundle.runtime.settings import Settings

# (socket path, timeout) -> does containerd answer SERVING there
Probe = Callable[[str, float], bool]


def wait_ready(
    proc: Watched, paths: Paths, settings: Settings, is_serving: Probe, stopping: threading.Event
) -> None:
    """Return once `proc` answers on the socket; raise when it exits, times out or stop is asked.

    On ReadinessTimeout the caller still owns `proc` (and terminates it).
    """
    deadline = time.monotonic() + settings.ready_timeout
    sock = str(paths.socket)
    while True:
        if stopping.is_set():
            raise ContainerdExited("stop requested while containerd was starting")
        if is_serving(sock, min(1.0, settings.health_timeout)):
            return
        if time.monotonic() >= deadline:
            raise ReadinessTimeout(
                f"containerd did not answer on {sock} within "
                f"{settings.ready_timeout:.0f}s{logs.fatal_hint(paths.log_file)}",
                f"see {paths.log_file}; raise --ready-timeout on slow hosts",
            )
        if proc.exited.wait(settings.poll_interval):
            raise ContainerdExited(
                f"containerd {proc.describe_exit()} before it was ready"
                f"{logs.fatal_hint(paths.log_file)}",
                f"see {paths.log_file}",
            )
