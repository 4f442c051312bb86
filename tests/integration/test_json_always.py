"""`--json` always prints one JSON document on stdout, on success and on every failure, with the
exit code kept: every command that has --json, with containerd down and with a usage error,
through whatever WARREN_TEST_EXE names (else source)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths

from support import STAGED, run_warren

pytestmark = pytest.mark.integration

# Every command with --json, with what it needs after the option; checked against the CLI itself,
# so a new --json command without a case here fails.
COMMANDS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("version",): (),
    ("extract",): (),
    ("socket",): (),
    ("containerd", "start"): (),
    ("containerd", "status"): (),
    ("images", "import"): ("/etc/hostname",),
    ("images", "status"): (),
    ("doctor",): (),
    ("versions",): (),
    ("kubelet-flags",): (),
    ("lima", "up"): (),
    ("lima", "status"): (),
    ("_selfcheck",): (),
}


def one_document(out: subprocess.CompletedProcess[str]) -> Any:
    """stdout is exactly one JSON document (json.loads refuses trailing data)."""
    assert "Traceback" not in out.stderr, out.stderr
    try:
        return json.loads(out.stdout)
    except ValueError as exc:
        raise AssertionError(
            f"not one JSON document ({exc}): {out.stdout!r} {out.stderr!r}"
        ) from None


def json_commands() -> set[tuple[str, ...]]:
    import click

    from warren_bundle.cli.main import cli

    found: set[tuple[str, ...]] = set()

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if any(p.name == "as_json" for p in command.params):
            found.add(path)
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    walk(sub, (*path, name))

    walk(cli, ())
    return found


def test_the_cases_cover_every_json_command() -> None:
    assert json_commands() == set(COMMANDS)


@pytest.mark.parametrize(("command", "rest"), list(COMMANDS.items()), ids=" ".join)
def test_json_with_containerd_down(
    wpaths: Paths, command: tuple[str, ...], rest: tuple[str, ...]
) -> None:
    """Nothing runs on these private dirs; `containerd start` gets a payload that is not there,
    so it fails instead of starting one. Success or failure, stdout is JSON."""
    start = command == ("containerd", "start")
    payload = Path("/nonexistent") if start else STAGED
    out = run_warren(wpaths, *command, "--json", *rest, payload=payload)
    doc = one_document(out)
    if command == ("containerd", "start"):
        assert out.returncode == ExitCode.PAYLOAD, out.stderr
    if command in {("containerd", "status"), ("images", "status")}:
        assert out.returncode == ExitCode.NOT_RUNNING, out.stderr
    if command[0] == "lima":
        assert out.returncode == ExitCode.LIMA, out.stderr
    if out.returncode and isinstance(doc, dict) and "exit_code" in doc:
        assert doc["exit_code"] == out.returncode, doc
        if "error" in doc:
            assert doc["error"] in out.stderr, (doc, out.stderr)


@pytest.mark.parametrize("command", list(COMMANDS), ids=" ".join)
def test_json_with_a_usage_error(wpaths: Paths, command: tuple[str, ...]) -> None:
    out = run_warren(wpaths, *command, "--json", "--no-such-option")
    assert out.returncode == ExitCode.USAGE, out.stderr
    doc = one_document(out)
    assert doc["state"] == "error" and doc["exit_code"] == ExitCode.USAGE, doc
    assert "No such option '--no-such-option'" in doc["error"], doc
    for d in (wpaths.data_dir, wpaths.run_dir, wpaths.config_dir):
        assert not d.exists(), f"{d} was created"


def test_json_with_a_usage_error_in_the_global_options(wpaths: Paths) -> None:
    out = run_warren(wpaths, "--data-dir", "relative", "containerd", "status", "--json")
    assert out.returncode == ExitCode.USAGE, out.stderr
    doc = one_document(out)
    assert doc["exit_code"] == ExitCode.USAGE and "is relative" in doc["error"], doc


def test_no_json_without_the_option(wpaths: Paths) -> None:
    """The control: without --json a failure prints nothing on stdout."""
    out = run_warren(wpaths, "containerd", "status", "--no-such-option")
    assert out.returncode == ExitCode.USAGE and out.stdout == "", out.stdout
