"""runtime/sdnotify.py against a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.runtime import sdnotify

from support import short_dir


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    base = short_dir("sd")
    path = str(base / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()
    Path(path).unlink(missing_ok=True)
    base.rmdir()


def test_a_message_is_one_datagram_to_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert sdnotify.send("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_an_abstract_address_is_spoken_too() -> None:
    name = f"warren-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert sdnotify.send("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"WATCHDOG=1"


@pytest.mark.parametrize("value", ["", "relative/sock", "vsock:2:1234"])
def test_no_socket_or_one_it_does_not_speak_is_a_no_op(value: str) -> None:
    assert sdnotify.send("READY=1", {"NOTIFY_SOCKET": value} if value else {}) is False


def test_an_unreachable_socket_is_not_an_error(tmp_path: Path) -> None:
    assert sdnotify.send("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_the_watchdog_pings_at_half_its_timeout_for_this_process_only() -> None:
    me = str(os.getpid())
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": me}) == 30.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "x"}) is None
    assert sdnotify.watchdog_interval({}) is None
