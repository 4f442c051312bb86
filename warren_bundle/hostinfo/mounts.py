"""The mounts of this host as /proc/self/mountinfo lists them, and which one holds a path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    options: frozenset[str]  # the mount's and the superblock's options together


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return field.encode().decode("unicode_escape")


def mounts() -> list[Mount]:
    """Every mount in mount order; [] when mountinfo cannot be read."""
    found = []
    try:
        with open(MOUNTINFO) as fp:
            for line in fp:
                left, _, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                if len(fields) < 6 or len(tail) < 3:
                    continue
                options = set(fields[5].split(",")) | set(tail[2].split(","))
                found.append(Mount(_unescape(fields[4]), tail[0], frozenset(options)))
    except OSError:
        return []
    return found


def mount_of(path: Path) -> Mount | None:
    """The mount that holds `path` (the last mounted of the longest matching mount points)."""
    target = os.path.realpath(path)
    best: Mount | None = None
    for mount in mounts():
        point = mount.point.rstrip("/") or "/"
        inside = target == point or target.startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= len(best.point.rstrip("/") or "/")):
            best = mount
    return best
