"""One run: the arches and their --out dirs, the source in use, pack, and the swap into place.

auto tries upstream and falls back to the Debian packages only when upstream cannot be reached
(never for --release); every arch is staged and packed before any --out is replaced.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from warren_bundle.errors import FetchError, PlatformError, Unreachable
from warren_bundle.fsutil import locked
from warren_bundle.hostinfo import host_arch
from warren_bundle.payload import format as payload

from . import REPO
from .debian import DebianOptions, fetch_debian, host_suite
from .debian_static import StaticOptions, fetch_debian_static
from .download import NetOptions
from .node import DEFAULT_CNI, DEFAULT_CRICTL
from .release import ReleaseOptions, fetch_release
from .staging import Staged, check_replaceable, discard, swap_into_place

DEFAULT_CONTAINERD = "2.2.7"
DEFAULT_RUNC = "1.3.6"
ARCHES = ("amd64", "arm64")
DEFAULT_OUT_PARENT = REPO / "build" / "payload"


def output_dirs(arches: Sequence[str], out: Path | None, all_arches: bool) -> dict[str, Path]:
    if out is None:
        return {a: DEFAULT_OUT_PARENT / f"linux-{a}" for a in arches}
    if all_arches:
        return {a: out / f"linux-{a}" for a in arches}
    return {arches[0]: out}


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """One run per cache at a time: two writers on one .part would corrupt each other's bytes."""
    cache.mkdir(parents=True, exist_ok=True)

    def waiting() -> None:
        print(f"fetch: waiting for another run using {cache}", file=sys.stderr, flush=True)

    # No timeout: a second build waits its turn. The file holds only the holder's pid.
    with locked(cache / ".lock", None, mode=0o644, on_wait=waiting):
        yield


def stage(
    args: argparse.Namespace, source: str, arches: list[str], outs: dict[str, Path]
) -> list[Staged]:
    cache: Path = args.cache
    debian = DebianOptions(
        args.debian_suite or host_suite(),
        args.debian_runc_suite or host_suite(),
        args.debian_mirror,
        cache,
    )
    if source in ("debian", "debian-static") and (args.containerd or args.runc):
        print(
            f"fetch: note: --containerd/--runc are ignored with --source {source}", file=sys.stderr
        )
    if source == "debian":
        return fetch_debian(arches, outs, debian)
    if source == "debian-static":
        static = StaticOptions(debian.suite, args.debian_mirror, args.static_cache)
        return fetch_debian_static(arches, outs, static)
    release = ReleaseOptions(
        containerd=args.containerd or DEFAULT_CONTAINERD,
        runc=args.runc or DEFAULT_RUNC,
        flavor=args.flavor,
        source="upstream" if source == "auto" else source,
        mirror=args.mirror,
        from_dir=args.from_dir,
        checksums=args.checksums,
        cache=cache,
        net=NetOptions(args.connect_timeout, args.read_timeout, args.retries, args.backoff),
        cni=args.cni or DEFAULT_CNI,
        crictl=None if args.no_crictl else (args.crictl or DEFAULT_CRICTL),
        release=args.release,
    )
    try:
        return fetch_release(arches, outs, release)
    except Unreachable as exc:
        if source != "auto" or args.release:
            if args.release:
                exc.remedy = "release builds never fall back to Debian; use --mirror URL"
            raise
        try:
            staged = fetch_debian(arches, outs, debian, f"upstream unreachable: {exc.message}")
        except FetchError as deb_exc:
            raise FetchError(
                f"upstream unreachable ({exc.message}) and the Debian fallback failed: "
                f"{deb_exc.message}",
                deb_exc.remedy or "use --mirror URL or --from-dir DIR",
            ) from deb_exc
        st = staged[0]
        print(
            f"warren: upstream unreachable ({exc.message}); falling back to Debian packages "
            f"(containerd {st.containerd_version}, runc {st.runc_version}) — not for release "
            "builds",
            file=sys.stderr,
            flush=True,
        )
        return staged


def run(args: argparse.Namespace, source: str) -> int:
    """Stage every arch from `source` (already checked against the other options), pack, swap."""
    if args.arch in (None, "all"):
        arches = list(ARCHES) if args.arch == "all" else [host_arch()]
    else:
        arches = [args.arch]
    if arches[0] not in ARCHES:
        raise PlatformError(
            f"host architecture {arches[0]!r} is not built", "pass --arch amd64|arm64"
        )
    outs = output_dirs(arches, args.out, args.arch == "all")
    for out in outs.values():
        check_replaceable(out)
    with cache_lock(args.cache):
        staged = stage(args, source, arches, outs)
        try:
            packed = {
                st.arch: None if args.no_pack else payload.pack(st.tmp, level=args.level)
                for st in staged
            }
        except BaseException:
            discard(staged)
            raise
        # Swapped only once every arch passed: --arch all is all or nothing too.
        for st in staged:
            swap_into_place(st.tmp, st.out)
    for st in staged:
        report(st, packed[st.arch])
    return 0


def report(st: Staged, packed: payload.Payload | None) -> None:
    label = f"linux-{st.arch}"
    for name in st.names():
        size, digest = st.files[name]
        print(f"{label}  bin/{name:<24} {size:>10} bytes  sha256:{digest}")
    print(
        f"{label}  containerd {st.containerd_version}, runc {st.runc_version} "
        f"(source {st.source}) -> {st.out}"
    )
    if packed is not None:
        out_file = st.out / payload.PAYLOAD_FILE
        print(f"{label}  payload {out_file}  {packed.size} bytes  sha256:{packed.digest}")
