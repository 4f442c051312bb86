"""warren-killall.sh and `warren-uninstall.sh --purge` take down what warren's pods made: a CRI pod
on the pod network (with a hostPort) and a `ctr run -d` container run, then the network (`ip link`,
`iptables-save`) is as it was before the install, the pod's network namespace is gone, and so is
warren's CNI result cache; nothing is left in /run/containerd/fifo.

Everything runs in a network namespace of its own (nsenter --net: the mounts stay the host's), so
the test sees only its own bridge and rules, never another warren's on a shared machine.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from warren_bundle.airgap import read_report
from warren_bundle.paths import Paths

from conftest import have, require
from support import INSTALL_SH, TEST_IMAGE, busybox_image, short_dir, wait_for
from support import cri as cri_support

pytestmark = pytest.mark.e2e


@dataclass
class Box:
    """A network namespace, and warren installed into a temporary root, run inside it."""

    ns: str
    root: Path
    paths: Paths

    @property
    def bin(self) -> Path:
        return self.root / "bin" / "warren"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if "WARREN_" not in k and "PROXY" not in k}
        env.update(
            WARREN_INSTALL_SKIP_DOWNLOAD="true",
            WARREN_BIN_DIR=str(self.bin.parent),
            WARREN_SYSTEMD_DIR=str(self.root / "systemd"),
            WARREN_DATA_DIR=str(self.paths.data_dir),
            WARREN_RUN_DIR=str(self.paths.run_dir),
            WARREN_CONFIG_DIR=str(self.paths.config_dir),
        )
        return env

    def run(self, *argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.ns}", *map(str, argv)],
            capture_output=True, text=True, env=self.env(), timeout=300,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done

    def network(self) -> dict[str, list[str]]:
        """ip link and iptables-save in the namespace (without counters and dates)."""
        links = self.run("ip", "-o", "link", "show").stdout.splitlines()
        rules = [
            ln
            for table in ("filter", "nat", "mangle")
            for ln in self.run("iptables-save", "-t", table).stdout.splitlines()
            if not ln.startswith("#")
        ]
        return {
            "links": sorted(ln.split(":")[1].strip().split("@")[0] for ln in links),
            "iptables": [ln.split(" [")[0] if ln.startswith(":") else ln for ln in rules],
        }


def netns_names() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def cni_results() -> set[str]:
    path = Path("/var/lib/cni/results")
    return {p.name for p in path.iterdir()} if path.is_dir() else set()


def our_results(box: Box) -> set[str]:
    """The CNI result cache of this box's pods (its network's config names its IPAM dir), and
    containerd's loopback results of the same sandboxes: other warrens' are not ours."""
    found = set()
    for name in cni_results():
        if not name.startswith("warren-"):
            continue
        cached = json.loads((Path("/var/lib/cni/results") / name).read_text())
        if str(box.paths.data_dir) in base64.b64decode(cached["config"]).decode():
            found |= {name, f"cni-loopback-{cached['containerId']}-lo"}
    return found


def fifo_dirs() -> set[str]:
    path = Path("/run/containerd/fifo")
    return {p.name for p in path.iterdir()} if path.is_dir() else set()


@pytest.fixture
def box(frozen_exe: Path, root_required: None) -> Iterator[Box]:
    for tool in ("ip", "nsenter", "iptables-save", "iptables-restore"):
        require(have(tool), f"needs {tool}")
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError:
        require(False, "needs grpcio and grpcio-tools (the test extras)")
    ns = f"wk{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    root = short_dir("wk")
    base = root / "w"
    b = Box(ns, root, Paths(base / "data", base / "run", base / "etc"))
    b.bin.parent.mkdir(parents=True)
    shutil.copy2(frozen_exe, b.bin)
    b.run("ip", "link", "set", "lo", "up")
    try:
        yield b
    finally:
        killall = b.bin.parent / "warren-killall.sh"
        if killall.exists():
            b.run(killall, check=False)
        for proc in psutil.process_iter(["exe"]):
            if str(base) in (proc.info["exe"] or ""):
                proc.kill()
        subprocess.run(["ip", "netns", "delete", ns], check=False)
        subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _start_with_a_pod(box: Box, name: str) -> tuple[str, set[str]]:
    """warren started in the box, a pod with a hostPort and a ctr container running; the pod's
    network namespace, and ctr's FIFO dirs."""
    fifos_before = fifo_dirs()
    box.paths.images_dir.mkdir(parents=True, exist_ok=True)
    busybox_image(box.paths.images_dir / "app.tar")
    box.run(box.bin, "containerd", "start")
    wait_for(lambda: (read_report(box.paths) or {}).get("state") == "done", 120, what="import")
    before = netns_names()
    cri = cri_support.Cri(box.paths.socket)
    try:
        wait_for(cri.network_ready, 30, what="the CNI network")
        # (A name of its own each time: a killall leaves containerd's own records of the pod.)
        config = cri.pod_config(name, box.root / "logs", port=(80, 18080))
        pod = cri.run_pod(config)
        cid = cri.start_container(pod, config, name, TEST_IMAGE, ["sleep", "600"])
        wait_for(lambda: cri.container_state(cid) == "CONTAINER_RUNNING", 30, what="running")
        assert cri.pod_ip(pod).startswith("10.217.")
    finally:
        cri.close()
    box.run(box.bin, "ctr", "run", "-d", TEST_IMAGE, f"keeper-{name}", "sleep", "600")
    pod_ns = netns_names() - before
    assert len(pod_ns) == 1, pod_ns
    return pod_ns.pop(), fifo_dirs() - fifos_before


def test_killall_and_purge_leave_the_network_as_before_the_install(box: Box) -> None:
    # The host's own rules, a CNI-named chain of its own and a network wider than the pod CIDR
    # among them: all of them stay.
    for rule in (
        ["-A", "FORWARD", "-s", "10.0.0.0/8", "-j", "ACCEPT"],
        ["-N", "CNI-HOST-OWN"],
        ["-A", "INPUT", "-j", "CNI-HOST-OWN"],
        ["-t", "nat", "-A", "POSTROUTING", "-o", "lo", "-j", "RETURN"],
    ):
        box.run("iptables", *rule)
    before = box.network()
    box.run("sh", INSTALL_SH)
    killall = box.bin.parent / "warren-killall.sh"
    assert killall.stat().st_mode & 0o777 == 0o755

    pod_ns, fifos = _start_with_a_pod(box, "web")
    during = box.network()
    assert "warren0" in during["links"]
    assert any("CNI-FORWARD" in ln for ln in during["iptables"]), during["iptables"]
    assert any("CNI-HOSTPORT-DNAT" in ln for ln in during["iptables"])
    # warren's ctr keeps its FIFOs under the run dir (none in /run/containerd/fifo to clean).
    assert [p for p in (box.paths.run_dir / "fifo").rglob("*") if p.is_fifo()]

    # killall: everything warren started is gone, and so is what its pods made; the install stays.
    ours = our_results(box)
    assert ours, "no CNI result cached for the pod"
    done = box.run(killall)
    assert box.network() == before, done.stdout
    assert pod_ns not in netns_names()
    assert not [p for p in psutil.process_iter(["exe"]) if str(box.root) in (p.info["exe"] or "")]
    assert not ours & cni_results(), "the pod's CNI results were left"
    assert not fifos & fifo_dirs(), "ctr's FIFOs were left"
    assert box.bin.exists() and (box.bin.parent / "warren-uninstall.sh").exists()

    # --purge does the same on its own (it runs the killall), then removes the install.
    pod_ns, fifos = _start_with_a_pod(box, "again")
    ours = our_results(box)
    gone = box.run(box.bin.parent / "warren-uninstall.sh", "--purge")
    assert box.network() == before, gone.stdout
    assert pod_ns not in netns_names()
    assert ours and not ours & cni_results()
    assert not fifos & fifo_dirs()
    assert not killall.exists() and not box.paths.data_dir.exists()


def test_cni_chains_the_host_had_before_the_install_are_kept(box: Box) -> None:
    """Another CNI user's CNI-FORWARD (podman's, say), with a rule of its own: the killall takes
    out warren's per-pod rules and its bridge, and keeps the chain, its rule and its jump."""
    for rule in (
        ["-N", "CNI-FORWARD"],
        ["-A", "CNI-FORWARD", "-s", "192.0.2.0/24", "-j", "ACCEPT"],
        ["-A", "FORWARD", "-j", "CNI-FORWARD"],
    ):
        box.run("iptables", *rule)
    box.run("sh", INSTALL_SH)
    _start_with_a_pod(box, "web")
    pod_rules = [ln for ln in box.network()["iptables"] if "10.217." in ln]
    assert pod_rules, "the pod made no rule naming its address"

    box.run(box.bin.parent / "warren-killall.sh")

    after = box.network()
    assert "warren0" not in after["links"]
    assert not [ln for ln in after["iptables"] if "10.217." in ln or "warren" in ln]
    for kept in (
        ":CNI-FORWARD -",
        "-A CNI-FORWARD -s 192.0.2.0/24 -j ACCEPT",
        "-A FORWARD -j CNI-FORWARD",
    ):
        assert kept in after["iptables"], kept
