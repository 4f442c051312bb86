"""OCI image-layout archives (what `ctr images import` reads), written reproducibly.

The sandbox image travels in the payload as one such archive: either the pinned upstream pause
image (its manifest, config and layer blobs as pulled, see registry.py) or one built here from a
static pause binary (sandbox.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_V1 = "application/vnd.oci.image.manifest.v1+json"
CONFIG_V1 = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def _mtime() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, _mtime()
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class LayerFile:
    path: str  # inside the image, without a leading "/"
    data: bytes
    mode: int = 0o755


def layer_tar(files: Sequence[LayerFile]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for f in files:
            _add(tar, f.path, f.data, f.mode)
    return buf.getvalue()


def write_archive(
    dest: Path, ref: str, manifest: bytes, blobs: Mapping[str, bytes]
) -> tuple[int, str]:
    """Write an OCI layout tar naming `manifest` as image `ref`; blobs: digest -> bytes.

    Every blob's digest is checked here: an archive never carries bytes its names do not match.
    Returns (size, sha256) of the archive.
    """
    for digest, data in blobs.items():
        if digest_of(data) != digest:
            raise ValueError(f"blob {digest} does not match its bytes")
    manifest_digest = digest_of(manifest)
    tag = ref.rsplit(":", 1)[-1] if ":" in ref.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": json.loads(manifest).get("mediaType", MANIFEST_V1),
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", canonical(index))
        for digest, data in sorted({**blobs, manifest_digest: manifest}.items()):
            _add(tar, f"blobs/sha256/{digest.removeprefix('sha256:')}", data)
    data = buf.getvalue()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return len(data), hashlib.sha256(data).hexdigest()


def single_layer_image(
    dest: Path, ref: str, arch: str, files: Sequence[LayerFile], entrypoint: list[str]
) -> tuple[int, str, str]:
    """A one-layer image of `files` running `entrypoint`; (size, sha256, manifest digest)."""
    layer = layer_tar(files)
    config = canonical(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]},
        }
    )
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V1,
            "config": {"mediaType": CONFIG_V1, "digest": digest_of(config), "size": len(config)},
            "layers": [{"mediaType": LAYER_TAR, "digest": digest_of(layer), "size": len(layer)}],
        }
    )
    size, sha = write_archive(
        dest, ref, manifest, {digest_of(config): config, digest_of(layer): layer}
    )
    return size, sha, digest_of(manifest)
