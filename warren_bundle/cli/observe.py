"""CLI commands for watching and diagnosing the runtime: `warren metrics` and `warren doctor`.

Modules are imported inside each command so that `warren version` loads none of them.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any

import click

from warren_bundle.cli.context import current
from warren_bundle.cli.output import emit_json


@click.command()
@click.option(
    "--from-state",
    is_flag=True,
    help="Render from the state file even when the supervisor serves a /metrics endpoint.",
)
def metrics(from_state: bool) -> None:
    """Print Prometheus metrics: from the running endpoint, else from the state file."""
    from warren_bundle import metrics as prom
    from warren_bundle.runtime.control import status

    ctx = current()
    paths = ctx.paths
    report: dict[str, Any] = dict(status(paths))
    address = report.get("metrics_addr")
    if address and report.get("supervisor_alive") and not from_state:
        try:
            click.echo(prom.scrape(str(address)), nl=False)
            return
        except OSError as exc:
            click.echo(
                f"warren: metrics endpoint {address} does not answer ({exc}); "
                "showing the state file",
                err=True,
            )
    if not report.get("payload_digest"):
        _add_bundled_versions(report, ctx.payload)
    click.echo(prom.render(report, prom.read_lima_status(paths)), nl=False)


def _add_bundled_versions(report: MutableMapping[str, Any], payload_option: str | None) -> None:
    """Before any start the state file is absent, but the payload still says what it carries."""
    from warren_bundle.errors import PayloadError
    from warren_bundle.payload.format import locate

    try:
        payload = locate(payload_option)
    except PayloadError:
        return
    report["containerd_version"] = payload.manifest.containerd_version
    report["runc_version"] = payload.manifest.runc_version
    report["payload_digest"] = payload.digest


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(as_json: bool) -> None:
    """Check this host for everything containerd needs; PASS/WARN/FAIL with the remedy.

    Exits 0 when nothing fails, else with the exit code of the first failed check
    (3 payload or binaries damaged, 4 permission, 7 socket, 9 Lima, 1 other).
    """
    from warren_bundle.doctor.run import exit_status, run_checks, summary

    ctx = current()
    checks = run_checks(ctx.paths, ctx.payload)
    counts = summary(checks)
    code = exit_status(checks)
    if as_json:
        data: dict[str, Any] = {
            "checks": [c.to_dict() for c in checks],
            "summary": counts,
            "ok": code == 0,
            "exit_code": code,
        }
        emit_json(data)
    else:
        for check in checks:
            click.echo(check.line())
        click.echo(
            f"doctor: {counts['PASS']} passed, {counts['WARN']} warnings, {counts['FAIL']} failed"
        )
    sys.stdout.flush()
    if code:
        sys.exit(code)
