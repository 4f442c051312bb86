"""A kubelet-like CRI client for the tests: Python stubs generated at test time from the cri-api
api.proto of Debian's golang-k8s-cri-api-dev (k8s.io/cri-api 0.36.4, runtime/v1), fetched with
warren's own apt helper into a private state dir (the host's apt is not touched), compiled with
grpcio-tools. Cached in $WARREN_TEST_CACHE/cri-api by the .deb's SHA-256.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

CACHE = Path(os.environ.get("WARREN_TEST_CACHE") or "/var/cache/warren-test/upgrades").parent
CRI_CACHE = CACHE / "cri-api"
PACKAGE = "golang-k8s-cri-api-dev"
SUITE = "sid"
PROTO = "usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto"


def _fetch_proto() -> tuple[Path, str]:
    from warren_bundle.fetch.debian import DEBIAN_MIRROR, Apt
    from warren_bundle.fsutil import sha256_file

    # A .deb fetched before serves offline (apt-get update needs the mirror).
    cached = sorted((CRI_CACHE / "debs").glob(f"{PACKAGE}_*_all.deb"))
    if cached:
        return cached[-1], sha256_file(cached[-1])
    apt = Apt(SUITE, "all", CRI_CACHE / "apt", DEBIAN_MIRROR)
    deb, _url = apt.download(PACKAGE, CRI_CACHE / "debs")
    return deb, sha256_file(deb)


def stubs() -> tuple[ModuleType, ModuleType]:
    """(api_pb2, api_pb2_grpc), generating them once per .deb."""
    deb, sha = _fetch_proto()
    out = CRI_CACHE / f"stubs-{sha[:16]}"
    if not (out / "api_pb2_grpc.py").is_file():
        with tempfile.TemporaryDirectory(dir=CRI_CACHE) as tmp:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
            gen = Path(tmp) / "gen"
            gen.mkdir()
            (gen / "api.proto").write_bytes((Path(tmp) / PROTO).read_bytes())
            subprocess.run(
                [
                    sys.executable,
                    *("-m", "grpc_tools.protoc", f"-I{gen}"),
                    f"--python_out={gen}",
                    f"--grpc_python_out={gen}",
                    str(gen / "api.proto"),
                ],
                check=True,
            )
            (gen / "api.proto").unlink()
            os.replace(gen, out)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")


class Cri:
    """RuntimeService + ImageService on one unix socket, as a kubelet holds them."""

    def __init__(self, socket: Path) -> None:
        import grpc

        self.pb, grpc_mod = stubs()
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.runtime = grpc_mod.RuntimeServiceStub(self.channel)
        self.images = grpc_mod.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def call(self, service: Any, method: str, timeout: float = 60, **fields: Any) -> Any:
        request_type = getattr(self.pb, f"{method}Request")
        return getattr(service, method)(request_type(**fields), timeout=timeout)

    def rt(self, method: str, **fields: Any) -> Any:
        return self.call(self.runtime, method, **fields)

    def img(self, method: str, **fields: Any) -> Any:
        return self.call(self.images, method, **fields)

    def network_ready(self) -> bool:
        status = self.rt("Status").status
        return any(c.type == "NetworkReady" and c.status for c in status.conditions)

    def pod_config(self, name: str, log_dir: Path, port: tuple[int, int] | None = None) -> Any:
        pb = self.pb
        mappings = []
        if port:
            mappings.append(
                pb.PortMapping(protocol=pb.TCP, container_port=port[0], host_port=port[1])
            )
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default"),
            hostname=name,
            log_directory=str(log_dir),
            port_mappings=mappings,
            linux=pb.LinuxPodSandboxConfig(),
        )

    def run_pod(self, config: Any) -> str:
        return str(self.rt("RunPodSandbox", config=config).pod_sandbox_id)

    def pod_ip(self, pod_id: str) -> str:
        return str(self.rt("PodSandboxStatus", pod_sandbox_id=pod_id).status.network.ip)

    def start_container(
        self, pod_id: str, pod_config: Any, name: str, image: str, command: list[str]
    ) -> str:
        pb = self.pb
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=image),
            command=command,
            log_path=f"{name}.log",
            linux=pb.LinuxContainerConfig(),
        )
        cid = str(
            self.rt(
                "CreateContainer",
                pod_sandbox_id=pod_id,
                config=config,
                sandbox_config=pod_config,
            ).container_id
        )
        self.rt("StartContainer", container_id=cid)
        return cid

    def container_state(self, cid: str) -> str:
        status = self.rt("ContainerStatus", container_id=cid).status
        return str(self.pb.ContainerState.Name(status.state))

    def exec_sync(self, cid: str, cmd: list[str], timeout: int = 30) -> Any:
        return self.rt("ExecSync", container_id=cid, cmd=cmd, timeout=timeout)

    def remove_pod(self, pod_id: str) -> None:
        self.rt("StopPodSandbox", pod_sandbox_id=pod_id)
        self.rt("RemovePodSandbox", pod_sandbox_id=pod_id)


def staged_payload(suite: str) -> Path:
    """The staged payload scripts/test_payloads.py freezes for Debian `suite` (containerd of
    that suite, bookworm's runc and CNI plugins, the local pause image), staged when missing."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import test_payloads

    return Path(test_payloads._stage(suite))


def frozen_file(major: str) -> Path:
    """scripts/test_payloads.py's frozen warren of containerd `major`.x (built when missing)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import test_payloads

    return next(exe for version, exe in test_payloads.build().items() if version.startswith(major))
