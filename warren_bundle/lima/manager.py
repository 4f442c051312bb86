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

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from subprocess import Popen
from typing import Any

from warren_bundle.errors import LimaError, PermissionDeniedError, ReadinessTimeout, WarrenError
from warren_bundle.fsutil import atomic_write, locked, read_json, write_json
from warren_bundle.lima.limactl import (
    ABSENT,
    RUNNING,
    STOPPED,
    Limactl,
    find_limactl,
    last_line,
    stderr_progress,
)
from warren_bundle.lima.template import LimaSettings, parse_size, render_yaml
from warren_bundle.paths import DEFAULT_DATA_DIR, LIMA_INSTANCE, MAX_SOCKET_PATH, lima_home
from warren_bundle.runtime import health


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
        self._progress = progress or stderr_progress
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

    @property
    def _ctl(self) -> Limactl:
        """limactl, logged to `log_file`; its failures say how to recover the VM."""
        return Limactl(
            self.limactl, self.log_file, prepare=self._ensure_lima_dir, remedy=self._vm_remedy()
        )

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
            self._ctl.run(["stop", "-f", self.instance], self.settings.stop_timeout)
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
            self._ctl.run(["delete", self.instance], self.settings.stop_timeout)
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
        return read_json(self.status_file)

    # --- steps --------------------------------------------------------------------------------

    def _create(self) -> None:
        path = self.write_yaml()
        self._progress(f"creating Lima VM '{self.instance}' from {path}")
        self._ctl.run(["create", f"--name={self.instance}", "--tty=false", str(path)], timeout=None)

    def _boot(self, began: float, verb: str) -> None:
        """`limactl start`, then wait until containerd answers on the host socket."""
        deadline = began + self.settings.start_timeout
        # limactl's own deadline matches ours, so neither gives up while the other still waits.
        limit = max(1, math.ceil(self.settings.start_timeout))
        argv = ["start", "--tty=false", f"--timeout={limit}s", self.instance]
        self._progress(f"starting Lima VM '{self.instance}' (waiting up to {limit}s)")
        ctl = self._ctl
        proc, offset = ctl.spawn(argv)
        try:
            self._wait_booted(proc, began, deadline, lambda: ctl.output_since(offset))
        finally:
            ctl.reap(proc, "start")
        took = time.monotonic() - began
        self._progress(
            f"Lima VM '{self.instance}' {verb}: containerd answers on {self.socket_path} "
            f"({took:.1f}s)"
        )

    def _wait_booted(
        self, proc: Popen[bytes], began: float, deadline: float, output: Callable[[], str]
    ) -> None:
        """Until containerd answers; `output` is what `limactl start` has written so far."""
        next_report = time.monotonic() + self.settings.progress_interval
        while True:
            rc = proc.poll()
            if rc is not None and rc != 0:
                detail = last_line(output())
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
            graceful = self._ctl.run(
                ["stop", self.instance], self.settings.stop_timeout, check=False
            )
            if graceful.returncode == 0:
                self._progress(f"Lima VM '{self.instance}' stopped")
                return
            self._progress(
                f"graceful stop of Lima VM '{self.instance}' failed "
                f"({last_line(graceful.stdout)}): forcing it off"
            )
        self._ctl.run(["stop", "-f", self.instance], self.settings.stop_timeout)
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
        """This instance's entry of `limactl list --json`, or None."""
        return self._ctl.list_instance(self.instance, 60)

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

    def _ensure_lima_dir(self) -> None:
        try:
            self.lima_dir.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            raise PermissionDeniedError(
                f"permission denied: cannot create {self.lima_dir}",
                "pass a data dir you own: --data-dir ~/.warren (or set WARREN_DATA_DIR)",
            ) from exc

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
        lock = self.lima_dir / ".lock"
        waiting = f"another warren is acting on Lima VM '{self.instance}': waiting"
        with locked(lock, None, mode=0o644, on_wait=lambda: self._progress(waiting)):
            # The one before us may have counted restarts; count on from there.
            previous = self.read_status_file() or {}
            self.restarts = max(self.restarts, int(previous.get("restarts", 0)))
            yield


def ensure_lima(
    data_dir: str | os.PathLike[str] | None = DEFAULT_DATA_DIR, **kwargs: Any
) -> LimaManager:
    """A started LimaManager whose `socket_path` answers gRPC (macOS's ensure_containerd)."""
    mgr = LimaManager(data_dir, **kwargs)
    mgr.start()
    return mgr
