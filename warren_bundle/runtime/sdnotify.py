"""systemd's notify protocol, spoken by the supervisor under `Type=notify` (install.sh's unit).

READY=1 once containerd first answers; a STATUS= line for each supervisor event; WATCHDOG=1 every
half WATCHDOG_USEC, but only while containerd answers its health check. A containerd the
supervisor cannot repair (or a supervisor that hangs) stops the pings, and systemd restarts the
service after `WatchdogSec=`.

The protocol is one datagram per message to the unix socket named by $NOTIFY_SOCKET ("@" for an
abstract address), so it is written here by hand rather than taken from a library: no dependency
for ~30 lines. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from warren_bundle.runtime.states import State

if TYPE_CHECKING:
    from warren_bundle.runtime.supervisor import ContainerdManager

# How often the state is looked at for READY=1 when no watchdog asks for more often.
_TICK = 0.2


def notify_address(env: Mapping[str, str]) -> str | None:
    """The socket to send to; None outside systemd, or for an address we do not speak (vsock)."""
    address = env.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    return None


def send(message: str, env: Mapping[str, str] | None = None) -> bool:
    """One datagram to $NOTIFY_SOCKET; False when there is none or it cannot be reached."""
    address = notify_address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8", "replace"))
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half WATCHDOG_USEC), or None when systemd asked for no watchdog or
    asked another process (WATCHDOG_PID)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID", "0") or "0")
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2_000_000


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


class Notifier:
    """Tells systemd about one ContainerdManager, from a thread of its own; close() ends it."""

    def __init__(
        self,
        mgr: ContainerdManager,
        env: Mapping[str, str] | None = None,
        serving: Callable[[], bool] | None = None,
    ) -> None:
        self.mgr = mgr
        self.env = dict(os.environ if env is None else env)
        self.enabled = notify_address(self.env) is not None
        self.interval = watchdog_interval(self.env)
        self._serving = serving or self._health_check
        self._ready = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.enabled:
            return
        self.mgr.add_event_listener(self._on_event)
        self._thread = threading.Thread(target=self._run, name="sd-notify", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """The supervisor is stopping: STOPPING=1, and no more pings."""
        if not self.enabled or self._done.is_set():
            return
        self._done.set()
        send(f"STOPPING=1\nSTATUS={self.mgr.state}: stopping", self.env)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _health_check(self) -> bool:
        from warren_bundle.runtime import health

        timeout = min(2.0, self.interval or 2.0)
        return health.is_serving(self.mgr.paths.socket, timeout)

    def _on_event(self, message: str) -> None:
        if not self._done.is_set():
            send(f"STATUS={self.mgr.state}: {_one_line(message)}", self.env)

    def _run(self) -> None:
        tick = min(_TICK, self.interval) if self.interval else _TICK
        next_ping = 0.0
        last = self.mgr.state
        while not self._done.wait(tick):
            clock = time.monotonic()
            state = self.mgr.state
            if state != last:
                last = state
                send(f"STATUS={state}", self.env)
            running = state == State.RUNNING
            if running and not self._ready and self._serving():
                self._ready = True
                send(f"READY=1\nSTATUS=RUNNING: containerd answers on {self.mgr.socket_path}",
                     self.env)  # fmt: skip
            if self.interval is None or clock < next_ping:
                continue
            next_ping = clock + self.interval
            # Before the first READY=1, TimeoutStartSec= is systemd's limit, not the watchdog.
            if not self._ready or (running and self._serving()):
                send("WATCHDOG=1", self.env)
