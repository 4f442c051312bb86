"""Release artifacts (names, upstream and mirror URLs) and their pins in checksums/."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from warren_bundle.errors import PinError

from . import REPO

DEFAULT_CHECKSUMS = REPO / "checksums"
# Tests (and GitHub-compatible proxies) point this at another host with the same path layout.
ENV_UPSTREAM_BASE = "WARREN_UPSTREAM_BASE"
UPSTREAM_BASE = "https://github.com"
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


# component -> its upstream GitHub repository (the release pages and download URLs)
REPOS = {
    "containerd": "containerd/containerd",
    "runc": "opencontainers/runc",
    "cni-plugins": "containernetworking/plugins",
    "crictl": "kubernetes-sigs/cri-tools",
}


@dataclass(frozen=True)
class Artifact:
    component: str  # a key of REPOS: selects the pin file and the upstream repository
    version: str
    name: str  # the release asset's file name

    @property
    def pin_file_name(self) -> str:
        return f"{self.component}-{self.version}.sha256"

    @property
    def release_page(self) -> str:
        return f"https://github.com/{REPOS[self.component]}/releases/tag/v{self.version}"

    def upstream_url(self, base: str | None = None) -> str:
        base = (base or os.environ.get(ENV_UPSTREAM_BASE) or UPSTREAM_BASE).rstrip("/")
        repo = REPOS[self.component]
        return f"{base}/{repo}/releases/download/v{self.version}/{self.name}"

    def mirror_url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{quote(self.name)}"


def containerd_artifact(version: str, arch: str, flavor: str) -> Artifact:
    prefix = "containerd-static" if flavor == "static" else "containerd"
    return Artifact("containerd", version, f"{prefix}-{version}-linux-{arch}.tar.gz")


def runc_artifact(version: str, arch: str) -> Artifact:
    return Artifact("runc", version, f"runc.{arch}")


def cni_artifact(version: str, arch: str) -> Artifact:
    return Artifact("cni-plugins", version, f"cni-plugins-linux-{arch}-v{version}.tgz")


def crictl_artifact(version: str, arch: str) -> Artifact:
    return Artifact("crictl", version, f"crictl-v{version}-linux-{arch}.tar.gz")


def parse_pins(path: Path) -> dict[str, str]:
    """Read a sha256sum-format file: `<hex>  <name>` (or `<hex> *<name>`), '#' comments allowed."""
    pins: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not _SHA256_RE.match(parts[0]):
            raise PinError(
                f"{path}:{lineno}: not a sha256sum line: {raw!r}",
                "each line must be '<64 hex digits>  <file name>'",
            )
        digest, name = parts[0].lower(), parts[1].removeprefix("*").strip()
        if pins.get(name, digest) != digest:
            raise PinError(f"{path}:{lineno}: {name} is pinned twice with different digests")
        pins[name] = digest
    return pins


def lookup_pin(checksums: Path, artifact: Artifact) -> str:
    """The pinned SHA-256 of `artifact`, from checksums/<component>-<version>.sha256."""
    pin_file = checksums / artifact.pin_file_name
    pins = parse_pins(pin_file) if pin_file.is_file() else {}
    digest = pins.get(artifact.name)
    if digest is None:
        raise PinError(
            f"no pin for {artifact.name} ({artifact.component} {artifact.version}) in {pin_file}",
            f"append '<sha256>  {artifact.name}' to {pin_file} after checking it against the "
            f"release's published checksums ({artifact.release_page})",
        )
    return digest
