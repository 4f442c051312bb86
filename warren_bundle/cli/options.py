"""The options `containerd run|start|config` share, checked here before anything starts.

A bad value is a usage error (exit 2) raised while parsing, so no supervisor, containerd or file
ever sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from warren_bundle.runtime.settings import DEFAULT_HEALTH_INTERVAL, DEFAULT_READY_TIMEOUT


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


def _registries(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """registries.yaml (the one given, else <config-dir>/registries.yaml) is read and checked
    here, so a bad file is exit 2 before anything starts. Only a path given travels on (never
    the file's content); the default is found again by whichever process writes the config."""
    from warren_bundle import registries
    from warren_bundle.cli.context import current
    from warren_bundle.cli.output import say

    if value == "":
        raise click.BadParameter("is empty; give a registries.yaml path")
    path = registries.resolve(current().paths.config_dir, value)
    for line in registries.warnings(registries.load(path)):
        say(f"warren: {line}")
    return str(Path(value).absolute()) if value else None


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


def _publish(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    if not value:
        return ()
    from warren_bundle.paths import rootless_user
    from warren_bundle.runtime.options import publish_problem

    if not rootless_user():
        raise click.BadParameter("only a rootless containerd (run by a user) publishes ports")
    for spec in value:
        problem = publish_problem(spec)
        if problem:
            raise click.BadParameter(problem)
    return tuple(value)


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
            "--registries",
            envvar="WARREN_REGISTRIES",
            callback=_registries,
            metavar="FILE",
            help="Registries in k3s's registries.yaml format (mirrors, auth, TLS); default "
            "<config-dir>/registries.yaml when it exists.",
        ),
        click.option(
            "--ready-timeout",
            type=float,
            default=DEFAULT_READY_TIMEOUT,
            show_default=True,
            envvar="WARREN_READY_TIMEOUT",
            callback=positive_seconds,
            help="Seconds to wait for containerd to answer health checks.",
        ),
        click.option(
            "--health-interval",
            type=float,
            default=DEFAULT_HEALTH_INTERVAL,
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
            "--publish",
            multiple=True,
            callback=_publish,
            metavar="[IP:]PORT:PORT[/PROTO]",
            help="Rootless: publish a port of containerd's network namespace on the host "
            "(repeatable), e.g. 8080:80 (host 0.0.0.0:8080 to 80/tcp).",
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


def given_options() -> frozenset[str]:
    """The run options the user gave (on the command line or in the environment), by name:
    those a `start` compares with a running supervisor's, and that a restart changes."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return frozenset(
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
    )
