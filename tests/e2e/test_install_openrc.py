"""install.sh's OpenRC service, run by the real `openrc-run` and `supervise-daemon` (Debian's
openrc package) against the frozen file: start once containerd answers, the proxy in containerd's
environment, a container surviving a restart, a kill -9 of the supervisor and a stop, containers
stopped only at shutdown, and an uninstall that removes the script.

OpenRC did not boot this host, so the script is run by path with `openrc-run` (which wants
/run/openrc/softlevel for that: made here, and removed again if it was not there before).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from warren_bundle.paths import Paths
from warren_bundle.runtime import health

from conftest import have, require
from support import INSTALL_SH, TEST_IMAGE, read_pid, short_dir, wait_for
from support.openrc import SERVICE, have_openrc, install_env, openrc_run, openrc_state

pytestmark = pytest.mark.e2e

NAME = SERVICE


@dataclass
class Host:
    root: Path
    paths: Paths

    @property
    def bin(self) -> Path:
        return self.root / "bin" / "warren"

    @property
    def script(self) -> Path:
        return self.root / "init.d" / NAME

    @property
    def env_file(self) -> Path:
        return self.root / "conf.d" / NAME

    def env(self, **extra: str) -> dict[str, str]:
        return install_env(self.bin.parent, self.script.parent, self.paths, **extra)

    def rc(self, action: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return openrc_run(self.script, action, **extra)

    def warren(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin), *args], capture_output=True, text=True, timeout=120,
            env=self.env(),
        )  # fmt: skip


def _supervisor(host: Host) -> psutil.Process | None:
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if cmd[:3] == [str(host.bin), "containerd", "run"]:
            return proc
    return None


@pytest.fixture
def host(frozen_exe: Path, root_required: None) -> Iterator[Host]:
    require(have_openrc(), "needs Debian's openrc package")
    root = short_dir("orc")
    base = root / "w"
    h = Host(root, Paths(base / "data", base / "run", base / "etc"))
    h.bin.parent.mkdir(parents=True)
    shutil.copy2(frozen_exe, h.bin)
    try:
        with openrc_state():
            try:
                yield h
            finally:
                if h.script.exists():
                    h.rc("stop")
                if health.is_serving(h.paths.socket, 0.5):
                    h.warren("ctr", "tasks", "kill", "-s", "SIGKILL", "keeper")
                uninstaller = h.bin.parent / "warren-uninstall.sh"
                if uninstaller.exists():
                    subprocess.run(
                        ["unshare", "--net", str(uninstaller), "--purge"],
                        capture_output=True, env=h.env(),
                    )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_openrc_service_keeps_containers_across_restarts_and_stops_them_at_shutdown(
    host: Host, busybox_tar: Path
) -> None:
    proxy = {"HTTPS_PROXY": "http://192.0.2.1:3128", "CONTAINERD_NO_PROXY": ".corp"}
    proxy["WARREN_SHUTDOWN_GRACE"] = "2"
    done = subprocess.run(
        ["sh", str(INSTALL_SH)], capture_output=True, text=True, env=host.env(**proxy)
    )
    assert done.returncode == 0, done.stderr
    text = host.script.read_text()
    assert text.startswith("#!/sbin/openrc-run\n")
    for line in (
        "supervisor=supervise-daemon",
        f'command="{host.bin}"',
        'command_args="containerd run --ready-timeout 120"',
        "respawn_delay=5",
        "respawn_max=0",
        'supervise_daemon_args="--oom-score-adj -999"',
        f"export WARREN_DATA_DIR={host.paths.data_dir}",
    ):
        assert line in text.splitlines(), line
    assert host.script.stat().st_mode & 0o777 == 0o755
    assert host.env_file.stat().st_mode & 0o777 == 0o600
    assert "written but not enabled" in done.stdout  # not in /etc/init.d: never enabled
    if have("shellcheck"):
        check = subprocess.run(["shellcheck", "-s", "sh", str(host.script)], capture_output=True)
        assert check.returncode == 0, check.stdout.decode()

    # Started: openrc-run returns once containerd answers.
    started = host.rc("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert health.is_serving(host.paths.socket, 2.0)
    containerd = read_pid(host.paths.containerd_pidfile)
    env = Path(f"/proc/{containerd}/environ").read_bytes().split(b"\0")
    assert b"HTTPS_PROXY=http://192.0.2.1:3128" in env
    assert b"NO_PROXY=.corp,localhost,127.0.0.1,10.217.0.0/16" in env  # containerd's own
    assert host.warren("ctr", "images", "import", str(busybox_tar)).returncode == 0
    run = host.warren("ctr", "run", "-d", TEST_IMAGE, "keeper", "sleep", "600")
    assert run.returncode == 0, run.stderr
    task = host.warren("ctr", "tasks", "ls")
    container = int(next(ln.split()[1] for ln in task.stdout.splitlines() if "keeper" in ln))

    # A restart replaces warren and containerd; the container keeps running.
    restarted = host.rc("restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert psutil.pid_exists(container)
    assert read_pid(host.paths.containerd_pidfile) != containerd

    # kill -9 of the supervisor: supervise-daemon starts another, which adopts containerd.
    supervisor = _supervisor(host)
    assert supervisor is not None
    containerd = read_pid(host.paths.containerd_pidfile)
    supervisor.send_signal(signal.SIGKILL)
    wait_for(
        lambda: (s := _supervisor(host)) is not None and s.pid != supervisor.pid,
        30, what="supervise-daemon to respawn warren",
    )  # fmt: skip
    wait_for(
        lambda: "RUNNING" in host.warren("containerd", "status").stdout.split("\n")[0],
        60, what="the new supervisor to adopt containerd",
    )  # fmt: skip
    assert read_pid(host.paths.containerd_pidfile) == containerd
    assert psutil.pid_exists(container)

    # A stop leaves the container running ...
    assert host.rc("stop").returncode == 0
    assert _supervisor(host) is None and not health.is_serving(host.paths.socket, 0.5)
    assert psutil.pid_exists(container)
    # ... but at shutdown the containers get SIGTERM (sleep ignores it as PID 1), then SIGKILL.
    # OpenRC's shutdown is the runlevel "shutdown" (or "reboot"), which openrc-run reads from
    # softlevel: written here as `openrc shutdown` writes it.
    assert host.rc("start").returncode == 0
    softlevel = Path("/run/openrc/softlevel")
    level = softlevel.read_text()
    softlevel.write_text("shutdown")
    try:
        down = host.rc("stop")
    finally:
        softlevel.write_text(level)
    assert down.returncode == 0, down.stdout + down.stderr
    wait_for(lambda: not psutil.pid_exists(container), 30, what="the container to be stopped")
    shims = [
        p for p in psutil.process_iter(["exe"])
        if str(host.paths.data_dir) in (p.info["exe"] or "")
    ]  # fmt: skip
    assert shims == [], "shims left after a shutdown stop"

    gone = subprocess.run(
        [str(host.bin.parent / "warren-uninstall.sh")], capture_output=True, text=True
    )
    assert gone.returncode == 0, gone.stderr
    assert not host.script.exists() and not host.env_file.exists()
    assert not (host.root / "init.d").exists() and not (host.root / "conf.d").exists()


# In a mount namespace of its own, /run, /etc/init.d and /etc/runlevels are empty tmpfs and /etc
# is written into a scratch dir: this host then looks like one OpenRC booted (/run/openrc), or
# one with no init system the installer knows, and the installer's own enable and start, and the
# uninstaller's stop and removal, run for real without touching the host's.
OPENRC_HOST = """
set -eu
mount -t tmpfs warren-test /run
# /etc writable into a scratch upper dir (Debian has no /etc/conf.d: the installer makes it).
mkdir -p "$SCRATCH/upper" "$SCRATCH/work"
mount -t overlay warren-test -o "lowerdir=/etc,upperdir=$SCRATCH/upper,workdir=$SCRATCH/work" /etc
for d in /etc/init.d /etc/runlevels; do mount -t tmpfs warren-test "$d"; done
if [ "$OPENRC" = yes ]; then
    # What OpenRC's boot leaves in /run/openrc, and its default runlevel.
    for d in daemons exclusive failed hotplugged inactive options scheduled started starting \
        stopping tmp wasinactive; do mkdir -p "/run/openrc/$d"; done
    echo default >/run/openrc/softlevel
    mkdir -p /etc/runlevels/default
    # No localmount: Debian's OpenRC has none (its LSB mountall.sh mounts at boot), and a
    # service that needs it cannot start there (a booted Debian guest showed it).
fi
sh "$INSTALL_SH"
if [ "$OPENRC" = yes ]; then
    echo "enabled: $(ls /etc/runlevels/default)"
    rc-service warren-containerd status
    "$WARREN_BIN_DIR/warren" containerd status | head -n 1
    "$WARREN_BIN_DIR/warren-uninstall.sh"
    echo "after: $(ls /etc/runlevels/default /etc/init.d /etc/conf.d 2>&1)"
    pgrep -f "$WARREN_BIN_DIR/warren containerd run" || echo "no supervisor left"
fi
"""


def _in_own_mounts(host: Host, openrc: bool) -> subprocess.CompletedProcess[str]:
    scratch = host.root / "etc-overlay"
    env = host.env(
        OPENRC="yes" if openrc else "no", INSTALL_SH=str(INSTALL_SH), SCRATCH=str(scratch)
    )
    del env["WARREN_OPENRC_DIR"]
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", OPENRC_HOST],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def test_on_a_host_openrc_booted_the_service_is_enabled_started_and_removed(host: Host) -> None:
    done = _in_own_mounts(host, openrc=True)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "enabled warren-containerd (runlevel default)" in out
    assert "enabled: warren-containerd" in out
    assert "started warren-containerd" in out and "status: started" in done.stdout + done.stderr
    assert "state           RUNNING" in out
    assert "stopped warren-containerd and removed it from the default runlevel" in out
    assert "after: " in out and "warren-containerd" not in out.split("after: ", 1)[1]
    assert "no supervisor left" in out


def test_with_neither_systemd_nor_openrc_no_service_is_written(host: Host) -> None:
    done = _in_own_mounts(host, openrc=False)
    assert done.returncode == 0, done.stderr
    assert "neither systemd nor OpenRC is running: no service written" in done.stdout
    assert not (host.bin.parent / "warren-uninstall.sh").read_text().count("INIT='openrc'")
