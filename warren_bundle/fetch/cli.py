"""The command line of scripts/fetch_and_verify.py: options, usage checks, errors to exit codes."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from warren_bundle.errors import ExitCode, WarrenError
from warren_bundle.payload import format as payload

from . import REPO, pipeline
from .debian import DEBIAN_MIRROR
from .debian_static import ENV_STATIC_CACHE, default_static_cache
from .node import DEFAULT_CNI, DEFAULT_CRICTL
from .pins import DEFAULT_CHECKSUMS
from .pipeline import ARCHES, DEFAULT_CONTAINERD, DEFAULT_RUNC

SOURCES = ("auto", "upstream", "mirror", "dir", "debian", "debian-static")
DEFAULT_CACHE = REPO / "build" / "downloads"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fetch_and_verify.py",
        description=(
            "Download containerd, runc, the CNI plugins, crictl and the pause image, verify them "
            "against checksums/, keep only the binaries, and stage build/payload/linux-<arch> "
            "(bin/*, bin/cni/*, bin/sandbox/pause.tar, manifest.json, payload.tar.zst)"
        ),
        epilog=(
            "Sources: upstream = GitHub releases; mirror = the release file names flat under "
            "--mirror URL (e.g. URL/containerd-static-2.2.7-linux-amd64.tar.gz, URL/runc.amd64); "
            "dir = the same names in --from-dir; debian = apt-get download containerd runc "
            "(the suite's versions; --containerd/--runc are ignored); debian-static = the same "
            "versions built statically from the suite's source packages (apt-get source, "
            "build-dep, go build; needs root the first time; cached in --static-cache), for "
            "hosts with an older glibc or musl; auto = upstream, or debian "
            "when upstream cannot be reached. Exit codes: 8 checksum mismatch, 2 usage, 1 other."
        ),
    )
    p.add_argument("--arch", choices=(*ARCHES, "all"), default=None, help="default: this host's")
    p.add_argument(
        "--containerd",
        metavar="VERSION",
        default=None,
        help=f"containerd release (default {DEFAULT_CONTAINERD})",
    )
    p.add_argument(
        "--runc", metavar="VERSION", default=None, help=f"runc release (default {DEFAULT_RUNC})"
    )
    p.add_argument(
        "--cni",
        metavar="VERSION",
        default=None,
        help=f"containernetworking/plugins release (default {DEFAULT_CNI})",
    )
    p.add_argument(
        "--crictl",
        metavar="VERSION",
        default=None,
        help=f"cri-tools release for crictl (default {DEFAULT_CRICTL})",
    )
    p.add_argument("--no-crictl", action="store_true", help="leave crictl out of the payload")
    p.add_argument("--flavor", choices=("static", "dynamic"), default="static")
    p.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="default auto; --mirror/--from-dir alone imply mirror/dir",
    )
    p.add_argument("--mirror", metavar="URL", help="base URL holding the release file names")
    p.add_argument("--from-dir", metavar="DIR", type=Path, help="folder holding the release files")
    p.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=None,
        help="default build/payload/linux-<arch>; with --arch all: the parent dir",
    )
    p.add_argument("--checksums", metavar="DIR", type=Path, default=DEFAULT_CHECKSUMS)
    p.add_argument(
        "--cache",
        metavar="DIR",
        type=Path,
        default=DEFAULT_CACHE,
        help="download cache (default build/downloads)",
    )
    p.add_argument(
        "--debian-suite",
        metavar="SUITE",
        default=None,
        help="Debian suite for containerd (default: this host's)",
    )
    p.add_argument(
        "--debian-runc-suite",
        metavar="SUITE",
        default=None,
        help="Debian suite for runc (default: this host's)",
    )
    p.add_argument("--debian-mirror", metavar="URL", default=DEBIAN_MIRROR)
    p.add_argument(
        "--static-cache",
        metavar="DIR",
        type=Path,
        default=default_static_cache(),
        help=f"debian-static: sources, Go cache and built binaries (default ${ENV_STATIC_CACHE} "
        f"or {default_static_cache()})",
    )
    p.add_argument(
        "--release", action="store_true", help="upstream or mirror only: never the Debian fallback"
    )
    p.add_argument("--no-pack", action="store_true", help="stage bin/ + manifest.json only")
    p.add_argument(
        "--level",
        type=int,
        default=payload.ZSTD_LEVEL,
        help=f"zstd level for the payload (default {payload.ZSTD_LEVEL})",
    )
    p.add_argument("--retries", type=int, default=3, help="retries per download (default 3)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in s (doubles)")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--read-timeout", type=float, default=60.0)
    p.add_argument("--debug", action="store_true", help="tracebacks on errors")
    return p


def resolve_source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    source: str = args.source
    if source == "auto" and args.mirror:
        source = "mirror"
    elif source == "auto" and args.from_dir:
        source = "dir"
    if source == "mirror" and not args.mirror:
        parser.error("--source mirror needs --mirror URL")
    if source == "dir" and not args.from_dir:
        parser.error("--source dir needs --from-dir DIR")
    if args.mirror and source != "mirror":
        parser.error(f"--mirror does not go with --source {source}")
    if args.from_dir and source != "dir":
        parser.error(f"--from-dir does not go with --source {source}")
    if args.release and source in ("debian", "debian-static", "dir"):
        parser.error(f"--release builds use upstream or mirror artifacts, not --source {source}")
    return source


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return pipeline.run(args, resolve_source(args, parser))


def one_line(exc: WarrenError) -> str:
    """Cause and remedy on one line; unlike WarrenError.one_line it keeps runs of spaces, which
    matter in the suggested sha256sum line."""
    text = exc.message if not exc.remedy else f"{exc.message}; {exc.remedy}"
    return " ".join(line.strip() for line in text.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args, parser)
    except WarrenError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if args.debug:
            traceback.print_exc()
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return int(ExitCode.ERROR)


if __name__ == "__main__":
    sys.exit(main())
