"""The node parts of a payload beside containerd and runc: the CNI plugins (bin/cni/*) and crictl.

Upstream: the pinned containernetworking/plugins and kubernetes-sigs/cri-tools releases, verified
like containerd and runc. Debian: the suite's containernetworking-plugins package (no crictl:
Debian does not package it; `warren crictl` then says so).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warren_bundle.payload.format import CNI_DIR

from .archive import extract_release_binaries
from .debversion import upstream_version
from .pins import Artifact, cni_artifact, crictl_artifact

if TYPE_CHECKING:
    from .debian import DebianSource
    from .staging import Staged

DEFAULT_CNI = "1.9.1"
DEFAULT_CRICTL = "1.37.0"
# What a node's default network and kubelet need: the bridge network with host-local IPAM,
# hostPorts (portmap), the firewall and bandwidth plugins, and loopback (CRI sets up lo).
CNI_PLUGINS = ("bandwidth", "bridge", "firewall", "host-local", "loopback", "portmap")
DEBIAN_CNI_PACKAGE = "containernetworking-plugins"
DEBIAN_CNI_DIR = "usr/lib/cni"

Obtain = Callable[[Artifact], tuple[Path, str, str]]  # artifact -> (path, url, sha256)


def node_artifacts(arch: str, cni: str, crictl: str | None) -> list[Artifact]:
    arts = [cni_artifact(cni, arch)]
    if crictl:
        arts.append(crictl_artifact(crictl, arch))
    return arts


def stage_upstream(st: Staged, arts: list[Artifact], obtain: Obtain) -> list[dict[str, str]]:
    """Stage the CNI plugins (and crictl) from their verified release tarballs; the provenance
    entries of what was used."""
    used = []
    for art in arts:
        path, url, sha = obtain(art)
        used.append({"name": art.name, "url": url, "sha256": sha})
        if art.component == "cni-plugins":
            dest = st.bin_dir / CNI_DIR
            dest.mkdir(exist_ok=True)
            found = extract_release_binaries(
                path, dest, CNI_PLUGINS, subdir="", what="a CNI plugins release tarball"
            )
            st.files.update({f"{CNI_DIR}/{name}": v for name, v in found.items()})
            st.components["cni"] = _cni_component(art.version, "upstream")
        else:
            found = extract_release_binaries(
                path, st.bin_dir, ("crictl",), subdir="", what="a crictl release tarball"
            )
            st.files.update(found)
            st.components["crictl"] = {"version": art.version, "file": "crictl"}
    return used


def _cni_component(version: str, source: str) -> dict[str, Any]:
    return {"version": version, "source": source, "plugins": list(CNI_PLUGINS), "dir": CNI_DIR}


def stage_debian(st: Staged, source: DebianSource, suite: str) -> dict[str, str]:
    """The CNI plugins from the suite's containernetworking-plugins; its provenance entry."""
    info = source.fetch(DEBIAN_CNI_PACKAGE, suite, st.arch)
    source.take(info, {f"{CNI_DIR}/{p}": f"{DEBIAN_CNI_DIR}/{p}" for p in CNI_PLUGINS}, st)
    component = _cni_component(upstream_version(info.version), "debian")
    component["package"] = f"{info.package} {info.version} ({info.suite})"
    st.components["cni"] = component
    return {"name": info.deb.name, "url": info.url, "sha256": info.sha256}
