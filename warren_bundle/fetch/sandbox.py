"""The sandbox (pause) image the payload carries, as an OCI archive under bin/sandbox/.

Upstream: registry.k8s.io/pause:3.10 pulled by the index digest pinned in checksums/. Where the
registry cannot be reached (and for the Debian source, which never goes upstream): an image
built here around a static pause (build/pause/pause.c: holds the namespaces, reaps children,
exits on SIGTERM/SIGINT), named apart from the upstream one so the two are never confused.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from warren_bundle.errors import FetchError, Unreachable

from . import REPO
from .download import NetOptions
from .oci import LayerFile, single_layer_image, write_archive
from .pins import parse_pins
from .staging import Staged, check_elf

PAUSE_VERSION = "3.10"
PAUSE_REF = f"registry.k8s.io/pause:{PAUSE_VERSION}"
LOCAL_PAUSE_REF = f"localhost/warren/pause:{PAUSE_VERSION}-local"
PAUSE_SOURCE = REPO / "build" / "pause" / "pause.c"
SANDBOX_FILE = "sandbox/pause.tar"
# Which compiler builds a static pause for each arch on this host.
COMPILERS = {"amd64": ("x86_64-linux-gnu-gcc", "gcc"), "arm64": ("aarch64-linux-gnu-gcc",)}
NATIVE = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class SandboxOptions:
    pull: bool  # try the registry first (upstream, mirror and dir sources)
    release: bool  # a release build never falls back to a local image
    checksums: Path
    net: NetOptions


def pause_pin(checksums: Path) -> str:
    from warren_bundle.errors import PinError

    pin_file = checksums / f"pause-{PAUSE_VERSION}.sha256"
    digest = parse_pins(pin_file).get(PAUSE_REF) if pin_file.is_file() else None
    if digest is None:
        raise PinError(
            f"no pin for {PAUSE_REF} in {pin_file}",
            f"append '<index sha256>  {PAUSE_REF}' to {pin_file} (crane digest {PAUSE_REF})",
        )
    return f"sha256:{digest}"


def stage_sandbox(st: Staged, opts: SandboxOptions) -> None:
    dest = st.bin_dir / SANDBOX_FILE
    dest.parent.mkdir(exist_ok=True)
    if opts.pull:
        try:
            _stage_pulled(st, dest, opts)
            return
        except Unreachable as exc:
            if opts.release:
                exc.remedy = "release builds carry the pinned upstream pause image; use a network"
                raise
            print(
                f"warren: {PAUSE_REF} unreachable ({exc.message}); building a local pause image "
                f"({LOCAL_PAUSE_REF}) — not for release builds",
                file=sys.stderr,
                flush=True,
            )
    _stage_built(st, dest)


def _stage_pulled(st: Staged, dest: Path, opts: SandboxOptions) -> None:
    from .registry import pull

    pin = pause_pin(opts.checksums)
    pulled = pull(PAUSE_REF, pin, st.arch, opts.net)
    st.files[SANDBOX_FILE] = write_archive(dest, PAUSE_REF, pulled.manifest, pulled.blobs)
    st.components["sandbox_image"] = {
        "ref": PAUSE_REF,
        "file": SANDBOX_FILE,
        "source": "registry",
        "index_digest": pulled.index_digest,
        "manifest_digest": pulled.manifest_digest,
        "url": pulled.url,
    }
    print(f"fetch: {PAUSE_REF} ({st.arch}) pulled, index {pin} verified", file=sys.stderr)


def compiler_for(arch: str) -> str:
    import platform

    names = COMPILERS.get(arch, ())
    if NATIVE.get(platform.machine()) == arch:
        names = (*names, "cc")
    for name in names:
        if shutil.which(name):
            return name
    raise FetchError(
        f"cannot build the local pause image for {arch}: no C compiler for it "
        f"({', '.join(names) or 'none known'})",
        "apt-get install gcc libc6-dev (gcc-aarch64-linux-gnu for arm64), or build where "
        f"{PAUSE_REF} can be pulled",
    )


def build_pause(arch: str, out: Path) -> None:
    """A static, stripped pause for `arch` at `out`."""
    cc = compiler_for(arch)
    cmd = [cc, "-static", "-Os", "-s", "-Wall", "-Werror", "-o", str(out), str(PAUSE_SOURCE)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise FetchError(
            f"building pause failed ({cc} exit {proc.returncode}): {tail}",
            "install libc6-dev (its static libc.a) for the compiler",
        )
    check_elf(out, arch, f"{cc} {PAUSE_SOURCE.name}")


def _stage_built(st: Staged, dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=".pause-", dir=st.tmp.parent) as tmp:
        binary = Path(tmp) / "pause"
        build_pause(st.arch, binary)
        files = [LayerFile("pause", binary.read_bytes(), 0o755)]
    size, sha, manifest_digest = single_layer_image(
        dest, LOCAL_PAUSE_REF, st.arch, files, ["/pause"]
    )
    st.files[SANDBOX_FILE] = (size, sha)
    st.components["sandbox_image"] = {
        "ref": LOCAL_PAUSE_REF,
        "file": SANDBOX_FILE,
        "source": "built",
        "manifest_digest": manifest_digest,
        "built_from": "build/pause/pause.c",
    }
    print(f"fetch: {LOCAL_PAUSE_REF} ({st.arch}) built from {PAUSE_SOURCE.name}", file=sys.stderr)
