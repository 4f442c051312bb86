"""Rootless: a user without root runs containerd in a user namespace made by RootlessKit.

The supervisor runs `rootlesskit … /bin/sh -c 'rm -f /run/containerd; exec containerd …'`:
RootlessKit maps the user's /etc/subuid and /etc/subgid ranges (newuidmap, newgidmap), gives the
namespace a network through slirp4netns (host loopback reachable as 10.0.2.2, published ports
through its builtin port driver) and copies up /etc and /run, so that containerd can make its
own /run/containerd (its shim sockets) where the host's is only a read-only symlink.

containerd is RootlessKit's child: when it dies RootlessKit exits with it and the supervisor
starts both again. Clients reach the socket from the host; `ctr`, whose FIFOs and mounts must be
the namespace's, runs inside it (`enter_argv`: nsenter into RootlessKit's child, as nerdctl does).
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from warren_bundle.errors import PermissionDeniedError, UsageError
from warren_bundle.paths import DEFAULT_RUN_DIR, Paths, rootless_user

NETWORK = "slirp4netns"
# slirp4netns's fastest MTU (RootlessKit's and nerdctl's choice).
MTU = 65520
# What containerd must create itself in the namespace: the copied-up /run holds the host's as
# read-only symlinks.
CHILD_SCRIPT = 'rm -f /run/containerd /run/xtables.lock; exec "$@"'
INSTALL = "apt-get install rootlesskit slirp4netns uidmap"


@dataclass(frozen=True)
class Requirement:
    name: str
    ok: bool
    detail: str
    fix: str
    warning_only: bool = False

    @property
    def passed(self) -> str:
        return PASSED.get(self.name, "present")


PASSED = {
    "subuid": "/etc/subuid gives this user a range",
    "subgid": "/etc/subgid gives this user a range",
    "userns": "unprivileged user namespaces are allowed",
    "tun": "/dev/net/tun is usable",
    "cgroup-delegation": "cgroup v2 controllers are delegated: resource limits work",
}


def rootlesskit_binary(paths: Paths | None = None) -> str | None:
    """The payload's RootlessKit (bin/rootlesskit of the extracted version, when this payload
    carries one), else RootlessKit from PATH (Debian's rootlesskit package)."""
    if paths is not None:
        own = paths.bin_dir / "rootlesskit"
        if own.is_file() and os.access(own, os.X_OK):
            return str(own)
    return shutil.which("rootlesskit")


def payload_carries_rootlesskit() -> bool:
    """This warren's payload holds bin/rootlesskit (the Debian-built payload does)."""
    from warren_bundle.errors import WarrenError
    from warren_bundle.payload.format import locate

    try:
        return locate(None).manifest.file("rootlesskit") is not None
    except (WarrenError, OSError, ValueError):
        return False


def user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _has_range(file: Path, user: str, uid: int) -> bool:
    """/etc/subuid or /etc/subgid gives `user` (by name or uid) a range of at least 65536 ids."""
    try:
        lines = file.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        parts = line.strip().split(":")
        named = len(parts) == 3 and parts[0] in (user, str(uid))
        if named and parts[2].isdigit() and int(parts[2]) >= 65536:
            return True
    return False


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def userns_problem() -> str | None:
    """Why this kernel refuses unprivileged user namespaces, or None when it allows them."""
    if _read_int("/proc/sys/user/max_user_namespaces") == 0:
        return "user.max_user_namespaces is 0"
    if _read_int("/proc/sys/kernel/unprivileged_userns_clone") == 0:
        return "kernel.unprivileged_userns_clone is 0"
    if _read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == 1:
        return "AppArmor restricts unprivileged user namespaces"
    return None


def cgroup_delegated() -> bool:
    """cgroup v2 with the memory and pids controllers delegated to this user's cgroup."""
    try:
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return False
    unified = [line.split(":", 2)[2] for line in own if line.startswith("0::")]
    if not unified or not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return False
    group = Path("/sys/fs/cgroup") / unified[0].lstrip("/")
    try:
        controllers = (group / "cgroup.controllers").read_text().split()
    except OSError:
        return False
    return {"memory", "pids"} <= set(controllers) and os.access(group, os.W_OK)


def requirements() -> list[Requirement]:
    """What rootless needs, each with its one-line fix; the last (cgroups) only warns."""
    user, uid = user_name(), os.getuid()
    ranges = f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}"
    userns = userns_problem()
    tun = os.access("/dev/net/tun", os.R_OK | os.W_OK)
    return [
        Requirement(
            "rootlesskit",
            rootlesskit_binary() is not None or payload_carries_rootlesskit(),
            "rootlesskit is not on PATH (and this payload carries none)",
            f"install it ({INSTALL})",
        ),
        Requirement(
            "slirp4netns",
            shutil.which(NETWORK) is not None,
            "slirp4netns is not on PATH",
            f"install it ({INSTALL})",
        ),
        Requirement(
            "newuidmap",
            bool(shutil.which("newuidmap") and shutil.which("newgidmap")),
            "newuidmap/newgidmap are not on PATH",
            "install them (apt-get install uidmap)",
        ),
        Requirement(
            "subuid",
            _has_range(Path("/etc/subuid"), user, uid),
            f"/etc/subuid gives {user} no range of 65536 ids",
            f"as root: {ranges}",
        ),
        Requirement(
            "subgid",
            _has_range(Path("/etc/subgid"), user, uid),
            f"/etc/subgid gives {user} no range of 65536 ids",
            f"as root: {ranges}",
        ),
        Requirement(
            "userns",
            userns is None,
            f"unprivileged user namespaces are off ({userns})",
            "as root: sysctl -w user.max_user_namespaces=28633 kernel.unprivileged_userns_clone=1",
        ),
        Requirement(
            "tun",
            tun,
            "/dev/net/tun is not readable and writable (slirp4netns needs it)",
            "as root: chmod 0666 /dev/net/tun (udev's default)",
        ),
        Requirement(
            "cgroup-delegation",
            cgroup_delegated(),
            "no cgroup v2 controllers are delegated to this user: containers run without "
            "resource limits",
            "as root: give user@.service Delegate=cpu cpuset io memory pids (systemd drop-in)",
            warning_only=True,
        ),
    ]


def check_can_start(paths: Paths) -> None:
    """Before a user's `containerd run|start`: a run dir of its own (usage, exit 2), then what
    rootless needs (exit 4). Root passes."""
    if not rootless_user():
        return
    if paths.run_dir == Path(DEFAULT_RUN_DIR):
        raise UsageError(
            "XDG_RUNTIME_DIR is unset: a user's containerd needs a run dir of its own",
            "log in through a session that sets it, export XDG_RUNTIME_DIR=/run/user/$(id -u) "
            "(a dir you own, mode 0700), or pass --run-dir",
        )
    for req in requirements():
        if not req.ok and not req.warning_only:
            raise PermissionDeniedError(
                f"permission denied: containerd needs root, or rootless: {req.detail}",
                f"{req.fix}; or run it with sudo",
            )


def command(paths: Paths, containerd_argv: Sequence[str], publish: Sequence[str]) -> list[str]:
    """RootlessKit running containerd in a new user, mount and network namespace."""
    kit = rootlesskit_binary(paths) or "rootlesskit"
    argv = [
        kit,
        f"--net={NETWORK}",
        f"--mtu={MTU}",
        "--port-driver=builtin",
        # slirp4netns in a mount namespace of its own and under seccomp, where the host allows.
        "--slirp4netns-sandbox=auto",
        "--slirp4netns-seccomp=auto",
        # Containers reach the host's loopback services as 10.0.2.2 (slirp4netns).
        "--disable-host-loopback=false",
        "--copy-up=/etc",
        "--copy-up=/run",
        f"--state-dir={paths.rootlesskit_dir}",
    ]
    for spec in publish:
        host = spec if spec.count(":") >= 2 else f"0.0.0.0:{spec}"
        argv.append(f"--publish={host if '/' in host else host + '/tcp'}")
    return [*argv, "/bin/sh", "-c", CHILD_SCRIPT, "sh", *containerd_argv]


def prepare(paths: Paths) -> list[int]:
    """Before RootlessKit starts: the previous run's --state-dir is removed (RootlessKit makes
    its own), and the shims the previous RootlessKit's containerd left are killed; the pids.

    A new RootlessKit makes new namespaces: containerd cannot reach a shim of the old ones (its
    socket was in the old /run), whose containers are gone with them.
    """
    shutil.rmtree(paths.rootlesskit_dir, ignore_errors=True)
    killed = []
    for proc in psutil.process_iter(["uids", "cmdline"]):
        with suppress(psutil.Error):
            cmd = proc.info["cmdline"] or []
            ours = proc.info["uids"].real == os.getuid() and str(paths.socket) in cmd
            if ours and cmd and Path(cmd[0]).name.startswith("containerd-shim"):
                proc.kill()
                killed.append(proc.pid)
    return killed


def child_pid(paths: Paths) -> int | None:
    """The pid of RootlessKit's child (the namespaces containerd runs in), or None."""
    pid = _read_int(str(paths.rootlesskit_dir / "child_pid"))
    return pid if pid and Path(f"/proc/{pid}").exists() else None


def enter_argv(paths: Paths) -> list[str] | None:
    """nsenter into the rootless containerd's user, mount and network namespaces (None when no
    rootless containerd of this run dir runs)."""
    pid = child_pid(paths)
    nsenter = shutil.which("nsenter")
    if pid is None or nsenter is None:
        return None
    return [nsenter, "-U", "--preserve-credentials", "-m", "-n", "-t", str(pid), "--"]
