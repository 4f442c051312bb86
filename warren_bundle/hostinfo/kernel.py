"""This host's kernel: its release, the version in it, and the filesystems it supports."""

from __future__ import annotations

import os
from pathlib import Path


def release() -> str:
    """The running kernel's release, e.g. "6.1.0-18-amd64"."""
    return os.uname().release


def version(text: str) -> tuple[int, int]:
    """(major, minor) of a kernel release; a part without digits counts as 0."""
    numbers = []
    for part in text.split("-")[0].split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits) if digits else 0)
    while len(numbers) < 2:
        numbers.append(0)
    return numbers[0], numbers[1]


def filesystems() -> set[str]:
    """The filesystems the kernel supports now (/proc/filesystems); empty when unreadable."""
    try:
        text = Path("/proc/filesystems").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in text.splitlines() if line.strip()}


def fs_module_dir(name: str) -> Path:
    """Where the running kernel keeps the module of filesystem `name` (loaded on first use)."""
    return Path("/lib/modules") / release() / "kernel" / "fs" / name
