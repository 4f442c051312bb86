"""Pidfiles that are trusted only when the process behind the pid is still the one that wrote it.

A bare pid can be reused after a reboot or a crash; the pidfile records the executable and the start
time as well, and psutil must confirm both.
"""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from warren_bundle.fsutil import atomic_write

_START_TOLERANCE = 0.05  # seconds; create_time is derived from clock ticks


@dataclass(frozen=True)
class PidRecord:
    pid: int
    exe: str
    create_time: float


def _clean_exe(path: str) -> str:
    # A binary replaced while running shows as "<path> (deleted)" in /proc/<pid>/exe.
    return path.removesuffix(" (deleted)")


_COMM_LEN = 15  # the kernel's limit on a process name (/proc/<pid>/comm)


def _exe_or_name(proc: psutil.Process) -> str:
    """The executable, or, where /proc/<pid>/exe is closed to us (root's process seen by a
    socket-group member), the process name, which anyone may read."""
    try:
        return _clean_exe(proc.exe())
    except psutil.AccessDenied:
        return proc.name()


def record_for(pid: int) -> PidRecord:
    proc = psutil.Process(pid)
    return PidRecord(pid, _clean_exe(proc.exe()), proc.create_time())


def write(path: Path, record: PidRecord) -> None:
    data = json.dumps({"pid": record.pid, "exe": record.exe, "create_time": record.create_time})
    atomic_write(path, data + "\n")


def read(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text())
        return PidRecord(int(data["pid"]), str(data["exe"]), float(data["create_time"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def alive(record: PidRecord) -> psutil.Process | None:
    """The process, if `record.pid` is still the process that was recorded; else None."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > _START_TOLERANCE:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if _exe_or_name(proc) not in (record.exe, Path(record.exe).name[:_COMM_LEN]):
            return None
        return proc
    except (psutil.Error, OSError):
        return None


def read_trusted(path: Path) -> tuple[PidRecord, psutil.Process] | None:
    record = read(path)
    if record is None:
        return None
    proc = alive(record)
    return (record, proc) if proc is not None else None


def remove(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()
