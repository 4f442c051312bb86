"""This host's cgroups: which hierarchy is mounted (v1, v2, hybrid) and which controllers it has."""

from __future__ import annotations

from pathlib import Path

from warren_bundle.hostinfo.mounts import Mount

CGROUP_ROOT = "/sys/fs/cgroup"


def mode(all_mounts: list[Mount]) -> str:
    """The cgroup layout: v2 (unified), v1, "v1 (hybrid)" (v1 beside a v2 tree) or none."""
    root = next((m for m in reversed(all_mounts) if m.point == CGROUP_ROOT), None)
    if root is not None and root.fstype == "cgroup2":
        return "v2"
    if any(m.fstype == "cgroup" for m in all_mounts):
        hybrid = any(m.fstype == "cgroup2" for m in all_mounts)
        return "v1 (hybrid)" if hybrid else "v1"
    return "none"


def v2_controllers() -> set[str]:
    """The controllers the v2 root offers (cgroup.controllers); empty when unreadable."""
    try:
        return set((Path(CGROUP_ROOT) / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def enabled_v1_controllers() -> set[str]:
    """The controllers /proc/cgroups lists as enabled in the kernel."""
    enabled = set()
    try:
        with open("/proc/cgroups") as fp:
            for line in fp:
                parts = line.split()
                if len(parts) == 4 and not line.startswith("#") and parts[3] == "1":
                    enabled.add(parts[0])
    except OSError:
        pass
    return enabled


def v1_controllers(all_mounts: list[Mount]) -> set[str]:
    """The v1 controllers both mounted (a cgroup mount's options) and enabled in the kernel."""
    mounted: set[str] = set()
    for m in all_mounts:
        if m.fstype == "cgroup":
            mounted |= m.options
    return mounted & enabled_v1_controllers()
