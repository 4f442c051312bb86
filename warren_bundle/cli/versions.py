"""`warren versions [--json] [--prune] [--unpin]` and `warren rollback`."""

from __future__ import annotations

from typing import Any

import click

from warren_bundle.cli.context import current
from warren_bundle.cli.options import positive_seconds
from warren_bundle.cli.output import emit_json, say


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--prune",
    is_flag=True,
    help="Remove versions that are not current or previous and that no running shim uses.",
)
@click.option("--unpin", is_flag=True, help="Drop the pin 'warren rollback' set.")
def versions(as_json: bool, prune: bool, unpin: bool) -> None:
    """Extracted versions: which is current, which running shims use, the disk each takes."""
    from warren_bundle import versions as v

    paths = current().paths
    removed = []
    if unpin:
        v.pin(paths, None)
        say("warren: unpinned; the next 'warren containerd start' runs that warren's version")
    if prune:
        removed = v.prune(paths)
    found = v.list_versions(paths)
    if as_json:
        emit_json(
            {
                "versions": [x.to_dict() for x in found],
                "removed": [x.to_dict() for x in removed],
                "total_bytes": sum(x.size_bytes for x in found),
            }
        )
        return
    for x in removed:
        click.echo(f"removed {x.containerd_version} {x.path} ({v.human_size(x.size_bytes)})")
    if not found:
        click.echo(f"no versions extracted under {paths.versions_dir}")
        return
    for x in found:
        marks = [
            m
            for m, on in (("current", x.current), ("previous", x.previous), ("pinned", x.pinned))
            if on
        ]
        if x.used_by:
            marks.append(f"in use by pid {', '.join(map(str, x.used_by))}")
        click.echo(
            f"{'*' if x.current else ' '} containerd {x.containerd_version or '?'} "
            f"runc {x.runc_version or '?'}  {x.name[:12]}  {v.human_size(x.size_bytes)}"
            + (f"  ({'; '.join(marks)})" if marks else "")
        )


@click.command()
@click.option(
    "--ready-timeout",
    type=float,
    callback=positive_seconds,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the rolled-back containerd to answer.",
)
def rollback(ready_timeout: float) -> None:
    """Go back to the previous version, when containerd supports it; restart containerd onto it."""
    from warren_bundle import versions as v
    from warren_bundle.errors import UpgradeRefused, WarrenError
    from warren_bundle.extract import extract_lock, read_stamp, read_stamp_in, switch_to
    from warren_bundle.runtime import control

    ctx = current()
    paths = ctx.paths
    previous = v.previous_name(paths)
    cur_stamp: dict[str, Any] = read_stamp(paths) or {}
    if previous is None:
        raise WarrenError(
            f"no previous version to roll back to under {paths.versions_dir}",
            "run 'warren versions' to see what is extracted",
        )
    prev_stamp = read_stamp_in(paths.version_dir(previous)) or {}
    current_version = v.last_run(paths)[1] or cur_stamp.get("containerd_version")
    target = prev_stamp.get("containerd_version")
    problem = v.rollback_problem(current_version, target, v.highest_run(paths))
    if problem:
        raise UpgradeRefused(
            f"cannot roll back to containerd {target}: {problem}; nothing was changed",
            "keep this version, or restore a backup of the data dir taken before the upgrade",
        )
    control.require_root("rollback")
    running = control.supervisor_process(paths) is not None
    if running:
        say(f"warren: {control.stop(paths)}")
    with extract_lock(paths, 30.0):
        switch_to(paths, previous)
    v.pin(paths, previous)
    if not running:
        click.echo(
            f"rolled back to containerd {target} ({paths.version_dir(previous)}); containerd is "
            "not running: the next 'warren containerd start' runs it"
        )
        return
    report = control.start_detached(
        ctx.global_args(), ["--ready-timeout", str(ready_timeout)], paths, ready_timeout + 15
    )
    kept = v.running_containers(paths)
    click.echo(
        f"rolled back containerd {current_version} → {target}; "
        f"{kept} container{'' if kept == 1 else 's'} kept running "
        f"(pid {report.get('containerd_pid')})"
    )
