"""Changing the version a running containerd runs from another process: replace a supervisor
that runs another payload than ours, and `warren rollback`.

Both stop this run dir's supervisor gracefully (its containerd gets SIGTERM; shims and
containers keep running), change what bin points at, and start a supervisor again. The rules
that refuse a change containerd does not support are the version store's (store/compat.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from warren_bundle.paths import Paths
from warren_bundle.runtime.options import RunOptions
from warren_bundle.store import compat, versions

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
    the options it ran with (`ready_timeout`, when given, replaces the recorded one)."""
    from warren_bundle.errors import UpgradeRefused, WarrenError
    from warren_bundle.runtime import control
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
    control.require_root("rollback")
    running = control.supervisor_process(paths) is not None
    options = running_options(paths) or RunOptions()
    if ready_timeout is not None:
        options = replace(options, ready_timeout=ready_timeout)
    if running:
        log(control.stop(paths))
    with extract_lock(paths, 30.0):
        switch_to(paths, previous)
    versions.pin(paths, previous)
    if not running:
        return RolledBack(current_version, target, paths.version_dir(previous), restarted=False)
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
