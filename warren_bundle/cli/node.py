"""Node commands: `warren kubelet-flags`, `warren crictl`."""

from __future__ import annotations

import click

from warren_bundle.cli.context import current
from warren_bundle.cli.output import emit_json


@click.command("kubelet-flags")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def kubelet_flags(as_json: bool) -> None:
    """What a kubelet needs to use this runtime: endpoints and cgroup driver."""
    from warren_bundle.node.kubelet import kubelet_settings
    from warren_bundle.payload.format import locate
    from warren_bundle.runtime.config import ConfigOptions, build_config
    from warren_bundle.store.versions import config_target

    ctx = current()
    version, directory = config_target(ctx.paths, locate(ctx.payload))
    config = build_config(ctx.paths, version, ConfigOptions(), directory)
    settings = kubelet_settings(ctx.paths, ctx.paths.socket, config, version)
    if as_json:
        emit_json(settings)
        return
    for flag in settings["flags"]:
        click.echo(flag)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--socket", "socket_option", help="Use this socket (overrides detection).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def crictl(socket_option: str | None, args: tuple[str, ...]) -> None:
    """Run the bundled crictl against the detected socket: warren crictl pods.

    Exits 1 with one line when this build carries no crictl (the Debian fallback)."""
    from warren_bundle.ctr import exec_crictl
    from warren_bundle.sockets import detect_for_client

    ctx = current()

    def socket() -> str:
        return detect_for_client(ctx.paths, socket_option).path

    exec_crictl(ctx.paths, ctx.payload, socket, list(args))
