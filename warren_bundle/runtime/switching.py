"""Changing the version a running containerd runs from another process: replace a supervisor
that runs another payload than ours, and `warren rollback`.

Both stop this run dir's supervisor gracefully (its containerd gets SIGTERM; shims and
containers keep running), change what bin points at, and start a supervisor again. The rules
that refuse a change containerd does not support are the version store's (store/compat.py).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warren_bundle.errors import WarrenError
from warren_bundle.paths import Paths, previous_file, upgrade_dir
from warren_bundle.runtime.options import RunOptions
from warren_bundle.store import compat, versions

if TYPE_CHECKING:
    from warren_bundle.runtime import service
    from warren_bundle.store.upgrade import Plan

Log = Callable[[str], None]


def running_options(paths: Paths) -> RunOptions | None:
    """The options this run dir's running supervisor recorded (runtime/options.py); None when
    none runs, it is still starting, or it is an older warren that recorded none."""
    from warren_bundle.runtime import control, statefile

    sup = control.supervisor_process(paths)
    if sup is None:
        return None
    report = statefile.read(paths) or {}
    if report.get("supervisor_pid") != sup.pid:
        return None
    return RunOptions.from_dict(report.get("run_options"))


def replace_other_version(paths: Paths, payload_arg: str | None, force: bool) -> str | None:
    """When this run dir's supervisor runs another payload than ours, stop it gracefully so that
    ours starts instead.

    The change is checked first (a refused one stops nothing), and our payload is extracted
    into its own version dir while the old containerd still serves: the socket is down only for
    the stop and the start. Returns what was stopped, or None when there was nothing to replace.
    """
    from warren_bundle.payload.format import locate
    from warren_bundle.runtime import control, statefile
    from warren_bundle.store.extract import prepare

    sup = control.supervisor_process(paths)
    if sup is None:
        return None
    report = statefile.read(paths) or {}
    if report.get("supervisor_pid") != sup.pid:
        return None  # still starting: start_detached waits for it
    ours = locate(payload_arg)
    running_dir = report.get("version_dir")
    running = Path(running_dir).name if running_dir else report.get("payload_digest")
    if running == ours.digest or versions.pinned_name(paths) is not None:
        return None
    old = report.get("containerd_version") or report.get("server_version")
    warning = compat.check_upgrade(old, ours.manifest.containerd_version, force)
    prepare(paths, ours)
    done = control.stop(paths)
    return f"{warning}; {done}" if warning else done


@dataclass(frozen=True)
class RolledBack:
    """What `warren rollback` did: from which containerd to which, and what runs now."""

    previous: str | None  # the containerd version rolled back from
    target: str | None  # the containerd version rolled back to
    version_dir: Path
    restarted: bool  # False: containerd was not running, the next start runs the target
    containerd_pid: int | None = None
    containers_kept: int = 0


def rollback(
    paths: Paths, global_args: list[str], ready_timeout: float | None, log: Log
) -> RolledBack:
    """Go back to the previous version when containerd supports it: refuse first (nothing
    changed), then stop the supervisor, switch bin, pin the version, and start it again with
    the options it ran with (`ready_timeout`, when given, replaces the recorded one). Under a
    service manager, the restart goes through it (runtime/service.py): the manager would
    otherwise start its own supervisor beside a detached one of ours."""
    from warren_bundle.errors import UpgradeRefused
    from warren_bundle.runtime import control, service
    from warren_bundle.store.extract import extract_lock, switch_to
    from warren_bundle.store.stamp import read_stamp, read_stamp_in

    previous = versions.previous_name(paths)
    cur_stamp: dict[str, Any] = read_stamp(paths) or {}
    if previous is None:
        raise WarrenError(
            f"no previous version to roll back to under {paths.versions_dir}",
            "run 'warren versions' to see what is extracted",
        )
    prev_stamp = read_stamp_in(paths.version_dir(previous)) or {}
    current_version = versions.last_run(paths)[1] or cur_stamp.get("containerd_version")
    target = prev_stamp.get("containerd_version")
    problem = compat.rollback_problem(current_version, target, versions.highest_run(paths))
    if problem:
        raise UpgradeRefused(
            f"cannot roll back to containerd {target}: {problem}; nothing was changed",
            "keep this version, or restore a backup of the data dir taken before the upgrade",
        )
    control.require_can_start("rollback", paths)
    running = control.supervisor_process(paths) is not None
    options = running_options(paths) or RunOptions()
    if ready_timeout is not None:
        options = replace(options, ready_timeout=ready_timeout)
    svc = service.detect(paths) if running else None
    want_cri = svc is not None and _serving_cri(paths)
    if running and svc is None:
        log(control.stop(paths))
    with extract_lock(paths, 30.0):
        switch_to(paths, previous)
    versions.pin(paths, previous)
    if not running:
        return RolledBack(current_version, target, paths.version_dir(previous), restarted=False)
    if svc is not None:
        log(f"restarting the {svc.describe()}")
        pid = restart_onto(paths, Path(control.self_command()[0]), [], options, svc, want_cri)
        return RolledBack(
            current_version, target, paths.version_dir(previous), restarted=True,
            containerd_pid=pid, containers_kept=versions.running_containers(paths),
        )  # fmt: skip
    report = control.start_detached(
        global_args, options, paths, options.ready_timeout + control.START_EXTRA
    )
    return RolledBack(
        current_version,
        target,
        paths.version_dir(previous),
        restarted=True,
        containerd_pid=report.get("containerd_pid"),
        containers_kept=versions.running_containers(paths),
    )


# --- `warren upgrade`: the next release's file in place of this one, restarted ---------------


@dataclass(frozen=True)
class Upgraded:
    """What `warren upgrade` did."""

    plan: Plan
    restarted: bool  # False: nothing ran (the next start runs the new file), or nothing to do
    how: str = ""  # "openrc service warren-containerd", "a detached supervisor"
    containerd_pid: int | None = None
    containers_kept: int = 0


def _clean_env() -> dict[str, str]:
    """The environment for the new file: not told to use another payload than its own."""
    return {k: v for k, v in os.environ.items() if k != "WARREN_PAYLOAD"}


def _no_payload(global_args: list[str]) -> list[str]:
    args = list(global_args)
    if "--payload" in args:
        at = args.index("--payload")
        del args[at : at + 2]
    return args


def _file_version(exe: Path) -> str:
    """The warren version a (verified) file says it is: `<exe> version --json`."""
    import json

    done = subprocess.run(
        [str(exe), "version", "--json"], capture_output=True, text=True, timeout=120,
        env=_clean_env(), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        return str(json.loads(done.stdout)["warren"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WarrenError(
            f"{exe} (the new release) does not say its version (exit {done.returncode}: "
            f"{' '.join(done.stderr.split())[-200:]}); nothing was changed",
            "check that the release is built for this host",
        ) from exc


def installed_file() -> Path:
    """The one file this warren runs from: what `warren upgrade` replaces."""
    from warren_bundle import launcher
    from warren_bundle.errors import UsageError
    from warren_bundle.payload.format import is_frozen

    found = launcher.onefile() if is_frozen() else None
    if not found:
        raise UsageError(
            "warren upgrade replaces the one file it runs from, and this warren is not one "
            "(it runs from source)",
            "run it as the installed file (install.sh puts it in /usr/local/bin/warren)",
        )
    return Path(found).resolve()


def discard_upgrade(installed: Path) -> None:
    """Drop what stage_upgrade downloaded (after --check)."""
    from warren_bundle.store import upgrade

    upgrade.discard(installed)


def stage_upgrade(paths: Paths, installed: Path, from_: str | None, version: str | None) -> Plan:
    """Fetch and check the next release beside `installed` (the running warren file); its plan.
    Raises (exit 8 for a signature or digest, the compat rule's exit for a refused step) with
    nothing changed but the private download dir, which is removed then."""
    from warren_bundle import __version__
    from warren_bundle.payload import signing
    from warren_bundle.payload.format import flavour, read_embedded
    from warren_bundle.runtime import control, statefile
    from warren_bundle.store import upgrade

    current = read_embedded(installed)
    source = upgrade.release_source(from_, version)
    asset = upgrade.asset_name(current.manifest.arch, flavour())
    upgrade.discard(installed)
    try:
        new_file = upgrade.verified_download(
            source, asset, signing.embedded_key(installed), upgrade_dir(installed)
        )
        target = read_embedded(new_file)
        report = (statefile.read(paths) or {}) if control.supervisor_process(paths) else {}
        running = report.get("server_version") or report.get("containerd_version")
        now = upgrade.Side(
            __version__, current.manifest.containerd_version, current.manifest.runc_version,
            current.digest,
        )  # fmt: skip
        then = upgrade.Side(
            _file_version(new_file), target.manifest.containerd_version,
            target.manifest.runc_version, target.digest,
        )  # fmt: skip
        return upgrade.plan(installed, source, new_file, now, then, running, version)
    except BaseException:
        upgrade.discard(installed)
        raise


def _serving_cri(paths: Paths) -> bool:
    from warren_bundle.node import cri
    from warren_bundle.runtime.grpc_unix import GrpcError

    try:
        ready = cri.conditions(paths.socket, 2.0).get("RuntimeReady")
    except (GrpcError, OSError):
        return False
    return bool(ready and ready.status)


def _wait_ready(paths: Paths, old_sup: int | None, want_cri: bool, timeout: float) -> int:
    """Wait for a supervisor other than `old_sup` to report RUNNING with containerd serving (and
    its CRI when `want_cri`); its containerd pid. WarrenError with the cause at the deadline."""
    from warren_bundle.runtime import control, health, statefile
    from warren_bundle.runtime.states import State

    deadline = time.monotonic() + timeout
    cause = "no supervisor started"
    while time.monotonic() < deadline:
        sup = control.supervisor_process(paths)
        report = statefile.read(paths) or {}
        if sup is None or sup.pid == old_sup:
            cause = "no supervisor started"
        elif report.get("supervisor_pid") != sup.pid or report.get("state") != State.RUNNING:
            cause = f"containerd is {report.get('state') or 'not started'}"
            detail = report.get("fatal_reason") or (report.get("events") or [""])[-1]
            if detail:
                cause += f" ({detail})"
        elif not health.is_serving(paths.socket, 1.0):
            cause = "containerd does not answer on its socket"
        elif want_cri and not _serving_cri(paths):
            cause = "containerd's CRI does not serve"
        else:
            return int(report.get("containerd_pid") or 0)
        time.sleep(0.1)
    raise WarrenError(f"{cause} within {timeout:.0f}s", f"see {paths.log_file}")


def restart_onto(
    paths: Paths,
    exe: Path,
    global_args: list[str],
    options: RunOptions,
    svc: service.Service | None,
    want_cri: bool,
) -> int:
    """Restart this run dir's supervisor so that it runs `exe`: through the service manager that
    supervises it, else stop it and start `exe` detached with `options`. Waits for readiness
    (and CRI when `want_cri`) within the ready timeout; returns containerd's pid."""
    from warren_bundle.runtime import control, service

    sup = control.supervisor_process(paths)
    old = sup.pid if sup is not None else None
    budget = options.ready_timeout + control.START_EXTRA
    if svc is not None:
        service.restart(svc, budget)
    else:
        control.stop(paths)
        command = [str(exe), *_no_payload(global_args), "containerd", "start", *options.args()]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=budget + 30,
                env=_clean_env(), stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise WarrenError(
                f"'containerd start' of {exe}: {exc}", f"see {paths.log_file}"
            ) from exc
        if done.returncode != 0:
            said = " ".join(done.stderr.split()).removeprefix("warren: ")
            raise WarrenError(f"'containerd start' failed: {said[-300:]}", f"see {paths.log_file}")
    return _wait_ready(paths, old, want_cri, budget)


def upgrade_installed(
    paths: Paths, global_args: list[str], plan: Plan, ready_timeout: float | None, log: Log
) -> Upgraded:
    """Install the checked `plan`: the new file's `extract --prepare` while the old one serves,
    an atomic rename over the installed file (the old kept as <file>.previous), a restart
    (service-aware) and a wait for readiness and CRI. When the new one is not ready in time, the
    old file goes back, is restarted, and WarrenError says so."""
    from warren_bundle.runtime import control, service
    from warren_bundle.store import upgrade

    if plan.changes_nothing:
        upgrade.discard(plan.installed)
        return Upgraded(plan, restarted=False)
    control.require_root("upgrade", paths)
    options = running_options(paths) or RunOptions()
    if ready_timeout is not None:
        options = replace(options, ready_timeout=ready_timeout)
    running = control.supervisor_process(paths) is not None
    svc = service.detect(paths) if running else None
    want_cri = running and _serving_cri(paths)
    args = _no_payload(global_args)
    prepared = subprocess.run(
        [str(plan.new_file), *args, "extract", "--prepare"], capture_output=True, text=True,
        timeout=600, env=_clean_env(), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if prepared.returncode != 0:
        upgrade.discard(plan.installed)
        raise WarrenError(
            f"the new file's 'extract --prepare' failed: {' '.join(prepared.stderr.split())}"
            "; nothing was changed",
            f"see {paths.log_file}",
        )
    previous = previous_file(plan.installed)
    keep = previous.with_name(previous.name + ".tmp")
    keep.unlink(missing_ok=True)
    os.link(plan.installed, keep)
    os.replace(keep, previous)
    os.replace(plan.new_file, plan.installed)
    upgrade.discard(plan.installed)
    pinned = versions.pinned_name(paths)
    versions.pin(paths, None)  # an upgrade is a choice: the new file's version runs
    log(f"installed warren {plan.target.warren} as {plan.installed} (the old one: {previous})")
    if not running:
        return Upgraded(plan, restarted=False)
    how = svc.describe() if svc is not None else "a detached supervisor"
    try:
        pid = restart_onto(paths, plan.installed, args, options, svc, want_cri)
    except WarrenError as exc:
        log(f"the new warren is not ready ({exc.message}); going back to {plan.current.warren}")
        os.replace(previous, plan.installed)
        if pinned:
            versions.pin(paths, pinned)
        try:
            restart_onto(paths, plan.installed, args, options, svc, want_cri)
        except WarrenError as again:
            raise WarrenError(
                f"upgrade to warren {plan.target.warren} failed: {exc.message}; and the "
                f"previous file {plan.installed} did not start again: {again.message}",
                f"see {paths.log_file}",
            ) from again
        raise WarrenError(
            f"upgrade to warren {plan.target.warren} (containerd {plan.target.containerd}) "
            f"failed: {exc.message}; back on warren {plan.current.warren} (containerd "
            f"{plan.running or plan.current.containerd})",
            f"see {paths.log_file}",
        ) from exc
    return Upgraded(plan, True, how, pid, versions.running_containers(paths))
