"""The Lima instance warren creates: its settings, and the YAML `limactl create` reads.

An Ubuntu 22.04 VM running the system containerd (Lima installs it), with a provision script that
gives the Lima user containerd's socket and a readiness probe that connects as that user, and the
guest socket forwarded to `{{.Dir}}/sock/containerd.sock` on the host. Nothing here runs limactl:
`lima_config` is the instance as a dict, `render_yaml` the file `warren lima yaml` prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warren_bundle.errors import LimaOptionError

GUEST_SOCKET = "/run/containerd/containerd.sock"
HOST_SOCKET_TEMPLATE = "{{.Dir}}/sock/containerd.sock"
UBUNTU_IMAGES = (
    (
        "https://cloud-images.ubuntu.com/releases/22.04/release/"
        "ubuntu-22.04-server-cloudimg-amd64.img",
        "x86_64",
    ),
    (
        "https://cloud-images.ubuntu.com/releases/22.04/release/"
        "ubuntu-22.04-server-cloudimg-arm64.img",
        "aarch64",
    ),
)

# Provisioning runs as root on every boot, after Lima has installed and started containerd.
# The host end of the socket forward is an SSH session of the Lima user, so the socket must carry
# that user's group, or the host gets "permission denied". containerd.service is Type=notify, so
# ExecStartPost runs once the socket exists.
PROVISION_SCRIPT = """\
#!/bin/bash
set -eu -o pipefail
group="$(id -gn "${LIMA_CIDATA_USER}")"
sock=/run/containerd/containerd.sock
dropin=/etc/systemd/system/containerd.service.d/10-warren-socket-group.conf
mkdir -p "$(dirname "$dropin")"
want="$(mktemp)"
printf '[Service]\\nExecStartPost=/usr/bin/chgrp %s %s\\nExecStartPost=/usr/bin/chmod 0660 %s\\n' \\
  "$group" "$sock" "$sock" >"$want"
if cmp -s "$want" "$dropin"; then
  rm -f "$want"
  exit 0
fi
install -m 0644 "$want" "$dropin"
rm -f "$want"
systemctl daemon-reload
# Once, when the drop-in is new or changed; later starts apply it themselves.
systemctl restart containerd
"""

# Probes run as the Lima user over SSH: ready means that user can connect, as the forward will.
PROBE_SCRIPT = """\
#!/bin/bash
set -eu -o pipefail
sock=/run/containerd/containerd.sock
reachable() {
  python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$sock"
}
for _ in $(seq 150); do
  if reachable 2>/dev/null; then
    exit 0
  fi
  sleep 2
done
echo "containerd's socket $sock is not reachable by user $(id -un)" >&2
exit 1
"""

PROBE_HINT = (
    "containerd's socket is not reachable by the Lima user: check "
    "'limactl shell warren sudo systemctl status containerd' and "
    "'limactl shell warren ls -l /run/containerd/containerd.sock'"
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes in a Lima size ("2GiB", "512MiB", "20G"); Lima reads every unit as binary."""
    match = _SIZE.match(text)
    if not match or (match.group(3) and match.group(3).lower() not in ("b", "ib")):
        raise LimaOptionError(
            f"invalid size {text!r}", "use a number with a unit, e.g. 2GiB, 512MiB, 20GiB"
        )
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * _UNITS[unit])


@dataclass(frozen=True)
class LimaSettings:
    cpus: int = 2
    memory: str = "2GiB"
    disk: str = "20GiB"
    # Host directories shared with the VM; none unless asked. "DIR" is read-only, "DIR:w" writable.
    mounts: tuple[str, ...] = ()
    # A first create downloads an Ubuntu image: minutes, not seconds.
    start_timeout: float = 900.0
    # How long a Running VM's socket may take to answer before its forward counts as dead.
    forward_grace: float = 5.0
    stop_timeout: float = 300.0
    poll_interval: float = 0.25
    progress_interval: float = 10.0
    health_timeout: float = 1.0

    def validate(self) -> None:
        if self.cpus < 1:
            raise LimaOptionError(f"invalid CPU count {self.cpus}", "use 1 or more")
        if parse_size(self.memory) < 512 << 20:
            raise LimaOptionError(f"memory {self.memory!r} is too small", "use at least 512MiB")
        if parse_size(self.disk) < 2 << 30:
            raise LimaOptionError(f"disk {self.disk!r} is too small", "use at least 2GiB")
        for spec in self.mounts:
            _mount_entry(spec)
        if self.start_timeout <= 0:
            raise LimaOptionError("the start timeout must be positive", "e.g. --timeout 900")
        if self.forward_grace < 0:
            raise LimaOptionError("the forward grace must not be negative", "e.g. 5")


def _mount_entry(spec: str) -> dict[str, Any]:
    location, writable = spec, False
    if spec.endswith(":w"):
        location, writable = spec[:-2], True
    path = Path(location).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if not path.is_dir():
        raise LimaOptionError(
            f"cannot mount {location!r}: not a directory", "pass an existing host directory"
        )
    return {"location": str(path.resolve()), "writable": writable}


def lima_config(settings: LimaSettings) -> dict[str, Any]:
    """The Lima instance definition, as the dict PyYAML writes."""
    return {
        "images": [{"location": url, "arch": arch} for url, arch in UBUNTU_IMAGES],
        "cpus": settings.cpus,
        "memory": settings.memory,
        "disk": settings.disk,
        "mounts": [_mount_entry(spec) for spec in settings.mounts],
        "containerd": {"system": True, "user": False},
        "ssh": {"loadDotSSHPubKeys": False},
        "provision": [{"mode": "system", "script": PROVISION_SCRIPT}],
        "probes": [
            {
                "mode": "readiness",
                "description": "containerd reachable by the Lima user",
                "script": PROBE_SCRIPT,
                "hint": PROBE_HINT,
            }
        ],
        "portForwards": [{"guestSocket": GUEST_SOCKET, "hostSocket": HOST_SOCKET_TEMPLATE}],
    }


def render_yaml(settings: LimaSettings) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
        # Scripts as literal blocks, so the file reads like the shell it runs.
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, represent_str)
    body = yaml.dump(lima_config(settings), Dumper=Dumper, sort_keys=False, width=100)
    header = (
        "# Lima instance for warren: Ubuntu 22.04 running containerd, its socket forwarded to\n"
        "# {{.Dir}}/sock/containerd.sock on the host. Written by warren; options of\n"
        "# 'warren lima up' change it, and apply when the VM is created.\n"
    )
    return header + body
