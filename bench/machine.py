"""The machine a run happened on: results only mean something next to it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from .context import REPO


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _fs_type(path: Path) -> str:
    best, kind = "", "unknown"
    where = str(path.resolve())
    for part in psutil.disk_partitions(all=True):
        if where.startswith(part.mountpoint) and len(part.mountpoint) > len(best):
            best, kind = part.mountpoint, part.fstype
    return kind


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _pyinstaller_version() -> str:
    try:
        from importlib.metadata import version

        return version("pyinstaller")
    except Exception:
        return "unknown"


def describe(work: Path) -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": _os_name(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "pyinstaller": _pyinstaller_version(),
        "work_fs": _fs_type(work),
        "root": os.geteuid() == 0,
        "virtualization": _virtualization(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        # The bench's own outputs do not make the source it measured dirty.
        "git_dirty": bool(
            _git(
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!docs/bench.md",
                ":!bench/results.json",
            )
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "executable": sys.executable,
    }


def _virtualization() -> str:
    """'kvm VM, docker container', 'bare metal', ...: shared hosts make figures noisier."""
    found = []
    if _have("systemd-detect-virt"):
        for flag, what in (("--vm", "VM"), ("--container", "container")):
            out = subprocess.run(
                ["systemd-detect-virt", flag], capture_output=True, text=True, check=False
            ).stdout.strip()
            if out and out != "none":
                found.append(f"{out} {what}")
    elif " hypervisor" in Path("/proc/cpuinfo").read_text():
        found.append("VM")
    return ", ".join(found) or "bare metal"


def _have(binary: str) -> bool:
    from shutil import which

    return which(binary) is not None


def summary(machine: dict[str, Any]) -> str:
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB RAM, "
        f"{machine['os']} (kernel {machine['kernel']}, {machine['arch']}, "
        f"{machine['virtualization']}), data on {machine['work_fs']}, Python {machine['python']}, "
        f"PyInstaller {machine['pyinstaller']}; commit {machine['git_commit']}"
        f"{' (dirty)' if machine['git_dirty'] else ''}, {machine['date']}, "
        f"load average {machine['load_before'][0]} at start"
        + (f", {machine['load_after'][0]} at the end" if machine.get("load_after") else "")
    )
