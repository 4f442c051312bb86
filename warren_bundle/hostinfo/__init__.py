"""What this host is: OS and architecture in Go's naming, with a documented override for tests.

`WARREN_PLATFORM=darwin|linux` forces the OS (the Lima path is tested on Linux that way);
`WARREN_ARCH` forces the architecture.

The Linux facts the doctor reads are submodules, imported only by those who need them (this
module must stay cheap: `warren version` imports it): `mounts` (/proc/self/mountinfo), `cgroups`
(cgroup mode and controllers) and `kernel` (release, version, filesystems).
"""

from __future__ import annotations

import os
import platform
import sys

from warren_bundle.errors import PlatformError

SUPPORTED_OS = ("linux", "darwin")
SUPPORTED_ARCH = ("amd64", "arm64")
_ARCH_NAMES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv8l": "arm64",
}


def host_os() -> str:
    forced = os.environ.get("WARREN_PLATFORM")
    if forced:
        return forced.lower()
    # A plain str: mypy would otherwise read the checks below as platform guards and call the
    # branches for the other platforms unreachable.
    name: str = sys.platform
    if name.startswith("linux"):
        return "linux"
    if name == "darwin":
        return "darwin"
    if name in ("win32", "cygwin", "msys"):
        return "windows"
    return name


def host_arch() -> str:
    forced = os.environ.get("WARREN_ARCH")
    if forced:
        return forced.lower()
    machine = platform.machine().lower()
    return _ARCH_NAMES.get(machine, machine)


def check_supported() -> tuple[str, str]:
    """(os, arch) of this host, or PlatformError naming what was found and what is supported."""
    goos, goarch = host_os(), host_arch()
    if goos == "windows":
        raise PlatformError(
            "Windows is not supported; use WSL2",
            "run warren inside a WSL2 Linux distribution",
        )
    if goos not in SUPPORTED_OS:
        raise PlatformError(
            f"operating system {goos!r} is not supported",
            f"supported: {', '.join(SUPPORTED_OS)}",
        )
    if goarch not in SUPPORTED_ARCH:
        raise PlatformError(
            f"architecture {goarch!r} is not supported",
            f"supported: {', '.join(SUPPORTED_ARCH)} (ARM v7 is not built)",
        )
    return goos, goarch
