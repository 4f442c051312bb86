"""`warren upgrade --from URL|DIR` on a running install, with a container running: signed files of
this tree (tests/support/upgrade_releases.py) as the installed one and the next releases.

- Under the OpenRC service (install.sh's script, the real openrc-run and supervise-daemon): a
  release signed by another key is refused (exit 8) and `--check` says what would change, both
  with the file's bytes and every pid unchanged; then the upgrade to containerd 1.7.24 over HTTP
  restarts through the service, and the container keeps its pid.
- Started by hand (`containerd start`, no service): a release whose containerd exits at once is
  installed, fails readiness, and warren goes back by itself to the previous file; the upgrade
  to the next release then restarts a detached supervisor with the container kept.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from warren_bundle.paths import Paths
from warren_bundle.runtime import health

from conftest import require
from support import (
    INSTALL_SH,
    TEST_IMAGE,
    FileServer,
    cleanup_runtime,
    make_release_key,
    read_pid,
    sha256_file,
    short_dir,
)
from support.openrc import SERVICE, have_openrc, install_env, openrc_run, openrc_state
from support.upgrade_releases import ASSET, missing_inputs, release_dir, signed_files

pytestmark = pytest.mark.e2e


@dataclass
class Install:
    root: Path
    paths: Paths
    releases: Path  # current, next, broken, other-key: signed release dirs

    @property
    def bin(self) -> Path:
        return self.root / "bin" / "warren"

    @property
    def script(self) -> Path:
        return self.root / "init.d" / SERVICE

    def env(self) -> dict[str, str]:
        return install_env(self.bin.parent, self.script.parent, self.paths)

    def warren(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin), *args], capture_output=True, text=True, timeout=timeout,
            env=self.env(), stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def run_keeper(self, busybox_tar: Path) -> int:
        assert self.warren("ctr", "images", "import", str(busybox_tar)).returncode == 0
        run = self.warren("ctr", "run", "-d", TEST_IMAGE, "keeper", "sleep", "600")
        assert run.returncode == 0, run.stderr
        tasks = self.warren("ctr", "tasks", "ls").stdout.splitlines()
        return int(next(line.split()[1] for line in tasks if "keeper" in line))

    def pids(self) -> tuple[int, int]:
        return read_pid(self.paths.supervisor_pidfile), read_pid(self.paths.containerd_pidfile)


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(not missing_inputs(), f"needs make build and make test-payloads: {missing_inputs()}")
    files = signed_files()
    root = tmp_path_factory.mktemp("releases")
    release_dir(root / "next", files["next"])
    release_dir(root / "broken", files["broken"])
    release_dir(root / "other-key", files["next"], make_release_key(root / "other.pem"))
    shutil.copy2(files["current"], root / "current")
    return root


@pytest.fixture
def install(releases: Path, root_required: None) -> Iterator[Install]:
    root = short_dir("upg")
    base = root / "w"
    inst = Install(root, Paths(base / "data", base / "run", base / "etc"), releases)
    inst.bin.parent.mkdir(parents=True)
    shutil.copy2(releases / "current", inst.bin)
    try:
        yield inst
    finally:
        cleanup_runtime(inst.paths, root)


def _supervisor_parent(inst: Install) -> str:
    sup = psutil.Process(read_pid(inst.paths.supervisor_pidfile))
    parent = sup.parent()
    return Path(parent.cmdline()[0]).name if parent is not None else ""


def test_under_openrc_a_bad_release_and_check_change_nothing_and_the_upgrade_keeps_containers(
    install: Install, busybox_tar: Path
) -> None:
    require(have_openrc(), "needs Debian's openrc package")
    with openrc_state():
        try:
            _upgrade_under_openrc(install, busybox_tar)
        finally:
            if install.script.exists():
                openrc_run(install.script, "stop", timeout=120)


def _upgrade_under_openrc(install: Install, busybox_tar: Path) -> None:
    done = subprocess.run(
        ["sh", str(INSTALL_SH)], capture_output=True, text=True, env=install.env()
    )
    assert done.returncode == 0, done.stderr
    started = openrc_run(install.script, "start", timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    assert _supervisor_parent(install) == "supervise-daemon"
    container = install.run_keeper(busybox_tar)
    before, pids = sha256_file(install.bin), install.pids()

    # Signed by another key: exit 8, nothing changed.
    other = install.warren("upgrade", "--from", str(install.releases / "other-key"))
    assert other.returncode == 8, other.stdout + other.stderr
    assert "bad signature" in other.stderr and "nothing was changed" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    # --check: the plan, nothing changed.
    check = install.warren("upgrade", "--from", str(install.releases / "next"), "--check")
    assert check.returncode == 0, check.stderr
    assert "would upgrade" in check.stdout and "containerd 1.6.20" in check.stdout
    assert "-> 1.7.24" in check.stdout
    assert sha256_file(install.bin) == before and install.pids() == pids
    assert sorted(p.name for p in install.bin.parent.iterdir() if "warren." in p.name) == []
    assert [p.name for p in install.bin.parent.iterdir() if p.name.startswith(".")] == []

    # The upgrade, over HTTP: through the service, the container kept.
    with FileServer(install.releases / "next") as server:
        up = install.warren("upgrade", "--from", server.url)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"restarted through openrc service {SERVICE}" in up.stdout
    assert "1 container kept running" in up.stdout
    assert psutil.pid_exists(container)
    assert install.pids()[0] != pids[0] and install.pids()[1] != pids[1]
    assert _supervisor_parent(install) == "supervise-daemon"  # not a detached one of ours
    assert health.containerd_version(install.paths.socket)[0].startswith("1.7.24")
    assert sha256_file(install.bin) == sha256_file(install.releases / "next" / ASSET)
    assert sha256_file(install.bin.with_name("warren.previous")) == before
    tasks = install.warren("ctr", "tasks", "ls").stdout
    assert "keeper" in tasks and "RUNNING" in tasks

    # Issue 21's defect: under a service, rollback restarts through it, and does not start
    # a detached supervisor of its own beside the one supervise-daemon respawns.
    back = install.warren("rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert _supervisor_parent(install) == "supervise-daemon"
    assert f"restarting the openrc service {SERVICE}" in back.stderr
    assert "1 container kept running" in back.stdout
    assert health.containerd_version(install.paths.socket)[0].startswith("1.6.20")
    assert psutil.pid_exists(container)


def test_started_by_hand_a_containerd_that_cannot_start_goes_back_then_the_next_one_runs(
    install: Install, busybox_tar: Path
) -> None:
    start = install.warren("containerd", "start")
    assert start.returncode == 0, start.stderr
    container = install.run_keeper(busybox_tar)
    before = sha256_file(install.bin)

    broken = install.warren(
        "upgrade", "--from", str(install.releases / "broken"), "--ready-timeout", "20"
    )
    assert broken.returncode != 0, broken.stdout
    last = broken.stderr.strip().splitlines()[-1]
    assert "upgrade to warren" in last and "failed: " in last, broken.stderr
    assert "broken on purpose" in last and "back on warren" in last
    assert sha256_file(install.bin) == before
    assert health.is_serving(install.paths.socket, 2.0)
    assert psutil.pid_exists(container)
    status = install.warren("containerd", "status").stdout
    assert "RUNNING" in status.splitlines()[0]

    up = install.warren("upgrade", "--from", str(install.releases / "next"))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "upgraded containerd 1.6.20" in up.stdout and "-> 1.7.24" in up.stdout
    assert "restarted through a detached supervisor" in up.stdout
    assert "1 container kept running" in up.stdout
    assert psutil.pid_exists(container)
    assert health.containerd_version(install.paths.socket)[0].startswith("1.7.24")
    assert sha256_file(install.bin.with_name("warren.previous")) == before
