"""Who holds the run dir's lock: /proc/locks read by device and inode, pids that can be named only.

The bug this guards: a line for another file with the same inode number, or the -1 that
/proc/locks prints for an OFD lock and for a holder in another pid namespace, reached
psutil.Process(-1) and `containerd stop` ended in a traceback.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

from warren_bundle.paths import Paths
from warren_bundle.runtime import pidfile


def _line(pid: int, major: int, minor: int, inode: int, kind: str = "FLOCK") -> str:
    return f"1: {kind}  ADVISORY  WRITE {pid} {major:02x}:{minor:02x}:{inode} 0 EOF"


def test_only_lines_for_this_device_and_inode_count() -> None:
    dev = os.makedev(0xFD, 0x01)
    text = "\n".join(
        [
            _line(100, 0xFD, 0x01, 42),  # ours
            _line(200, 0x08, 0x01, 42),  # same inode number, another filesystem
            _line(300, 0xFD, 0x01, 43),  # same filesystem, another file
            "2: -> FLOCK  ADVISORY  WRITE 400 fd:01:42 0 EOF",  # a waiter
        ]
    )
    assert pidfile.parse_lock_holders(text, dev, 42) == {100}


def test_unnameable_holders_and_garbage_are_not_ours() -> None:
    dev = os.makedev(0, 0x2A)
    text = "\n".join(
        [
            _line(-1, 0, 0x2A, 7, kind="OFDLCK"),  # an OFD lock: no pid
            _line(0, 0, 0x2A, 7),
            "3: FLOCK ADVISORY WRITE 12x 00:2a:7 0 EOF",
            "4: FLOCK ADVISORY WRITE 5 00:2a 0 EOF",
            "\x00\xff binary",
            "",
        ]
    )
    assert pidfile.parse_lock_holders(text, dev, 7) == set()


def test_an_ofd_lock_on_the_supervisor_lock_is_no_supervisor(tmp_path: Path) -> None:
    # A real OFD lock (pid -1 in /proc/locks), held by this process on the lock file.
    paths = Paths(data_dir=tmp_path / "d", run_dir=tmp_path / "r", config_dir=tmp_path / "c")
    paths.run_dir.mkdir(parents=True)
    fd = os.open(paths.supervisor_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
        assert pidfile.lock_holders(paths.supervisor_lock) == set()
        assert pidfile.supervisor(paths) is None
    finally:
        os.close(fd)


def test_a_flock_holder_is_found(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert pidfile.lock_holders(lock) == {os.getpid()}
    finally:
        os.close(fd)
