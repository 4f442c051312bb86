"""Rootless (issue 27): an unprivileged user, created here with subuid/subgid ranges and an
XDG_RUNTIME_DIR of its own, runs containerd in RootlessKit from the same one file.

Start; a container that prints a line; one that fetches from a loopback HTTP server of the host
(slirp4netns: the host's loopback is 10.0.2.2); a port published by RootlessKit reached from the
host; kill -9 of containerd survived; stop. The user runs the frozen file (the interpreter of a
source run lives under root's home): `make test` builds it before this suite runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.payload.format import read_embedded

from conftest import require
from support import FROZEN, REPO, TEST_IMAGE, wait_for
from support.rootless import as_user, owned_dir, rootless_prerequisites, subid_user, user_env

pytestmark = pytest.mark.e2e

USER = "warren-rootless"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path
    xdg_runtime: Path
    exe: Path

    @property
    def socket(self) -> Path:
        return self.xdg_runtime / "warren" / "containerd.sock"

    def env(self, **extra: str) -> dict[str, str]:
        env = user_env(self.name, self.home, self.xdg_runtime, **extra)
        return {k: v for k, v in env.items() if v}

    def warren(
        self, *args: str, timeout: float = 180, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*as_user(self.uid, self.gid), str(self.exe), *args],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
        )

    def status(self) -> dict[str, object]:
        out = self.warren("containerd", "status", "--json")
        assert out.returncode == 0, out.stderr
        report: dict[str, object] = json.loads(out.stdout)
        return report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _user_processes(uid: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["uids"]) if p.info["uids"].real == uid]


def _commands(uid: int) -> list[tuple[int, list[str]]]:
    """(pid, command line) of the user's live processes (zombies have none)."""
    found = []
    for proc in _user_processes(uid):
        with suppress(psutil.Error):
            found.append((proc.pid, proc.cmdline()))
    return found


def _containerd_of(user: User) -> int | None:
    """The pid of the user's containerd (RootlessKit's grandchild), None when none runs."""
    for pid, cmd in _commands(user.uid):
        if cmd and Path(cmd[0]).name == "containerd" and str(user.socket) in cmd:
            return pid
    return None


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    for met, why in rootless_prerequisites("nsenter"):
        require(met, why)
    exe = Path(os.environ.get("WARREN_TEST_EXE") or FROZEN)
    require(exe.is_file(), f"no frozen executable at {exe}: make build")
    with subid_user(USER, 300000, home=True) as entry:
        home = Path(entry.pw_dir)
        xdg = owned_dir("xdg", entry)  # its own XDG_RUNTIME_DIR
        own = home / "warren"
        shutil.copy2(exe, own)
        os.chown(own, entry.pw_uid, entry.pw_gid)
        made = User(USER, entry.pw_uid, entry.pw_gid, home, xdg, own)
        try:
            yield made
        finally:
            made.warren("containerd", "stop", timeout=60)
            for proc in _user_processes(made.uid):  # shims and containers it left
                with suppress(psutil.Error):
                    proc.kill()
            shutil.rmtree(xdg, ignore_errors=True)


@pytest.fixture(scope="module")
def published() -> tuple[int, int]:
    """(host port, port in containerd's network namespace) that `containerd start` publishes."""
    return _free_port(), 8080


@pytest.fixture(scope="module")
def started(user: User, published: tuple[int, int], busybox_tar: Path) -> User:
    host_port, child_port = published
    out = user.warren("containerd", "start", "--publish", f"{host_port}:{child_port}")
    assert out.returncode == 0, out.stderr
    tar = user.home / "busybox.tar"
    shutil.copy2(busybox_tar, tar)
    os.chown(tar, user.uid, user.gid)
    imported = user.warren("ctr", "images", "import", str(tar))
    assert imported.returncode == 0, imported.stderr
    return user


def _newer_warren(user: User) -> Path:
    """This warren's launcher and runtime with containerd 1.7's payload (staged by `make
    test-payloads`), packed into the user's home: the version a rollback goes back from."""
    staged = Path("/var/cache/warren-test/upgrades/stage-trixie-node")
    require(
        (staged / "payload.tar.zst").is_file(), f"no 1.7 payload in {staged}: make test-payloads"
    )
    launcher = REPO / "build" / "launcher" / f"warren-launcher-{FROZEN.name.split('-')[-1]}"
    runtime = REPO / "build" / "runtime" / f"{FROZEN.name}-onedir"
    require(launcher.is_file() and runtime.is_dir(), "no launcher or runtime: make build")
    dest = user.home / "warren-1.7"
    subprocess.run(
        [str(REPO / ".venv/bin/python"), str(REPO / "scripts/onefile.py"), "pack",
         "--launcher", str(launcher), "--runtime", str(runtime),
         "--payload-dir", str(staged), "--out", str(dest)],
        check=True, capture_output=True,
    )  # fmt: skip
    os.chown(dest, user.uid, user.gid)
    return dest


def test_start_without_xdg_runtime_dir_is_a_usage_error(user: User) -> None:
    out = user.warren("containerd", "start", XDG_RUNTIME_DIR="")
    assert out.returncode == ExitCode.USAGE, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert "XDG_RUNTIME_DIR is unset" in line and "--run-dir" in line
    assert _containerd_of(user) is None


def test_rootless_start_uses_the_users_xdg_dirs(started: User) -> None:
    report = started.status()
    assert report["state"] == "RUNNING" and report["rootless"] is True
    text = started.warren("containerd", "status").stdout
    assert "(RootlessKit)" in text and "published: " in text
    assert report["data_dir"] == str(started.home / ".local" / "share" / "warren")
    assert report["run_dir"] == str(started.xdg_runtime / "warren")
    # RootlessKit is the payload's when it carries one (the Debian build), else the host's.
    kit = Path(psutil.Process(int(str(report["containerd_pid"]))).cmdline()[0])
    if read_embedded(started.exe).manifest.file("rootlesskit") is not None:
        assert kit == started.home / ".local" / "share" / "warren" / "bin" / "rootlesskit"
    else:
        assert kit == Path(str(shutil.which("rootlesskit")))
    assert stat.S_ISSOCK(os.stat(started.socket).st_mode)
    assert os.stat(started.socket).st_uid == started.uid
    found = started.warren("socket", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["path"] == str(started.socket)


def test_rootless_container_prints_a_line(started: User) -> None:
    out = started.warren("ctr", "run", "--rm", TEST_IMAGE, "hello", "echo", "hello from rootless")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hello from rootless"


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"host loopback says hi\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


def test_rootless_container_reaches_host_loopback(started: User) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://10.0.2.2:{server.server_address[1]}/"
        out = started.warren(
            "ctr", "run", "--rm", "--net-host", TEST_IMAGE, "fetch",
            "/bin/busybox", "wget", "-q", "-O-", url,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr
    assert out.stdout == "host loopback says hi\n"


def test_rootless_published_port_reached_from_host(
    started: User, published: tuple[int, int]
) -> None:
    host_port, child_port = published
    out = started.warren(
        "ctr", "run", "-d", "--net-host", TEST_IMAGE, "web",
        "/bin/busybox", "httpd", "-f", "-p", str(child_port), "-h", "/bin",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr

    def fetch() -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/echo", timeout=2) as r:
                return bytes(r.read())
        except OSError:
            return None

    try:
        body = wait_for(fetch, timeout=30, what="the published port")
        assert body == Path("/bin/busybox").read_bytes()  # /bin/echo is a link to busybox
    finally:
        started.warren("ctr", "task", "kill", "-s", "SIGKILL", "web")
        wait_for(
            lambda: started.warren("ctr", "task", "rm", "web").returncode == 0,
            timeout=30,
            what="the web task removed",
        )
        removed = started.warren("ctr", "containers", "rm", "web")
        assert removed.returncode == 0, removed.stderr


def test_rootless_survives_kill_9_of_containerd(started: User) -> None:
    sleeper = started.warren("ctr", "run", "-d", TEST_IMAGE, "sleeper", "sleep", "600")
    assert sleeper.returncode == 0, sleeper.stderr
    shims = [pid for pid, cmd in _commands(started.uid) if cmd and "containerd-shim" in cmd[0]]
    assert shims
    before = started.status()
    pid = _containerd_of(started)
    assert pid is not None
    os.kill(pid, 9)
    wait_for(
        lambda: (now := _containerd_of(started)) is not None and now != pid,
        timeout=60,
        what="containerd restarted in RootlessKit",
    )
    after = wait_for(
        lambda: (s := started.status())["state"] == "RUNNING" and s, timeout=60, what="RUNNING"
    )
    assert isinstance(after, dict)
    assert after["restarts"] == int(str(before["restarts"])) + 1
    out = started.warren("ctr", "run", "--rm", TEST_IMAGE, "again", "echo", "still here")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "still here"
    # The new RootlessKit's namespaces are new: the old shim was killed, not left behind.
    assert all(_zombie(shim) for shim in shims)
    log = started.home / ".local" / "share" / "warren" / "logs" / "containerd.log"
    assert "killed 1 shim(s)" in log.read_text()
    assert started.warren("ctr", "containers", "rm", "sleeper").returncode == 0


def test_rootless_survives_kill_9_of_rootlesskit(started: User) -> None:
    """The pid status names for a user's containerd is RootlessKit's: a kill -9 of it is
    survived as a kill of containerd is, and status says so."""
    before = started.status()
    kit = before["containerd_pid"]
    assert isinstance(kit, int)
    os.kill(kit, 9)

    def back() -> dict[str, object] | None:
        now = started.status()
        fresh = now["containerd_pid"] not in (None, kit)
        return now if now["state"] == "RUNNING" and fresh and now["socket_answers"] else None

    after = wait_for(back, timeout=120, what="RUNNING with a new RootlessKit that answers")
    assert isinstance(after, dict)
    out = started.warren("ctr", "run", "--rm", TEST_IMAGE, "again-kit", "echo", "still here")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "still here"


def test_rootless_logs_and_a_killed_supervisor_adopts_rootlesskit(started: User) -> None:
    logs = started.warren("containerd", "logs")
    assert logs.returncode == 0, logs.stderr
    assert f"ready on {started.socket}" in logs.stdout
    supervisor = int(str(started.status()["supervisor_pid"]))
    kit = int(str(started.status()["containerd_pid"]))
    os.kill(supervisor, 9)
    wait_for(
        lambda: not psutil.pid_exists(supervisor) or _zombie(supervisor), what="supervisor gone"
    )
    again = started.warren("containerd", "start")
    assert again.returncode == 0, again.stderr
    report = started.status()
    assert report["adopted"] is True and report["containerd_pid"] == kit
    assert "rootlesskit" in psutil.Process(kit).cmdline()[0]


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def test_rootless_stop_ends_rootlesskit_and_containerd(started: User) -> None:
    out = started.warren("containerd", "stop", timeout=60)
    assert out.returncode == 0, out.stderr
    assert _containerd_of(started) is None
    kits = [pid for pid, cmd in _commands(started.uid) if cmd and "rootlesskit" in cmd[0]]
    assert kits == []
    stopped = started.warren("containerd", "status", "--json")
    assert stopped.returncode == ExitCode.NOT_RUNNING, stopped.stdout


def test_rootless_rollback_and_versions_in_the_users_data_dir(user: User) -> None:
    """A user's `warren rollback` goes back to the previous version in its own data dir and
    starts containerd again rootless (it required root before); `versions` shows the pin."""
    newer = _newer_warren(user)
    first = user.warren("containerd", "start")
    assert first.returncode == 0, first.stderr
    old = str(user.status()["containerd_version"])
    assert user.warren("containerd", "stop", timeout=60).returncode == 0
    as_newer = User(user.name, user.uid, user.gid, user.home, user.xdg_runtime, newer)
    upgraded = as_newer.warren("containerd", "start")
    assert upgraded.returncode == 0, upgraded.stderr
    new = str(as_newer.status()["containerd_version"])
    assert new.split(".")[:2] == ["1", "7"] and old.split(".")[:2] == ["1", "6"]
    try:
        rolled = as_newer.warren("rollback")
        assert rolled.returncode == 0, rolled.stderr
        assert f"rolled back containerd {new} → {old}" in rolled.stdout
        report = as_newer.status()
        assert report["state"] == "RUNNING" and report["rootless"] is True
        assert report["containerd_version"] == old
        assert _containerd_of(user) is not None
        listed = as_newer.warren("versions", "--json")
        assert listed.returncode == 0, listed.stderr
        found = json.loads(listed.stdout)["versions"]
        data = user.home / ".local" / "share" / "warren"
        assert all(Path(v["path"]).is_relative_to(data) for v in found)
        pinned = [v for v in found if v["pinned"]]
        assert [(v["containerd_version"], v["current"]) for v in pinned] == [(old, True)]
        out = as_newer.warren("ctr", "version")
        assert out.returncode == 0 and f"Version:  {old}" in out.stdout, out.stdout
    finally:
        assert as_newer.warren("containerd", "stop", timeout=60).returncode == 0
        as_newer.warren("versions", "--unpin")
