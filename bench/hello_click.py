"""The launch floor: a hello-world click app, frozen with warren's own spec and settings."""

from __future__ import annotations

import click


@click.group()
def cli() -> None:
    """Hello world."""


@cli.command()
def version() -> None:
    """Print a version, as `warren version` does."""
    click.echo("hello 0.0.0")


if __name__ == "__main__":
    cli()
