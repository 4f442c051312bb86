"""An unprivileged user with subordinate id ranges, for the rootless suites.

tests/integration/test_rootless.py runs the frozen file as such a user; tests/e2e/
test_install_rootless.py runs install.sh --rootless as another. Both need root, the rootless
tools, a /dev/net/tun the user may open, and the user with /etc/subuid and /etc/subgid ranges.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from support import short_dir

ROOTLESS_TOOLS = ("rootlesskit", "slirp4netns", "newuidmap", "newgidmap", "setpriv", "useradd")
SUBIDS = 65536  # one user namespace's worth, as useradd gives


def rootless_prerequisites(*extra_tools: str) -> Iterator[tuple[bool, str]]:
    """(met, why not) for each thing a rootless test needs of the host, in order: pass each to
    conftest's require (skip locally, fail in CI)."""
    yield os.geteuid() == 0, "needs root to create the unprivileged user"
    for tool in (*ROOTLESS_TOOLS, *extra_tools):
        yield shutil.which(tool) is not None, f"{tool} is not installed (.ci/run installs it)"
    tun = os.stat("/dev/net/tun").st_mode if os.path.exists("/dev/net/tun") else 0
    yield tun & 0o006 == 0o006, "/dev/net/tun is not 0666 (.ci/run sets udev's default)"


def has_subid_range(file: str, name: str) -> bool:
    """Whether /etc/subuid or /etc/subgid (`file`) gives `name` a range."""
    return any(line.split(":")[0] == name for line in Path(file).read_text().splitlines())


@contextlib.contextmanager
def subid_user(name: str, first_subid: int, home: bool) -> Iterator[pwd.struct_passwd]:
    """`name`, made when missing (with a home under /home when `home`), with SUBIDS subordinate
    uids and gids from first_subid; removed after (its home too)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        made_home = "--create-home" if home else "--no-create-home"
        subprocess.run(["useradd", made_home, "--shell", "/bin/sh", name], check=True)
    ids = f"{first_subid}-{first_subid + SUBIDS - 1}"
    for file, flag in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
        if not has_subid_range(file, name):
            subprocess.run(["usermod", flag, ids, name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", *(["--remove"] if home else []), name], capture_output=True)


def owned_dir(prefix: str, entry: pwd.struct_passwd) -> Path:
    """A short /tmp dir of the user's, 0700 (as logind makes XDG_RUNTIME_DIR)."""
    path = short_dir(prefix)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)
    return path


def user_env(name: str, home: Path, xdg_runtime: Path, **extra: str) -> dict[str, str]:
    """The environment of a login of `name`: PATH, HOME, USER, LOGNAME, XDG_RUNTIME_DIR."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(home),
        "USER": name,
        "LOGNAME": name,
        "XDG_RUNTIME_DIR": str(xdg_runtime),
        **extra,
    }


def as_user(uid: int, gid: int) -> list[str]:
    """The argv prefix that runs a command as uid:gid with no supplementary groups."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
