"""`warren containerd run`: the supervisor in the foreground until a signal or FATAL.

SIGTERM, SIGINT and SIGHUP ask for a graceful stop (containers keep running); a supervisor that
gave up (FATAL) stops and raises, so the process exits non-zero and the service manager takes
over.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from warren_bundle.errors import ContainerdExited, WarrenError
from warren_bundle.runtime.states import State
from warren_bundle.runtime.supervisor import ContainerdManager

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_foreground(mgr: ContainerdManager, on_ready: Callable[[ContainerdManager], None]) -> bool:
    """Start, call `on_ready`, supervise until stopped. False when a stop came before readiness."""
    stop_requested = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop_requested.set()
        mgr.request_stop()

    for sig in _STOP_SIGNALS:
        signal.signal(sig, on_signal)
    try:
        mgr.start()
    except ContainerdExited:
        mgr.stop()
        if stop_requested.is_set():
            return False
        raise
    except BaseException:
        mgr.stop()
        raise
    try:
        on_ready(mgr)
        while not stop_requested.wait(0.5):
            if mgr.state == State.FATAL:
                break
    finally:
        fatal = mgr.state == State.FATAL
        reason = mgr.fatal_reason
        mgr.stop()
    if fatal:
        raise WarrenError(
            f"containerd keeps failing: {reason}",
            f"see {mgr.paths.log_file}; the service manager will restart warren",
        )
    return True
