"""One interface for "the containerd of this platform": embedded on Linux, a Lima VM on macOS.

The CLI asks `backend_for()` once and calls start/stop/status/socket on what it gets; no command
branches on the platform itself.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from warren_bundle.paths import Paths, check_socket_path
from warren_bundle.runtime.health import Probe
from warren_bundle.runtime.options import RunOptions

if TYPE_CHECKING:
    from warren_bundle.runtime.switching import RolledBack


@dataclass(frozen=True)
class SocketAnswer:
    kind: str  # explicit, embedded, system, lima
    path: str
    probe: Probe | None


class Backend(Protocol):
    kind: str  # "embedded" or "lima"

    def start(
        self,
        options: RunOptions,
        images_timeout: float,
        *,
        given: Collection[str] = (),
        restart: bool = False,
    ) -> dict[str, Any]: ...
    def stop(self) -> str: ...
    def status(self) -> dict[str, Any]: ...
    def require_running(self, report: dict[str, Any]) -> None: ...
    def socket(self, option: str | None, validate: bool) -> SocketAnswer: ...
    def rollback(self, ready_timeout: float | None) -> RolledBack: ...


class EmbeddedBackend:
    """The supervised containerd on this host, acted on from another process (control.py)."""

    kind = "embedded"

    def __init__(
        self,
        paths: Paths,
        global_args: list[str],
        progress: Callable[[str], None] = lambda line: None,
        payload: str | None = None,
    ) -> None:
        self.paths = paths
        self.global_args = global_args  # the root options, for a detached `warren` to share
        self.progress = progress
        self.payload = payload  # --payload, typed: never parsed back out of global_args

    def start(
        self,
        options: RunOptions,
        images_timeout: float,
        *,
        given: Collection[str] = (),
        restart: bool = False,
    ) -> dict[str, Any]:
        """Start the detached supervisor with `options`, or find it running. `given`: the
        options the user gave; a running supervisor's other settings are kept by a restart
        (`restart`, or onto another version) and compared otherwise (SettingsDiffer)."""
        from warren_bundle.runtime import control
        from warren_bundle.store.checks import check_safe

        check_socket_path(self.paths.socket)
        control.require_can_start("containerd start", self.paths)
        check_safe(self.paths)  # before the log is opened for the detached supervisor
        from warren_bundle.runtime import rundir
        from warren_bundle.runtime.config import check_config_dirs

        rundir.check(self.paths)
        check_config_dirs(self.paths)
        timeout = options.ready_timeout + control.START_EXTRA
        recorded: RunOptions | None = None
        replaced: str | None = None
        if control.supervisor_process(self.paths) is not None:
            # Only then: the version rules and the upgrade machinery are no fresh start's cost.
            from warren_bundle.runtime.switching import replace_other_version, running_options

            recorded = running_options(self.paths)
            replaced = replace_other_version(self.paths, self.payload, options.force)
            if not replaced and restart and control.supervisor_process(self.paths) is not None:
                replaced = control.stop(self.paths)
        if replaced:
            options = options.over(recorded, given)
        elif recorded is not None:
            _refuse_other_settings(options, recorded, given)
        report = dict(
            control.start_detached(self.global_args, options, self.paths, timeout, self.payload)
        )
        if report.get("already_running"):  # a supervisor that was still starting when we looked
            now = RunOptions.from_dict(report.get("run_options"))
            if now is not None:
                _refuse_other_settings(options, now, given)
        if replaced:
            report["replaced"] = replaced
        if not report.get("already_running"):
            report["images"] = control.wait_for_images(self.paths, images_timeout)
        return report

    def stop(self) -> str:
        from warren_bundle.runtime import control

        return control.stop(self.paths)

    def status(self) -> dict[str, Any]:
        from warren_bundle.runtime import control, rundir

        rundir.check(self.paths)  # before its state or pidfiles are believed
        return dict(control.status(self.paths))

    def require_running(self, report: dict[str, Any]) -> None:
        from warren_bundle.runtime import control

        control.require_running(report)

    def socket(self, option: str | None, validate: bool) -> SocketAnswer:
        from warren_bundle.sockets import detect
        from warren_bundle.sockets import validate as validate_socket

        cand = detect(self.paths, option)
        return SocketAnswer(cand.kind, cand.path, validate_socket(cand) if validate else None)

    def rollback(self, ready_timeout: float | None) -> RolledBack:
        from warren_bundle.runtime.switching import rollback

        return rollback(self.paths, self.global_args, ready_timeout, self.progress)


class LimaBackend:
    """containerd in the Lima VM 'warren' (macOS)."""

    kind = "lima"

    def __init__(self, paths: Paths, progress: Callable[[str], None]) -> None:
        self.paths = paths
        self.progress = progress

    def _manager(self, start_timeout: float | None = None) -> Any:
        from warren_bundle.lima.manager import LimaManager
        from warren_bundle.lima.template import LimaSettings

        settings = (
            LimaSettings() if start_timeout is None else LimaSettings(start_timeout=start_timeout)
        )
        return LimaManager(self.paths.data_dir, settings=settings, progress=self.progress)

    def start(
        self,
        options: RunOptions,
        images_timeout: float,
        *,
        given: Collection[str] = (),
        restart: bool = False,
    ) -> dict[str, Any]:
        # Lima's own deadline (VM boot included) unless the user gave one.
        mgr = self._manager(options.ready_timeout if "ready_timeout" in given else None)
        mgr.start()
        return dict(mgr.status())

    def stop(self) -> str:
        self._manager().stop()
        return "Lima VM 'warren' stopped (containerd with it)"

    def status(self) -> dict[str, Any]:
        return dict(self._manager().status())

    def require_running(self, report: dict[str, Any]) -> None:
        from warren_bundle.errors import NotRunningError

        if report.get("socket_answers"):
            return
        if report["status"] == "Running":
            raise NotRunningError(
                f"Lima VM '{report['instance']}' is running but containerd does not answer on "
                f"{report['socket']}",
                "run 'warren lima up' (it restarts a VM whose socket forward died)",
            )
        raise NotRunningError(
            f"Lima VM '{report['instance']}' is {report['status']}",
            "start it with 'warren lima up'",
        )

    def socket(self, option: str | None, validate: bool) -> SocketAnswer:
        from warren_bundle.errors import SocketNotFoundError
        from warren_bundle.runtime import health
        from warren_bundle.sockets import explicit_socket

        explicit = explicit_socket(option)
        if explicit is not None:
            return EmbeddedBackend(self.paths, []).socket(option, validate)
        path = str(self._manager().socket_path)
        probe = health.probe(path, 2.0, want_version=validate)
        if not probe.serving:
            raise SocketNotFoundError(
                f"socket not found: Lima VM 'warren' does not answer on {path} ({probe.error})",
                "start it with 'warren lima up' (or 'warren containerd start'), or pass --socket",
            )
        return SocketAnswer("lima", path, probe if validate else None)

    def rollback(self, ready_timeout: float | None) -> RolledBack:
        from warren_bundle.errors import WarrenError

        raise WarrenError(
            "warren rollback acts on the embedded containerd's versions; the Lima VM has its own",
            "run 'warren rollback' inside the VM ('limactl shell warren')",
        )


def _refuse_other_settings(
    options: RunOptions, running: RunOptions, given: Collection[str]
) -> None:
    from warren_bundle.errors import SettingsDiffer

    differ = options.differences(running, given)
    if differ:
        raise SettingsDiffer(
            "containerd is already running with other settings: "
            + "; ".join(differ)
            + "; nothing was changed",
            "apply them with 'warren containerd start --restart' and the same options "
            "(containers keep running), or 'warren containerd stop' then 'warren containerd "
            "start' with them",
        )


def backend_for(
    paths: Paths,
    global_args: list[str],
    progress: Callable[[str], None],
    payload: str | None = None,
) -> Backend:
    from warren_bundle.hostinfo import host_os

    if host_os() == "darwin":
        return LimaBackend(paths, progress)
    return EmbeddedBackend(paths, global_args, progress, payload)
