"""CLI for air-gapped images: `warren images import FILE...`, `warren images status`.

The automatic import of <data-dir>/images at every start is the runtime's (runtime/hooks.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from warren_bundle.cli.context import current
from warren_bundle.cli.options import positive_seconds
from warren_bundle.cli.output import emit_json, say


def _echo_event(line: str) -> None:
    say(f"warren: {line}")


@click.group()
def images() -> None:
    """Air-gapped images: import image archives into containerd."""


@images.command("import")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    help="containerd namespace (repeatable; default: default and k8s.io).",
)
@click.option("--socket", "socket_option", help="Use this socket (overrides detection).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def import_command(
    files: tuple[Path, ...], namespaces: tuple[str, ...], socket_option: str | None, as_json: bool
) -> None:
    """Import image archives (docker save / OCI layout; .tar, .tar.gz, .tar.zst)."""
    from warren_bundle.errors import ImageImportError
    from warren_bundle.images import DEFAULT_NAMESPACES, import_archive
    from warren_bundle.payload.format import locate
    from warren_bundle.sockets import detect_for_client
    from warren_bundle.store.extract import ensure_extracted
    from warren_bundle.store.stamp import is_current

    ctx = current()
    socket = detect_for_client(ctx.paths, socket_option).path
    payload = locate(ctx.payload)
    if not is_current(ctx.paths, payload):
        ensure_extracted(ctx.paths, payload)
    ctr = ctx.paths.binary("ctr")
    results = []
    for archive in files:
        result = import_archive(ctr, socket, archive, namespaces or DEFAULT_NAMESPACES)
        results.append(result)
        if not as_json:
            if result.status == "failed":
                _echo_event(result.describe())
            else:
                click.echo(result.describe())
    if as_json:
        emit_json([r.to_dict() for r in results])
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise ImageImportError(
            f"{len(failed)} of {len(results)} image archive(s) failed to import",
            "check each named archive (tar -tf FILE; it must come from docker save, "
            "ctr export or an OCI layout)"
            + ("; the others were imported" if len(failed) < len(results) else ""),
        )


@images.command("status")
@click.option(
    "--wait",
    "wait_s",
    type=float,
    callback=positive_seconds,
    default=None,
    metavar="SECONDS",
    help="Wait up to SECONDS for the automatic import to finish.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(wait_s: float | None, as_json: bool) -> None:
    """What the automatic import of <data-dir>/images did at this containerd start.

    Exit 1 when an archive failed, 6 when --wait ran out, 7 when containerd is not running.
    """
    paths = current().paths
    from warren_bundle.airgap import current_report, wait_for_report

    report = wait_for_report(paths, wait_s) if wait_s is not None else current_report(paths)
    if as_json:
        emit_json(report)
    else:
        _print_report(report)
    if report.get("state") == "error" or any(
        r.get("status") == "failed" for r in report.get("results") or []
    ):
        from warren_bundle.errors import ImageImportError

        raise ImageImportError(
            "the automatic image import reported failures",
            "fix or remove the archives named above, then restart containerd or run "
            "'warren images import FILE'",
        )


def _has_sums(images_dir: str) -> bool:
    from pathlib import Path

    return (Path(images_dir) / "SHA256SUMS").is_file()


def _print_report(report: dict[str, Any]) -> None:
    from warren_bundle.images import ArchiveResult

    state = report.get("state")
    where = report.get("images_dir") or "<data-dir>/images"
    results = report.get("results") or []
    click.echo(f"state     {state}")
    so_far = " so far" if state in ("pending", "importing") else ""
    click.echo(f"images    {where} ({len(results)} archive(s){so_far})")
    watching = report.get("watching")
    if isinstance(watching, dict):
        trust = "; only archives SHA256SUMS lists are imported" if _has_sums(where) else ""
        click.echo(f"watching  every {watching.get('interval_s', 2):g} s for new archives{trust}")
    sandbox = report.get("sandbox")
    if isinstance(sandbox, dict):
        describe = ArchiveResult(**sandbox).describe()
        click.echo(f"sandbox   {describe}")
    for data in results:
        click.echo(f"  {ArchiveResult(**data).describe()}")
    if report.get("error"):
        click.echo(f"error     {report['error']}")
