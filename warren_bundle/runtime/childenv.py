"""The environment for programs warren starts (containerd, ctr, limactl).

A one-file PyInstaller build points LD_LIBRARY_PATH at its private /tmp/_MEI* dir; a child must get
the caller's original value back, or it could load the bundle's libssl/libcrypto instead of its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

_DROP = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "_MEIPASS2",
    "_PYI_APPLICATION_HOME_DIR",
    "_PYI_ARCHIVE_FILE",
    "_PYI_PARENT_PROCESS_LEVEL",
    "_PYI_LINUX_PROCESS_NAME",
    "_PYI_SPLASH_IPC",
    # The launcher's (warren_bundle/launcher.py): a warren started from here gets its own.
    "_WARREN_ONEFILE",
    "_WARREN_RUNTIME",
)


def restore_library_path(environ: MutableMapping[str, str] | None = None) -> None:
    """Give this process's own environment the caller's LD_LIBRARY_PATH back, once, at start.

    The frozen runtime's loader read the runtime's value at exec; nothing in this process reads
    it again. Left in os.environ, every program started without child_env (modprobe, iptables,
    systemctl) loads the runtime's libc: on an older host its loader then fails ("GLIBC_2.35 not
    found", seen on a booted bullseye guest)."""
    if environ is None and not getattr(sys, "frozen", False):
        return
    _give_back_library_path(os.environ if environ is None else environ, frozen=True)


def _give_back_library_path(env: MutableMapping[str, str], frozen: bool) -> None:
    """The caller's LD_LIBRARY_PATH (PyInstaller keeps it as LD_LIBRARY_PATH_ORIG), or none when
    frozen and the caller had none: never the runtime's."""
    orig = env.pop("LD_LIBRARY_PATH_ORIG", None)
    if orig is not None:
        env["LD_LIBRARY_PATH"] = orig
    elif frozen:
        env.pop("LD_LIBRARY_PATH", None)


def child_env(
    prepend_path: Path | None = None,
    extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key in _DROP:
        env.pop(key, None)
    _give_back_library_path(env, frozen=getattr(sys, "frozen", False))
    if prepend_path is not None:
        rest = env.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env["PATH"] = f"{prepend_path}{os.pathsep}{rest}"
    if extra:
        env.update(extra)
    return env
