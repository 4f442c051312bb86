"""containerd's config as a dict (version 2 for containerd 1.x, 3 for 2.x), written with tomli-w.

Registry mirrors go to hosts.toml files under <config-dir>/certs.d (containerd's `config_path`),
the form both 1.6 and 2.x read; the inline `registry.mirrors` table of the seed is deprecated in
1.x, and containerd refuses to start when both are set.
"""

from __future__ import annotations

import copy
import grp
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warren_bundle.errors import ConfigError
from warren_bundle.fsutil import atomic_write
from warren_bundle.paths import Paths
from warren_bundle.store.compat import at_least

if TYPE_CHECKING:
    from warren_bundle.registries import Registries

SANDBOX_IMAGE_V1 = "registry.k8s.io/pause:3.9"
SANDBOX_IMAGE_V2 = "registry.k8s.io/pause:3.10"
DEFAULT_MIRRORS = {"docker.io": ["https://registry-1.docker.io"]}


@dataclass(frozen=True)
class ConfigOptions:
    socket_group: str | None = None
    # registry host -> mirror endpoints, in order of preference
    registry_mirrors: Mapping[str, list[str]] = field(default_factory=dict)
    systemd_cgroup: bool | None = None  # None: detect
    debug: bool = False
    pod_cidr: str | None = None  # None: node.network.DEFAULT_POD_CIDR
    restrict_oom_score_adj: bool | None = None  # None: when root lacks CAP_SYS_RESOURCE
    # --registries FILE; None: <config-dir>/registries.yaml when it exists (registries.py)
    registries_file: Path | None = None


# A registry as containerd names its hosts.toml directory: a DNS name or IP, an optional port.
# Nothing else may reach the path <config-dir>/certs.d/<registry>/ (no "/", no "..").
_REGISTRY = re.compile(
    r"^(?!-)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$"
)
_URL_FORBIDDEN = re.compile(r"[\s\"'\\<>{}|^`]|[\x00-\x1f\x7f]")
_MIRROR_FORM = "use REGISTRY=URL, e.g. --registry-mirror docker.io=https://mirror.local"


def parse_mirror(spec: str) -> tuple[str, str]:
    """`docker.io=https://mirror.local` → ("docker.io", "https://mirror.local").

    The registry becomes a directory name and the URL a TOML key, so both are held to their
    grammar here: a value that could escape <config-dir>/certs.d or the TOML string is refused.
    """
    from urllib.parse import urlsplit

    host, sep, endpoint = (part.strip() for part in spec.partition("="))
    if "@" in endpoint.split("://", 1)[-1].split("/", 1)[0]:
        # Never echoed back: the URL holds a credential.
        raise ConfigError(
            "bad --registry-mirror: its URL carries a user or password (user:password@)",
            "put credentials in registries.yaml (configs.<host>.auth) in the config dir, "
            "or pass --registries FILE",
        )
    if not sep or not host or not endpoint:
        raise ConfigError(f"bad --registry-mirror {spec!r}", _MIRROR_FORM)
    if not _REGISTRY.match(host):
        raise ConfigError(
            f"bad --registry-mirror {spec!r}: {host!r} is not a registry host name",
            _MIRROR_FORM,
        )
    try:
        url = urlsplit(endpoint)
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        url = None
    if (
        url is None
        or url.scheme not in ("http", "https")
        or not url.hostname
        or _URL_FORBIDDEN.search(endpoint)
    ):
        raise ConfigError(
            f"bad --registry-mirror {spec!r}: {endpoint!r} is not an http(s) URL", _MIRROR_FORM
        )
    return host, endpoint.rstrip("/")


def systemd_manages_cgroups() -> bool:
    # sd_booted(): systemd is PID 1 exactly when this directory exists.
    return os.path.isdir("/run/systemd/system")


def config_version_for(containerd_version: str) -> int:
    return 3 if at_least(containerd_version, (2, 0)) else 2


def _gid_of(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(
            f"socket group {group!r} does not exist",
            f"create it (groupadd {group}) or pass another --socket-group",
        ) from None


def hosts_dir(paths: Paths) -> Path:
    return paths.config_dir / "certs.d"


def build_config(
    paths: Paths, containerd_version: str, opts: ConfigOptions, bin_dir: Path | None = None
) -> dict[str, Any]:
    """bin_dir: the version dir containerd runs from (its own runc); default <data>/bin."""
    version = config_version_for(containerd_version)
    systemd = systemd_manages_cgroups() if opts.systemd_cgroup is None else opts.systemd_cgroup
    # Our own runc root: the default one is shared with a system containerd on the same host.
    runc_options = {
        "BinaryName": str((bin_dir or paths.bin_dir) / "runc"),
        "Root": str(paths.runc_root),
        "SystemdCgroup": systemd,
    }
    runtimes = {"runc": {"runtime_type": "io.containerd.runc.v2", "options": runc_options}}
    registry: dict[str, Any] = {"config_path": str(hosts_dir(paths))}
    auths = registries_auth(paths, opts)
    if auths:
        registry["configs"] = auths
    grpc: dict[str, Any] = {"address": str(paths.socket), "uid": 0, "gid": 0}
    if opts.socket_group:
        grpc["gid"] = _gid_of(opts.socket_group)
    config: dict[str, Any] = {
        "version": version,
        "root": str(paths.containerd_root),
        "state": str(paths.state_dir),
        "grpc": grpc,
        "debug": {"level": "debug" if opts.debug else "info"},
    }
    opt_plugin = {"path": str(paths.data_dir / "opt")}
    node = cri_node_settings(paths, containerd_version, opts, bin_dir or paths.bin_dir)
    if version == 2:
        config["plugins"] = {
            "io.containerd.grpc.v1.cri": {
                "sandbox_image": node.sandbox_image or SANDBOX_IMAGE_V1,
                "restrict_oom_score_adj": node.restrict_oom_score_adj,
                "cni": node.cni,
                "containerd": {"snapshotter": "overlayfs", "runtimes": runtimes},
                "registry": registry,
            },
            "io.containerd.internal.v1.opt": opt_plugin,
        }
    else:
        config["plugins"] = {
            "io.containerd.cri.v1.images": {
                "snapshotter": "overlayfs",
                "pinned_images": {"sandbox": node.sandbox_image or SANDBOX_IMAGE_V2},
                "registry": registry,
            },
            "io.containerd.cri.v1.runtime": {
                "containerd": {"runtimes": runtimes},
                "restrict_oom_score_adj": node.restrict_oom_score_adj,
                "cni": node.cni,
            },
            "io.containerd.transfer.v1.local": {"config_path": str(hosts_dir(paths))},
            "io.containerd.internal.v1.opt": opt_plugin,
        }
    return deep_merge(config, load_overrides(paths))


@dataclass(frozen=True)
class NodeSettings:
    sandbox_image: str | None  # the carried one; None: the payload carries none
    restrict_oom_score_adj: bool
    cni: dict[str, Any]


def cri_node_settings(
    paths: Paths, containerd_version: str, opts: ConfigOptions, bin_dir: Path
) -> NodeSettings:
    """CRI's node settings: warren's own CNI dirs, the carried sandbox image, and whether
    containerd must leave oom_score_adj alone (root without CAP_SYS_RESOURCE)."""
    from warren_bundle.hostinfo.caps import can_set_oom_score_adj
    from warren_bundle.node.network import cni_bin_dir, conf_dir
    from warren_bundle.node.sandbox import sandbox_ref

    restrict = opts.restrict_oom_score_adj
    if restrict is None:
        restrict = not can_set_oom_score_adj()
    cni: dict[str, Any] = {"conf_dir": str(conf_dir(paths)), "max_conf_num": 1}
    # 2.1 deprecates bin_dir for bin_dirs (a list); 1.x and 2.0 know only bin_dir.
    if at_least(containerd_version, (2, 1)):
        cni["bin_dirs"] = [str(cni_bin_dir(bin_dir))]
    else:
        cni["bin_dir"] = str(cni_bin_dir(bin_dir))
    return NodeSettings(sandbox_ref(bin_dir), restrict, cni)


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (lists included) is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_overrides(paths: Paths) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    if not paths.config_d.is_dir():
        return merged
    for file in sorted(paths.config_d.glob("*.toml")):
        try:
            with open(file, "rb") as fp:
                merged = deep_merge(merged, tomllib.load(fp))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file} is not valid TOML ({exc})", f"fix or remove {file}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}") from exc
    return merged


def hosts_toml(registry: str, mirrors: list[str]) -> str:
    """containerd's hosts.toml for `registry`: pulls go to the mirrors in order, then upstream.

    Written with tomli-w, never by string formatting: a URL is data, not TOML.
    """
    from warren_bundle.registries import Mirror, Registries
    from warren_bundle.registry_hosts import hosts_tables

    tables = hosts_tables(Registries({registry: Mirror(tuple(mirrors))}))
    return render(tables[registry])


def load_registries(paths: Paths, opts: ConfigOptions) -> Registries:
    """registries.yaml (or --registries FILE) with the --registry-mirror entries added."""
    from warren_bundle import registries

    loaded = registries.load(registries.resolve(paths.config_dir, opts.registries_file))
    extra = {**DEFAULT_MIRRORS, **{k: list(v) for k, v in opts.registry_mirrors.items()}}
    if "docker.io" in loaded.mirrors and "docker.io" not in opts.registry_mirrors:
        extra.pop("docker.io")
    return loaded.with_mirrors(extra)


def registries_auth(paths: Paths, opts: ConfigOptions) -> dict[str, Any]:
    from warren_bundle.registry_hosts import cri_auth

    return cri_auth(load_registries(paths, opts))


HOSTS_MANIFEST = ".warren-hosts.json"


def write_hosts(paths: Paths, registries: Registries) -> list[Path]:
    """One hosts.toml per registry under certs.d, never through a symlink; one that holds a
    credential is 0600 in a 0700 dir. hosts.toml files warren wrote before for registries no
    longer configured are removed (they may hold old credentials)."""
    import json

    from warren_bundle import safewrite
    from warren_bundle.registry_hosts import holds_secret, hosts_tables

    root = hosts_dir(paths)
    root.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tables = hosts_tables(registries)
    written = []
    for registry, table in tables.items():
        secret = holds_secret(table)
        written.append(
            safewrite.write_file(
                root,
                f"{registry}/hosts.toml",
                render(table),
                0o600 if secret else 0o644,
                dir_mode=0o700 if secret else 0o755,
            )
        )
    before = safewrite.read_file(root, HOSTS_MANIFEST)
    try:
        previous = json.loads(before) if before else []
    except ValueError:
        previous = []
    for registry in previous if isinstance(previous, list) else []:
        if isinstance(registry, str) and registry not in tables and "/" not in registry:
            safewrite.unlink(root, f"{registry}/hosts.toml")
    safewrite.write_file(root, HOSTS_MANIFEST, json.dumps(sorted(tables)) + "\n", 0o644)
    return written


def render(config: Mapping[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(config)


def render_redacted(config: Mapping[str, Any]) -> str:
    """The config as `containerd config` shows it: every credential is <redacted>."""
    from warren_bundle.registry_hosts import redact

    return render(redact(dict(config)))


def write_config(
    paths: Paths, containerd_version: str, opts: ConfigOptions, bin_dir: Path | None = None
) -> Path:
    """Write config.toml (0600), the registry hosts files and the default pod network (unless
    the user brought one); return the config path."""
    from warren_bundle.node.network import DEFAULT_POD_CIDR, write_default

    config = build_config(paths, containerd_version, opts, bin_dir)
    try:
        write_hosts(paths, load_registries(paths, opts))
        write_default(paths, opts.pod_cidr or DEFAULT_POD_CIDR)
        atomic_write(paths.config_file, render(config), 0o600, durable=True)
    except PermissionError as exc:
        from warren_bundle.errors import PermissionDeniedError

        raise PermissionDeniedError(
            f"cannot write {exc.filename}: permission denied",
            "run warren with sudo, or pass --config-dir to a directory you own",
        ) from exc
    return paths.config_file
