"""CLI commands for the runtime: extract, containerd run|start|stop|status|logs|config, socket, ctr.

Commands only parse, call the modules and print; modules are imported inside each command so that
`warren version` loads none of them.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from warren_bundle.cli.main import Context
    from warren_bundle.runtime.supervisor import ContainerdManager


def _ctx() -> Context:
    return click.get_current_context().find_root().obj  # type: ignore[no-any-return]


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


# --- shared option sets -----------------------------------------------------------------------


def _check_metrics_addr(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if not value:
        return None
    from warren_bundle.metrics import format_addr, parse_addr

    try:
        return format_addr(*parse_addr(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _run_options(func: Any) -> Any:
    options = [
        click.option(
            "--socket-group",
            envvar="WARREN_SOCKET_GROUP",
            help="Group that may use the socket (mode 0660); e.g. containerd.",
        ),
        click.option(
            "--registry-mirror",
            "registry_mirrors",
            multiple=True,
            metavar="REGISTRY=URL",
            help="Pull REGISTRY through URL (repeatable), e.g. docker.io=https://mirror.local.",
        ),
        click.option(
            "--ready-timeout",
            type=float,
            default=30.0,
            show_default=True,
            envvar="WARREN_READY_TIMEOUT",
            help="Seconds to wait for containerd to answer health checks.",
        ),
        click.option(
            "--health-interval",
            type=float,
            default=5.0,
            show_default=True,
            envvar="WARREN_HEALTH_INTERVAL",
            help="Seconds between liveness checks of a running containerd.",
        ),
        click.option("--containerd-debug", is_flag=True, help="Run containerd with debug logging."),
        click.option(
            "--metrics-addr",
            envvar="WARREN_METRICS_ADDR",
            callback=_check_metrics_addr,
            metavar="[HOST:]PORT",
            help="Serve Prometheus /metrics there (a bare port binds 127.0.0.1; "
            "0.0.0.0:PORT exposes it). Off by default.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_args(
    socket_group: str | None,
    registry_mirrors: tuple[str, ...],
    ready_timeout: float,
    health_interval: float,
    containerd_debug: bool,
    metrics_addr: str | None = None,
) -> list[str]:
    args = ["--ready-timeout", str(ready_timeout), "--health-interval", str(health_interval)]
    if socket_group:
        args += ["--socket-group", socket_group]
    for mirror in registry_mirrors:
        args += ["--registry-mirror", mirror]
    if containerd_debug:
        args.append("--containerd-debug")
    if metrics_addr:
        args += ["--metrics-addr", metrics_addr]
    return args


def _global_args(ctx: Context) -> list[str]:
    args = [
        "--data-dir",
        str(ctx.paths.data_dir),
        "--run-dir",
        str(ctx.paths.run_dir),
        "--config-dir",
        str(ctx.paths.config_dir),
    ]
    if ctx.payload:
        args += ["--payload", ctx.payload]
    if ctx.debug:
        args.append("--debug")
    return args


def _manager(
    ctx: Context,
    socket_group: str | None,
    registry_mirrors: tuple[str, ...],
    ready_timeout: float,
    health_interval: float,
    containerd_debug: bool,
    metrics_addr: str | None = None,  # served by `run` itself (see _serve_metrics)
) -> ContainerdManager:
    from warren_bundle.runtime.config import ConfigOptions, parse_mirror
    from warren_bundle.runtime.supervisor import ContainerdManager, Settings

    mirrors: dict[str, list[str]] = {}
    for spec in registry_mirrors:
        host, endpoint = parse_mirror(spec)
        mirrors.setdefault(host, []).append(endpoint)
    return ContainerdManager(
        paths=ctx.paths,
        payload=ctx.payload,
        config_options=ConfigOptions(
            socket_group=socket_group, registry_mirrors=mirrors, debug=containerd_debug
        ),
        settings=Settings(ready_timeout=ready_timeout, health_interval=health_interval),
    )


# --- extract ----------------------------------------------------------------------------------


@click.command()
@click.option("--verify", is_flag=True, help="Re-hash installed binaries and repair any damage.")
@click.option("--force", is_flag=True, help="Rewrite the binaries even if the cache is current.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def extract(verify: bool, force: bool, as_json: bool) -> None:
    """Extract containerd, ctr, the shim and runc into <data-dir>/bin (cached)."""
    from warren_bundle.extract import ensure_extracted
    from warren_bundle.payload.format import locate

    ctx = _ctx()
    payload = locate(ctx.payload)
    result = ensure_extracted(ctx.paths, payload, verify=verify, force=force)
    if as_json:
        _emit_json(
            {
                "bin_dir": str(result.bin_dir),
                "digest": result.digest,
                "cached": result.cached,
                "written": result.written,
                "repaired": result.repaired,
                "duration_s": result.duration_s,
            }
        )
        return
    if result.repaired:
        click.echo(f"repaired {', '.join(result.repaired)} (content did not match the manifest)")
    if result.cached:
        checked = "verified" if verify else "up to date"
        click.echo(f"{result.bin_dir}: {checked} (payload sha256:{result.digest[:12]})")
    else:
        click.echo(
            f"{result.bin_dir}: extracted {', '.join(result.written)} "
            f"in {result.duration_s * 1000:.0f} ms (payload sha256:{result.digest[:12]})"
        )


# --- containerd -------------------------------------------------------------------------------


@click.group()
def containerd() -> None:
    """Run and manage the embedded containerd."""


@containerd.command()
@_run_options
def run(**opts: Any) -> None:
    """Run containerd in the foreground, supervised, until SIGTERM or Ctrl-C."""
    import signal
    import threading

    from warren_bundle.errors import WarrenError
    from warren_bundle.runtime.control import require_root
    from warren_bundle.runtime.supervisor import ContainerdExited, State, add_event_listener

    require_root("containerd run")
    ctx = _ctx()
    mgr = _manager(ctx, **opts)
    if opts.get("metrics_addr"):
        # Bound before containerd starts: a busy port fails fast, with nothing started.
        _serve_metrics(ctx, mgr, opts["metrics_addr"])
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop_requested.set()
        mgr.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    add_event_listener(lambda line: click.echo(f"warren: {line}", err=True))
    try:
        mgr.start()
    except ContainerdExited:
        if stop_requested.is_set():
            mgr.stop()
            return
        raise
    except WarrenError:
        mgr.stop()
        raise
    status = mgr.status()
    timings = status["timings"]
    click.echo(
        f"containerd {status['server_version'] or status['containerd_version']} ready on "
        f"{mgr.socket_path} (pid {status['containerd_pid']}, "
        f"{(timings['startup_s'] or 0) * 1000:.0f} ms)",
        err=True,
    )
    click.echo(mgr.socket_path)
    sys.stdout.flush()
    _after_ready(ctx, mgr)
    while not stop_requested.wait(0.5):
        if mgr.state == State.FATAL:
            break
    if mgr.state == State.FATAL:
        mgr.stop()
        raise WarrenError(
            f"containerd keeps failing: {mgr.fatal_reason}",
            f"see {ctx.paths.log_file}; the service manager will restart warren",
        )
    mgr.stop()
    click.echo("warren: containerd stopped", err=True)


def _serve_metrics(ctx: Context, mgr: ContainerdManager, address: str) -> None:
    from warren_bundle.metrics import MetricsServer, parse_addr

    host, port = parse_addr(address)
    server = MetricsServer(host, port, mgr.status, ctx.paths)
    mgr.metrics_addr = server.address
    click.echo(f"warren: metrics on {server.url}", err=True)


def _after_ready(ctx: Context, mgr: ContainerdManager) -> None:
    """Hooks that need a ready containerd (air-gap image import, metrics)."""
    for hook in _READY_HOOKS:
        hook(ctx, mgr)


_READY_HOOKS: list[Any] = []


def add_ready_hook(hook: Any) -> None:
    _READY_HOOKS.append(hook)


@containerd.command()
@_run_options
@click.option(
    "--images-timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to wait for the air-gap images in <data-dir>/images to be imported.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def start(as_json: bool, images_timeout: float, **opts: Any) -> None:
    """Start a detached supervised containerd; return once it is ready and images are imported."""
    from warren_bundle.hostinfo import host_os
    from warren_bundle.runtime.control import require_root, start_detached

    if host_os() == "darwin":
        from warren_bundle.cli.lima import containerd_start

        return containerd_start(as_json, opts["ready_timeout"])
    require_root("containerd start")
    ctx = _ctx()
    report = start_detached(
        _global_args(ctx), _run_args(**opts), ctx.paths, opts["ready_timeout"] + 15
    )
    if not report.get("already_running"):
        report["images"] = _wait_for_images(ctx, images_timeout)
    if as_json:
        _emit_json(report)
        return
    verb = "already running" if report.get("already_running") else "started"
    click.echo(
        f"containerd {verb}: {report.get('socket')} (pid {report.get('containerd_pid')}, "
        f"supervisor pid {report.get('supervisor_pid')})"
    )


def _wait_for_images(ctx: Context, timeout: float) -> dict[str, Any] | None:
    """Return once the supervisor imported <data-dir>/images, so the next command finds them."""
    from warren_bundle.images import find_archives, wait_for_report

    if not find_archives(ctx.paths.images_dir):
        return None
    report = wait_for_report(ctx.paths, timeout)
    failed = [r for r in report.get("results") or [] if r.get("status") == "failed"]
    if failed:
        click.echo(
            f"warren: {len(failed)} image archive(s) failed to import; see 'warren images status'",
            err=True,
        )
    return report


@containerd.command()
def stop() -> None:
    """Stop the supervised containerd gracefully (running containers keep running)."""
    from warren_bundle.hostinfo import host_os
    from warren_bundle.runtime.control import stop as stop_supervisor

    if host_os() == "darwin":
        from warren_bundle.cli.lima import containerd_stop

        return containerd_stop()
    click.echo(stop_supervisor(_ctx().paths))


@containerd.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """State, pids, uptime, restarts, socket, versions; exit 7 when not running."""
    from warren_bundle.hostinfo import host_os
    from warren_bundle.runtime.control import require_running
    from warren_bundle.runtime.control import status as read_status

    if host_os() == "darwin":
        from warren_bundle.cli.lima import containerd_status

        return containerd_status(as_json)
    report = read_status(_ctx().paths)
    if as_json:
        _emit_json(report)
    else:
        _print_status(report)
    require_running(report)


def _print_status(r: dict[str, Any]) -> None:
    import time

    uptime = r.get("uptime_s")
    answers = r.get("socket_answers")
    containerd_pid = r.get("containerd_pid")
    if containerd_pid and r.get("adopted"):
        containerd_pid = f"{containerd_pid} (adopted)"
    rows = [
        ("state", r.get("state")),
        ("supervisor pid", r.get("supervisor_pid") or "-"),
        ("containerd pid", containerd_pid or "-"),
        ("uptime", f"{uptime:.0f}s" if uptime is not None else "-"),
        ("restarts", r.get("restarts", 0)),
        ("socket", f"{r.get('socket')} ({'answers' if answers else 'no answer'})"),
        ("server", (r.get("server_version") or "-") if answers else "-"),
        ("bundled", f"containerd {r.get('containerd_version')}, runc {r.get('runc_version')}"),
        ("data dir", r.get("data_dir")),
        ("log", r.get("log")),
    ]
    if not answers and r.get("socket_error") and r.get("containerd_alive"):
        rows.append(("socket error", r["socket_error"]))
    if r.get("metrics_addr") and r.get("supervisor_alive"):
        rows.append(("metrics", f"http://{r['metrics_addr']}/metrics"))
    last = r.get("last_exit")
    if last:
        ago = f", {time.time() - last['at']:.0f}s ago" if last.get("at") else ""
        rows.append(("last exit", f"pid {last.get('pid')} {last.get('reason')}{ago}"))
    if r.get("fatal_reason"):
        rows.append(("fatal", r["fatal_reason"]))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@containerd.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", type=int, default=50, show_default=True, help="Lines to show.")
def logs(follow: bool, lines: int) -> None:
    """Show containerd's log (and the supervisor's events)."""
    from warren_bundle.runtime import logs as logfile

    path = _ctx().paths.log_file
    if not path.exists() and not follow:
        from warren_bundle.errors import NotRunningError

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
@_run_options
def show_config(**opts: Any) -> None:
    """Print the containerd config warren would write."""
    from warren_bundle.payload.format import locate
    from warren_bundle.runtime.config import ConfigOptions, build_config, parse_mirror, render

    ctx = _ctx()
    mirrors: dict[str, list[str]] = {}
    for spec in opts["registry_mirrors"]:
        host, endpoint = parse_mirror(spec)
        mirrors.setdefault(host, []).append(endpoint)
    version = locate(ctx.payload).manifest.containerd_version
    options = ConfigOptions(
        socket_group=opts["socket_group"], registry_mirrors=mirrors, debug=opts["containerd_debug"]
    )
    click.echo(render(build_config(ctx.paths, version, options)), nl=False)


# --- clients ----------------------------------------------------------------------------------


@click.command()
@click.option("--socket", "socket_option", help="Use this socket (overrides detection).")
@click.option("--validate", is_flag=True, help="Check it answers gRPC; print the server version.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def socket(socket_option: str | None, validate: bool, as_json: bool) -> None:
    """Print the containerd socket clients should use (explicit > embedded > system > Lima)."""
    from warren_bundle.hostinfo import host_os
    from warren_bundle.sockets import detect, explicit_socket
    from warren_bundle.sockets import validate as validate_socket

    if host_os() == "darwin" and explicit_socket(socket_option) is None:
        from warren_bundle.cli.lima import socket as lima_socket

        return lima_socket(validate, as_json)
    cand = detect(_ctx().paths, socket_option)
    probe = validate_socket(cand) if validate else None
    if as_json:
        _emit_json({"kind": cand.kind, "path": cand.path, "probe": probe and probe.to_dict()})
        return
    click.echo(cand.path)
    if probe is not None:
        click.echo(f"{cand.kind} containerd {probe.version} answers", err=True)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--socket", "socket_option", help="Use this socket (overrides detection).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctr(socket_option: str | None, args: tuple[str, ...]) -> None:
    """Run the bundled ctr against the detected socket: warren ctr images ls."""
    from warren_bundle.extract import ensure_extracted
    from warren_bundle.payload.format import locate
    from warren_bundle.runtime.childenv import child_env
    from warren_bundle.sockets import detect

    ctx = _ctx()
    binary = ctx.paths.binary("ctr")
    payload = locate(ctx.payload)
    from warren_bundle.extract import is_current

    if not is_current(ctx.paths, payload):
        ensure_extracted(ctx.paths, payload)
    from warren_bundle.ctrargs import with_runc_defaults

    argv = [str(binary)]
    if not any(a in ("-a", "--address") or a.startswith("--address=") for a in args):
        argv += ["--address", detect(ctx.paths, socket_option).path]
    argv += with_runc_defaults(list(args), str(ctx.paths.binary("runc")), str(ctx.paths.runc_root))
    sys.stdout.flush()
    os.execve(binary, argv, child_env(prepend_path=ctx.paths.bin_dir))


def register(cli: click.Group) -> None:
    cli.add_command(extract)
    cli.add_command(containerd)
    cli.add_command(socket)
    cli.add_command(ctr)
