"""How commands print: JSON for machines, lines for people, and stderr that never kills us.

A supervisor whose stderr is a full disk or a closed terminal must keep supervising: event lines
to stderr are best effort (the log file has them too).
"""

from __future__ import annotations

import json
from contextlib import suppress
from typing import Any

import click

# Whether this process has printed its JSON document: a --json command that fails after it
# printed one (status of a stopped containerd, exit 7) must not print a second.
_printed = {"json": False}


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    _printed["json"] = True


def emit_json_failure(message: str, exit_code: int) -> None:
    """With --json, a failure still prints one JSON document on stdout ({"state": "error" or
    "not-running", "error": ..., "exit_code": N}) beside the one error line on stderr and the
    exit code: a script parsing stdout always gets JSON. Nothing when the command printed its
    own."""
    from warren_bundle.errors import ExitCode

    if _printed["json"]:
        return
    state = "not-running" if exit_code == ExitCode.NOT_RUNNING else "error"
    with suppress(OSError):
        emit_json({"state": state, "error": message, "exit_code": exit_code})


def say(line: str) -> None:
    """A line on stderr, dropped when stderr cannot take it (ENOSPC, EPIPE, EIO)."""
    with suppress(OSError):
        click.echo(line, err=True)


def rows(pairs: list[tuple[str, Any]]) -> None:
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:
        click.echo(f"{key:<{width}}  {value}")
