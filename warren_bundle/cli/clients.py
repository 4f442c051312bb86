"""Client commands: `warren extract`, `warren socket`, `warren ctr`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from warren_bundle.cli.context import current
from warren_bundle.cli.output import emit_json, say

if TYPE_CHECKING:
    from warren_bundle.paths import Paths
    from warren_bundle.payload.format import Payload


@click.command()
@click.option("--verify", is_flag=True, help="Re-hash installed binaries and repair any damage.")
@click.option("--force", is_flag=True, help="Rewrite the binaries even if the cache is current.")
@click.option(
    "--prepare",
    is_flag=True,
    help="Extract into this payload's own version dir without pointing bin at it: the running "
    "containerd keeps its binaries, and a restart onto this warren only switches.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def extract(verify: bool, force: bool, prepare: bool, as_json: bool) -> None:
    """Extract containerd, ctr, the shim and runc into <data-dir>/bin (cached)."""
    from warren_bundle.payload.format import locate
    from warren_bundle.store.extract import ensure_extracted

    if prepare and (verify or force):
        raise click.UsageError(
            "--prepare only writes a version dir that is missing or incomplete; run --verify "
            "or --force without it"
        )
    ctx = current()
    payload = locate(ctx.payload)
    if prepare:
        prepare_version(ctx.paths, payload, as_json)
        return
    result = ensure_extracted(ctx.paths, payload, verify=verify, force=force)
    if as_json:
        emit_json(
            {
                "bin_dir": str(result.bin_dir),
                "digest": result.digest,
                "cached": result.cached,
                "written": result.written,
                "repaired": result.repaired,
                "duration_s": result.duration_s,
            }
        )
        return
    if result.repaired:
        click.echo(
            f"repaired {', '.join(result.repaired)} (content or mode did not match the manifest)"
        )
    if result.cached and result.previous:
        click.echo(
            f"{result.bin_dir}: switched to {result.version_dir}, already extracted "
            f"(payload sha256:{result.digest[:12]})"
        )
    elif result.cached:
        checked = "verified" if verify else "up to date"
        click.echo(f"{result.bin_dir}: {checked} (payload sha256:{result.digest[:12]})")
    else:
        click.echo(
            f"{result.bin_dir}: extracted {', '.join(result.written)} "
            f"in {result.duration_s * 1000:.0f} ms (payload sha256:{result.digest[:12]})"
        )


def prepare_version(paths: Paths, payload: Payload, as_json: bool) -> None:
    """`extract --prepare`: what an installer runs before it restarts the service."""
    import time

    from warren_bundle.store.extract import prepare

    started = time.monotonic()
    written = prepare(paths, payload)
    took = time.monotonic() - started
    target = paths.version_dir(payload.digest)
    if as_json:
        emit_json({"version_dir": str(target), "digest": payload.digest, "written": written,
                   "duration_s": took})  # fmt: skip
    elif written:
        click.echo(
            f"{target}: extracted {', '.join(written)} in {took * 1000:.0f} ms, ready for a "
            f"restart (payload sha256:{payload.digest[:12]})"
        )
    else:
        click.echo(f"{target}: already extracted (payload sha256:{payload.digest[:12]})")


@click.command()
@click.option("--socket", "socket_option", help="Use this socket (overrides detection).")
@click.option("--validate", is_flag=True, help="Check it answers gRPC; print the server version.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def socket(socket_option: str | None, validate: bool, as_json: bool) -> None:
    """Print the containerd socket clients should use (explicit > embedded > system > Lima)."""
    from warren_bundle.cli.containerd import backend

    answer = backend().socket(socket_option, validate)
    probe = answer.probe
    if as_json:
        emit_json({"kind": answer.kind, "path": answer.path, "probe": probe and probe.to_dict()})
        return
    click.echo(answer.path)
    if probe is not None:
        say(f"{answer.kind} containerd {probe.version} answers")


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--socket", "socket_option", help="Use this socket (overrides detection).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctr(socket_option: str | None, args: tuple[str, ...]) -> None:
    """Run the bundled ctr against the detected socket: warren ctr images ls."""
    from warren_bundle.ctr import exec_ctr
    from warren_bundle.sockets import detect_for_client

    ctx = current()

    def socket() -> str:
        return detect_for_client(ctx.paths, socket_option).path

    exec_ctr(ctx.paths, ctx.payload, socket, list(args))
