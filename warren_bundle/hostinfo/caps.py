"""The capabilities this process holds, from /proc/self/status (CapEff)."""

from __future__ import annotations

from pathlib import Path

CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24


def effective(status_file: Path = Path("/proc/self/status")) -> int | None:
    """The effective capability mask, or None when it cannot be read."""
    try:
        text = status_file.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            try:
                return int(line.split(":", 1)[1].strip(), 16)
            except ValueError:
                return None
    return None


def has(cap: int, mask: int | None = None) -> bool | None:
    """Whether `cap` is effective (None: unknown)."""
    mask = effective() if mask is None else mask
    return None if mask is None else bool(mask >> cap & 1)


def can_set_oom_score_adj() -> bool:
    """runc lowers a sandbox's oom_score_adj (to -998): that needs CAP_SYS_RESOURCE. Root in
    a container, and in some VMs, lacks it; containerd must then restrict_oom_score_adj."""
    return has(CAP_SYS_RESOURCE) is not False
