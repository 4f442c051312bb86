"""The CRI endpoint as a kubelet uses it (issue 11), on real containerd 1.6 and 2.x, real CNI
plugins (Debian's, carried in the payload), the carried pause image, and no network.

Each walk starts from a data dir that only ever saw the one file and the app image in
<data-dir>/images: RunPodSandbox gets an IP from the default CIDR, a container runs, ExecSync,
CRI-format logs, a hostPort reaches the container from the host, two pods reach each other,
stop/remove are idempotent and release the veth, the IP lease and the iptables rules, and the
sandbox image survives a kubelet-like image GC. The host's /etc/cni/net.d and /opt/cni are
never written.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from warren_bundle.airgap import read_report
from warren_bundle.node.network import DEFAULT_POD_CIDR, ipam_dir
from warren_bundle.paths import Paths

from conftest import require
from support import TEST_EXE, TEST_IMAGE, busybox_image, run_warren, start_run, stop_run, wait_for
from support import cri as cri_support

pytestmark = pytest.mark.integration

CRI_LOG_LINE = re.compile(r"^\S+Z stdout F (.*)$", re.MULTILINE)
HOST_DIRS = (Path("/etc/cni/net.d"), Path("/opt/cni"))


def _have_grpc() -> bool:
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Subject:
    payload: Path  # from source: the staged payload
    exe: Path | None  # under WARREN_TEST_EXE: the one file carrying that containerd


@pytest.fixture(scope="module", params=["1.6", "2.x"])
def subject(request: pytest.FixtureRequest, staged_payload: Path) -> Subject:
    require(
        shutil.which("iptables") is not None,
        "the CNI plugins need iptables: apt-get install iptables",
    )
    require(_have_grpc(), "needs grpcio and grpcio-tools (the test extras)")
    if request.param == "1.6":
        return Subject(staged_payload, None)  # under WARREN_TEST_EXE: that file, its payload
    # 2.x: Debian sid's containerd; under WARREN_TEST_EXE the one file that embeds it (frozen by
    # scripts/test_payloads.py from this same staging): the walk then runs on the one file alone.
    exe = cri_support.frozen_file("2") if TEST_EXE else None
    return Subject(cri_support.staged_payload("sid"), exe)


def _listing(path: Path) -> list[str] | None:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else None


def _veths() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _nat_rules() -> str:
    return subprocess.run(
        ["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True
    ).stdout


class Node:
    def __init__(self, paths: Paths, cri: cri_support.Cri, logs: Path, subject: Subject) -> None:
        self.paths, self.cri, self.logs, self.subject = paths, cri, logs, subject

    def warren(self, *args: str) -> Any:
        s = self.subject
        done = run_warren(self.paths, *args, payload=s.payload, exe=s.exe)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def pod(self, name: str, port: tuple[int, int] | None = None) -> tuple[str, Any]:
        config = self.cri.pod_config(name, self.logs / name, port)
        return self.cri.run_pod(config), config

    def running(self, pod_id: str, config: Any, name: str, command: list[str]) -> str:
        cid = self.cri.start_container(pod_id, config, name, TEST_IMAGE, command)
        wait_for(
            lambda: self.cri.container_state(cid) == "CONTAINER_RUNNING",
            timeout=30,
            what=f"container {name} running",
        )
        return cid


@pytest.fixture(scope="module")
def node(subject: Subject) -> Iterator[Node]:
    if __import__("os").geteuid() != 0:
        pytest.skip("needs root")
    from support import cleanup_runtime, make_paths, short_dir

    base = short_dir("c")
    paths = make_paths(base)
    before = {d: _listing(d) for d in HOST_DIRS}
    # The one file and the app image, nothing else: no pull, no network.
    paths.images_dir.mkdir(parents=True)
    busybox_image(paths.images_dir / "app.tar")
    proc = start_run(paths, subject.payload, "--health-interval", "1", exe=subject.exe)
    cri = cri_support.Cri(paths.socket)
    try:
        wait_for(
            lambda: (read_report(paths) or {}).get("state") == "done",
            timeout=120,
            what="the image import",
        )
        yield Node(paths, cri, base / "logs", subject)
    finally:
        cri.close()
        stop_run(proc)
        cleanup_runtime(paths, base)
        assert {d: _listing(d) for d in HOST_DIRS} == before, "the host's CNI dirs were touched"


def test_config_names_our_own_cni_dirs_and_the_carried_sandbox(node: Node) -> None:
    text = node.paths.config_file.read_text()
    version = node.warren("version", "--json")
    ctd = version["payload"]["containerd_version"]
    assert text.startswith("version = 3" if ctd.startswith("2.") else "version = 2")
    assert str(node.paths.config_dir / "cni" / "net.d") in text
    assert '"/etc/cni' not in text and '"/opt/cni' not in text
    assert f'"{version["payload"]["node"]["sandbox_image"]}"' in text
    # Root here lacks CAP_SYS_RESOURCE (a container): without this RunPodSandbox fails.
    from warren_bundle.hostinfo.caps import can_set_oom_score_adj

    assert ("restrict_oom_score_adj = true" in text) == (not can_set_oom_score_adj())
    status = node.warren("containerd", "status", "--json")
    assert status["node"]["restrict_oom_score_adj"] == (not can_set_oom_score_adj())
    assert status["node"]["pod_cidr"] == DEFAULT_POD_CIDR


def test_network_is_ready_and_the_sandbox_image_is_there(node: Node) -> None:
    wait_for(node.cri.network_ready, timeout=30, what="CRI NetworkReady")
    version = node.warren("version", "--json")["payload"]
    ref = version["node"]["sandbox_image"]
    image = node.cri.img("ImageStatus", image=node.cri.pb.ImageSpec(image=ref)).image
    assert image.id
    if not version["containerd_version"].startswith("1.6"):
        assert image.pinned, "CRI must report the sandbox image pinned (image GC keeps it)"


def test_pod_walk(node: Node) -> None:
    """The kubelet walk: pod IP, container, ExecSync, logs, hostPort, pod to pod, teardown."""
    cri = node.cri
    veths_before = _veths()
    web, web_config = node.pod("web", port=(8080, 18217))
    ip = cri.pod_ip(web)
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(DEFAULT_POD_CIDR)
    serve = (
        "echo hello; mkdir -p /www; echo hi-from-web > /www/index; "
        "exec busybox httpd -f -p 8080 -h /www"
    )
    srv = node.running(web, web_config, "srv", ["sh", "-c", serve])

    got = cri.exec_sync(srv, ["cat", "/www/index"])
    assert got.exit_code == 0 and got.stdout == b"hi-from-web\n"
    failing = cri.exec_sync(srv, ["sh", "-c", "exit 3"])
    assert failing.exit_code == 3

    log = node.logs / "web" / "srv.log"
    wait_for(lambda: log.is_file() and "hello" in CRI_LOG_LINE.findall(log.read_text()), 20)

    def host_port() -> bytes | None:
        try:
            return urllib.request.urlopen("http://127.0.0.1:18217/index", timeout=2).read()
        except OSError:
            return None

    assert wait_for(host_port, timeout=20, what="the hostPort") == b"hi-from-web\n"

    client, client_config = node.pod("client")
    assert cri.pod_ip(client) != ip
    cli = node.running(client, client_config, "cli", ["sleep", "3600"])
    fetched = cri.exec_sync(cli, ["busybox", "wget", "-q", "-O", "-", f"http://{ip}:8080/index"])
    assert fetched.exit_code == 0, fetched.stderr
    assert fetched.stdout == b"hi-from-web\n"

    new_veths = _veths() - veths_before
    assert len(new_veths) == 2
    leases = ipam_dir(node.paths) / "warren"
    assert (leases / ip).is_file()
    assert web in _nat_rules()

    for pod in (web, client):
        cri.rt("StopPodSandbox", pod_sandbox_id=pod)
        cri.rt("StopPodSandbox", pod_sandbox_id=pod)  # idempotent
        cri.rt("RemovePodSandbox", pod_sandbox_id=pod)
        cri.rt("RemovePodSandbox", pod_sandbox_id=pod)  # idempotent
    assert not cri.rt("ListPodSandbox").items
    assert not (_veths() & new_veths), "a pod's veth outlived it"
    assert not (leases / ip).exists(), "the IP lease outlived the pod"
    rules = _nat_rules()
    assert web not in rules and client not in rules, "iptables rules outlived the pods"
    assert host_port() is None


def test_sandbox_image_survives_image_gc(node: Node) -> None:
    """A kubelet-like image GC: every image no container uses goes, except pinned ones and the
    kubelet's own sandbox image (what `warren kubelet-flags` tells it)."""
    cri = node.cri
    flags = node.warren("kubelet-flags", "--json")
    kept = {
        f.split("=", 1)[1] for f in flags["flags"] if f.startswith("--pod-infra-container-image=")
    }
    in_use = {c.image_ref for c in cri.rt("ListContainers").containers}
    for image in cri.img("ListImages").images:
        if image.pinned or image.id in in_use or kept & set(image.repo_tags):
            continue
        cri.img("RemoveImage", image=cri.pb.ImageSpec(image=image.id))
    tags = {t for i in cri.img("ListImages").images for t in i.repo_tags}
    assert TEST_IMAGE not in tags, "the GC removed nothing: it proves nothing"
    assert flags["sandbox_image"] in tags
    # And a pod still starts, with no registry: the sandbox image is all it needs.
    pod, _config = node.pod("after-gc")
    assert ipaddress.ip_address(cri.pod_ip(pod)) in ipaddress.ip_network(DEFAULT_POD_CIDR)
    cri.rt("StopPodSandbox", pod_sandbox_id=pod)
    cri.rt("RemovePodSandbox", pod_sandbox_id=pod)
