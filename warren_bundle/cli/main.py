"""The `warren` command line: parse, call the modules, print. No logic of its own."""

from __future__ import annotations

import importlib
import os
import sys
from contextlib import suppress
from typing import NoReturn

import click

from warren_bundle import __version__
from warren_bundle.cli.context import Context, current
from warren_bundle.cli.output import emit_json, emit_json_failure, say
from warren_bundle.errors import ExitCode, PayloadError, WarrenError
from warren_bundle.paths import ENV_CONFIG_DIR, ENV_DATA_DIR, ENV_RUN_DIR, Paths


class _Group(click.Group):
    """Imports a subcommand's module on its first lookup (SUBCOMMANDS), and only that one.

    A launch pays for the definitions of the command it runs, not of every other command
    (`warren containerd start` is timed against bare containerd: docs/bench.md); help and
    completion, which list them all, load them all.
    """

    def _load(self, name: str) -> None:
        where = SUBCOMMANDS.get(name)
        if where is not None and name not in self.commands:
            module = importlib.import_module(f"warren_bundle.cli.{where[0]}")
            self.add_command(getattr(module, where[1]), name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for name in SUBCOMMANDS:
            self._load(name)
        return super().list_commands(ctx)


# Each command group lives in its own module (name -> module in warren_bundle.cli, attribute).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("clients", "extract"),
    "containerd": ("containerd", "containerd"),
    "socket": ("clients", "socket"),
    "ctr": ("clients", "ctr"),
    "images": ("images", "images"),
    "metrics": ("observe", "metrics"),
    "doctor": ("observe", "doctor"),
    "lima": ("lima", "lima"),
    "_selfcheck": ("selfcheck", "selfcheck"),
    "versions": ("versions", "versions"),
    "rollback": ("versions", "rollback"),
    "upgrade": ("versions", "upgrade"),
    "kubelet-flags": ("node", "kubelet_flags"),
    "crictl": ("node", "crictl"),
}


def _dir_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An absolute path, or None for the default; empty or relative is a usage error."""
    from warren_bundle.paths import dir_option_problem

    env = param.envvar if isinstance(param.envvar, str) else ""
    problem = dir_option_problem(value, f"--{(param.name or '').replace('_', '-')}", env)
    if problem:
        raise click.UsageError(problem, ctx)
    return value


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    envvar=ENV_DATA_DIR,
    callback=_dir_option,
    help="Binaries, containerd root, logs, images.",
)
@click.option(
    "--run-dir",
    envvar=ENV_RUN_DIR,
    callback=_dir_option,
    help="Socket, state dir, pidfiles, lock.",
)
@click.option(
    "--config-dir", envvar=ENV_CONFIG_DIR, callback=_dir_option, help="config.toml and config.d/."
)
@click.option(
    "--payload",
    envvar="WARREN_PAYLOAD",
    help="Payload file or staged dir to use instead of the embedded one.",
)
@click.option(
    "--runtime-dir",
    envvar="WARREN_RUNTIME_DIR",
    help="Where the one file keeps its extracted runtime (default: <data-dir>/runtime as root, "
    "~/.cache/warren/runtime otherwise; never /tmp).",
)
@click.option("--debug", is_flag=True, envvar="WARREN_DEBUG", help="Show tracebacks on errors.")
@click.version_option(__version__, "-V", prog_name="warren")
@click.pass_context
def cli(
    ctx: click.Context,
    data_dir: str | None,
    run_dir: str | None,
    config_dir: str | None,
    payload: str | None,
    runtime_dir: str | None,
    debug: bool,
) -> None:
    """Warren bundle: a supervised containerd from one file."""
    if runtime_dir:  # read by the launcher: a warren started from here uses the same one
        os.environ["WARREN_RUNTIME_DIR"] = runtime_dir
    ctx.obj = Context(Paths.resolve(data_dir, run_dir, config_dir), payload, debug)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--check",
    is_flag=True,
    help="Only say whether the binaries this file carries run on this host (exit 5 when not): "
    "what install.sh asks before it installs a file.",
)
@click.option(
    "--sbom",
    is_flag=True,
    help="Print the SPDX 2.3 JSON SBOM of everything this file carries (offline).",
)
def version(as_json: bool, check: bool, sbom: bool) -> None:
    """Launcher, containerd and runc versions, payload digest and provenance."""
    from warren_bundle.store.info import check_runs_here, sbom_document, version_info

    if check:
        line = check_runs_here(current().payload)
        if as_json:
            emit_json({"runs_here": True, "message": line})
        else:
            click.echo(line)
        return
    if sbom:
        import json

        click.echo(json.dumps(sbom_document(current().payload), indent=2, sort_keys=True))
        return
    info = version_info(current().payload)
    if as_json:
        emit_json(info)
        if not info.get("payload"):
            sys.exit(int(ExitCode.PAYLOAD))
        return
    click.echo(f"warren {info['warren']} ({info['flavour']} build)")
    payload = info.get("payload")
    if not payload:
        raise PayloadError(
            str(info.get("payload_error")).removeprefix("failed to read embedded binary: ")
        )
    click.echo(f"containerd {payload['containerd_version']}")
    click.echo(f"runc {payload['runc_version']}")
    click.echo(f"payload sha256:{payload['digest']} ({payload['os']}/{payload['arch']})")
    click.echo(f"from {payload['origin']}")
    click.echo(f"source {payload['source']}: {payload['provenance_summary']}")
    node = payload["node"]
    cni = node["cni"]
    if cni["plugins"]:
        click.echo(
            f"cni plugins {cni['version'] or '?'} ({cni['source']}): {', '.join(cni['plugins'])}"
        )
    else:
        click.echo("cni plugins: none carried")
    click.echo(f"sandbox image {node['sandbox_image'] or 'none carried'}")
    click.echo(f"crictl {node['crictl'] or 'not carried (this build has none)'}")
    click.echo(f"release key {info.get('release_key') or 'none (not built by make release)'}")


def _fail(exc: WarrenError, debug: bool) -> tuple[str, int]:
    if debug:
        import traceback

        traceback.print_exc()
    say(f"warren: {exc.one_line()}")
    return exc.one_line(), int(exc.exit_code)


def _exit(code: int) -> NoReturn:
    """Exit with `code` even when stdout or stderr can no longer be written.

    Python flushes both at exit and turns a failed flush (a full disk under the log, a closed
    terminal) into exit status 120: a supervisor that stopped cleanly would report failure.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            with suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    if getattr(sys, "frozen", False):
        # Nothing is left to do once the output is flushed: no atexit work, no thread to join
        # (every thread is a daemon), no temporary dir (each is a context manager). The
        # interpreter's teardown was on every command's time; with safewrite's move off
        # `secrets`, `containerd start` fell from 290 to 264 ms (medians of 20 interleaved
        # starts). From source (tests, coverage) the interpreter exits normally.
        os._exit(code)
    sys.exit(code)


def _run(argv: list[str] | None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=args, prog_name="warren", standalone_mode=False)
    except SystemExit as exc:  # commands that exit with their own code (doctor, version --json)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (WarrenError, click.exceptions.Abort, click.ClickException, KeyboardInterrupt) as exc:
        message, code = _failure(exc, "--debug" in args)
    except OSError as exc:
        # The safety net under every command: an OS error no module turned into a WarrenError
        # (output to a full disk or a closed pipe, a read-only dir) is still one line.
        message, code = _fail(os_error(exc), "--debug" in args)
    else:
        return 0
    if asks_json(args):
        emit_json_failure(message, code)
    return code


def _failure(exc: BaseException, debug: bool) -> tuple[str, int]:
    """Say why on stderr (one line); the cause and the exit code, for --json's document."""
    if isinstance(exc, WarrenError):
        return _fail(exc, debug)
    if isinstance(exc, click.exceptions.Abort):
        say("warren: aborted")
        return "aborted", int(ExitCode.ERROR)
    if isinstance(exc, click.ClickException):
        line = usage_line(exc)
        say(f"warren: {line}")
        return line, exc.exit_code
    return "interrupted", 130


def asks_json(args: list[str]) -> bool:
    """Whether the command these arguments name has --json, and they give it.

    Read from the arguments rather than from the parsed options, so that a usage error, raised
    before any option is parsed, is answered in JSON too.
    """
    args = args[: args.index("--")] if "--" in args else args
    if "--json" not in args:
        return False
    command: click.Command = cli
    for token in args:
        if isinstance(command, click.Group):
            command = command.get_command(click.Context(command), token) or command
    return any(param.name == "as_json" for param in command.params)


def usage_line(exc: click.ClickException) -> str:
    """click's error as one line: the cause, then where the help is (click prints four)."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f"; see '{ctx.command_path} --help'"
    return message


def os_error(exc: OSError) -> WarrenError:
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    cause = f"{exc.strerror or exc}{where}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        from warren_bundle.errors import PermissionDeniedError

        return PermissionDeniedError(
            f"permission denied: {cause}", "run it with sudo, or point the dir options elsewhere"
        )
    if exc.errno in (errno.EPIPE, errno.ENOSPC, errno.EIO) and not exc.filename:
        return WarrenError(f"cannot write the output: {cause}", "check where stdout goes")
    return WarrenError(cause, "run it again with --debug for the details")


def main(argv: list[str] | None = None) -> None:
    _exit(_run(argv))
