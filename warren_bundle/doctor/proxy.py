"""The proxy containerd pulls images through: the running containerd's own environment, or, with
none running, what a start from here would give it (runtime/proxyenv.py)."""

from __future__ import annotations

import ipaddress
import os
from contextlib import suppress

import psutil

from warren_bundle.doctor.base import Check, Inputs, passed, warned
from warren_bundle.runtime import pidfile, proxyenv


def _bypassed(no_proxy: str, host: str) -> bool:
    """Whether Go's NO_PROXY rules send `host` (a name or an IPv4 network) direct."""
    entries = [e.strip() for e in no_proxy.split(",") if e.strip()]
    if "*" in entries or host in entries:
        return True
    with suppress(ValueError):
        net = ipaddress.ip_network(host, strict=False)
        for entry in entries:
            with suppress(ValueError):
                if net.subnet_of(ipaddress.ip_network(entry, strict=False)):  # type: ignore[arg-type]
                    return True
    return False


def check_proxy(inputs: Inputs) -> Check:
    from warren_bundle.node.network import DEFAULT_POD_CIDR
    from warren_bundle.runtime import statefile

    name = "proxy"
    proc = pidfile.containerd(inputs.paths)
    env: dict[str, str] | None = None
    whose = "containerd"
    if proc is not None:
        with suppress(psutil.Error):
            env = proc.environ()
    if env is None:
        env = proxyenv.for_containerd(os.environ)
        whose = "a containerd started from here"
    found = proxyenv.in_effect(env)
    if not any(k != "NO_PROXY" for k in found):
        return passed(name, f"none: {whose} connects to registries directly")
    shown = ", ".join(f"{k}={proxyenv.hide_password(v)}" for k, v in found.items())
    node: object = (statefile.read(inputs.paths) or {}).get("node")
    cidr = (node.get("pod_cidr") if isinstance(node, dict) else None) or DEFAULT_POD_CIDR
    no_proxy = found.get("NO_PROXY", "")
    missing = [h for h in ("localhost", "127.0.0.1", str(cidr)) if not _bypassed(no_proxy, h)]
    if missing:
        return warned(
            name,
            f"{whose} uses {shown}, and NO_PROXY leaves out {', '.join(missing)}",
            f"add {','.join(missing)} to NO_PROXY (install.sh does so for the service)",
        )
    return passed(name, f"{whose} uses {shown}")
