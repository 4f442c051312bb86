"""Which containerd socket a client should use: explicit > embedded (a user's: their rootless one,
then root's) > system > Lima.

Explicit means --socket, WARREN_CONTAINERD_SOCKET or CONTAINERD_ADDRESS and is taken as given.
The others are taken only when they answer a gRPC health check. When the embedded containerd's
process lives but its socket does not answer (hung), that is the error: clients never fall
through to another containerd, and never hear "socket not found" about a socket that is there.
"""

from __future__ import annotations

import grp
import os
from dataclasses import dataclass
from pathlib import Path

from warren_bundle.errors import ContainerdNotAnswering, PermissionDeniedError, SocketNotFoundError
from warren_bundle.hostinfo import host_os
from warren_bundle.paths import (
    CONTAINERD_SOCKET_PATH,
    Paths,
    lima_socket_path,
    rootless_user,
    system_socket_path,
)
from warren_bundle.runtime import health

ENV_SOCKETS = ("WARREN_CONTAINERD_SOCKET", "CONTAINERD_ADDRESS")


@dataclass(frozen=True)
class Candidate:
    kind: str  # explicit | embedded | embedded-root | system | lima
    path: str


def _strip_scheme(address: str) -> str:
    return address.removeprefix("unix://")


def explicit_socket(option: str | None = None) -> Candidate | None:
    if option:
        return Candidate("explicit", _strip_scheme(option))
    for var in ENV_SOCKETS:
        value = os.environ.get(var)
        if value:
            return Candidate("explicit", _strip_scheme(value))
    return None


def candidates(paths: Paths, option: str | None = None) -> list[Candidate]:
    found = []
    explicit = explicit_socket(option)
    if explicit is not None:
        found.append(explicit)
    found.append(Candidate("embedded", str(paths.socket)))
    if rootless_user() and paths.socket != Path(CONTAINERD_SOCKET_PATH):
        # A user's own (rootless) containerd first, then root's (a socket group member's).
        found.append(Candidate("embedded-root", CONTAINERD_SOCKET_PATH))
    found.append(Candidate("system", str(system_socket_path())))
    if host_os() == "darwin":
        found.append(Candidate("lima", str(lima_socket_path())))
    return found


def detect(paths: Paths, option: str | None = None, timeout: float = 1.0) -> Candidate:
    """The socket to use: an explicit one as given, unchecked (`warren socket` prints it so;
    detect_for_client checks it), else the first candidate that answers; SocketNotFoundError
    when none does."""
    explicit = explicit_socket(option)
    if explicit is not None:
        return explicit
    tried, denied = [], []
    for cand in candidates(paths):
        if health.is_serving(cand.path, timeout):
            return cand
        tried.append(cand.path)
        if isinstance(health.connect_error(cand.path), PermissionError):
            denied.append(cand.path)
        elif cand.kind == "embedded":
            if answers_in_grace(paths, cand.path):
                return cand
            check_not_hung(paths)
    if denied:
        raise permission_denied(denied[0])
    raise SocketNotFoundError(
        f"socket not found: no containerd answers on {', '.join(tried)}",
        "start one with 'warren containerd start' (or 'warren lima up' on macOS), or pass --socket",
    )


def detect_for_client(paths: Paths, option: str | None = None) -> Candidate:
    """detect(), and an explicit socket (--socket, WARREN_CONTAINERD_SOCKET, CONTAINERD_ADDRESS)
    must at least exist: a client given a missing one otherwise waits out ctr's 10 s dial
    timeout, and an image import then blamed the archive. A symlink is followed: one whose
    target is gone (a forward that went away) is missing too. One that exists is left to the
    client (a containerd restarting behind it is waited for, as before)."""
    cand = detect(paths, option)
    if cand.kind == "explicit" and not os.path.exists(cand.path):
        dangling = " (a symlink to nothing)" if os.path.islink(cand.path) else " (no such file)"
        raise SocketNotFoundError(
            f"socket not found: {cand.path}{dangling}",
            "check the path given by --socket, WARREN_CONTAINERD_SOCKET or CONTAINERD_ADDRESS, "
            "or leave it out to use warren's containerd",
        )
    return cand


def answers_in_grace(paths: Paths, path: str) -> bool:
    """A containerd whose process lives is slow before it is hung (a loaded host, a start or
    restart still going): the supervisor's own rule (health.answers_within) before a client
    calls it hung; one check has failed already. Nothing of ours alive: no wait."""
    from warren_bundle.runtime import pidfile
    from warren_bundle.runtime.settings import Settings

    if pidfile.containerd(paths) is None:
        return False
    rule = Settings()
    return health.answers_within(
        path,
        rule.health_failures - 1,
        rule.health_timeout,
        still_alive=lambda: pidfile.containerd(paths) is not None,
    )


def check_not_hung(paths: Paths) -> None:
    """Raise when the embedded containerd's process is alive but its socket did not answer."""
    from warren_bundle.runtime import pidfile

    ctrd = pidfile.containerd(paths)
    if ctrd is not None:
        raise ContainerdNotAnswering(
            f"containerd does not answer on {paths.socket} "
            f"(pid {ctrd.pid} is alive but not responding)",
            "it may be hung or still starting: see 'warren containerd status' and "
            f"{paths.log_file}; 'warren containerd stop' then 'warren containerd start' "
            "replaces it",
        )


def socket_group_remedy(path: str | os.PathLike[str]) -> str:
    """What a user who is not root does to use the socket at `path`, naming its real group."""
    try:
        gid = os.stat(path).st_gid
    except OSError:
        return "run warren with sudo"
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    if gid == 0:
        # Nobody should be added to group root: the socket is root's alone.
        return (
            "run warren with sudo; for use without sudo, an admin starts containerd with "
            "--socket-group GROUP and adds you to GROUP"
        )
    return f"run warren with sudo, or ask an admin to add you to group {group!r} (ls -l {path})"


def permission_denied(path: str) -> PermissionDeniedError:
    """The seed's "Permission Denied" case: not root, and not in the socket's group."""
    return PermissionDeniedError(f"permission denied: {path}", socket_group_remedy(path))


def validate(cand: Candidate, timeout: float = 2.0) -> health.Probe:
    result = health.probe(cand.path, timeout)
    if not result.serving and isinstance(health.connect_error(cand.path), PermissionError):
        raise permission_denied(cand.path)
    if not result.serving:
        raise SocketNotFoundError(
            result.error or f"socket not found: {cand.path}",
            f"check 'ls -l {cand.path}' and that containerd is running "
            "('warren containerd status'); restart containerd or warren",
        )
    return result
