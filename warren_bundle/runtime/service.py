"""Which service manager, if any, supervises this run dir's warren supervisor, and a restart
through it.

Under a service (install.sh's systemd unit or OpenRC script), a supervisor stopped from another
process is started again by the manager with the unit's options, so `warren upgrade` and
`warren rollback` must not stop it and start a detached one of their own: they restart the
service, and the manager runs the file the unit names.

- systemd: the supervisor is the MainPID of the unit its cgroup names
  (`systemctl show -p MainPID --value <unit>`); restart: `systemctl restart <unit>`.
- systemd's user manager (install.sh --rootless: ~/.config/systemd/user/warren-containerd.service):
  the cgroup is the unit's under `user@UID.service/`, and both go through `systemctl --user`, as
  the user (the manager is reached through $XDG_RUNTIME_DIR, which a rootless warren needs anyway).
- The manager's commands run with the caller's own environment (childenv): the frozen runtime's
  LD_LIBRARY_PATH names its bundled glibc, with which a newer host's systemctl does not load
  (trixie's: glibc 2.41 against the bundle's 2.36), so the unit was never found there.
- OpenRC: the supervisor's parent is `supervise-daemon <service> …`, started by `openrc-run`,
  which exported the script's path as RC_SERVICE; restart: `openrc-run <script> restart`
  (`rc-service <service> restart` when the path is not known).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from warren_bundle.errors import WarrenError
from warren_bundle.paths import Paths
from warren_bundle.runtime.childenv import child_env

SYSTEMD = "systemd"
SYSTEMD_USER = "systemd-user"
OPENRC = "openrc"
RESTART_EXTRA = 30.0
# Every service in a cgroup path: a user unit's path names the user manager's unit first
# (/user.slice/user-1000.slice/user@1000.service/app.slice/warren-containerd.service).
_UNIT = re.compile(r"/([^/]+\.service)(?=/|$)")
_USER_MANAGER = re.compile(r"^user@\d+\.service$")


@dataclass(frozen=True)
class Service:
    """A service manager's job that runs the supervisor."""

    manager: str  # SYSTEMD, SYSTEMD_USER or OPENRC
    name: str  # the unit (warren-containerd.service) or the OpenRC service name
    script: Path | None = None  # OpenRC: the init script openrc-run ran

    def restart_command(self) -> list[str]:
        if self.manager == SYSTEMD:
            return ["systemctl", "restart", self.name]
        if self.manager == SYSTEMD_USER:
            return ["systemctl", "--user", "restart", self.name]
        if self.script is not None:
            return ["openrc-run", str(self.script), "restart"]
        return ["rc-service", self.name, "restart"]

    def describe(self) -> str:
        if self.manager == SYSTEMD_USER:
            return f"systemd user service {self.name}"
        return f"{self.manager} service {self.name}"


def systemd_unit_of_cgroup(text: str) -> tuple[str, str] | None:
    """(SYSTEMD or SYSTEMD_USER, the service) a /proc/<pid>/cgroup's text places the process
    in: the innermost service of the path, a user manager's when it sits under user@UID.service."""
    for line in text.splitlines():
        units = _UNIT.findall(line.split(":", 2)[-1])
        if units:
            user = any(_USER_MANAGER.match(u) for u in units[:-1])
            return (SYSTEMD_USER if user else SYSTEMD), units[-1]
    return None


def systemd_main_pid(unit: str, manager: str = SYSTEMD) -> int | None:
    """`systemctl [--user] show -p MainPID --value <unit>`; None when systemctl cannot say."""
    if shutil.which("systemctl") is None:
        return None
    scope = ["--user"] if manager == SYSTEMD_USER else []
    try:
        done = subprocess.run(
            ["systemctl", *scope, "show", "-p", "MainPID", "--value", unit],
            capture_output=True, text=True, timeout=10, env=child_env(),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = done.stdout.strip()
    return int(value) if done.returncode == 0 and value.isdigit() and value != "0" else None


def _environ(proc: psutil.Process) -> dict[str, str]:
    try:
        return dict(proc.environ())
    except (psutil.Error, OSError):
        return {}


def detect_for(pid: int) -> Service | None:
    """The service manager's job that runs process `pid` as its main process, or None."""
    try:
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        cgroup = ""
    found = systemd_unit_of_cgroup(cgroup)
    if found is not None and systemd_main_pid(found[1], found[0]) == pid:
        return Service(*found)
    try:
        parent = psutil.Process(pid).parent()
        cmdline = parent.cmdline() if parent is not None else []
    except (psutil.Error, OSError):
        return None
    if parent is None or not cmdline or Path(cmdline[0]).name != "supervise-daemon":
        return None
    env = _environ(parent)
    name = env.get("RC_SVCNAME") or (cmdline[1] if len(cmdline) > 1 else "warren-containerd")
    script = env.get("RC_SERVICE")
    return Service(OPENRC, name, Path(script) if script else None)


def detect(paths: Paths) -> Service | None:
    """The service that supervises this run dir's running supervisor, or None (none runs, or
    it was started by hand: `containerd start`, `containerd run`)."""
    from warren_bundle.runtime import control

    sup = control.supervisor_process(paths)
    return detect_for(sup.pid) if sup is not None else None


def restart(service: Service, timeout: float) -> None:
    """Restart the service through its manager; WarrenError when the manager says it failed."""
    command = service.restart_command()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout + RESTART_EXTRA,
            stdin=subprocess.DEVNULL, env=child_env(),
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise WarrenError(
            f"'{' '.join(command)}' did not return within {timeout + RESTART_EXTRA:.0f}s",
            f"see the {service.describe()}'s status",
        ) from exc
    except OSError as exc:
        raise WarrenError(
            f"cannot run '{' '.join(command)}': {exc}", f"restart the {service.describe()}"
        ) from exc
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())[-300:]
        raise WarrenError(
            f"'{' '.join(command)}' failed (exit {done.returncode}): {said}",
            f"see the {service.describe()}'s status",
        )
