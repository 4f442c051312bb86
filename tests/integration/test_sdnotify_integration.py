"""Type=notify end to end: `warren containerd run` with a real containerd, and a unix datagram
socket standing in for systemd's $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from warren_bundle.paths import Paths
from warren_bundle.runtime import health

from support import WARREN, read_pid, stop_run, wait_for, warren_env

pytestmark = pytest.mark.integration


class Systemd:
    """The notify socket: every datagram received, with when it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.got: list[tuple[float, str]] = []

    def until(self, want: str, timeout: float) -> list[str]:
        """Receive until a message containing `want` arrives; every message since, in order."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {want!r} from the supervisor in {timeout}s: {seen}")
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), message))
            seen.append(message)
            if want in message:
                return seen


def test_ready_status_and_a_watchdog_only_while_containerd_answers(
    wpaths: Paths, staged_payload: Path, root_required: None
) -> None:
    systemd = Systemd(wpaths.data_dir.parent / "notify")
    env = warren_env(
        wpaths, staged_payload, NOTIFY_SOCKET=str(systemd.path), WATCHDOG_USEC="1000000"
    )
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [*WARREN, "containerd", "run", "--health-interval", "0.5"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        before = systemd.until("READY=1", 90)
        assert any(m.startswith("STATUS=") for m in before), before
        assert health.is_serving(wpaths.socket, 2.0), "READY=1 before containerd answers"
        # Pinged at half WATCHDOG_USEC while containerd answers.
        systemd.until("WATCHDOG=1", 5)
        systemd.until("WATCHDOG=1", 5)
        # containerd's environment does not carry systemd's variables.
        pid = read_pid(wpaths.containerd_pidfile)
        child_env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not [v for v in child_env if v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_"))]

        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_for(lambda: not health.is_serving(wpaths.socket, 0.3), 10, what="a hung containerd")
        # The monitor gives up on the hung containerd after 3 failed checks and restarts it;
        # until then, no ping: only one already under way when it was stopped may arrive.
        hung = systemd.until("alive but unhealthy", 30)
        pings = [at for at, m in systemd.got[-len(hung) :] if m == "WATCHDOG=1"]
        assert all(at - stopped_at < 1.0 for at in pings), (
            f"WATCHDOG=1 while containerd was stopped: {hung}"
        )
        assert any("health check failed" in m for m in hung), hung
        # Repaired: a new containerd answers, and the pings resume.
        systemd.until("ready on", 60)
        systemd.until("WATCHDOG=1", 5)
        assert read_pid(wpaths.containerd_pidfile) != pid
        proc.send_signal(signal.SIGTERM)
        systemd.until("STOPPING=1", 30)
    finally:
        with_stop = stop_run(proc)
        systemd.sock.close()
    assert with_stop == 0
