"""A real containerd and runc (Debian's, staged as the payload) under `warren containerd run`."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from warren_bundle.runtime import health

from conftest import Supervised
from support import TEST_IMAGE, read_pid, run_warren, staged_containerd_version, wait_for

pytestmark = pytest.mark.integration


def ctr(sup: Supervised, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # Pinned to this test's socket: while containerd restarts, detection could pick another.
    return run_warren(
        sup.paths, "ctr", *args, timeout=timeout, WARREN_CONTAINERD_SOCKET=str(sup.paths.socket)
    )


def containerd_pid(sup: Supervised) -> int:
    return read_pid(sup.paths.containerd_pidfile)


def test_container_runs_and_prints(supervised: Supervised, busybox_tar: Path) -> None:
    imported = ctr(supervised, "images", "import", str(busybox_tar))
    assert imported.returncode == 0, imported.stderr
    assert TEST_IMAGE in ctr(supervised, "images", "ls", "-q").stdout

    ran = ctr(supervised, "run", "--rm", TEST_IMAGE, "hello-1", "echo", "hello from warren")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "hello from warren"


def test_ctr_version_shows_client_and_server(supervised: Supervised) -> None:
    out = ctr(supervised, "version")
    assert out.returncode == 0, out.stderr
    assert "Client:" in out.stdout and "Server:" in out.stdout
    assert staged_containerd_version() in out.stdout.split("Server:")[1]


def test_kill9_containerd_is_restarted_and_container_survives(
    supervised: Supervised, busybox_tar: Path
) -> None:
    assert ctr(supervised, "images", "import", str(busybox_tar)).returncode == 0
    started = ctr(supervised, "run", "-d", TEST_IMAGE, "sleeper", "sleep", "600")
    assert started.returncode == 0, started.stderr
    task_pid = int(ctr(supervised, "tasks", "ls").stdout.split("\n")[1].split()[1])
    # runc state lives in warren's run dir, not in the root a system containerd shares.
    assert (supervised.paths.runc_root / "default" / "sleeper" / "state.json").is_file()
    old = containerd_pid(supervised)

    psutil.Process(old).send_signal(signal.SIGKILL)

    wait_for(
        lambda: (
            supervised.paths.containerd_pidfile.exists()
            and containerd_pid(supervised) != old
            and health.is_serving(supervised.paths.socket)
        ),
        timeout=30,
        what="a new containerd to answer",
    )
    status = json.loads(run_warren(supervised.paths, "containerd", "status", "--json").stdout)
    assert status["restarts"] == 1
    assert status["state"] == "RUNNING"
    assert status["last_exit"]["reason"] == "killed by SIGKILL"
    assert psutil.pid_exists(task_pid), "the container died with containerd"
    tasks = ctr(supervised, "tasks", "ls").stdout
    assert "sleeper" in tasks and "RUNNING" in tasks

    assert supervised.stop() == 0
    new = status["containerd_pid"]
    assert not psutil.pid_exists(new) or psutil.Process(new).status() == psutil.STATUS_ZOMBIE
    assert psutil.pid_exists(task_pid), "stopping containerd must not kill containers"
