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


# --- the proxy containerd gets (runtime/proxyenv.py, doctor/proxy.py) ---------------------------


def test_containerd_prefixed_proxies_replace_the_plain_ones_for_containerd() -> None:
    from warren_bundle.runtime import proxyenv

    env = {
        "HTTP_PROXY": "http://all:3128",
        "https_proxy": "http://all:3128",
        "NO_PROXY": "localhost",
        "CONTAINERD_HTTPS_PROXY": "http://pulls:3128",
        "PATH": "/bin",
    }
    assert proxyenv.for_containerd(env) == {
        "HTTP_PROXY": "http://all:3128",
        "HTTPS_PROXY": "http://pulls:3128",
        "NO_PROXY": "localhost",
        "PATH": "/bin",
    }
    assert proxyenv.for_containerd({"PATH": "/bin"}) == {"PATH": "/bin"}
    assert proxyenv.in_effect({"http_proxy": "http://a:1", "NO_PROXY": "x"}) == {
        "HTTP_PROXY": "http://a:1",
        "NO_PROXY": "x",
    }


def test_a_proxy_password_is_never_shown() -> None:
    from warren_bundle.runtime.proxyenv import hide_password

    assert hide_password("http://user:s3cr%40t@proxy:3128") == "http://user:***@proxy:3128"
    assert hide_password("http://proxy:3128") == "http://proxy:3128"


def test_no_proxy_rules_cover_hosts_and_networks() -> None:
    from warren_bundle.doctor.proxy import _bypassed

    rules = "localhost,127.0.0.1,10.0.0.0/8,.corp"
    assert _bypassed(rules, "localhost") and _bypassed(rules, "127.0.0.1")
    assert _bypassed(rules, "10.217.0.0/16")
    assert not _bypassed(rules, "192.168.0.0/16")
    assert _bypassed("*", "10.217.0.0/16")
