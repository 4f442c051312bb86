"""Pod start through CRI: RunPodSandbox until the pod's container runs, under warren's
supervised containerd (the one file, with the carried pause image and default pod network)
against bare containerd on the same binary, config, CNI plugins and pause image.

Both containerds run side by side on their own dirs (each its own socket, root and IPAM); the
samples are interleaved, one pod at a time, each pod removed (untimed) before the next. The CRI
client is the tests' (stubs generated from cri-api's api.proto; grpcio from the test extras).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from warren_bundle.node import network
from warren_bundle.paths import Paths
from warren_bundle.payload.format import Payload
from warren_bundle.runtime import health
from warren_bundle.runtime.childenv import child_env
from warren_bundle.runtime.config import ConfigOptions, write_config
from warren_bundle.store.extract import ensure_extracted

from .context import REPO, Bench
from .rows import Row
from .timing import interleaved

DEADLINE = 60.0
POLL = 0.005


def _cri() -> Any:
    sys.path.insert(0, str(REPO / "tests"))
    from support import cri  # the tests' kubelet-like client

    return cri


def _busybox(dest: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from support import busybox_image

    return busybox_image(dest)


class PodStarts:
    def __init__(self, bench: Bench, payload: Payload) -> None:
        self.bench, self.payload = bench, payload
        area = bench.scratch("pods")
        self.warren = Paths(area / "w-data", bench.run_dir(), area / "w-etc")
        self.bare = Paths(area / "b-data", bench.run_dir(), area / "b-etc")
        self.image = _busybox(area / "busybox.tar")
        self.logs = area / "logs"
        self.env = bench.env(
            WARREN_DATA_DIR=str(self.warren.data_dir),
            WARREN_RUN_DIR=str(self.warren.run_dir),
            WARREN_CONFIG_DIR=str(self.warren.config_dir),
        )
        self._bare_proc: subprocess.Popen[bytes] | None = None
        self.clients: dict[str, Any] = {}

    def start(self) -> None:
        self.warren.images_dir.mkdir(parents=True)
        self.warren.images_dir.joinpath("busybox.tar").write_bytes(self.image.read_bytes())
        # `start` returns once containerd answers and the images (pause first) are imported.
        subprocess.run(
            [str(self.bench.exe), "containerd", "start"], env=self.env, check=True, timeout=300
        )
        self._start_bare()
        cri = _cri()
        for name, paths in (("warren", self.warren), ("bare", self.bare)):
            self.clients[name] = cri.Cri(paths.socket)
            deadline = time.monotonic() + DEADLINE
            while not self.clients[name].network_ready():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: CRI network not ready")
                time.sleep(0.1)

    def _start_bare(self) -> None:
        p = self.bare
        ensure_extracted(p, self.payload)
        write_config(p, self.payload.manifest.containerd_version, ConfigOptions())
        # The same default pod network warren's node setup writes at its start.
        network.write_default(p, network.DEFAULT_POD_CIDR)
        log = open(p.data_dir / "bare-containerd.log", "ab")  # noqa: SIM115 - the child's
        argv = [str(p.binary("containerd")), "--config", str(p.config_file)]
        argv += ["--address", str(p.socket), "--root", str(p.containerd_root)]
        argv += ["--state", str(p.state_dir)]
        self._bare_proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=child_env(prepend_path=p.bin_dir),
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + DEADLINE
        while not health.is_serving(p.socket):
            if self._bare_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bare containerd did not become ready")
            time.sleep(POLL)
        image = self.payload.manifest.sandbox_image
        archives = [self.image] + ([p.bin_dir / str(image["file"])] if image else [])
        ctr = [str(p.binary("ctr")), "--address", str(p.socket), "-n", "k8s.io"]
        for archive in archives:
            subprocess.run(
                [*ctr, "images", "import", str(archive)],
                check=True,
                capture_output=True,
                env=child_env(),
            )

    def pod_start(self, name: str) -> float:
        """RunPodSandbox → CreateContainer → StartContainer → ContainerStatus says RUNNING."""
        cri = self.clients[name]
        pod_name = f"bench-{name}-{time.monotonic_ns()}"
        config = cri.pod_config(pod_name, self.logs / pod_name)
        started = time.perf_counter()
        pod = cri.run_pod(config)
        cid = cri.start_container(
            pod, config, "c", "docker.io/library/busybox:warren-test", ["sleep", "600"]
        )
        deadline = time.monotonic() + DEADLINE
        while cri.container_state(cid) != "CONTAINER_RUNNING":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: container not running")
            time.sleep(POLL)
        elapsed = time.perf_counter() - started
        cri.remove_pod(pod)
        return elapsed

    def stop(self) -> None:
        for client in self.clients.values():
            client.close()
        subprocess.run(
            [str(self.bench.exe), "containerd", "stop"],
            env=self.env,
            capture_output=True,
            timeout=60,
        )
        if self._bare_proc is not None:
            self._bare_proc.terminate()
            self._bare_proc.wait(30)


def measure(bench: Bench, payload: Payload) -> list[Row]:
    pods = PodStarts(bench, payload)
    try:
        pods.start()
        samples = interleaved(
            {"warren": lambda: pods.pod_start("warren"), "bare": lambda: pods.pod_start("bare")},
            runs=bench.runs.start,
            warmup=1,
        )
    finally:
        pods.stop()
    ms = {name: s.median * 1000 for name, s in samples.items()}
    return [
        Row(
            "pod start",
            "RunPodSandbox → container running, via CRI (one file's containerd, "
            "carried pause image and CNI plugins)",
            ms["warren"],
            "ms",
            "bare containerd, same binary, config, plugins and pause image",
            ms["bare"],
            detail={n: s.scaled(1000) for n, s in samples.items()},
        )
    ]
