"""What a start does for the node before containerd is spawned: the config (with CRI's CNI dirs,
sandbox image and oom_score_adj setting), the default pod network, and the host's forwarding and
bridge netfilter; and the report of it that `status` and `doctor` show."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypedDict

from warren_bundle.errors import path_error
from warren_bundle.fsutil import written_path
from warren_bundle.paths import rootless_user
from warren_bundle.runtime.config import (
    ConfigOptions,
    cri_node_settings,
    write_config,
    write_denied,
)

if TYPE_CHECKING:
    from warren_bundle.paths import Paths
    from warren_bundle.store.install import Installed


class NodeReport(TypedDict):
    pod_cidr: str
    cni_conf_dir: str
    cni_bin_dir: str
    cni_plugins: list[str]
    conflist: str | None  # ours, or None when the user brought their own
    user_confs: list[str]
    sandbox_image: str | None
    restrict_oom_score_adj: bool
    oom_reason: str | None
    ip_forward: bool | None
    bridge_nf: bool | None
    problems: list[str]


def configure(
    paths: Paths, version: Installed, opts: ConfigOptions, log: Callable[[str], None]
) -> NodeReport:
    from warren_bundle.node import network

    settings = cri_node_settings(paths, version.containerd, opts, version.directory)
    try:
        write_config(paths, version.containerd, opts, version.directory, settings)
        network.write_default(paths, opts.pod_cidr or network.DEFAULT_POD_CIDR)
    except PermissionError as exc:
        raise write_denied(exc) from exc
    except OSError as exc:
        where = written_path(exc) or paths.config_file
        raise path_error(exc, where, "--config-dir") from exc
    reason = None
    if settings.restrict_oom_score_adj and opts.restrict_oom_score_adj is None:
        reason = (
            "rootless: containerd runs in a user namespace"
            if rootless_user()
            else "root lacks CAP_SYS_RESOURCE (a container or a restricted VM)"
        )
        log(f"restrict_oom_score_adj = true: {reason}")
    host = network.prepare()
    for line in host.changed:
        log(f"node: {line}")
    for line in host.problems:
        log(f"node: {line}")
    plugins_dir = network.cni_bin_dir(version.directory)
    users = network.user_confs(paths)
    if users:
        log(f"node: using the CNI config in {users[0]} (the default network is not written)")
    conflist = None if users else network.conf_dir(paths) / network.CONFLIST
    plugins = sorted(p.name for p in plugins_dir.iterdir()) if plugins_dir.is_dir() else []
    return {
        "pod_cidr": opts.pod_cidr or network.DEFAULT_POD_CIDR,
        "cni_conf_dir": str(network.conf_dir(paths)),
        "cni_bin_dir": str(plugins_dir),
        "cni_plugins": plugins,
        "conflist": str(conflist) if conflist else None,
        "user_confs": [str(p) for p in users],
        "sandbox_image": settings.sandbox_image,
        "restrict_oom_score_adj": settings.restrict_oom_score_adj,
        "oom_reason": reason,
        "ip_forward": host.ip_forward,
        "bridge_nf": host.bridge_nf,
        "problems": host.problems,
    }
