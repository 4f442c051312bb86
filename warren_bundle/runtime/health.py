"""Socket probes: the file exists, it accepts a connection, gRPC Health/Check says SERVING, Version.

A socket file alone is not readiness: containerd creates it before its services are registered, and
a dead containerd leaves it behind.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from warren_bundle.runtime.grpc_unix import (
    GrpcError,
    decode_fields,
    encode_string_field,
    unary_call,
)

HEALTH_METHOD = "/grpc.health.v1.Health/Check"
VERSION_METHOD = "/containerd.services.version.v1.Version/Version"
SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


@dataclass(frozen=True)
class Probe:
    path: str
    exists: bool
    connects: bool
    serving: bool
    version: str | None = None
    revision: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def socket_exists(path: str | os.PathLike[str]) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def connects(path: str | os.PathLike[str], timeout: float = 0.5) -> bool:
    return connect_error(path, timeout) is None


def connect_error(path: str | os.PathLike[str], timeout: float = 0.5) -> OSError | None:
    """Why a connection to `path` fails (PermissionError: not in the socket's group), or None."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except OSError as exc:
            return exc
    return None


def health_status(path: str | os.PathLike[str], timeout: float = 1.0, service: str = "") -> str:
    """grpc.health.v1 status name; raises GrpcError when the call itself fails."""
    reply = unary_call(os.fspath(path), HEALTH_METHOD, encode_string_field(1, service), timeout)
    value = decode_fields(reply.message).get(1, 0)
    return SERVING_STATUS.get(value if isinstance(value, int) else 0, "UNKNOWN")


def is_serving(path: str | os.PathLike[str], timeout: float = 1.0) -> bool:
    try:
        return health_status(path, timeout) == "SERVING"
    except GrpcError:
        return False


def answers_within(
    path: str,
    checks: int,
    timeout: float,
    still_alive: Callable[[], bool],
    is_serving: Callable[[str, float], bool] = is_serving,
    on_miss: Callable[[int], None] | None = None,
) -> bool:
    """The supervisor's rule for a hang, not one probe: up to `checks` health checks in a row,
    each given `timeout`; True at the first that answers. A loaded host (booted guests under
    TCG) can make a healthy containerd miss one, and calling it hung costs a restart for
    nothing. Stops early once `still_alive()` says its process is gone; never sleeps after the
    last check. `on_miss(n)` is told of each missed check but the last."""
    for check in range(1, checks + 1):
        began = time.monotonic()
        if is_serving(path, timeout):
            return True
        if check == checks or not still_alive():
            return False
        if on_miss is not None:
            on_miss(check)
        # A refused connection fails at once: each check still gets its whole timeout.
        time.sleep(max(0.0, began + timeout - time.monotonic()))
    return False


def containerd_version(path: str | os.PathLike[str], timeout: float = 2.0) -> tuple[str, str]:
    """(version, revision) reported by the containerd server on `path`."""
    fields = decode_fields(unary_call(os.fspath(path), VERSION_METHOD, b"", timeout).message)
    version, revision = fields.get(1, b""), fields.get(2, b"")
    return (
        version.decode() if isinstance(version, bytes) else "",
        revision.decode() if isinstance(revision, bytes) else "",
    )


def probe(path: str | os.PathLike[str], timeout: float = 2.0, want_version: bool = True) -> Probe:
    """Every layer of the check, stopping at the first that fails, with that failure's reason."""
    spath = os.fspath(path)
    if not socket_exists(spath):
        reason = "no such file" if not os.path.lexists(spath) else "not a socket"
        return Probe(spath, False, False, False, error=f"socket not found: {spath} ({reason})")
    try:
        status = health_status(spath, timeout)
    except GrpcError as exc:
        return Probe(spath, True, connects(spath, timeout), False, error=str(exc))
    if status != "SERVING":
        return Probe(spath, True, True, False, error=f"health check says {status}")
    if not want_version:
        return Probe(spath, True, True, True)
    try:
        version, revision = containerd_version(spath, timeout)
    except GrpcError as exc:
        return Probe(spath, True, True, True, error=f"Version failed: {exc}")
    return Probe(spath, True, True, True, version, revision)
