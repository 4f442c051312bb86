"""Test helpers for scripts/fetch_and_verify.py (warren_bundle.fetch): craft ELF headers and
release-shaped artifacts, and serve files over a real HTTP server that can misbehave on request.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import struct
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "fetch_and_verify.py"

# Debian's packaged binaries stand in for the upstream release's (same names, real ELF files).
REAL_BINARIES = {
    "containerd": Path("/usr/bin/containerd"),
    "containerd-shim-runc-v2": Path("/usr/bin/containerd-shim-runc-v2"),
    "ctr": Path("/usr/bin/ctr"),
    "runc": Path("/usr/sbin/runc"),
}
ELF_MACHINES = {"amd64": 62, "arm64": 183}


def fake_elf(arch: str, size: int = 4096) -> bytes:
    """A 64-bit little-endian ELF header for `arch`, padded: enough for payload.elf."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHI", 2, ELF_MACHINES[arch], 1)
    return header + bytes(size - len(header))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def missing_real_binaries() -> list[str]:
    return [str(p) for p in REAL_BINARIES.values() if not p.is_file()]


# --- tarballs -------------------------------------------------------------------------------


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], level: int = 1) -> bytes:
    """A .tar.gz of the given members; data None for members without content."""
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=level, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def file_member(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


def dir_member(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def special_member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


def release_tarball(binaries: dict[str, bytes], extra: dict[str, bytes] | None = None) -> bytes:
    """Shaped like containerd-static-*.tar.gz: a bin/ dir with the executables."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [(dir_member("bin"), None)]
    for name, data in {**binaries, **(extra or {})}.items():
        members.append((file_member(f"bin/{name}"), data))
    return tar_bytes(members)


CNI_VERSION, CRICTL_VERSION = "1.9.1", "1.37.0"
PAUSE_REF = "registry.k8s.io/pause:3.10"
CNI_PLUGINS = ("bandwidth", "bridge", "firewall", "host-local", "loopback", "portmap")


def _json(obj: object) -> bytes:
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def pause_registry(arches: tuple[str, ...] = ("amd64", "arm64")) -> tuple[dict[str, bytes], str]:
    """A registry's /v2/pause/{manifests,blobs}/<digest> files for a pause:3.10-shaped image
    index (one image per arch, each a fake-ELF /pause), and the index digest to pin. The same
    bytes every call, so releases of two arches pin the same index."""
    files: dict[str, bytes] = {}
    entries = []
    for arch in arches:
        layer_buf = io.BytesIO()
        with tarfile.open(fileobj=layer_buf, mode="w") as layer:
            data = fake_elf(arch) + b"pause"
            info = file_member("pause")
            info.size = len(data)
            layer.addfile(info, io.BytesIO(data))
        layer_bytes = layer_buf.getvalue()
        config = _json(
            {
                "architecture": arch,
                "os": "linux",
                "config": {"Entrypoint": ["/pause"]},
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(layer_bytes)}"]},
            }
        )
        manifest = _json(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": f"sha256:{sha256(config)}",
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": f"sha256:{sha256(layer_bytes)}",
                        "size": len(layer_bytes),
                    }
                ],
            }
        )
        for blob in (config, layer_bytes):
            files[f"/v2/pause/blobs/sha256:{sha256(blob)}"] = blob
        files[f"/v2/pause/manifests/sha256:{sha256(manifest)}"] = manifest
        entries.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{sha256(manifest)}",
                "size": len(manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }
    )
    files[f"/v2/pause/manifests/sha256:{sha256(index)}"] = index
    return files, sha256(index)


def node_tarballs(arch: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(release files, what the payload must carry) for the CNI plugins and crictl of `arch`:
    flat tarballs as the projects publish them (./bridge, ...; crictl)."""
    plugins = {p: fake_elf(arch) + p.encode() for p in CNI_PLUGINS}
    extra = {"README.md": b"not in the payload\n", "dhcp": fake_elf(arch) + b"dhcp"}
    cni = tar_bytes(
        [(dir_member("."), None)]
        + [(file_member(f"./{name}"), data) for name, data in {**plugins, **extra}.items()]
    )
    crictl = fake_elf(arch) + b"crictl"
    files = {
        f"cni-plugins-linux-{arch}-v{CNI_VERSION}.tgz": cni,
        f"crictl-v{CRICTL_VERSION}-linux-{arch}.tar.gz": tar_bytes(
            [(file_member("crictl"), crictl)]
        ),
    }
    carried = {f"cni/{name}": data for name, data in plugins.items()}
    carried["crictl"] = crictl
    return files, carried


@dataclass
class Release:
    """Release files for one arch plus the pin files that vouch for them."""

    arch: str
    containerd_version: str
    runc_version: str
    files: dict[str, bytes]  # asset name -> bytes
    binaries: dict[str, bytes]  # what the payload must carry

    @property
    def tarball_name(self) -> str:
        return f"containerd-static-{self.containerd_version}-linux-{self.arch}.tar.gz"

    @property
    def runc_name(self) -> str:
        return f"runc.{self.arch}"

    @property
    def cni_name(self) -> str:
        return f"cni-plugins-linux-{self.arch}-v{CNI_VERSION}.tgz"

    @property
    def crictl_name(self) -> str:
        return f"crictl-v{CRICTL_VERSION}-linux-{self.arch}.tar.gz"

    @property
    def registry(self) -> dict[str, bytes]:
        """The pause image's registry paths (serve them at WARREN_REGISTRY_BASE)."""
        return pause_registry()[0]

    def write_pins(self, checksums: Path, skip: tuple[str, ...] = ()) -> Path:
        checksums.mkdir(parents=True, exist_ok=True)
        pins = {
            f"containerd-{self.containerd_version}.sha256": self.tarball_name,
            f"runc-{self.runc_version}.sha256": self.runc_name,
            f"cni-plugins-{CNI_VERSION}.sha256": self.cni_name,
            f"crictl-{CRICTL_VERSION}.sha256": self.crictl_name,
        }
        for pin_file, asset in pins.items():
            if asset not in skip:
                line = f"{sha256(self.files[asset])}  {asset}\n"
                with open(checksums / pin_file, "a") as fp:
                    fp.write(line)
        if PAUSE_REF not in skip:
            with open(checksums / "pause-3.10.sha256", "a") as fp:
                fp.write(f"{pause_registry()[1]}  {PAUSE_REF}\n")
        return checksums

    def write_dir(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        return folder


def make_release(
    binaries: dict[str, bytes], arch: str, containerd_version: str = "2.2.7", runc: str = "1.3.6"
) -> Release:
    ctd = {k: v for k, v in binaries.items() if k != "runc"}
    # Present in real releases and must be left out of the payload.
    extra = {"containerd-stress": b"#!/bin/sh\necho not in the payload\n"}
    tarball = release_tarball(ctd, extra)
    node_files, carried = node_tarballs(arch)
    rel = Release(arch, containerd_version, runc, dict(node_files), {**binaries, **carried})
    rel.files[rel.tarball_name] = tarball
    rel.files[rel.runc_name] = binaries["runc"]
    return rel


# --- HTTP server ----------------------------------------------------------------------------


@dataclass
class Served:
    """What the server was asked for, and how it should misbehave."""

    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> bytes
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    cut_once: set[str] = field(default_factory=set)  # send half the body, then drop the link
    statuses: dict[str, list[int]] = field(default_factory=dict)  # answer these first
    ignore_range: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ranges(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean

    def do_GET(self) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((path, rng))
            queued = state.statuses.get(path)
            status = queued.pop(0) if queued else None
            cut = path in state.cut_once
            state.cut_once.discard(path)
        if status is not None:
            self._plain(status, f"status {status} as told\n".encode())
            return
        data = state.files.get(path)
        if data is None:
            self._plain(404, b"not found\n")
            return
        start = 0
        if rng and not state.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-", 1)[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def _plain(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: Served


class ArtifactServer:
    """A real HTTP server on 127.0.0.1 (port chosen by the kernel) in a background thread."""

    def __init__(self, state: Served | None = None) -> None:
        self.state = state or Served()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.state = self.state
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ArtifactServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def closed_port() -> int:
    """A port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
