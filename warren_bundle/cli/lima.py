"""CLI for the Lima VM: lima up|down|status|delete|yaml (macOS).

Commands only parse, call warren_bundle.lima and print; it is imported inside each command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from warren_bundle.cli.context import current
from warren_bundle.cli.options import positive_seconds
from warren_bundle.cli.output import emit_json, rows, say

if TYPE_CHECKING:
    from warren_bundle.lima.manager import LimaManager
    from warren_bundle.lima.template import LimaSettings


def _progress(line: str) -> None:
    say(f"warren: {line}")


def _data_dir() -> Path:
    return current().paths.data_dir


def _manager(settings: LimaSettings | None = None) -> LimaManager:
    from warren_bundle.lima.manager import LimaManager

    return LimaManager(_data_dir(), settings=settings, progress=_progress)


def _resource_options(func: Any) -> Any:
    options = [
        click.option(
            "--cpus",
            type=int,
            default=2,
            show_default=True,
            envvar="WARREN_LIMA_CPUS",
            help="Virtual CPUs.",
        ),
        click.option(
            "--memory",
            default="2GiB",
            show_default=True,
            envvar="WARREN_LIMA_MEMORY",
            help="VM memory, e.g. 4GiB.",
        ),
        click.option(
            "--disk",
            default="20GiB",
            show_default=True,
            envvar="WARREN_LIMA_DISK",
            help="VM disk, e.g. 40GiB.",
        ),
        click.option(
            "--mount",
            "mounts",
            multiple=True,
            metavar="DIR[:w]",
            help="Share a host directory with the VM (read-only; ':w' for writable). "
            "Repeatable; none by default.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings(
    cpus: int, memory: str, disk: str, mounts: tuple[str, ...], timeout: float | None = None
) -> LimaSettings:
    from warren_bundle.lima.template import LimaSettings

    extra = {} if timeout is None else {"start_timeout": timeout}
    return LimaSettings(cpus=cpus, memory=memory, disk=disk, mounts=tuple(mounts), **extra)


@click.group()
def lima() -> None:
    """containerd in a Lima VM named 'warren' (macOS), socket forwarded to the host."""


@lima.command()
@_resource_options
@click.option(
    "--timeout",
    type=float,
    callback=positive_seconds,
    default=900.0,
    show_default=True,
    envvar="WARREN_LIMA_TIMEOUT",
    help="Seconds to wait for containerd to answer (a first create downloads an image).",
)
@click.option(
    "--forward-grace",
    type=float,
    callback=positive_seconds,
    default=5.0,
    show_default=True,
    envvar="WARREN_LIMA_FORWARD_GRACE",
    help="Seconds a running VM's socket may take to answer before its forward counts as dead "
    "and the VM is restarted.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the VM's status as JSON.")
def up(
    cpus: int,
    memory: str,
    disk: str,
    mounts: tuple[str, ...],
    timeout: float,
    forward_grace: float,
    as_json: bool,
) -> None:
    """Create and start the VM as needed; return once containerd answers on the host socket.

    Resources apply when the VM is created; to change them, delete and recreate it.
    """
    from dataclasses import replace

    settings = _settings(cpus, memory, disk, mounts, timeout)
    mgr = _manager(replace(settings, forward_grace=forward_grace))
    mgr.start()
    if as_json:
        emit_json(mgr.status())
        return
    click.echo(mgr.socket_path)


@lima.command()
def down() -> None:
    """Stop the VM (gracefully; forcibly when that fails)."""
    _manager().stop()


@lima.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """The VM's state, resources and socket; exit 7 when containerd does not answer."""
    from warren_bundle.runtime.backend import LimaBackend

    where = LimaBackend(current().paths, _progress)
    report = where.status()
    if as_json:
        emit_json(report)
    else:
        print_status(report)
    where.require_running(report)


def print_status(r: dict[str, Any]) -> None:
    """The VM's report as rows (`lima status`, and `containerd status` on macOS)."""
    answers = "answers" if r.get("socket_answers") else "no answer"
    table: list[tuple[str, Any]] = [
        ("instance", r["instance"]),
        ("status", r["status"]),
        ("socket", f"{r['socket']} ({answers})"),
        ("server", r.get("server_version") or "-"),
        ("cpus", r.get("cpus")),
        ("memory", f"{r['memory_bytes'] / (1 << 30):.1f} GiB"),
        ("disk", f"{r['disk_bytes'] / (1 << 30):.1f} GiB"),
        ("restarts", r.get("restarts", 0)),
        ("dir", r.get("dir")),
        ("yaml", r.get("yaml")),
    ]
    if r.get("errors"):
        table.append(("errors", "; ".join(r["errors"])))
    rows(table)


@lima.command()
@click.option("--yes", is_flag=True, help="Confirm: the VM's disk, images and containers go too.")
def delete(yes: bool) -> None:
    """Stop and delete the VM (asks for --yes)."""
    if not yes:
        raise click.UsageError(
            "deleting the Lima VM 'warren' removes its disk, images and containers; "
            "pass --yes to confirm"
        )
    _manager().delete()


@lima.command("yaml")
@_resource_options
def show_yaml(cpus: int, memory: str, disk: str, mounts: tuple[str, ...]) -> None:
    """Print the Lima YAML warren creates the VM from."""
    from warren_bundle.lima.template import render_yaml

    settings = _settings(cpus, memory, disk, mounts)
    settings.validate()
    click.echo(render_yaml(settings), nl=False)
