"""How commands print: JSON for machines, lines for people, and stderr that never kills us.

A supervisor whose stderr is a full disk or a closed terminal must keep supervising: event lines
to stderr are best effort (the log file has them too).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import click


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@contextmanager
def json_on_error(as_json: bool) -> Iterator[None]:
    """With --json, a failure still prints JSON ({"state": "error", "error": ...}) on stdout
    before the one error line on stderr and the exit code: a script parsing stdout gets JSON."""
    from warren_bundle.errors import WarrenError

    try:
        yield
    except WarrenError as exc:
        if as_json:
            emit_json({"state": "error", "error": exc.one_line(), "exit_code": int(exc.exit_code)})
        raise


def say(line: str) -> None:
    """A line on stderr, dropped when stderr cannot take it (ENOSPC, EPIPE, EIO)."""
    with suppress(OSError):
        click.echo(line, err=True)


def rows(pairs: list[tuple[str, Any]]) -> None:
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:
        click.echo(f"{key:<{width}}  {value}")
