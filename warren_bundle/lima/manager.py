"""macOS: containerd inside a Lima VM named `warren`, its socket forwarded to the host.

There is no containerd binary to run on macOS, so warren drives `limactl`: it writes the VM's YAML,
creates and starts the instance, and waits until `$LIMA_HOME/warren/sock/containerd.sock` answers a
gRPC health check. Every state `limactl list --json` can report has one path to a working socket:

    absent   → create, start            Stopped → start
    Running  → reuse once the socket answers; a dead forward (the host slept) → stop, start
    Broken   → stop -f, start           half-created dir → an error saying how to remove it

What the manager last saw is written to `<data-dir>/lima/status.json` for `status` and metrics:
instance, status (Running|Stopped|Broken|absent), running (the VM runs AND its socket answers),
restarts (VM restarts warren performed: dead forwards, broken recoveries), memory_bytes, socket,
updated_at, and details (socket_answers, server_version, cpus, disk_bytes, errors, …).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from warren_bundle.errors import (
    ExitCode,
    LimaError,
    PermissionDeniedError,
    ReadinessTimeout,
    WarrenError,
)
from warren_bundle.fsutil import atomic_write, write_json
from warren_bundle.paths import DEFAULT_DATA_DIR, LIMA_INSTANCE, MAX_SOCKET_PATH, lima_home
from warren_bundle.runtime import health
from warren_bundle.runtime.childenv import child_env

ENV_LIMACTL = "LIMACTL"
GUEST_SOCKET = "/run/containerd/containerd.sock"
HOST_SOCKET_TEMPLATE = "{{.Dir}}/sock/containerd.sock"
UBUNTU_IMAGES = (
    (
        "https://cloud-images.ubuntu.com/releases/22.04/release/"
        "ubuntu-22.04-server-cloudimg-amd64.img",
        "x86_64",
    ),
    (
        "https://cloud-images.ubuntu.com/releases/22.04/release/"
        "ubuntu-22.04-server-cloudimg-arm64.img",
        "aarch64",
    ),
)

RUNNING, STOPPED, BROKEN, ABSENT = "Running", "Stopped", "Broken", "absent"
INSTALL_HINT = "Lima is not installed. Install with: brew install lima"

# Provisioning runs as root on every boot, after Lima has installed and started containerd.
# The host end of the socket forward is an SSH session of the Lima user, so the socket must carry
# that user's group, or the host gets "permission denied". containerd.service is Type=notify, so
# ExecStartPost runs once the socket exists.
PROVISION_SCRIPT = """\
#!/bin/bash
set -eu -o pipefail
group="$(id -gn "${LIMA_CIDATA_USER}")"
sock=/run/containerd/containerd.sock
dropin=/etc/systemd/system/containerd.service.d/10-warren-socket-group.conf
mkdir -p "$(dirname "$dropin")"
want="$(mktemp)"
printf '[Service]\\nExecStartPost=/usr/bin/chgrp %s %s\\nExecStartPost=/usr/bin/chmod 0660 %s\\n' \\
  "$group" "$sock" "$sock" >"$want"
if cmp -s "$want" "$dropin"; then
  rm -f "$want"
  exit 0
fi
install -m 0644 "$want" "$dropin"
rm -f "$want"
systemctl daemon-reload
# Once, when the drop-in is new or changed; later starts apply it themselves.
systemctl restart containerd
"""

# Probes run as the Lima user over SSH: ready means that user can connect, as the forward will.
PROBE_SCRIPT = """\
#!/bin/bash
set -eu -o pipefail
sock=/run/containerd/containerd.sock
reachable() {
  python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$sock"
}
for _ in $(seq 150); do
  if reachable 2>/dev/null; then
    exit 0
  fi
  sleep 2
done
echo "containerd's socket $sock is not reachable by user $(id -un)" >&2
exit 1
"""

PROBE_HINT = (
    "containerd's socket is not reachable by the Lima user: check "
    "'limactl shell warren sudo systemctl status containerd' and "
    "'limactl shell warren ls -l /run/containerd/containerd.sock'"
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class LimaOptionError(WarrenError):
    """A VM resource or mount option that Lima would reject: nothing is written or started."""

    exit_code = ExitCode.USAGE


def parse_size(text: str) -> int:
    """Bytes in a Lima size ("2GiB", "512MiB", "20G"); Lima reads every unit as binary."""
    match = _SIZE.match(text)
    if not match or (match.group(3) and match.group(3).lower() not in ("b", "ib")):
        raise LimaOptionError(
            f"invalid size {text!r}", "use a number with a unit, e.g. 2GiB, 512MiB, 20GiB"
        )
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * _UNITS[unit])


@dataclass(frozen=True)
class LimaSettings:
    cpus: int = 2
    memory: str = "2GiB"
    disk: str = "20GiB"
    # Host directories shared with the VM; none unless asked. "DIR" is read-only, "DIR:w" writable.
    mounts: tuple[str, ...] = ()
    # A first create downloads an Ubuntu image: minutes, not seconds.
    start_timeout: float = 900.0
    # How long a Running VM's socket may take to answer before its forward counts as dead.
    forward_grace: float = 5.0
    stop_timeout: float = 300.0
    poll_interval: float = 0.25
    progress_interval: float = 10.0
    health_timeout: float = 1.0

    def validate(self) -> None:
        if self.cpus < 1:
            raise LimaOptionError(f"invalid CPU count {self.cpus}", "use 1 or more")
        if parse_size(self.memory) < 512 << 20:
            raise LimaOptionError(f"memory {self.memory!r} is too small", "use at least 512MiB")
        if parse_size(self.disk) < 2 << 30:
            raise LimaOptionError(f"disk {self.disk!r} is too small", "use at least 2GiB")
        for spec in self.mounts:
            _mount_entry(spec)
        if self.start_timeout <= 0:
            raise LimaOptionError("the start timeout must be positive", "e.g. --timeout 900")
        if self.forward_grace < 0:
            raise LimaOptionError("the forward grace must not be negative", "e.g. 5")


def _mount_entry(spec: str) -> dict[str, Any]:
    location, writable = spec, False
    if spec.endswith(":w"):
        location, writable = spec[:-2], True
    path = Path(location).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if not path.is_dir():
        raise LimaOptionError(
            f"cannot mount {location!r}: not a directory", "pass an existing host directory"
        )
    return {"location": str(path.resolve()), "writable": writable}


def lima_config(settings: LimaSettings) -> dict[str, Any]:
    """The Lima instance definition, as the dict PyYAML writes."""
    return {
        "images": [{"location": url, "arch": arch} for url, arch in UBUNTU_IMAGES],
        "cpus": settings.cpus,
        "memory": settings.memory,
        "disk": settings.disk,
        "mounts": [_mount_entry(spec) for spec in settings.mounts],
        "containerd": {"system": True, "user": False},
        "ssh": {"loadDotSSHPubKeys": False},
        "provision": [{"mode": "system", "script": PROVISION_SCRIPT}],
        "probes": [
            {
                "mode": "readiness",
                "description": "containerd reachable by the Lima user",
                "script": PROBE_SCRIPT,
                "hint": PROBE_HINT,
            }
        ],
        "portForwards": [{"guestSocket": GUEST_SOCKET, "hostSocket": HOST_SOCKET_TEMPLATE}],
    }


def render_yaml(settings: LimaSettings) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
        # Scripts as literal blocks, so the file reads like the shell it runs.
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, represent_str)
    body = yaml.dump(lima_config(settings), Dumper=Dumper, sort_keys=False, width=100)
    header = (
        "# Lima instance for warren: Ubuntu 22.04 running containerd, its socket forwarded to\n"
        "# {{.Dir}}/sock/containerd.sock on the host. Written by warren; options of\n"
        "# 'warren lima up' change it, and apply when the VM is created.\n"
    )
    return header + body


def find_limactl(explicit: str | os.PathLike[str] | None = None) -> str:
    """limactl from the argument, LIMACTL or PATH; LimaError (exit 9) when there is none."""
    if explicit:
        where, candidate = "the limactl argument", os.fspath(explicit)
    elif os.environ.get(ENV_LIMACTL):
        where, candidate = f"{ENV_LIMACTL}", os.environ[ENV_LIMACTL]
    else:
        found = shutil.which("limactl")
        if found is None:
            raise LimaError(INSTALL_HINT, "no limactl on PATH (check: which limactl)")
        return found
    if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
        raise LimaError(INSTALL_HINT, f"{where} names {candidate}, which is not an executable file")
    return candidate


def find_instance(list_json: str, instance: str) -> dict[str, Any] | None:
    """`instance`'s entry in `limactl list --json` output (one JSON object per line), or None."""
    for line in list_json.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("name") == instance:
            entry.setdefault("status", "Unknown")
            return entry
    return None


def _stderr_progress(line: str) -> None:
    print(f"warren: {line}", file=sys.stderr, flush=True)


_LOGRUS_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def _last_line(text: str) -> str:
    """limactl's last line of output; just the message of a logrus `level=… msg="…"` line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "no output"
    match = _LOGRUS_MSG.search(lines[-1])
    return match.group(1).replace('\\"', '"') if match else lines[-1]


class LimaManager:
    """The `warren` Lima VM: create, start, stop, delete, status, and its forwarded socket."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = DEFAULT_DATA_DIR,
        instance: str = LIMA_INSTANCE,
        limactl: str | os.PathLike[str] | None = None,
        *,
        settings: LimaSettings | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir or DEFAULT_DATA_DIR)
        self.instance = instance
        self.settings = settings or LimaSettings()
        self.settings.validate()
        self._limactl_arg = limactl
        self._limactl: str | None = None
        self._progress = progress or _stderr_progress
        previous = self.read_status_file()
        self.restarts = int(previous.get("restarts", 0)) if previous else 0

    # --- where things are ---------------------------------------------------------------------

    @property
    def lima_dir(self) -> Path:
        return self.data_dir / "lima"

    @property
    def yaml_path(self) -> Path:
        return self.lima_dir / f"{self.instance}.yaml"

    @property
    def status_file(self) -> Path:
        return self.lima_dir / "status.json"

    @property
    def log_file(self) -> Path:
        return self.lima_dir / "limactl.log"

    @property
    def instance_dir(self) -> Path:
        return lima_home() / self.instance

    @property
    def socket_path(self) -> str:
        return str(self.instance_dir / "sock" / "containerd.sock")

    def get_socket_path(self) -> str:
        return self.socket_path

    @property
    def limactl(self) -> str:
        if self._limactl is None:
            self._limactl = find_limactl(self._limactl_arg)
        return self._limactl

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Return once containerd in the VM answers on the host socket (idempotent)."""
        self._check_socket_path()
        self.limactl  # noqa: B018 - fail with the install hint before touching anything
        with self._acting():
            self._start_locked()

    def _start_locked(self) -> None:
        inst = self._inspect()
        status = inst["status"] if inst else ABSENT
        began = time.monotonic()
        if inst is None:
            self._refuse_half_created()
            self._create()
            self._progress("the first start downloads an Ubuntu 22.04 image: this can take minutes")
            self._boot(began, "created")
        elif status == RUNNING:
            if self._wait_serving(self.settings.forward_grace):
                self._progress(f"Lima VM '{self.instance}' already running: {self.socket_path}")
            else:
                self._progress(
                    f"Lima VM '{self.instance}' is running but {self.socket_path} does not answer "
                    "(the socket forward dies when the host sleeps): restarting the VM"
                )
                self._stop_vm(status)
                self.restarts += 1
                self._boot(began, "restarted")
        elif status == STOPPED:
            self._boot(began, "started")
        else:
            detail = "; ".join(str(e) for e in inst.get("errors") or []) or "no detail"
            self._progress(
                f"Lima VM '{self.instance}' is {status} ({detail}): forcing it off, then "
                "starting it again"
            )
            self._limactl_run(["stop", "-f", self.instance], self.settings.stop_timeout)
            self.restarts += 1
            self._boot(began, "recovered")
        self._observe()

    def stop(self) -> None:
        """Stop the VM gracefully, forcibly if that fails; a stopped or absent VM is left as is."""
        if self._surely_absent():
            return
        with self._acting():
            inst = self._inspect()
            if inst is None:
                self._progress(f"Lima VM '{self.instance}' does not exist")
            elif inst["status"] == STOPPED:
                self._progress(f"Lima VM '{self.instance}' is already stopped")
            else:
                self._stop_vm(inst["status"])
            self._observe()

    def delete(self) -> None:
        """Stop and delete the VM (its disk and containers go with it)."""
        if self._surely_absent():
            return
        with self._acting():
            inst = self._inspect()
            if inst is None:
                self._refuse_half_created()
                self._progress(f"Lima VM '{self.instance}' does not exist")
                self._observe()
                return
            if inst["status"] != STOPPED:
                self._stop_vm(inst["status"])
            self._limactl_run(["delete", self.instance], self.settings.stop_timeout)
            self._progress(f"Lima VM '{self.instance}' deleted")
            self._observe()

    def _surely_absent(self) -> bool:
        """No instance dir under LIMA_HOME: nothing to stop, and nothing should be written.

        (An uninstaller stopping a VM that never existed must not leave a lock or log behind.)
        """
        self.limactl  # noqa: B018 - Lima not installed is still exit 9, as for every command
        if os.path.lexists(self.instance_dir):
            return False
        self._progress(f"Lima VM '{self.instance}' does not exist")
        return True

    def status(self) -> dict[str, Any]:
        """What the VM is and whether its socket answers; also written to the status file."""
        return self._observe()

    def write_yaml(self) -> Path:
        self._ensure_lima_dir()
        text = render_yaml(self.settings)
        atomic_write(self.yaml_path, text)
        return self.yaml_path

    def read_status_file(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # --- steps --------------------------------------------------------------------------------

    def _create(self) -> None:
        path = self.write_yaml()
        self._progress(f"creating Lima VM '{self.instance}' from {path}")
        self._limactl_run(
            ["create", f"--name={self.instance}", "--tty=false", str(path)], timeout=None
        )

    def _boot(self, began: float, verb: str) -> None:
        """`limactl start`, then wait until containerd answers on the host socket."""
        deadline = began + self.settings.start_timeout
        # limactl's own deadline matches ours, so neither gives up while the other still waits.
        limit = max(1, math.ceil(self.settings.start_timeout))
        argv = ["start", "--tty=false", f"--timeout={limit}s", self.instance]
        self._progress(f"starting Lima VM '{self.instance}' (waiting up to {limit}s)")
        with self._log() as log:
            log.write(f"$ limactl {' '.join(argv)}\n")
            log.flush()
            offset = log.tell()
            proc = subprocess.Popen(
                [self.limactl, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=child_env(),
            )
        try:
            self._wait_booted(proc, began, deadline, offset)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with self._log() as log:
                log.write(f"# limactl start exited {proc.returncode}\n")
        took = time.monotonic() - began
        self._progress(
            f"Lima VM '{self.instance}' {verb}: containerd answers on {self.socket_path} "
            f"({took:.1f}s)"
        )

    def _wait_booted(
        self, proc: subprocess.Popen[bytes], began: float, deadline: float, offset: int
    ) -> None:
        next_report = time.monotonic() + self.settings.progress_interval
        while True:
            rc = proc.poll()
            if rc is not None and rc != 0:
                detail = _last_line(self._log_since(offset))
                raise LimaError(
                    f"limactl start {self.instance} failed (exit {rc}): {detail}",
                    self._vm_remedy(),
                )
            if rc == 0 and health.is_serving(self.socket_path, self.settings.health_timeout):
                return
            now = time.monotonic()
            if now >= deadline:
                waiting = "limactl start" if rc is None else f"containerd on {self.socket_path}"
                raise ReadinessTimeout(
                    f"timed out after {now - began:.0f}s waiting for {waiting} "
                    f"(Lima VM '{self.instance}')",
                    self._vm_remedy(),
                )
            if now >= next_report:
                phase = "VM booting" if rc is None else f"waiting for {self.socket_path}"
                self._progress(
                    f"still starting Lima VM '{self.instance}': {phase} "
                    f"({now - began:.0f}s of {self.settings.start_timeout:.0f}s)"
                )
                next_report = now + self.settings.progress_interval
            time.sleep(self.settings.poll_interval)

    def _stop_vm(self, status: str) -> None:
        if status == RUNNING:
            graceful = self._limactl_run(
                ["stop", self.instance], self.settings.stop_timeout, check=False
            )
            if graceful.returncode == 0:
                self._progress(f"Lima VM '{self.instance}' stopped")
                return
            self._progress(
                f"graceful stop of Lima VM '{self.instance}' failed "
                f"({_last_line(graceful.stdout)}): forcing it off"
            )
        self._limactl_run(["stop", "-f", self.instance], self.settings.stop_timeout)
        self._progress(f"Lima VM '{self.instance}' forced off")

    def _wait_serving(self, grace: float) -> bool:
        deadline = time.monotonic() + grace
        while True:
            if health.is_serving(self.socket_path, self.settings.health_timeout):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.settings.poll_interval)

    # --- observing ----------------------------------------------------------------------------

    def _inspect(self) -> dict[str, Any] | None:
        """This instance's entry of `limactl list --json` (one JSON object per line), or None."""
        out = self._limactl_run(["list", "--json"], timeout=60, merge=False).stdout
        return find_instance(out, self.instance)

    def _observe(self) -> dict[str, Any]:
        inst = self._inspect()
        report = self._report(inst)
        if report["status"] == RUNNING:
            probe = health.probe(self.socket_path, self.settings.health_timeout)
            report.update(
                socket_answers=probe.serving, server_version=probe.version, socket_error=probe.error
            )
        # `running` is what the metrics report: a VM whose containerd is usable from the host.
        report["running"] = report["socket_answers"]
        self._write_status(report)
        return report

    def _report(self, inst: dict[str, Any] | None) -> dict[str, Any]:
        status = inst["status"] if inst else ABSENT
        memory = inst.get("memory") if inst else None
        return {
            "instance": self.instance,
            "status": status,
            "running": False,
            "socket_answers": False,
            "server_version": None,
            "socket_error": None,
            "restarts": self.restarts,
            "memory_bytes": memory if isinstance(memory, int) else parse_size(self.settings.memory),
            "cpus": (inst or {}).get("cpus") or self.settings.cpus,
            "disk_bytes": (inst or {}).get("disk") or parse_size(self.settings.disk),
            "socket": self.socket_path,
            "dir": str(self.instance_dir),
            "errors": [str(e) for e in (inst or {}).get("errors") or []],
            "yaml": str(self.yaml_path),
            "limactl": self.limactl,
            "updated_at": time.time(),
        }

    def _write_status(self, report: dict[str, Any]) -> None:
        self._ensure_lima_dir()
        write_json(self.status_file, report)

    def _refuse_half_created(self) -> None:
        if self.instance_dir.exists() and not (self.instance_dir / "lima.yaml").exists():
            raise LimaError(
                f"Lima instance '{self.instance}' is half-created: {self.instance_dir} has no "
                "lima.yaml (an earlier create was interrupted)",
                f"remove it with: rm -rf {self.instance_dir}  then run 'warren lima up' again",
            )

    def _check_socket_path(self) -> None:
        size = len(os.fsencode(self.socket_path))
        if size > MAX_SOCKET_PATH:
            raise LimaError(
                f"the Lima socket path {self.socket_path} is {size} bytes; unix sockets allow "
                f"{MAX_SOCKET_PATH}",
                "set LIMA_HOME to a shorter directory",
            )

    def _vm_remedy(self) -> str:
        return (
            f"check 'limactl list' and the VM's logs in {self.instance_dir}/ha.stderr.log and "
            f"serial*.log (limactl output: {self.log_file}); if it stays broken, delete and "
            "recreate it: warren lima delete --yes && warren lima up"
        )

    # --- plumbing -----------------------------------------------------------------------------

    def _limactl_run(
        self,
        args: list[str],
        timeout: float | None,
        check: bool = True,
        merge: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run limactl; its output goes to the log, and a failure names limactl's last line."""
        argv = [self.limactl, *args]
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                text=True,
                timeout=timeout,
                env=child_env(),
            )
        except OSError as exc:
            raise LimaError(INSTALL_HINT, f"cannot run {self.limactl}: {exc.strerror}") from exc
        except subprocess.TimeoutExpired as exc:
            raise LimaError(
                f"limactl {' '.join(args)} did not finish in {timeout:.0f}s", self._vm_remedy()
            ) from exc
        with self._log() as log:
            log.write(f"$ limactl {' '.join(args)}  # exit {done.returncode}\n")
            if merge or done.returncode != 0:
                log.write(done.stdout)
            if done.stderr:
                log.write(done.stderr)
        if check and done.returncode != 0:
            detail = _last_line((done.stderr or "") + "\n" + done.stdout)
            raise LimaError(
                f"limactl {' '.join(args)} failed (exit {done.returncode}): {detail}",
                self._vm_remedy(),
            )
        return done

    def _ensure_lima_dir(self) -> None:
        try:
            self.lima_dir.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            raise PermissionDeniedError(
                f"permission denied: cannot create {self.lima_dir}",
                "pass a data dir you own: --data-dir ~/.warren (or set WARREN_DATA_DIR)",
            ) from exc

    @contextmanager
    def _log(self) -> Iterator[IO[str]]:
        self._ensure_lima_dir()
        with open(self.log_file, "a") as log:
            yield log

    def _log_since(self, offset: int) -> str:
        with suppress(OSError), open(self.log_file) as log:
            log.seek(offset)
            return log.read()
        return ""

    @contextmanager
    def _acting(self) -> Iterator[None]:
        """Hold the lock; when a step fails, record what it left (Broken, Stopped, a restart)."""
        with self._lock():
            try:
                yield
            except WarrenError:
                with suppress(WarrenError, OSError):
                    self._observe()
                raise

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One warren at a time acts on the VM; a second waits and says why."""
        self._ensure_lima_dir()
        fd = os.open(self.lima_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._progress(f"another warren is acting on Lima VM '{self.instance}': waiting")
                fcntl.flock(fd, fcntl.LOCK_EX)
            # The one before us may have counted restarts; count on from there.
            previous = self.read_status_file() or {}
            self.restarts = max(self.restarts, int(previous.get("restarts", 0)))
            yield
        finally:
            os.close(fd)


def ensure_lima(
    data_dir: str | os.PathLike[str] | None = DEFAULT_DATA_DIR, **kwargs: Any
) -> LimaManager:
    """A started LimaManager whose `socket_path` answers gRPC (macOS's ensure_containerd)."""
    mgr = LimaManager(data_dir, **kwargs)
    mgr.start()
    return mgr
