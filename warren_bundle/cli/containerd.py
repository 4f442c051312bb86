"""`warren containerd run|start|stop|status|logs|config`.

Commands parse, ask the runtime (or this platform's backend) to act, and print; modules are
imported inside each command so that `warren version` loads none of them.
"""

from __future__ import annotations

import sys
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import click

from warren_bundle.cli.context import current
from warren_bundle.cli.options import given_options, positive_seconds, run_options
from warren_bundle.cli.output import emit_json, rows, say
from warren_bundle.runtime.options import RunOptions

if TYPE_CHECKING:
    from warren_bundle.runtime.backend import Backend
    from warren_bundle.runtime.supervisor import ContainerdManager


def backend() -> Backend:
    from warren_bundle.runtime.backend import backend_for

    ctx = current()
    return backend_for(
        ctx.paths, ctx.global_args(), lambda line: say(f"warren: {line}"), ctx.payload
    )


@click.group()
def containerd() -> None:
    """Run and manage the embedded containerd."""


@containerd.command()
@run_options
def run(**opts: Any) -> None:
    """Run containerd in the foreground, supervised, until SIGTERM or Ctrl-C."""
    from warren_bundle.runtime.control import require_can_start
    from warren_bundle.runtime.foreground import manager_for, run_foreground
    from warren_bundle.runtime.switching import replace_other_version

    require_can_start("containerd run", current().paths)
    options = RunOptions(**opts)
    replaced = replace_other_version(current().paths, current().payload, options.force)
    if replaced:
        say(f"warren: {replaced}")
    mgr = manager_for(options, current().paths, current().payload)
    mgr.add_event_listener(lambda line: say(f"warren: {line}"))
    if run_foreground(mgr, _announce_ready):
        say("warren: containerd stopped")


def _announce_ready(mgr: ContainerdManager) -> None:
    status = mgr.status()
    startup = status["timings"]["startup_s"] or 0
    say(
        f"containerd {status['server_version'] or status['containerd_version']} ready on "
        f"{mgr.socket_path} (pid {status['containerd_pid']}, {startup * 1000:.0f} ms)"
    )
    # stdout gone (a closed pipe) must not end a supervisor that still has work to do.
    with suppress(OSError):
        click.echo(mgr.socket_path)
        sys.stdout.flush()


@containerd.command()
@run_options
@click.option(
    "--images-timeout",
    type=float,
    default=600.0,
    show_default=True,
    callback=positive_seconds,
    help="Seconds to wait for the air-gap images in <data-dir>/images to be imported.",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Restart a running containerd with these options (containers keep running); the "
    "options not given stay as it runs with them.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def start(as_json: bool, images_timeout: float, restart: bool, **opts: Any) -> None:
    """Start a detached supervised containerd; return once it is ready and images are imported.

    While it runs, options that differ from those it runs with are an error (exit 10) that
    names them: --restart applies them."""
    given = given_options() - {"as_json", "images_timeout", "restart"}
    where = backend()
    report = where.start(RunOptions(**opts), images_timeout, given=given, restart=restart)
    if as_json:
        emit_json(report)
        return
    if where.kind == "lima":
        click.echo(
            f"containerd {report.get('server_version') or ''} running in Lima VM "
            f"'{report['instance']}': {report['socket']}".replace("  ", " ")
        )
        return
    failed = [
        r for r in (report.get("images") or {}).get("results") or [] if r.get("status") == "failed"
    ]
    if failed:
        say(f"warren: {len(failed)} image archive(s) failed to import; see 'warren images status'")
    untrusted = [
        r
        for r in (report.get("images") or {}).get("results") or []
        if r.get("status") == "untrusted"
    ]
    if untrusted:
        say(
            f"warren: {len(untrusted)} image archive(s) left alone: not trusted by "
            "<data-dir>/images/SHA256SUMS; see 'warren images status'"
        )
    if report.get("replaced"):
        say(f"warren: {report['replaced']}")
    if report.get("upgrade") and not report.get("already_running"):
        say(f"warren: {report['upgrade']}")
    verb = "already running" if report.get("already_running") else "started"
    click.echo(
        f"containerd {verb}: {report.get('socket')} (pid {report.get('containerd_pid')}, "
        f"supervisor pid {report.get('supervisor_pid')})"
    )


@containerd.command()
def stop() -> None:
    """Stop the supervised containerd gracefully (running containers keep running)."""
    click.echo(backend().stop())


@containerd.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """State, pids, uptime, restarts, socket, versions; exit 7 when not running."""
    where = backend()
    report = where.status()
    if as_json:
        emit_json(report)
    elif where.kind == "lima":
        from warren_bundle.cli.lima import print_status

        print_status(report)
    else:
        print_embedded_status(report)
    where.require_running(report)


def print_embedded_status(r: dict[str, Any]) -> None:
    uptime = r.get("uptime_s")
    answers = r.get("socket_answers")
    containerd_pid = r.get("containerd_pid")
    if containerd_pid and r.get("rootless"):
        containerd_pid = f"{containerd_pid} (RootlessKit)"
    if containerd_pid and r.get("adopted"):
        containerd_pid = f"{containerd_pid} (adopted)"
    table: list[tuple[str, Any]] = [
        (
            "state",
            f"{r['state']}: {r['state_detail']}" if r.get("state_detail") else r.get("state"),
        ),
        ("supervisor pid", supervisor_cell(r)),
        ("containerd pid", containerd_pid or "-"),
        ("uptime", f"{uptime:.0f}s" if uptime is not None else "-"),
        ("restarts", _restarts_cell(r)),
        ("socket", f"{r.get('socket')} ({'answers' if answers else 'no answer'})"),
        ("server", (r.get("server_version") or "-") if answers else "-"),
        ("bundled", f"containerd {r.get('containerd_version')}, runc {r.get('runc_version')}"),
        ("binaries", r.get("version_dir") or "-"),
        ("data dir", r.get("data_dir")),
        ("log", r.get("log")),
    ]
    if r.get("rootless"):
        published = ", ".join((r.get("run_options") or {}).get("publish") or []) or "none"
        table.append(("rootless", f"user namespace, slirp4netns; published: {published}"))
    if not answers and r.get("socket_error") and r.get("containerd_alive"):
        table.append(("socket error", r["socket_error"]))
    if r.get("metrics_addr") and r.get("supervisor_alive"):
        table.append(("metrics", f"http://{r['metrics_addr']}/metrics"))
    last = r.get("last_exit")
    if last:
        ago = f", {time.time() - last['at']:.0f}s ago" if last.get("at") else ""
        table.append(("last exit", f"pid {last.get('pid')} {last.get('reason')}{ago}"))
    if r.get("fatal_reason"):
        table.append(("fatal", r["fatal_reason"]))
    if r.get("upgrade"):
        table.append(("upgrade", r["upgrade"]))
    table += node_rows(r.get("node"))
    rows(table)


def _restarts_cell(r: dict[str, Any]) -> str:
    failed = r.get("failed_restarts") or 0
    return f"{r.get('restarts', 0)}" + (
        f" ({failed} failed before containerd ran)" if failed else ""
    )


def supervisor_cell(r: dict[str, Any]) -> str:
    """ "1234 (warren 0.1.1, static build)"; a supervisor still on another warren than this one
    (a new file installed, the service not restarted) says so, and what makes the new one run."""
    from warren_bundle import __version__

    pid, running = r.get("supervisor_pid"), r.get("warren_version")
    if not pid or not running or not r.get("supervisor_alive", True):
        return str(pid or "-")
    cell = f"{pid} (warren {running}, {r.get('warren_flavour') or '?'} build)"
    if running != __version__:
        cell += f"; this warren is {__version__}: restart the service to run it"
    return cell


def node_rows(node: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """What the start set up for pods: the CRI network, sandbox image, oom_score_adj."""
    if not node:
        return []
    network = node.get("conflist") or f"yours: {', '.join(node.get('user_confs') or [])}"
    plugins = node.get("cni_plugins") or []
    table: list[tuple[str, Any]] = [
        ("pod network", f"{network} ({node.get('pod_cidr')}; {len(plugins)} CNI plugins)"),
        ("sandbox image", node.get("sandbox_image") or "none carried"),
    ]
    if node.get("restrict_oom_score_adj"):
        why = node.get("oom_reason") or "set in config.d"
        table.append(("oom_score_adj", f"restrict_oom_score_adj = true: {why}"))
    table += [("node problem", line) for line in node.get("problems") or []]
    return table


@containerd.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Lines to show (more than the log holds: all of it).",
)
def logs(follow: bool, lines: int) -> None:
    """Show containerd's log (and the supervisor's events)."""
    from warren_bundle.errors import NotRunningError
    from warren_bundle.runtime import logs as logfile

    path = current().paths.log_file
    if not path.exists() and not follow:
        raise NotRunningError(f"no log at {path}", "start containerd first")
    for line in logfile.tail(path, lines):
        click.echo(line)
    if follow:
        try:
            for line in logfile.follow(path):
                click.echo(line)
        except KeyboardInterrupt:
            pass


@containerd.command("config")
@run_options
def show_config(**opts: Any) -> None:
    """Print the containerd config warren would write."""
    from warren_bundle.payload.format import locate
    from warren_bundle.runtime.config import build_config, render_redacted
    from warren_bundle.store.versions import config_target

    ctx = current()
    version, directory = config_target(ctx.paths, locate(ctx.payload))
    options = RunOptions(**opts).config_options()
    click.echo(render_redacted(build_config(ctx.paths, version, options, directory)), nl=False)
