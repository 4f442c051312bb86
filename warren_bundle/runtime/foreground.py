"""`warren containerd run`: the supervisor in the foreground until a signal or FATAL.

SIGTERM, SIGINT and SIGHUP ask for a graceful stop (containers keep running), handled in a thread
of their own (_on_stop_signal says why); a supervisor that gave up (FATAL) stops and raises, so
the process exits non-zero and the service manager takes over.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from warren_bundle.errors import ContainerdExited, WarrenError
from warren_bundle.runtime.options import RunOptions
from warren_bundle.runtime.sdnotify import Notifier
from warren_bundle.runtime.states import State
from warren_bundle.runtime.supervisor import ContainerdManager

if TYPE_CHECKING:
    from warren_bundle.paths import Paths
    from warren_bundle.payload.format import Payload

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def manager_for(
    options: RunOptions, paths: Paths, payload: Payload | str | None
) -> ContainerdManager:
    """The supervisor `containerd run` runs: built from the typed options, which it records."""
    from warren_bundle.runtime.settings import Settings

    return ContainerdManager(
        paths=paths,
        payload=payload,
        config_options=options.config_options(),
        settings=Settings(
            ready_timeout=options.ready_timeout, health_interval=options.health_interval
        ),
        metrics_addr=options.metrics_addr,
        force_version=options.force,
        run_options=options,
    )


def serve_detached(
    options: RunOptions, paths: Paths, payload: str | None, ready: Callable[[], None]
) -> int:
    """The body of `containerd run` in a supervisor that `containerd start` forked: its output
    is the log; `ready` tells the parent once containerd answers. Exit status as
    `containerd run`'s."""
    import sys

    def say(line: str) -> None:
        print(f"warren: {line}", file=sys.stderr, flush=True)

    mgr = manager_for(options, paths, payload)
    mgr.add_event_listener(say)
    if run_foreground(mgr, lambda _mgr: ready()):
        say("containerd stopped")
    return 0


def run_foreground(mgr: ContainerdManager, on_ready: Callable[[ContainerdManager], None]) -> bool:
    """Start, call `on_ready`, supervise until stopped. False when a stop came before readiness."""
    stop_requested = threading.Event()
    notifier = Notifier(mgr)  # systemd's Type=notify: READY, STATUS, WATCHDOG

    def on_stop() -> None:
        stop_requested.set()
        mgr.request_stop()
        notifier.close()

    undo = _on_stop_signal(on_stop)
    notifier.start()
    try:
        return _supervise(mgr, on_ready, stop_requested)
    finally:
        notifier.close()
        undo()


def _supervise(
    mgr: ContainerdManager,
    on_ready: Callable[[ContainerdManager], None],
    stop_requested: threading.Event,
) -> bool:
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


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """A Python-level handler, so that the interpreter's C handler writes the wakeup pipe."""


def _on_stop_signal(on_stop: Callable[[], None]) -> Callable[[], None]:
    """Call `on_stop` from a thread of its own at each SIGTERM, SIGINT or SIGHUP; returns what
    undoes it.

    Not from a Python signal handler: that runs in the main thread between two bytecodes, even
    inside another handler, and an Event.set() there deadlocks on the lock the code it
    interrupted holds. Ctrl-C did it: the terminal signals the one-file warren's bootloader and
    its child, the bootloader forwards its own, and the second handler ran inside the first
    one's Event.set(); 2 of 6 Ctrl-C's left `warren containerd run` hung, deaf to every later
    signal. The handlers here do nothing; the C-level handler writes each signal's number to
    the wakeup pipe, and a thread reads it.
    """
    read_fd, write_fd = os.pipe()  # close-on-exec: containerd does not inherit them
    os.set_blocking(write_fd, False)  # set_wakeup_fd requires it
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, _ignore) for sig in _STOP_SIGNALS}
    wanted = {int(sig) for sig in _STOP_SIGNALS}

    def watch() -> None:
        while True:
            try:
                got = os.read(read_fd, 64)
            except OSError:
                return
            if not got:  # the write end closed: undone
                return
            if wanted.intersection(got):
                on_stop()

    watcher = threading.Thread(target=watch, name="stop-signals", daemon=True)
    watcher.start()

    def undo() -> None:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(write_fd)
        watcher.join(2.0)
        os.close(read_fd)

    return undo
