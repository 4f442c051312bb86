"""What a kubelet must be told to use warren's containerd: `warren kubelet-flags`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warren_bundle.paths import Paths
from warren_bundle.store.compat import at_least


def runc_systemd_cgroup(config: dict[str, Any]) -> bool:
    """SystemdCgroup of the runc runtime in a built config (v2 or v3 layout)."""
    plugins = config.get("plugins", {})
    cri = plugins.get("io.containerd.grpc.v1.cri") or plugins.get("io.containerd.cri.v1.runtime")
    runc = (cri or {}).get("containerd", {}).get("runtimes", {}).get("runc", {})
    return bool(runc.get("options", {}).get("SystemdCgroup"))


def sandbox_image_of(config: dict[str, Any]) -> str | None:
    plugins = config.get("plugins", {})
    v2 = plugins.get("io.containerd.grpc.v1.cri", {}).get("sandbox_image")
    v3 = plugins.get("io.containerd.cri.v1.images", {}).get("pinned_images", {}).get("sandbox")
    found = v2 or v3
    return str(found) if found else None


def reports_pinned(containerd_version: str) -> bool:
    """CRI marks pinned images (io.cri-containerd.pinned) from containerd 1.7 on."""
    return at_least(containerd_version, (1, 7))


def kubelet_settings(
    paths: Paths, socket: Path, config: dict[str, Any], containerd_version: str
) -> dict[str, Any]:
    endpoint = f"unix://{socket}"
    driver = "systemd" if runc_systemd_cgroup(config) else "cgroupfs"
    sandbox = sandbox_image_of(config)
    flags = [
        f"--container-runtime-endpoint={endpoint}",
        f"--image-service-endpoint={endpoint}",
        f"--cgroup-driver={driver}",
    ]
    if sandbox and not reports_pinned(containerd_version):
        # containerd 1.6's CRI does not report the sandbox image as pinned; the kubelet's image
        # GC then keeps it only as its own --pod-infra-container-image.
        flags.append(f"--pod-infra-container-image={sandbox}")
    return {
        "flags": flags,
        # The same in a KubeletConfiguration file (kubelet --config).
        "config": {
            "containerRuntimeEndpoint": endpoint,
            "imageServiceEndpoint": endpoint,
            "cgroupDriver": driver,
        },
        "sandbox_image": sandbox,
        "sandbox_image_pinned_by_cri": reports_pinned(containerd_version),
        "config_file": str(paths.config_file),
    }
