"""The frozen file under `Type=notify` + `NotifyAccess=main`: systemd accepts READY=1 and
WATCHDOG=1 only from the service's main process, so they must come from the pid systemd started.
The launcher execs the runtime in place, and the supervisor's threads send as that process: the
notify socket here checks the sender's pid (SO_PASSCRED), as systemd does."""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from warren_bundle.paths import Paths

from support import make_paths, short_dir, stop_run, warren_env

pytestmark = pytest.mark.e2e


def test_ready_and_watchdog_come_from_the_pid_systemd_started(
    frozen_exe: Path, root_required: None
) -> None:
    base = short_dir("fn")
    paths: Paths = make_paths(base)
    notify = base / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    env = warren_env(paths, None, NOTIFY_SOCKET=str(notify), WATCHDOG_USEC="2000000")
    proc = subprocess.Popen(
        [str(frozen_exe), "containerd", "run"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    got: dict[str, set[int]] = {}
    deadline = time.monotonic() + 120
    try:
        while not {"READY=1", "WATCHDOG=1"} <= set(got):
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, f"no READY/WATCHDOG: {got}"
            sock.settimeout(left)
            msg, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            pids = {
                struct.unpack("iII", data[:12])[0]
                for level, kind, data in ancdata
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
            }
            for line in msg.decode().splitlines():
                key = line if line.endswith("=1") else line.partition("=")[0]
                got.setdefault(key, set()).update(pids)
        assert got["READY=1"] == {proc.pid}, got
        assert got["WATCHDOG=1"] == {proc.pid}, got
    finally:
        stop_run(proc)
        sock.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)
