"""The default pod network: a bridge conflist (host-local IPAM, portmap, firewall, bandwidth)
in <config-dir>/cni/net.d, IPAM leases in <data-dir>/cni/networks, the plugins from the version
dir's cni/; and the host settings pods need (ip_forward, br_netfilter)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warren_bundle.paths import Paths
from warren_bundle.runtime.childenv import child_env

# A /16 none of the usual defaults take: docker 172.17/16, podman and containerd's examples
# 10.88/16, flannel 10.244/16, k3s 10.42/16 and 10.43/16, kubespray 10.233/16, calico
# 192.168/16, weave 10.32/12. `warren doctor` says when a host route overlaps it anyway.
DEFAULT_POD_CIDR = "10.217.0.0/16"
NETWORK_NAME = "warren"
BRIDGE = "warren0"
CONFLIST = "10-warren.conflist"
CONF_SUFFIXES = (".conf", ".conflist", ".json")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def conf_dir(paths: Paths) -> Path:
    return paths.config_dir / "cni" / "net.d"


def ipam_dir(paths: Paths) -> Path:
    return paths.data_dir / "cni" / "networks"


def cni_bin_dir(bin_dir: Path) -> Path:
    return bin_dir / "cni"


def parse_pod_cidr(value: str) -> str:
    """An IPv4 network of /8 to /28, normalised; ValueError saying why not."""
    try:
        net = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a network in CIDR form ({exc})") from None
    if net.version != 4 or not 8 <= net.prefixlen <= 28:
        raise ValueError(f"{value!r}: use an IPv4 network from /8 to /28, e.g. {DEFAULT_POD_CIDR}")
    return str(net)


def conflist(paths: Paths, pod_cidr: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir(paths)),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }


def user_confs(paths: Paths) -> list[Path]:
    """Network configs someone else put in the conf dir (ours is 10-warren.conflist)."""
    try:
        entries = sorted(conf_dir(paths).iterdir())
    except FileNotFoundError:
        return []
    return [p for p in entries if p.name != CONFLIST and p.name.endswith(CONF_SUFFIXES)]


def write_default(paths: Paths, pod_cidr: str) -> Path | None:
    """Write our conflist unless the user brought their own (then remove ours); its path."""
    ours = conf_dir(paths) / CONFLIST
    if user_confs(paths):
        ours.unlink(missing_ok=True)
        return None
    ipam_dir(paths).mkdir(mode=0o700, parents=True, exist_ok=True)
    text = json.dumps(conflist(paths, pod_cidr), indent=2) + "\n"
    from warren_bundle import safewrite

    # Never through a symlink planted in cni/ or net.d/ (safewrite refuses one).
    relative = f"{ours.parent.name}/{ours.name}"
    ours.parent.parent.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    current = safewrite.read_file(ours.parent.parent, relative)
    if current != text:  # every start: a write only when it changed
        safewrite.write_file(ours.parent.parent, relative, text, 0o644)
    return ours


@dataclass
class HostNetwork:
    """The kernel settings pods need, and what was done about them."""

    ip_forward: bool | None = None
    bridge_nf: bool | None = None  # br_netfilter loaded and bridge-nf-call-iptables = 1
    changed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _read_flag(path: Path) -> bool | None:
    try:
        return path.read_text().strip() == "1"
    except OSError:
        return None


def _set_flag(path: Path, what: str, report: HostNetwork) -> bool:
    try:
        path.write_text("1\n")
    except OSError as exc:
        report.problems.append(f"cannot set {what} ({exc.strerror}): pods cannot reach out")
        return False
    report.changed.append(f"set {what} = 1")
    return True


def _load_br_netfilter(report: HostNetwork) -> None:
    try:
        done = subprocess.run(
            ["modprobe", "br_netfilter"],
            capture_output=True,
            text=True,
            timeout=10,
            env=child_env(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        report.problems.append(f"cannot load br_netfilter ({exc}): run 'modprobe br_netfilter'")
        return
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        report.problems.append(f"cannot load br_netfilter ({why}): run 'modprobe br_netfilter'")
    else:
        report.changed.append("loaded br_netfilter")


def inspect() -> HostNetwork:
    """The settings as they are, changing nothing (doctor)."""
    return HostNetwork(_read_flag(IP_FORWARD), _read_flag(BRIDGE_NF))


def prepare() -> HostNetwork:
    """Turn on IP forwarding and bridge netfilter where they are off; say what was done."""
    report = inspect()
    if report.ip_forward is False:
        report.ip_forward = _set_flag(IP_FORWARD, "net.ipv4.ip_forward", report)
    elif report.ip_forward is None:
        report.problems.append(f"cannot read {IP_FORWARD}")
    if report.bridge_nf is None:
        _load_br_netfilter(report)
        report.bridge_nf = _read_flag(BRIDGE_NF)
    if report.bridge_nf is False:
        report.bridge_nf = _set_flag(BRIDGE_NF, "net.bridge.bridge-nf-call-iptables", report)
    return report


def overlapping_routes(pod_cidr: str, route_file: Path = Path("/proc/net/route")) -> list[str]:
    """Host IPv4 routes (other than default and our bridge) that overlap the pod CIDR."""
    net = ipaddress.ip_network(pod_cidr)
    found = []
    try:
        lines = route_file.read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        cols = line.split()
        if len(cols) < 8 or cols[0] == BRIDGE:
            continue
        dest = ipaddress.IPv4Address(bytes.fromhex(cols[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(cols[7])[::-1])
        route = ipaddress.ip_network(f"{dest}/{mask}", strict=False)
        if route.prefixlen and route.overlaps(net):
            found.append(f"{route} dev {cols[0]}")
    return found
