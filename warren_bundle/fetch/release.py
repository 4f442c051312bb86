"""Release artifacts from upstream (GitHub), a mirror or a local dir, verified and staged."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warren_bundle.errors import ChecksumMismatch, FetchError
from warren_bundle.fsutil import sha256_file

from .archive import extract_release_binaries
from .download import NetOptions, download
from .node import DEFAULT_CNI, DEFAULT_CRICTL, node_artifacts, stage_upstream
from .pins import Artifact, containerd_artifact, lookup_pin, runc_artifact
from .sandbox import SandboxOptions, pause_pin, stage_sandbox
from .staging import Staged, discard, new_staging, write_executable


@dataclass(frozen=True)
class ReleaseOptions:
    containerd: str
    runc: str
    flavor: str
    source: str  # upstream | mirror | dir
    mirror: str | None
    from_dir: Path | None
    checksums: Path
    cache: Path
    net: NetOptions
    cni: str = DEFAULT_CNI
    crictl: str | None = DEFAULT_CRICTL  # None: leave crictl out
    release: bool = False


def _locate(art: Artifact, opts: ReleaseOptions) -> str:
    if opts.source == "mirror":
        assert opts.mirror
        return art.mirror_url(opts.mirror)
    if opts.source == "dir":
        assert opts.from_dir
        return (opts.from_dir / art.name).resolve().as_uri()
    return art.upstream_url()


def obtain(art: Artifact, digest: str, opts: ReleaseOptions) -> tuple[Path, str]:
    """A verified local copy of `art` and where it came from."""
    where = _locate(art, opts)
    if opts.source == "dir":
        assert opts.from_dir
        path = opts.from_dir / art.name
        if not path.is_file():
            raise FetchError(
                f"{art.name} is not in {opts.from_dir}", "copy the release files there"
            )
        actual = sha256_file(path)
        if actual != digest:
            raise ChecksumMismatch(
                f"checksum mismatch for {path}: expected {digest}, got {actual}",
                "replace the file with the published release artifact",
            )
        print(f"fetch: {art.name} from {path} verified", file=sys.stderr)
        return path, where
    # Version-scoped: runc.amd64 of two runc versions must not share a cache slot.
    dest = opts.cache / f"{art.component}-{art.version}" / art.name
    fetched = download(where, dest, digest, opts.net, art.name)
    state = "downloaded and verified" if fetched else "already in cache, verified"
    print(f"fetch: {art.name} {state} (sha256 {digest})", file=sys.stderr)
    return dest, where


def fetch_release(
    arches: Sequence[str], outs: dict[str, Path], opts: ReleaseOptions
) -> list[Staged]:
    plan = {
        arch: [
            containerd_artifact(opts.containerd, arch, opts.flavor),
            runc_artifact(opts.runc, arch),
            *node_artifacts(arch, opts.cni, opts.crictl),
        ]
        for arch in arches
    }
    # Every pin is resolved before the first byte is fetched: a missing pin costs no download.
    pins = {a: lookup_pin(opts.checksums, a) for arts in plan.values() for a in arts}
    pause_pin(opts.checksums)
    sandbox = SandboxOptions(True, opts.release, opts.checksums, opts.net)
    staged: list[Staged] = []

    def verified(art: Artifact) -> tuple[Path, str, str]:
        path, url = obtain(art, pins[art], opts)
        return path, url, pins[art]

    try:
        for arch, (ctd, runc, *node) in plan.items():
            ctd_path, ctd_url = obtain(ctd, pins[ctd], opts)
            runc_path, runc_url = obtain(runc, pins[runc], opts)
            provenance: dict[str, Any] = {
                "flavor": opts.flavor,
                "artifacts": [
                    {"name": ctd.name, "url": ctd_url, "sha256": pins[ctd]},
                    {"name": runc.name, "url": runc_url, "sha256": pins[runc]},
                ],
            }
            st = Staged(
                arch,
                outs[arch],
                new_staging(outs[arch]),
                opts.containerd,
                opts.runc,
                opts.source,
                provenance,
            )
            staged.append(st)
            st.files.update(extract_release_binaries(ctd_path, st.bin_dir))
            with open(runc_path, "rb") as src:
                st.files["runc"] = write_executable(src, st.bin_dir / "runc")
            provenance["artifacts"].extend(stage_upstream(st, node, verified))
            stage_sandbox(st, sandbox)
            st.finish(f"{opts.source} {ctd.name} / {runc.name}")
    except BaseException:
        discard(staged)
        raise
    return staged
