"""How containerd is run: the options `containerd run|start` take, typed from the command line
to the point of spawning (`args()` is called once, by control.start_detached).

The supervisor records the options it runs with in its state file (`run_options`), so that a
rollback or an upgrade's restart starts containerd again with exactly those, and `containerd
start` with other settings can say which differ instead of reporting "already running".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warren_bundle.runtime.settings import DEFAULT_HEALTH_INTERVAL, DEFAULT_READY_TIMEOUT

if TYPE_CHECKING:
    from warren_bundle.runtime.config import ConfigOptions
    from warren_bundle.runtime.settings import Settings

# What a running supervisor's options are compared on: how containerd and its supervisor run.
# Not ready_timeout (how long a start waits, moot once it runs) nor force (a one-time consent).
COMPARED = (
    "socket_group",
    "registry_mirrors",
    "health_interval",
    "containerd_debug",
    "metrics_addr",
    "pod_cidr",
    "registries",
    "publish",
)
LABELS = {
    "socket_group": "--socket-group",
    "registry_mirrors": "--registry-mirror",
    "health_interval": "--health-interval",
    "containerd_debug": "--containerd-debug",
    "metrics_addr": "--metrics-addr",
    "pod_cidr": "--pod-cidr",
    "ready_timeout": "--ready-timeout",
    "registries": "--registries",
    "publish": "--publish",
}


@dataclass(frozen=True)
class RunOptions:
    socket_group: str | None = None
    registry_mirrors: tuple[str, ...] = ()
    ready_timeout: float = DEFAULT_READY_TIMEOUT
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    containerd_debug: bool = False
    metrics_addr: str | None = None
    force: bool = False
    pod_cidr: str | None = None
    registries: str | None = None  # registries.yaml's path: its credentials never travel
    # Rootless only: RootlessKit's published ports, [HOST_IP:]HOST_PORT:CHILD_PORT[/PROTO]
    publish: tuple[str, ...] = ()

    def args(self) -> list[str]:
        """The `containerd run` options of a detached supervisor: built here, once, at spawn."""
        args = ["--ready-timeout", str(self.ready_timeout)]
        args += ["--health-interval", str(self.health_interval)]
        if self.socket_group:
            args += ["--socket-group", self.socket_group]
        for mirror in self.registry_mirrors:
            args += ["--registry-mirror", mirror]
        if self.containerd_debug:
            args.append("--containerd-debug")
        if self.metrics_addr:
            args += ["--metrics-addr", self.metrics_addr]
        if self.force:
            args.append("--force")
        if self.pod_cidr:
            args += ["--pod-cidr", self.pod_cidr]
        if self.registries:  # the file's path; its credentials never travel in argv
            args += ["--registries", self.registries]
        for spec in self.publish:
            args += ["--publish", spec]
        return args

    # --- the record in the state file ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["registry_mirrors"] = list(self.registry_mirrors)
        data["publish"] = list(self.publish)
        del data["force"]  # consent to one version change, not a setting to carry over
        return data

    @classmethod
    def from_dict(cls, data: object) -> RunOptions | None:
        """The options a supervisor recorded; None when it recorded none (an older warren)."""
        if not isinstance(data, Mapping):
            return None
        known = _FIELDS - {"force"}
        values = {k: v for k, v in data.items() if k in known}
        values["registry_mirrors"] = tuple(values.get("registry_mirrors") or ())
        values["publish"] = tuple(values.get("publish") or ())
        try:
            return cls(**values)
        except TypeError:
            return None

    def over(self, recorded: RunOptions | None, given: Collection[str]) -> RunOptions:
        """These options where the user gave them (`given`: field names), the recorded ones
        elsewhere: what a restart onto another version runs with."""
        if recorded is None:
            return self
        mine = {k: getattr(self, k) for k in given if k in _FIELDS and k != "force"}
        return replace(recorded, force=self.force, **mine)

    def differences(self, recorded: RunOptions, given: Collection[str]) -> list[str]:
        """Each setting the user gave that the running supervisor does not run with, in words:
        "--registry-mirror: docker.io=https://m.local (running: none)"."""
        said = []
        for name in COMPARED:
            if name in given and getattr(self, name) != getattr(recorded, name):
                said.append(
                    f"{LABELS[name]}: {_shown(getattr(self, name))} "
                    f"(running: {_shown(getattr(recorded, name))})"
                )
        return said

    @classmethod
    def of(cls, config: ConfigOptions, settings: Settings, metrics_addr: str | None) -> RunOptions:
        """The options a manager built without RunOptions (the library API) runs with: so that
        its record, too, lets a restart keep them."""
        mirrors = tuple(
            f"{host}={endpoint}"
            for host, endpoints in config.registry_mirrors.items()
            for endpoint in endpoints
        )
        return cls(
            socket_group=config.socket_group,
            registry_mirrors=mirrors,
            ready_timeout=settings.ready_timeout,
            health_interval=settings.health_interval,
            containerd_debug=config.debug,
            metrics_addr=metrics_addr,
            pod_cidr=config.pod_cidr,
            registries=str(config.registries_file) if config.registries_file else None,
        )

    # --- what the supervisor is built from ----------------------------------------------------

    def config_options(self) -> ConfigOptions:
        from warren_bundle.runtime.config import ConfigOptions, parse_mirror

        mirrors: dict[str, list[str]] = {}
        for spec in self.registry_mirrors:
            host, endpoint = parse_mirror(spec)
            mirrors.setdefault(host, []).append(endpoint)
        return ConfigOptions(
            socket_group=self.socket_group,
            registry_mirrors=mirrors,
            debug=self.containerd_debug,
            pod_cidr=self.pod_cidr,
            registries_file=Path(self.registries) if self.registries else None,
        )


_FIELDS = frozenset(f.name for f in fields(RunOptions))


def publish_problem(spec: str) -> str | None:
    """Why a --publish value is not RootlessKit's [HOST_IP:]HOST_PORT:CHILD_PORT[/PROTO]."""
    body, _, proto = spec.partition("/")
    parts = body.rsplit(":", 2)
    ports = parts[-2:] if len(parts) >= 2 else []
    bad_proto = proto not in ("", "tcp", "udp")
    if len(ports) != 2 or not all(p.isdigit() and 0 < int(p) < 65536 for p in ports) or bad_proto:
        return f"bad --publish {spec!r}: use [HOST_IP:]HOST_PORT:CHILD_PORT[/tcp|udp], e.g. 8080:80"
    return None


def _shown(value: object) -> str:
    if value in (None, (), False):
        return "none" if value is not False else "off"
    if value is True:
        return "on"
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return str(value)
