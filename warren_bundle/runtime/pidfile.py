"""Pidfiles that are trusted only when the process behind the pid is still the one that wrote it.

A bare pid can be reused after a reboot or a crash; the pidfile records the executable and the start
time as well, and psutil must confirm both.

Even a record that matches is only a claim: anyone who can write the run dir could name any live
process in it. `containerd()` and `supervisor()` are the one place that decides which process
warren may signal, and they answer only with the bundled containerd of this run dir (its exe is
<data-dir>/bin/containerd and our socket is on its command line) or the warren supervisor of this
run dir (`warren containerd run`, holding the run dir's lock).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from warren_bundle.fsutil import atomic_write, read_json
from warren_bundle.paths import Paths

_START_TOLERANCE = 0.05  # seconds; create_time is derived from clock ticks


@dataclass(frozen=True)
class PidRecord:
    pid: int
    exe: str
    create_time: float  # wall clock: for uptimes; moves when the clock is stepped
    # Seconds from boot to the process's start: its identity. psutil's create_time is the boot
    # time as the wall clock now sees it plus this, so a clock step after boot (NTP, chrony's
    # makestep) moved it and disowned every process recorded before the step.
    since_boot: float | None = None


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


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def since_boot(pid: int) -> float:
    """When `pid` started, in seconds since boot: /proc/<pid>/stat's starttime, set at its fork
    and read by anyone, with no wall clock in it (psutil's create_time adds the boot time as
    the wall clock sees it now). psutil.NoSuchProcess when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError as exc:
        raise psutil.NoSuchProcess(pid) from exc
    # Fields after the command name, which may hold spaces or ")": state is field 3,
    # starttime field 22.
    return int(stat.rpartition(b")")[2].split()[19]) / _CLOCK_TICKS


def record_for(pid: int, exe: str | None = None) -> PidRecord:
    """The identity of `pid`. `exe`: what a process we just spawned executes (its argv[0],
    resolved). Popen can return before the child's exec has replaced its image: /proc/<pid>/exe
    then still names warren's own runtime, and a record of that disowns the process for good
    (seen on a booted guest: status said no containerd while RootlessKit ran it)."""
    proc = psutil.Process(pid)
    executable = _clean_exe(exe if exe is not None else proc.exe())
    return PidRecord(pid, executable, proc.create_time(), since_boot(pid))


def write(path: Path, record: PidRecord) -> None:
    fields = {"pid": record.pid, "exe": record.exe, "create_time": record.create_time}
    if record.since_boot is not None:
        fields["since_boot"] = record.since_boot
    data = json.dumps(fields)
    atomic_write(path, data + "\n")


def read(path: Path) -> PidRecord | None:
    data = read_json(path)  # never a hang on a FIFO, never a huge read
    if data is None:
        return None
    try:
        booted = data.get("since_boot")
        return PidRecord(
            int(data["pid"]),
            str(data["exe"]),
            float(data["create_time"]),
            None if booted is None else float(booted),
        )
    except (ValueError, KeyError, TypeError):
        return None


def alive(record: PidRecord) -> psutil.Process | None:
    """The process, if `record.pid` is still the process that was recorded; else None."""
    try:
        proc = psutil.Process(record.pid)
        if record.since_boot is not None:
            if abs(since_boot(record.pid) - record.since_boot) > _START_TOLERANCE:
                return None
        elif abs(proc.create_time() - record.create_time) > _START_TOLERANCE:
            return None  # a record written before since_boot existed
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
    """Remove a pidfile; OSError when it exists and cannot be removed (a read-only run dir).

    A missing one is no error, even on a read-only filesystem (where unlink says EROFS first).
    """
    if not os.path.lexists(path):
        return
    with suppress(FileNotFoundError):
        path.unlink()


def discard(path: Path) -> None:
    """Best-effort remove(), for a supervisor's cleanup: an untrusted pidfile does no harm."""
    with suppress(OSError):
        remove(path)


# --- which processes warren may signal --------------------------------------------------------


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except (psutil.Error, OSError):
        return []


def is_bundled_containerd(proc: psutil.Process, paths: Paths) -> bool:
    """`proc` runs the bundled containerd (<data-dir>/bin/containerd, or the containerd of one
    of <data-dir>/versions/<digest>/), or RootlessKit running it (rootless), with this run dir's
    socket on its command line."""
    try:
        exe = _exe_or_name(proc)
    except (psutil.Error, OSError):
        return False
    if Path(exe).name == "rootlesskit":  # a user's: containerd is RootlessKit's child
        return str(paths.socket) in _cmdline(proc)
    binary = str(paths.binary("containerd"))
    in_versions = Path(exe).name == "containerd" and Path(exe).parent.parent == paths.versions_dir
    if exe not in (binary, Path(binary).name[:_COMM_LEN]) and not in_versions:
        return False
    return str(paths.socket) in _cmdline(proc)


def exe_of(proc: psutil.Process) -> str | None:
    """The process's executable ("(deleted)" stripped), None when it cannot be read. For
    RootlessKit (rootless), the containerd on its command line: the one it runs."""
    try:
        exe = _clean_exe(proc.exe())
    except (psutil.Error, OSError):
        return None
    if Path(exe).name == "rootlesskit":
        return next((a for a in _cmdline(proc) if Path(a).name == "containerd"), exe)
    return exe


def _own_executable() -> str | None:
    """What /proc/<pid>/exe shows for a supervisor of this warren: the runtime's executable
    (sys.executable, in the launcher's runtime dir), not the one file the user ran, whatever
    either is named."""
    if not getattr(sys, "frozen", False):
        return None
    return _clean_exe(os.path.realpath(sys.executable))


def _runs_warren(exe: str, argv: list[str]) -> bool:
    """A frozen warren file (ours, or one named warren*), or Python running warren_bundle."""
    if exe == _own_executable() or Path(exe).name.startswith("warren"):
        return True
    if not Path(exe).name.startswith("python"):
        return False
    rest = argv[1:3]
    return (
        rest[:2] == ["-m", "warren_bundle"]
        or (bool(rest) and Path(rest[0]).name == "warren")  # the console-script entry point
        or (bool(rest) and rest[0].endswith("warren_bundle/__main__.py"))
    )


def parse_lock_holders(text: str, device: int, inode: int) -> set[int]:
    """Pids that /proc/locks's `text` shows holding a lock on the file (`device`, `inode`).

    A line reads `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`: the device as hex
    major:minor, then the inode in decimal. The same inode number on another filesystem is another
    file, so both must match. The pid is -1 (or 0) for an OFD lock and for a holder in another pid
    namespace: nobody we can name, so not counted. Anything that does not parse is not ours.
    """
    want = (os.major(device), os.minor(device), inode)
    pids = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":  # "->": a waiter, not a holder
            continue
        try:
            major, minor, ino = fields[5].split(":")
            where = (int(major, 16), int(minor, 16), int(ino))
            pid = int(fields[4])
        except ValueError:
            continue
        if where == want and pid > 0:
            pids.add(pid)
    return pids


def lock_holders(path: Path) -> set[int]:
    """Pids holding a flock or POSIX lock on `path` (from /proc/locks, readable by anyone)."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as fp:
            text = fp.read()
    except OSError:
        return set()
    return parse_lock_holders(text, st.st_dev, st.st_ino)


def is_warren_supervisor(proc: psutil.Process, paths: Paths) -> bool:
    """`proc` runs warren (our frozen file or python -m warren_bundle) and holds this run dir's
    supervisor lock, which only a supervisor of this run dir takes: `containerd run`, or the
    supervisor a frozen `containerd start` or `rollback` forked, which keeps that command line."""
    if proc.pid not in lock_holders(paths.supervisor_lock):
        return False
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        exe = _exe_or_name(proc)
    except (psutil.Error, OSError):
        return False
    return _runs_warren(exe, _cmdline(proc))


def containerd(paths: Paths) -> psutil.Process | None:
    """The bundled containerd its pidfile names, or None: the only containerd warren signals."""
    trusted = read_trusted(paths.containerd_pidfile)
    if trusted is None or not is_bundled_containerd(trusted[1], paths):
        return None
    return trusted[1]


def supervisor(paths: Paths) -> psutil.Process | None:
    """The warren supervisor of this run dir, or None: the only supervisor warren signals.

    That is the process holding the run dir's lock, if it runs `warren containerd run`. Its
    pidfile (written once containerd is ready) is not needed to find it, so a supervisor still
    starting is found too, and a pidfile naming some other process can never be.
    """
    for pid in sorted(lock_holders(paths.supervisor_lock)):
        with suppress(psutil.Error, ValueError):
            proc = psutil.Process(pid)
            if is_warren_supervisor(proc, paths):
                return proc
    return None
