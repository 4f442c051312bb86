"""The options `containerd run|start|config` share, checked here before anything starts.

A bad value is a usage error (exit 2) raised while parsing, so no supervisor, containerd or file
ever sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from warren_bundle.cli.context import Context
    from warren_bundle.runtime.config import ConfigOptions
    from warren_bundle.runtime.supervisor import ContainerdManager


def _metrics_addr(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if not value:
        return None
    from warren_bundle.metrics import format_addr, parse_addr

    try:
        return format_addr(*parse_addr(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _mirrors(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    from warren_bundle.errors import ConfigError
    from warren_bundle.runtime.config import parse_mirror

    for spec in value:
        try:
            parse_mirror(spec)
        except ConfigError as exc:
            raise click.BadParameter(exc.one_line()) from None
    return value


def _socket_group(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from warren_bundle.errors import ConfigError
    from warren_bundle.runtime.config import gid_of

    try:
        gid_of(value)
    except ConfigError as exc:
        raise click.BadParameter(exc.one_line()) from None
    return value


def _pod_cidr(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if not value:
        return None
    from warren_bundle.node.network import parse_pod_cidr

    try:
        return parse_pod_cidr(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def positive_seconds(
    _ctx: click.Context, _param: click.Parameter, value: float | None
) -> float | None:
    """A duration within runtime.settings' bounds (0, nan or 1e10 made the monitor spin or die)."""
    from warren_bundle.runtime.settings import duration_problem

    problem = None if value is None else duration_problem(value)
    if problem:
        raise click.BadParameter(problem)
    return value


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--socket-group",
            envvar="WARREN_SOCKET_GROUP",
            callback=_socket_group,
            help="Group that may use the socket (mode 0660); e.g. containerd.",
        ),
        click.option(
            "--registry-mirror",
            "registry_mirrors",
            multiple=True,
            metavar="REGISTRY=URL",
            callback=_mirrors,
            help="Pull REGISTRY through URL (repeatable), e.g. docker.io=https://mirror.local.",
        ),
        click.option(
            "--ready-timeout",
            type=float,
            default=30.0,
            show_default=True,
            envvar="WARREN_READY_TIMEOUT",
            callback=positive_seconds,
            help="Seconds to wait for containerd to answer health checks.",
        ),
        click.option(
            "--health-interval",
            type=float,
            default=5.0,
            show_default=True,
            envvar="WARREN_HEALTH_INTERVAL",
            callback=positive_seconds,
            help="Seconds between liveness checks of a running containerd.",
        ),
        click.option("--containerd-debug", is_flag=True, help="Run containerd with debug logging."),
        click.option(
            "--pod-cidr",
            envvar="WARREN_POD_CIDR",
            callback=_pod_cidr,
            metavar="CIDR",
            help="The default pod network's range (default 10.217.0.0/16); ignored when "
            "<config-dir>/cni/net.d holds your own network config.",
        ),
        click.option(
            "--metrics-addr",
            envvar="WARREN_METRICS_ADDR",
            callback=_metrics_addr,
            metavar="[HOST:]PORT",
            help="Serve Prometheus /metrics there (a bare port binds 127.0.0.1; "
            "0.0.0.0:PORT exposes it). Off by default.",
        ),
        click.option(
            "--force",
            is_flag=True,
            help="Change containerd's version even where containerd does not support the step "
            "(a downgrade across a minor line, a skipped minor): it may not read its data.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@dataclass(frozen=True)
class RunOptions:
    socket_group: str | None
    registry_mirrors: tuple[str, ...]
    ready_timeout: float
    health_interval: float
    containerd_debug: bool
    metrics_addr: str | None = None
    force: bool = False
    pod_cidr: str | None = None

    def args(self) -> list[str]:
        """The same options for the detached `containerd run` that `start` launches."""
        args = ["--ready-timeout", str(self.ready_timeout)]
        args += ["--health-interval", str(self.health_interval)]
        if self.socket_group:
            args += ["--socket-group", self.socket_group]
        for mirror in self.registry_mirrors:
            args += ["--registry-mirror", mirror]
        if self.containerd_debug:
            args.append("--containerd-debug")
        if self.metrics_addr:
            args += ["--metrics-addr", self.metrics_addr]
        if self.force:
            args.append("--force")
        if self.pod_cidr:
            args += ["--pod-cidr", self.pod_cidr]
        return args

    def config_options(self) -> ConfigOptions:
        from warren_bundle.runtime.config import ConfigOptions, parse_mirror

        mirrors: dict[str, list[str]] = {}
        for spec in self.registry_mirrors:
            host, endpoint = parse_mirror(spec)
            mirrors.setdefault(host, []).append(endpoint)
        return ConfigOptions(
            socket_group=self.socket_group,
            registry_mirrors=mirrors,
            debug=self.containerd_debug,
            pod_cidr=self.pod_cidr,
        )

    def manager(self, ctx: Context) -> ContainerdManager:
        from warren_bundle.runtime.settings import Settings
        from warren_bundle.runtime.supervisor import ContainerdManager

        return ContainerdManager(
            paths=ctx.paths,
            payload=ctx.payload,
            config_options=self.config_options(),
            settings=Settings(
                ready_timeout=self.ready_timeout, health_interval=self.health_interval
            ),
            metrics_addr=self.metrics_addr,
            force_version=self.force,
        )
