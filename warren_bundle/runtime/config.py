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
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warren_bundle.errors import ConfigError, PermissionDeniedError
from warren_bundle.fsutil import atomic_write, check_trusted_dir, check_trusted_file
from warren_bundle.paths import Paths, rootless_user
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


MAX_GID = 2**32 - 2  # 2^32-1 is (gid_t)-1, "no change" to chown


def gid_of(group: str) -> int:
    """A group name or a decimal gid (ASCII digits) that exists on this host: its gid.

    A number is never taken on trust: 4294967296 would wrap to 0 (root) in containerd, and a
    gid no group has is a typo nobody could be added to.
    """
    if group.isascii() and group.isdigit():
        gid = int(group)
        if gid > MAX_GID:
            raise ConfigError(
                f"socket group {group} is not a gid (at most {MAX_GID})",
                "pass a group name or an existing gid to --socket-group",
            )
        try:
            grp.getgrgid(gid)
        except KeyError:
            raise ConfigError(
                f"no group has gid {gid}",
                "pass an existing group's name or gid to --socket-group (getent group)",
            ) from None
        return gid
    try:
        return grp.getgrnam(group).gr_gid
    except (KeyError, ValueError):  # ValueError: an embedded NUL
        raise ConfigError(
            f"socket group {group!r} does not exist",
            "create it (groupadd NAME) or pass an existing group to --socket-group",
        ) from None


def hosts_dir(paths: Paths) -> Path:
    return paths.config_dir / "certs.d"


def build_config(
    paths: Paths,
    containerd_version: str,
    opts: ConfigOptions,
    bin_dir: Path | None = None,
    node: NodeSettings | None = None,
) -> dict[str, Any]:
    """bin_dir: the version dir containerd runs from (its own runc); default <data>/bin.
    node: CRI's node settings when the caller has them (cri_node_settings), else computed."""
    version = config_version_for(containerd_version)
    systemd = systemd_manages_cgroups() if opts.systemd_cgroup is None else opts.systemd_cgroup
    rootless = rootless_user()
    if rootless:  # runc in a user namespace: no systemd cgroup driver, cgroups not delegated
        systemd = False
    snapshotter = rootless_snapshotter() if rootless else "overlayfs"
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
        grpc["gid"] = gid_of(opts.socket_group)
    config: dict[str, Any] = {
        "version": version,
        "root": str(paths.containerd_root),
        "state": str(paths.state_dir),
        "grpc": grpc,
        "debug": {"level": "debug" if opts.debug else "info"},
    }
    opt_plugin = {"path": str(paths.data_dir / "opt")}
    if node is None:
        node = cri_node_settings(paths, containerd_version, opts, bin_dir or paths.bin_dir)
    if version == 2:
        config["plugins"] = {
            "io.containerd.grpc.v1.cri": {
                "sandbox_image": node.sandbox_image or SANDBOX_IMAGE_V1,
                "restrict_oom_score_adj": node.restrict_oom_score_adj,
                "cni": node.cni,
                "containerd": {"snapshotter": snapshotter, "runtimes": runtimes},
                "registry": registry,
            },
            "io.containerd.internal.v1.opt": opt_plugin,
        }
    else:
        config["plugins"] = {
            "io.containerd.cri.v1.images": {
                "snapshotter": snapshotter,
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
    if rootless:
        cri = "io.containerd.grpc.v1.cri" if version == 2 else "io.containerd.cri.v1.runtime"
        config["plugins"][cri].update(ROOTLESS_CRI)
    return deep_merge(config, load_overrides(paths))


# CRI in a user namespace: no cgroups of its own, no AppArmor profiles, oom_score_adj only up.
ROOTLESS_CRI = {"disable_cgroup": True, "disable_apparmor": True, "restrict_oom_score_adj": True}


def rootless_snapshotter() -> str:
    """overlayfs mounts in a user namespace from Linux 5.11; before that, native."""
    from warren_bundle.hostinfo import kernel

    return "overlayfs" if kernel.version(kernel.release()) >= (5, 11) else "native"


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


# A drop-in is a small TOML file: bigger, or nested deeper, is a mistake or an attack (a link to
# /dev/zero, thousands of "[[a.a.a...]]" that overflow the parser's recursion).
MAX_DROPIN_BYTES = 1 << 20
MAX_DROPIN_DEPTH = 32


def check_config_dirs(paths: Paths) -> None:
    """The trust rule (fsutil.check_trusted_dir) for the config dir and what warren reads or
    writes in it: config.d, cni/net.d."""
    from warren_bundle.node.network import conf_dir

    check_trusted_dir(paths.config_dir, "config dir", "--config-dir")
    for path, what in ((paths.config_d, "config.d"), (paths.config_dir / "cni", "cni dir")):
        check_trusted_dir(path, what, "--config-dir", ancestors=False)
    check_trusted_dir(conf_dir(paths), "cni/net.d", "--config-dir", ancestors=False)


def load_overrides(paths: Paths) -> dict[str, Any]:
    """config.d/*.toml merged in name order, from trusted dirs and files only."""
    check_config_dirs(paths)
    merged: dict[str, Any] = {}
    if not paths.config_d.is_dir():
        return merged
    for file in sorted(paths.config_d.glob("*.toml")):
        merged = deep_merge(merged, read_dropin(file))
    return merged


def read_dropin(file: Path) -> dict[str, Any]:
    """One drop-in: a regular file of root's (or the caller's) below MAX_DROPIN_BYTES, UTF-8
    TOML nested at most MAX_DROPIN_DEPTH deep; a one-line ConfigError naming it otherwise."""
    fix = f"fix {file}, or move it out of {file.parent}"
    try:
        # O_NONBLOCK: a FIFO must not hang us; a symlink to a regular file is followed.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"cannot read drop-in {file}: {exc.strerror}", fix) from exc
    with os.fdopen(fd, "rb") as fp:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"drop-in {file} is not a regular file", fix)
        check_trusted_file(st, file, "drop-in")
        raw = fp.read(MAX_DROPIN_BYTES + 1)
    if len(raw) > MAX_DROPIN_BYTES:
        raise ConfigError(f"drop-in {file} is over {MAX_DROPIN_BYTES // 2**20} MiB", fix)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"drop-in {file} is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})", fix
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"drop-in {file} is not valid TOML ({exc})", fix) from None
    except RecursionError:
        doc = None
    if doc is None or _depth(doc) > MAX_DROPIN_DEPTH:
        raise ConfigError(f"drop-in {file} nests tables deeper than {MAX_DROPIN_DEPTH}", fix)
    return doc


def _depth(value: object) -> int:
    """How deep tables and arrays nest in `value`, without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DROPIN_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


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
    paths: Paths,
    containerd_version: str,
    opts: ConfigOptions,
    bin_dir: Path | None = None,
    node: NodeSettings | None = None,
) -> Path:
    """Write config.toml (0600) and the registry hosts files; return the config path. (The
    default pod network is the node's: runtime/node_setup.py writes it.)"""
    config = build_config(paths, containerd_version, opts, bin_dir, node)
    try:
        write_hosts(paths, load_registries(paths, opts))
        atomic_write(paths.config_file, render(config), 0o600, durable=True)
    except PermissionError as exc:
        raise write_denied(exc) from exc
    return paths.config_file


def write_denied(exc: PermissionError) -> PermissionDeniedError:
    """A file under the config dir that could not be written, as the user's error."""
    return PermissionDeniedError(
        f"cannot write {exc.filename}: permission denied",
        "run warren with sudo, or pass --config-dir to a directory you own",
    )
