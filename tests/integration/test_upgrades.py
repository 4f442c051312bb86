"""Upgrades between real containerd releases, frozen one warren file per payload.

containerd 1.6.20 (bookworm), 1.7.24 (trixie), 2.1.9 (sid), each with bookworm's runc, built by
scripts/test_payloads.py (cached in /var/cache/warren-test/upgrades; `make test-payloads`). A
container started under 1.6 keeps running through 1.7 and 2.1, and is exec'd into, killed and
deleted under 2.1. Each step's downtime (the time the socket did not answer) and each kept
version's disk use are measured and written to <cache>/measurements.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from warren_bundle.paths import Paths
from warren_bundle.runtime import health

from support import REPO, TEST_IMAGE, cleanup_runtime, make_paths, short_dir, wait_for
from support.frozen import run_frozen

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("root_required")]

sys.path.insert(0, str(REPO / "scripts"))
import test_payloads  # noqa: E402

MEASUREMENTS = test_payloads.CACHE / "measurements.json"


@pytest.fixture(scope="session")
def exes() -> dict[str, Path]:
    """{"1.6": exe, "1.7": exe, "2.1": exe}: built when missing (a few minutes), else cached."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the payloads are staged and cached under /var/cache)")
    built = test_payloads.build()
    by_minor = {".".join(v.split(".")[:2]): exe for v, exe in built.items()}
    assert set(by_minor) == {"1.6", "1.7", "2.1"}, built
    return by_minor


@pytest.fixture
def upaths() -> Iterator[Paths]:
    base = short_dir("up")
    paths = make_paths(base)
    yield paths
    cleanup_runtime(paths, base)


class Warren:
    """Run one frozen warren on the test's dirs."""

    def __init__(self, exe: Path, paths: Paths) -> None:
        self.exe, self.paths = exe, paths

    def __call__(
        self, *args: str, ok: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        out = run_frozen(
            self.exe,
            self.paths,
            *args,
            timeout=timeout,
            WARREN_CONTAINERD_SOCKET=str(self.paths.socket),
        )
        if ok:
            assert out.returncode == 0, f"{args}: {out.stderr}"
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


class Downtime:
    """Polls the socket in the background; the longest stretch it did not answer."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.longest = 0.0
        self._since: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            now = time.monotonic()
            if health.is_serving(self.socket, 0.5):
                if self._since is not None:
                    self.longest = max(self.longest, now - self._since)
                    self._since = None
            elif self._since is None:
                self._since = now
            self._done.wait(0.01)

    def __enter__(self) -> Downtime:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        wait_for(lambda: health.is_serving(self.socket, 1.0), timeout=30, what="the socket")
        self._done.set()
        self._thread.join()
        if self._since is not None:
            self.longest = max(self.longest, time.monotonic() - self._since)


def task_pid(w: Warren, name: str) -> int | None:
    for line in w("ctr", "tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == name and "RUNNING" in fields:
            return int(fields[1])
    return None


def containerd_exe(paths: Paths) -> str:
    pid = json.loads(paths.containerd_pidfile.read_text())["pid"]
    return psutil.Process(pid).exe()


def version_of(w: Warren, minor: str) -> dict[str, Any]:
    found = [v for v in w.json("versions")["versions"] if v["containerd_version"].startswith(minor)]
    assert len(found) == 1, found
    return found[0]


def record(name: str, data: dict[str, Any]) -> None:
    existing = json.loads(MEASUREMENTS.read_text()) if MEASUREMENTS.is_file() else {}
    existing[name] = data
    MEASUREMENTS.write_text(json.dumps(existing, indent=2) + "\n")


def start_container(w: Warren, name: str) -> int:
    w("ctr", "run", "-d", TEST_IMAGE, name, "sleep", "3600")
    return wait_for(lambda: task_pid(w, name), timeout=30, what=f"{name} to run")


def test_walk_from_16_to_21_keeps_a_container_running(
    exes: dict[str, Path], upaths: Paths, busybox_tar: Path
) -> None:
    w16, w17, w21 = (Warren(exes[m], upaths) for m in ("1.6", "1.7", "2.1"))
    upaths.config_d.mkdir(parents=True)
    (upaths.config_d / "99-mine.toml").write_text("# the operator's own drop-in\n")
    w16("containerd", "start")
    w16("ctr", "images", "import", str(busybox_tar))
    c1 = start_container(w16, "c1")
    v16 = version_of(w16, "1.6")
    assert os.readlink(upaths.bin_dir) == f"versions/{v16['digest']}"
    assert containerd_exe(upaths) == f"{v16['path']}/containerd"
    measured: dict[str, Any] = {}

    # 1.6 → 1.7 the way a service restart does it: the old warren stops, the new one starts.
    with Downtime(upaths.socket) as down:
        w16("containerd", "stop")
        started = w17("containerd", "start")
    measured["1.6 → 1.7 (stop, start)"] = round(down.longest, 3)
    assert "upgraded containerd 1.6.20 → 1.7.24; 1 container kept running" in started.stderr
    v17 = version_of(w17, "1.7")
    assert containerd_exe(upaths) == f"{v17['path']}/containerd"
    assert os.readlink(upaths.bin_dir) == f"versions/{v17['digest']}"
    assert task_pid(w17, "c1") == c1 and psutil.pid_exists(c1)
    kept = version_of(w17, "1.6")
    assert kept["previous"] and kept["in_use_by"], kept  # c1's shim came from it
    c2 = start_container(w17, "c2")
    status = w17.json("containerd", "status")
    assert status["upgrade"] == "upgraded containerd 1.6.20 → 1.7.24; 1 container kept running"

    # 1.7 → 2.1 by `start` while 1.7 runs: it is stopped gracefully, 2.1 takes over.
    with Downtime(upaths.socket) as down:
        started = w21("containerd", "start")
    measured["1.7 → 2.1 (start over a running 1.7)"] = round(down.longest, 3)
    assert "upgraded containerd 1.7.24 → 2.1.9; 2 containers kept running" in started.stderr
    v21 = version_of(w21, "2.1")
    assert containerd_exe(upaths) == f"{v21['path']}/containerd"
    assert task_pid(w21, "c1") == c1 and task_pid(w21, "c2") == c2
    assert version_of(w21, "1.6")["in_use_by"], "1.6's dir is kept while c1's shim runs"
    c3 = start_container(w21, "c3")
    assert psutil.Process(c3).is_running()

    # The container from 1.6, under 2.1: exec, kill, delete.
    execd = w21("ctr", "tasks", "exec", "--exec-id", "e1", "c1", "echo", "still here")
    assert execd.stdout.strip() == "still here"
    w21("ctr", "tasks", "kill", "-s", "SIGKILL", "c1")
    wait_for(lambda: not psutil.pid_exists(c1), timeout=30, what="c1 to die")
    w21("ctr", "tasks", "rm", "c1")
    w21("ctr", "containers", "rm", "c1")
    wait_for(lambda: not version_of(w21, "1.6")["in_use_by"], timeout=30, what="c1's shim to exit")

    # A refused downgrade changes nothing.
    before = (json.loads(upaths.containerd_pidfile.read_text())["pid"], os.readlink(upaths.bin_dir))
    refused = w17("containerd", "start", ok=False)
    assert refused.returncode == 1, refused.stderr
    assert "downgrade from 2.1.9 across a minor line" in refused.stderr
    assert "nothing was stopped" in refused.stderr and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    pid_now = json.loads(upaths.containerd_pidfile.read_text())["pid"]
    assert (pid_now, os.readlink(upaths.bin_dir)) == before
    rolled = w21("rollback", ok=False)
    assert rolled.returncode == 1 and "2.1.9 has run on this data" in rolled.stderr

    sizes = {v["containerd_version"]: v["size_bytes"] for v in w21.json("versions")["versions"]}
    pruned = w21.json("versions", "--prune")
    assert [v["containerd_version"] for v in pruned["removed"]] == ["1.6.20"]
    assert not Path(v16["path"]).exists()
    assert Path(v17["path"]).is_dir(), "the previous version is kept"

    # The state that matters survived: images, containers, hosts files, config.d.
    assert TEST_IMAGE in w21("ctr", "images", "ls", "-q").stdout
    assert set(w21("ctr", "containers", "ls", "-q").stdout.split()) == {"c2", "c3"}
    assert (upaths.config_dir / "certs.d" / "docker.io" / "hosts.toml").is_file()
    assert (upaths.config_d / "99-mine.toml").read_text() == "# the operator's own drop-in\n"
    record("walk", {"downtime_s": measured, "disk_bytes": sizes})


def test_rollback_from_17_to_16(exes: dict[str, Path], upaths: Paths, busybox_tar: Path) -> None:
    w16, w17, w21 = (Warren(exes[m], upaths) for m in ("1.6", "1.7", "2.1"))
    w16("containerd", "start")
    w16("ctr", "images", "import", str(busybox_tar))
    c1 = start_container(w16, "c1")
    # 1.6 → 2.1 skips a minor: refused before anything stops, whichever way it is asked.
    pid = json.loads(upaths.containerd_pidfile.read_text())["pid"]
    for args in (("containerd", "start"), ("containerd", "run")):
        refused = w21(*args, ok=False)
        assert refused.returncode == 1, refused.stderr
        assert "1.6.20 → 2.1.9 skips a minor line" in refused.stderr
        assert "1.6 → 1.7 → 2.0/2.1" in refused.stderr
    assert json.loads(upaths.containerd_pidfile.read_text())["pid"] == pid
    assert not [v for v in w16.json("versions")["versions"] if v["containerd_version"] == "2.1.9"]
    w16("containerd", "stop")
    w17("containerd", "start")
    v16 = version_of(w17, "1.6")

    with Downtime(upaths.socket) as down:
        rolled = w17("rollback")
    assert "rolled back containerd 1.7.24 → 1.6.20; 1 container kept running" in rolled.stdout
    assert containerd_exe(upaths) == f"{v16['path']}/containerd"
    assert os.readlink(upaths.bin_dir) == f"versions/{v16['digest']}"
    assert task_pid(w16, "c1") == c1
    assert version_of(w17, "1.6")["pinned"]
    # The pin holds: the 1.7 warren starting again runs 1.6 (already running), and after a stop.
    w17("containerd", "stop")
    w17("containerd", "start")
    assert containerd_exe(upaths) == f"{v16['path']}/containerd"
    start_container(w16, "c2")
    record("rollback 1.7 → 1.6", {"downtime_s": round(down.longest, 3)})
