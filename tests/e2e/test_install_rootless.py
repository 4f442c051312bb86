"""`install.sh --rootless` end to end, run by an unprivileged user into a home of its own:
`curl -sfL URL/install.sh | sh -s -- --rootless` against the real frozen file served on 127.0.0.1.

No user systemd runs on a host without systemd as PID 1 (this one): the installer writes the user
unit anyway, says how to start containerd without it, and explains lingering without enabling it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode

from conftest import require
from support import TEST_IMAGE, FileServer, sha256_file, short_dir, stage_release
from support.rootless import (
    as_user,
    has_subid_range,
    owned_dir,
    rootless_prerequisites,
    subid_user,
    user_env,
)

pytestmark = pytest.mark.e2e

USER = "warren-rl-install"
ASSET = "warren-linux-amd64" if os.uname().machine == "x86_64" else "warren-linux-arm64"
UNIT = Path(".config/systemd/user/warren-containerd.service")


@dataclass(frozen=True)
class Home:
    """An unprivileged user with a fresh HOME and XDG_RUNTIME_DIR of its own."""

    name: str
    uid: int
    gid: int
    home: Path
    xdg_runtime: Path

    def run(self, argv: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*as_user(self.uid, self.gid), *argv],
            env=user_env(self.name, self.home, self.xdg_runtime, **extra),
            capture_output=True,
            text=True,
            timeout=180,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
        )

    def install(self, url: str, *args: str) -> subprocess.CompletedProcess[str]:
        script = 'curl -sfL "$0/install.sh" | sh -s -- "$@"'
        return self.run(["sh", "-c", script, url, *args], WARREN_BASE_URL=url)

    def tree(self) -> list[str]:
        return sorted(str(p.relative_to(self.home)) for p in self.home.rglob("*"))


def _home_for(name: str) -> Iterator[Home]:
    entry = pwd.getpwnam(name)
    home = owned_dir("rlh", entry)
    xdg = owned_dir("rlx", entry)
    try:
        yield Home(name, entry.pw_uid, entry.pw_gid, home, xdg)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(xdg, ignore_errors=True)


@pytest.fixture(scope="module")
def release(frozen_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    root = tmp_path_factory.mktemp("rootless-release")
    stage_release(root, frozen_exe, ASSET)
    with FileServer(root) as server:
        yield server


@pytest.fixture(scope="module")
def rootless_user() -> Iterator[str]:
    for met, why in rootless_prerequisites("curl"):
        require(met, why)
    with subid_user(USER, 400000, home=False) as entry:
        yield entry.pw_name


@pytest.fixture
def user(rootless_user: str) -> Iterator[Home]:
    yield from _home_for(rootless_user)


@pytest.fixture
def nobody() -> Iterator[Home]:
    """`nobody`: no range in /etc/subuid or /etc/subgid (a user rootless cannot run for)."""
    require(os.geteuid() == 0, "needs root to switch to nobody")
    require(not has_subid_range("/etc/subuid", "nobody"), "nobody has a subuid range on this host")
    yield from _home_for("nobody")


def test_rootless_install_writes_the_file_the_user_unit_and_the_uninstaller(
    user: Home, release: FileServer, frozen_exe: Path
) -> None:
    out = user.install(release.url, "--rootless")
    assert out.returncode == 0, out.stderr
    bin_ = user.home / ".local/bin/warren"
    assert sha256_file(bin_) == sha256_file(frozen_exe)
    assert os.stat(bin_).st_uid == user.uid and os.access(bin_, os.X_OK)
    uninstaller = user.home / ".local/bin/warren-uninstall.sh"
    assert uninstaller.is_file()
    if shutil.which("shellcheck"):
        linted = subprocess.run(["shellcheck", "-s", "sh", str(uninstaller)], capture_output=True)
        assert linted.returncode == 0, linted.stdout
    assert not (user.home / ".local/bin/warren-killall.sh").exists()
    unit = (user.home / UNIT).read_text()
    lines = unit.splitlines()
    assert "Type=notify" in lines and "Delegate=yes" in lines
    assert f"ExecStart={bin_} containerd run --ready-timeout 120" in lines
    assert f"EnvironmentFile=-{user.home / UNIT}.env" in lines
    assert "WantedBy=default.target" in lines
    # Nothing a user's systemd refuses to a user: no modprobe, no limits above the user's own.
    assert not [line for line in lines if line.startswith(("ExecStartPre", "OOMScore", "Limit"))]
    # No user systemd here: said plainly, and the file is installed anyway.
    assert "no user systemd: start it with warren containerd start" in out.stdout
    last = out.stdout.strip().splitlines()[-2:]
    assert "lingering is off" in last[0] and f"loginctl enable-linger {USER}" in last[1]
    assert not Path(f"/var/lib/systemd/linger/{USER}").exists()


def test_rootless_install_passes_the_proxy_in_the_env_file(user: Home, release: FileServer) -> None:
    proxy = "http://proxy.example:3128"
    script = 'curl -sfL "$0/install.sh" | HTTPS_PROXY="$1" sh -s -- --rootless'
    out = user.run(["sh", "-c", script, release.url, proxy], WARREN_BASE_URL=release.url)
    assert out.returncode == 0, out.stderr
    env_file = Path(f"{user.home / UNIT}.env")
    assert f'HTTPS_PROXY="{proxy}"' in env_file.read_text().splitlines()
    assert env_file.stat().st_mode & 0o777 == 0o600


def test_uninstall_after_a_rootless_install_leaves_nothing(user: Home, release: FileServer) -> None:
    before = user.tree()
    out = user.install(release.url, "--rootless")
    assert out.returncode == 0, out.stderr
    assert (user.home / ".cache/warren/runtime").is_dir()  # the launcher's, made by the install
    gone = user.run([str(user.home / ".local/bin/warren-uninstall.sh"), "--purge"])
    assert gone.returncode == 0, gone.stderr
    assert user.tree() == before == []


def test_rootless_install_refuses_before_writing_when_a_prerequisite_is_missing(
    nobody: Home, release: FileServer
) -> None:
    asked = len(release.requests)
    out = nobody.install(release.url, "--rootless")
    assert out.returncode == ExitCode.PERMISSION, out.stderr
    lines = out.stderr.strip().splitlines()
    subuid = [line for line in lines if "rootless needs subuid:" in line]
    subgid = [line for line in lines if "rootless needs subgid:" in line]
    assert len(subuid) == 1 and "usermod --add-subuids" in subuid[0]
    assert len(subgid) == 1 and "usermod --add-subuids" in subgid[0]
    assert "nothing was installed" in lines[-1]
    assert nobody.tree() == []
    assert release.requests[asked:] == ["/install.sh"]  # refused before any download


def test_rootless_install_as_root_is_a_usage_error(release: FileServer) -> None:
    require(os.geteuid() == 0, "needs root")
    home = short_dir("rlroot")
    try:
        out = subprocess.run(
            ["sh", "-c", 'curl -sfL "$0/install.sh" | sh -s -- --rootless', release.url],
            env={"PATH": os.environ["PATH"], "HOME": str(home), "WARREN_BASE_URL": release.url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == ExitCode.USAGE, out.stderr
        assert "run it as that user" in out.stderr.strip().splitlines()[-1]
        assert list(home.iterdir()) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_purge_after_rootless_containers_removes_the_users_data(
    user: Home, release: FileServer, busybox_tar: Path
) -> None:
    """A container's snapshot holds files of the user's subordinate ids, which the user cannot
    delete outside its user namespace: `--purge` failed half way and left the data dir."""
    before = user.tree()
    out = user.install(release.url, "--rootless")
    assert out.returncode == 0, out.stderr
    warren = str(user.home / ".local/bin/warren")
    try:
        started = user.run([warren, "containerd", "start"])
        assert started.returncode == 0, started.stderr
        tar = user.home / "busybox.tar"
        shutil.copy2(busybox_tar, tar)
        os.chown(tar, user.uid, user.gid)
        assert user.run([warren, "ctr", "images", "import", str(tar)]).returncode == 0
        tar.unlink()
        # A container leaves a dir of another id in its snapshot (as images' files often are).
        script = (
            "mkdir /keep && touch /keep/f && chown -R 1234 /keep && chmod 700 /keep && echo ran"
        )
        ran = user.run([warren, "ctr", "run", TEST_IMAGE, "once", "sh", "-c", script])
        assert ran.returncode == 0 and ran.stdout.strip() == "ran", ran.stderr
        data = user.home / ".local/share/warren"
        assert any(p.stat().st_uid != user.uid for p in data.rglob("*") if not p.is_symlink())
    finally:
        gone = user.run([str(user.home / ".local/bin/warren-uninstall.sh"), "--purge"])
    assert gone.returncode == 0, gone.stderr
    assert user.tree() == before == []
