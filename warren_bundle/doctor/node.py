"""What a kubelet needs of this node: CNI ready, the sandbox image, forwarding, bridge netfilter,
iptables, oom_score_adj, and the cgroup driver to give the kubelet."""

from __future__ import annotations

import shutil
from typing import Any

from warren_bundle.doctor.base import Check, Inputs, failed, passed, warned
from warren_bundle.runtime import health


def _manifest(inputs: Inputs) -> Any:
    from warren_bundle.errors import PayloadError
    from warren_bundle.payload.format import locate

    try:
        return locate(inputs.payload_option).manifest
    except PayloadError:
        return None


def _node_report(inputs: Inputs) -> dict[str, Any]:
    from warren_bundle.runtime import statefile

    report = statefile.read(inputs.paths) or {}
    node: Any = report.get("node")
    return dict(node) if isinstance(node, dict) else {}


def check_cni(inputs: Inputs) -> Check:
    from warren_bundle.node import cri, network
    from warren_bundle.runtime.grpc_unix import GrpcError

    name = "cni"
    manifest = _manifest(inputs)
    plugins = manifest.cni_plugins if manifest is not None else []
    if not plugins:
        return warned(
            name,
            "this payload carries no CNI plugins: CRI pods would get no network",
            "use a warren built with them (make payload stages bin/cni/*)",
        )
    cidr = _node_report(inputs).get("pod_cidr") or network.DEFAULT_POD_CIDR
    overlaps = network.overlapping_routes(cidr)
    if overlaps:
        return warned(
            name,
            f"the pod CIDR {cidr} overlaps host routes ({', '.join(overlaps[:2])})",
            "pass another --pod-cidr to 'warren containerd start'",
        )
    users = network.user_confs(inputs.paths)
    conf = f"your {users[0].name}" if users else f"the default network ({cidr})"
    sock = inputs.paths.socket
    if not health.is_serving(sock, 1.0):
        return passed(name, f"{len(plugins)} plugins carried; {conf} (containerd not running)")
    try:
        ready = cri.conditions(sock).get("NetworkReady")
    except GrpcError as exc:
        return warned(name, f"CRI Status failed: {exc}", "see 'warren containerd logs'")
    if ready is None or not ready.status:
        why = f"{ready.reason}: {ready.message}" if ready else "no NetworkReady condition"
        return failed(
            name,
            f"CRI network not ready ({why})",
            f"check {network.conf_dir(inputs.paths)} and 'warren containerd logs'",
        )
    return passed(name, f"CRI network ready: {conf}, {len(plugins)} plugins")


def check_sandbox_image(inputs: Inputs) -> Check:
    from warren_bundle.node import cri
    from warren_bundle.node.kubelet import reports_pinned
    from warren_bundle.runtime.grpc_unix import GrpcError

    name = "sandbox image"
    manifest = _manifest(inputs)
    image = manifest.sandbox_image if manifest is not None else None
    if image is None:
        return warned(
            name,
            "this payload carries no sandbox (pause) image: pod starts need a registry",
            "use a warren built with one (make payload stages bin/sandbox/pause.tar)",
        )
    ref, sock = str(image["ref"]), inputs.paths.socket
    if not health.is_serving(sock, 1.0):
        return passed(name, f"{ref} carried (imported into k8s.io at start)")
    try:
        found = cri.image_status(sock, ref)
    except (GrpcError, ValueError) as exc:
        return warned(name, f"CRI ImageStatus failed: {exc}", "see 'warren containerd logs'")
    if found is None:
        return failed(
            name, f"{ref} is not in k8s.io", "see 'warren images status'; a restart imports it"
        )
    if found.pinned:
        return passed(name, f"{ref} present and pinned")
    if not reports_pinned(manifest.containerd_version):
        return passed(
            name,
            f"{ref} present (containerd {manifest.containerd_version} does not report pins: "
            "'warren kubelet-flags' gives the kubelet --pod-infra-container-image)",
        )
    return warned(name, f"{ref} present but not pinned", "restart warren to pin it")


def check_forwarding(_: Inputs) -> Check:
    from warren_bundle.node.network import inspect

    name = "ip forwarding"
    host = inspect()
    if host.ip_forward:
        return passed(name, "net.ipv4.ip_forward = 1")
    return warned(
        name,
        "net.ipv4.ip_forward is off (warren turns it on at start): pods cannot reach past the host",
        "sysctl -w net.ipv4.ip_forward=1 (and net.ipv4.ip_forward=1 in /etc/sysctl.d/)",
    )


def check_bridge_netfilter(_: Inputs) -> Check:
    from warren_bundle.node.network import inspect

    name = "br_netfilter"
    host = inspect()
    if host.bridge_nf:
        return passed(name, "loaded; net.bridge.bridge-nf-call-iptables = 1")
    state = "not loaded" if host.bridge_nf is None else "bridge-nf-call-iptables = 0"
    return warned(
        name,
        f"br_netfilter {state}: Service traffic between pods on this bridge skips iptables",
        "modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1 "
        "(echo br_netfilter > /etc/modules-load.d/warren.conf)",
    )


def check_iptables(_: Inputs) -> Check:
    name = "iptables"
    found = shutil.which("iptables")
    if found:
        return passed(name, f"{found} (the bridge, portmap and firewall plugins run it)")
    return warned(
        name,
        "iptables is not installed: RunPodSandbox fails in the bridge and portmap plugins",
        "apt-get install iptables (or your distribution's package)",
    )


def check_oom_score_adj(_: Inputs) -> Check:
    from warren_bundle.hostinfo.caps import can_set_oom_score_adj

    name = "oom_score_adj"
    if can_set_oom_score_adj():
        return passed(name, "root holds CAP_SYS_RESOURCE: pod sandboxes get oom_score_adj -998")
    return passed(
        name,
        "root lacks CAP_SYS_RESOURCE (a container or restricted VM): warren sets "
        "restrict_oom_score_adj, so sandboxes keep warren's own oom_score_adj",
    )


def check_cgroup_driver(inputs: Inputs) -> Check:
    from warren_bundle.node.kubelet import runc_systemd_cgroup
    from warren_bundle.payload.format import locate
    from warren_bundle.runtime.config import ConfigOptions, build_config, systemd_manages_cgroups
    from warren_bundle.store.versions import config_target

    name = "cgroup driver"
    version, directory = config_target(inputs.paths, locate(inputs.payload_option))
    systemd = runc_systemd_cgroup(build_config(inputs.paths, version, ConfigOptions(), directory))
    driver = "systemd" if systemd else "cgroupfs"
    if systemd_manages_cgroups() and not systemd:
        return warned(
            name,
            "systemd manages cgroups but runc is set to cgroupfs (config.d override)",
            "drop the SystemdCgroup override, or give the kubelet --cgroup-driver=cgroupfs",
        )
    return passed(name, f"give the kubelet --cgroup-driver={driver} (see 'warren kubelet-flags')")
