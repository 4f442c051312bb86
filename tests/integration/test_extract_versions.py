"""A new payload extracted while containerd and a container run: nothing they came from changes.

A real containerd (the staged payload) runs a container; extracting another payload switches bin,
yet containerd's and the shim's executables stay the very files they started from (never
"(deleted)"), `warren versions` shows that version in use by them, --prune keeps it, and a
containerd killed meanwhile is restarted from its own version dir, not from what bin points at.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from warren_bundle.payload.format import BINARIES, pack
from warren_bundle.runtime import health

from conftest import Supervised
from support import TEST_IMAGE, read_pid, run_warren, stage_payload, wait_for

pytestmark = pytest.mark.integration


def ctr(sup: Supervised, *args: str) -> str:
    out = run_warren(sup.paths, "ctr", *args, WARREN_CONTAINERD_SOCKET=str(sup.paths.socket))
    assert out.returncode == 0, out.stderr
    return out.stdout


def shim_pids(version_dir: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["exe"]):
        exe = (proc.info.get("exe") or "").removesuffix(" (deleted)")
        if exe == str(version_dir / "containerd-shim-runc-v2"):
            found.append(proc.pid)
    return found


def test_extracting_another_payload_never_touches_what_runs(
    supervised: Supervised, busybox_tar: Path, tmp_path: Path
) -> None:
    paths = supervised.paths
    ctr(supervised, "images", "import", str(busybox_tar))
    ctr(supervised, "run", "-d", TEST_IMAGE, "keeper", "sleep", "600")
    running = paths.bin_dir.resolve()
    assert running.parent == paths.versions_dir
    ctrd = read_pid(paths.containerd_pidfile)
    assert os.readlink(f"/proc/{ctrd}/exe") == str(running / "containerd")
    shims = wait_for(lambda: shim_pids(running), what="the container's shim")
    inodes = {n: (running / n).stat().st_ino for n in BINARIES}

    contents = {n: f"another {n}".encode() * 1000 for n in BINARIES}
    other = pack(stage_payload(tmp_path / "other", contents), level=1)
    out = run_warren(paths, "extract", payload=other.path.parent)
    assert out.returncode == 0, out.stderr

    assert os.readlink(paths.bin_dir) == f"versions/{other.digest}"
    for pid in (ctrd, *shims):
        assert os.readlink(f"/proc/{pid}/exe").startswith(str(running) + "/"), pid
    assert {n: (running / n).stat().st_ino for n in BINARIES} == inodes
    listed = json.loads(run_warren(paths, "versions", "--json", "--prune").stdout)
    assert listed["removed"] == []
    mine = next(v for v in listed["versions"] if v["path"] == str(running))
    assert set(mine["in_use_by"]) >= {ctrd, *shims}

    # containerd dies: the supervisor restarts it from its own version dir, not from bin.
    psutil.Process(ctrd).send_signal(signal.SIGKILL)
    wait_for(
        lambda: (
            paths.containerd_pidfile.exists()
            and read_pid(paths.containerd_pidfile) != ctrd
            and health.is_serving(paths.socket)
        ),
        timeout=30,
        what="containerd restarted",
    )
    again = read_pid(paths.containerd_pidfile)
    assert os.readlink(f"/proc/{again}/exe") == str(running / "containerd")
    assert "keeper" in ctr(supervised, "tasks", "ls")
