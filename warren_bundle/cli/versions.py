"""`warren versions [--json] [--prune] [--unpin]` and `warren rollback`."""

from __future__ import annotations

import click

from warren_bundle.cli.context import current
from warren_bundle.cli.options import positive_seconds
from warren_bundle.cli.output import emit_json, say


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--prune",
    is_flag=True,
    help="Remove versions that are not current or previous and that no running shim uses, and "
    "the launcher's runtimes that no process runs from.",
)
@click.option("--unpin", is_flag=True, help="Drop the pin 'warren rollback' set.")
def versions(as_json: bool, prune: bool, unpin: bool) -> None:
    """Extracted versions: which is current, which running shims use, the disk each takes."""
    from warren_bundle.store import runtimes
    from warren_bundle.store import versions as v

    paths = current().paths
    removed = []
    removed_runtimes: list[str] = []
    if unpin:
        v.pin(paths, None)
        say("warren: unpinned; the next 'warren containerd start' runs that warren's version")
    if prune:
        removed = v.prune(paths)
        removed_runtimes = [str(p) for p in runtimes.prune()]
    found = v.list_versions(paths)
    kept_runtimes = runtimes.listing()
    if as_json:
        emit_json(
            {
                "versions": [x.to_dict() for x in found],
                "removed": [x.to_dict() for x in removed],
                "total_bytes": sum(x.size_bytes for x in found),
                "runtimes": [rt.to_dict() for rt in kept_runtimes],
                "removed_runtimes": removed_runtimes,
            }
        )
        return
    for x in removed:
        click.echo(f"removed {x.containerd_version} {x.path} ({v.human_size(x.size_bytes)})")
    for gone in removed_runtimes:
        click.echo(f"removed runtime {gone}")
    for rt in kept_runtimes:
        marks = [m for m, on in (("this warren's", rt.own), ("in use", rt.in_use)) if on]
        click.echo(
            f"  runtime {rt.digest[:12]}  {v.human_size(rt.size)}  {rt.path}"
            + (f"  ({'; '.join(marks)})" if marks else "")
        )
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
    default=None,
    help="Seconds to wait for the rolled-back containerd to answer (default: the one it was "
    "started with). Every other option it was started with is kept.",
)
def rollback(ready_timeout: float | None) -> None:
    """Go back to the previous version, when containerd supports it; restart containerd onto it."""
    from warren_bundle.cli.containerd import backend

    done = backend().rollback(ready_timeout)
    if not done.restarted:
        click.echo(
            f"rolled back to containerd {done.target} ({done.version_dir}); containerd is "
            "not running: the next 'warren containerd start' runs it"
        )
        return
    kept = done.containers_kept
    click.echo(
        f"rolled back containerd {done.previous} → {done.target}; "
        f"{kept} container{'' if kept == 1 else 's'} kept running "
        f"(pid {done.containerd_pid})"
    )


@click.command()
@click.option(
    "--from",
    "from_",
    metavar="URL|DIR",
    help="The release to upgrade to: a folder as 'make release' publishes it (SHA256SUMS, "
    "SHA256SUMS.sig, the warren files), or its http(s) URL. Default: the project's releases.",
)
@click.option(
    "--version",
    "version",
    metavar="V",
    help="That release (a tag such as v0.2.0); with --from, refuse unless the release is V.",
)
@click.option("--check", is_flag=True, help="Say what would change, and change nothing.")
@click.option(
    "--ready-timeout",
    type=float,
    callback=positive_seconds,
    default=None,
    help="Seconds to wait for the new containerd (and its CRI) before going back "
    "(default: the running one's).",
)
def upgrade(
    from_: str | None, version: str | None, check: bool, ready_timeout: float | None
) -> None:
    """Install the next signed release over this file and restart onto it; back by itself
    when the new containerd is not ready in time."""
    from warren_bundle.runtime import switching

    if from_ is not None and not from_.strip():
        raise click.UsageError("--from is empty; give a release folder or its http(s) URL")
    ctx = current()
    installed = switching.installed_file()
    plan = switching.stage_upgrade(ctx.paths, installed, from_, version)
    if check:
        switching.discard_upgrade(installed)
        said = "already up to date" if plan.changes_nothing else "would upgrade"
        click.echo(f"{said} (--check: nothing was changed)")
        for line in plan.lines():
            click.echo(f"  {line}")
        return
    done = switching.upgrade_installed(
        ctx.paths, ctx.global_args(), plan, ready_timeout, lambda line: say(f"warren: {line}")
    )
    if plan.changes_nothing:
        click.echo(f"already on warren {plan.current.warren} with this payload; nothing changed")
        return
    for line in plan.lines()[:3]:
        click.echo(f"upgraded {line}")
    if not done.restarted:
        click.echo("containerd is not running: the next 'warren containerd start' runs the new one")
        return
    kept = done.containers_kept
    click.echo(
        f"restarted through {done.how}: containerd pid {done.containerd_pid}, "
        f"{kept} container{'' if kept == 1 else 's'} kept running"
    )
