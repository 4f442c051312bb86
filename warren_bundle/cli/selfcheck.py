"""`warren _selfcheck`: hidden; `make build` runs it on the file it has just frozen."""

from __future__ import annotations

import click

from warren_bundle.cli.output import emit_json


@click.command("_selfcheck", hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def selfcheck(as_json: bool) -> None:
    """Check that this file can import and do what its commands need (exit 1 naming what not)."""
    from warren_bundle.errors import WarrenError
    from warren_bundle.selfcheck import run

    report = run()
    if as_json:
        emit_json({**report.to_dict(), "ok": not report.failures})
    failures = report.failures
    if failures:
        shown = "; ".join(f"{name}: {error}" for name, error in failures.items())
        raise WarrenError(
            f"self-check failed: {shown}",
            "a module the spec's EXCLUDES drop is needed (build/spec/warren.spec)",
        )
    if not as_json:
        click.echo(
            f"self-check passed: {len(report.modules)} modules, {len(report.imports)} imports, "
            + ", ".join(report.checks)
        )
