"""What containerd supports across versions: the one parser of a containerd version, and the
rules that refuse an upgrade or a rollback containerd does not support on the same data.

Imports nothing of warren but errors.py, so the config, the node setup and the store share it.
"""

from __future__ import annotations

import re

from warren_bundle.errors import UpgradeRefused

# containerd's own support statement: upgrades go one minor at a time, and 1.7 (the last 1.x
# LTS) is the line that moves to 2.x; downgrades across a minor line are not supported.
LTS_TO_2 = (1, 7)
SUPPORTED_PATH = "1.6 → 1.7 → 2.0/2.1, one minor at a time"
# "1.7.24", "v2.1.9", "1.6.20~ds1-1" (a Debian version), "2" (a major alone): leading digits only.
_VERSION = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")

VersionTuple = tuple[int, int, int]


def parse_version(text: str | None) -> VersionTuple | None:
    """The one parser of a containerd version: (major, minor, patch), or None when `text` does
    not start with one (missing parts are 0)."""
    match = _VERSION.match(text or "")
    if not match:
        return None
    return int(match[1]), int(match[2] or 0), int(match[3] or 0)


def at_least(text: str | None, floor: tuple[int, int]) -> bool:
    """containerd `text` is of the line `floor` (major, minor) or later; False when unknown."""
    version = parse_version(text)
    return version is not None and version[:2] >= floor


def upgrade_problem(old: str | None, new: str | None) -> str | None:
    """Why containerd cannot go from `old` to `new` on the same root and state, or None."""
    a, b = parse_version(old), parse_version(new)
    if a is None or b is None or a[:2] == b[:2]:
        return None  # same minor line (patch up or down), or nothing known to compare
    if b < a:
        return (
            f"containerd {new} is a downgrade from {old} across a minor line, which containerd "
            "does not support on the same data"
        )
    if a[0] == b[0] and b[1] == a[1] + 1:
        return None  # the next minor
    if a[:2] == LTS_TO_2 and b[0] == 2 and b[1] <= 1:
        return None  # 1.7 LTS → 2.0 / 2.1
    return f"containerd {old} → {new} skips a minor line, which containerd does not support"


def check_upgrade(old: str | None, new: str | None, force: bool) -> str | None:
    """Raise UpgradeRefused unless the change is supported or forced; a warning when forced."""
    problem = upgrade_problem(old, new)
    if problem is None:
        return None
    if not force:
        raise UpgradeRefused(
            problem + "; nothing was stopped",
            f"upgrade along {SUPPORTED_PATH} (each step one warren), or pass --force "
            "if you know better",
        )
    return (
        f"--force: {problem}; containerd may fail to read its metadata, snapshots or "
        "running tasks (keep a backup of the data dir)"
    )


def rollback_problem(current: str | None, previous: str | None, highest: str | None) -> str | None:
    """Why containerd cannot go back from `current` to `previous`, or None.

    The same minor line is always fine; one minor back within 1.x (1.7 → 1.6) is fine while no
    containerd 2.x has run on this root (2.x migrates the config to version 3 and the metadata
    it writes is not read by 1.x).
    """
    a, b, top = parse_version(current), parse_version(previous), parse_version(highest)
    if a is None or b is None:
        return None
    if a[:2] == b[:2]:
        return None
    if b > a:
        return f"the previous version {previous} is newer than {current}: use that warren"
    if top is not None and top[0] >= 2 and b[0] < 2:
        return (
            f"containerd {highest} has run on this data and containerd 2.x data cannot be "
            f"read back by {previous}"
        )
    if a[0] == b[0] and b[1] == a[1] - 1:
        return None
    return f"containerd does not support going back from {current} to {previous}"
