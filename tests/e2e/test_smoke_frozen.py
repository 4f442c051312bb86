"""Smoke test of the frozen file: every command and subcommand down a real path, not just --help.

One node for the module, in the order a user goes: version, extract, containerd start (detached,
with a /metrics endpoint and an air-gap archive waiting in <data-dir>/images), the commands that
read it, ctr, images, metrics, doctor, lima (yaml here; the VM's commands against the fake
limactl, forwarding to this very containerd), and containerd stop. A failure names the command.
Every frozen process unpacks into a private TMPDIR, which must be empty at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths
from warren_bundle.runtime import health

from conftest import require
from support import (
    TEST_IMAGE,
    busybox_image,
    cleanup_runtime,
    make_paths,
    metric_samples,
    metric_value,
    short_dir,
)
from support.frozen import exe_under_test, frozen_env
from support.lima import FakeLima

pytestmark = pytest.mark.e2e


@dataclass
class Node:
    exe: Path
    paths: Paths
    base: Path
    tmpdir: Path

    def run(
        self, *args: str, expect: int = 0, timeout: float = 120, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.exe), *args],
            env=frozen_env(self.paths, TMPDIR=str(self.tmpdir), **extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
        )
        assert done.returncode == expect, (
            f"warren {' '.join(args)} exited {done.returncode}, not {expect}: {done.stderr[-2000:]}"
        )
        return done

    def json(self, *args: str, **extra: str) -> Any:
        return json.loads(self.run(*args, "--json", **extra).stdout)


@pytest.fixture(scope="module")
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    require(os.geteuid() == 0, "needs root (containerd mounts and cgroups)")
    require(Path("/bin/busybox").is_file(), "busybox-static is not installed")
    exe = exe_under_test(request)
    base = short_dir("sm")
    tmpdir = base / "tmp"
    tmpdir.mkdir()
    node = Node(exe, make_paths(base), base, tmpdir)
    try:
        yield node
    finally:
        if health.is_serving(node.paths.socket, 1.0):
            subprocess.run(
                [str(exe), "containerd", "stop"],
                env=frozen_env(node.paths),
                capture_output=True,
                timeout=60,
            )
        cleanup_runtime(node.paths, base)


def test_version(node: Node) -> None:
    info = node.json("version")
    payload = info["payload"]
    assert payload["origin"] == f"embedded in {node.exe}"
    assert len(payload["digest"]) == 64
    text = node.run("version").stdout
    assert f"cni plugins {payload['node']['cni']['version']}" in text
    assert "bridge" in payload["node"]["cni"]["plugins"]
    assert f"containerd {payload['containerd_version']}\n" in text
    assert f"runc {payload['runc_version']}\n" in text
    assert f"payload sha256:{payload['digest']}" in text


def test_extract(node: Node) -> None:
    first = node.json("extract")
    assert first["cached"] is False
    files = [f["name"] for f in node.json("version")["payload"]["files"]]
    assert sorted(first["written"]) == sorted(files)
    assert {"containerd", "containerd-shim-runc-v2", "ctr", "runc"} <= set(files)
    again = node.run("extract").stdout
    assert f"{node.paths.bin_dir}: up to date" in again
    assert "verified" in node.run("extract", "--verify").stdout


def test_containerd_start_detached(node: Node) -> None:
    images = node.paths.images_dir
    images.mkdir(parents=True, exist_ok=True)
    busybox_image(images / "busybox.tar")  # imported by the start, which waits for it
    report = node.json("containerd", "start", "--metrics-addr", "127.0.0.1:0")
    assert report["state"] == "RUNNING"
    assert report["socket"] == str(node.paths.socket)
    assert health.is_serving(node.paths.socket, 2.0)
    supervisor = psutil.Process(report["supervisor_pid"])
    assert supervisor.is_running()
    already = node.run("containerd", "start").stdout
    assert already.startswith("containerd already running:"), already


def test_containerd_status(node: Node) -> None:
    report = node.json("containerd", "status")
    assert report["state"] == "RUNNING"
    assert report["socket_answers"] is True
    text = node.run("containerd", "status").stdout
    assert f"{node.paths.socket} (answers)" in text
    assert f"http://{report['metrics_addr']}/metrics" in text


def test_containerd_logs(node: Node) -> None:
    lines = node.run("containerd", "logs", "-n", "5").stdout.splitlines()
    assert 0 < len(lines) <= 5
    assert any("warren[" in line or "level=" in line for line in lines)


def test_containerd_config(node: Node) -> None:
    text = node.run("containerd", "config").stdout
    assert text == node.paths.config_file.read_text()  # what the start wrote
    assert "version" in tomllib.loads(text)


def test_socket(node: Node) -> None:
    assert node.run("socket").stdout.strip() == str(node.paths.socket)
    validated = node.run("socket", "--validate")
    assert validated.stdout.strip() == str(node.paths.socket)
    assert "embedded containerd" in validated.stderr and "answers" in validated.stderr


def test_ctr(node: Node) -> None:
    version = node.run("ctr", "version").stdout
    assert "Client:" in version and "Server:" in version
    listed = node.run("ctr", "images", "ls").stdout
    assert listed.startswith("REF")
    assert TEST_IMAGE in listed  # the air-gap archive the start imported into default


def test_images_import_and_status(node: Node, tmp_path: Path) -> None:
    archive = busybox_image(tmp_path / "busybox.tar", name="docker.io/library/busybox:smoke")
    node.run("images", "import", str(archive), "-n", "default")
    listed = node.run("ctr", "-n", "default", "images", "ls", "-q").stdout.split()
    assert "docker.io/library/busybox:smoke" in listed
    report = node.json("images", "status")
    assert report["state"] == "done"
    assert [r["status"] for r in report["results"]] == ["imported"]
    assert "busybox.tar" in node.run("images", "status").stdout


def test_metrics_live_and_from_state(node: Node) -> None:
    address = node.json("containerd", "status")["metrics_addr"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        scraped = metric_samples(reply.read().decode())
    assert metric_value(scraped, "embedded_containerd_running") == 1.0
    for args in (("metrics",), ("metrics", "--from-state")):
        found = metric_samples(node.run(*args).stdout)
        assert metric_value(found, "embedded_containerd_running") == 1.0, args
        assert metric_value(found, "embedded_containerd_state", state="RUNNING") == 1.0, args


def test_doctor(node: Node) -> None:
    text = node.run("doctor").stdout
    assert text.rstrip().splitlines()[-1].endswith(", 0 failed"), text
    report = node.json("doctor")
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["socket"] == statuses["binaries"] == "PASS", statuses
    assert "FAIL" not in statuses.values(), report


def test_lima_on_linux(node: Node) -> None:
    config = yaml.safe_load(node.run("lima", "yaml").stdout)
    assert config["images"] and config["containerd"]
    no_lima = node.run("lima", "status", expect=ExitCode.LIMA, PATH="/usr/bin:/bin")
    assert no_lima.stderr.startswith("warren: Lima is not installed")
    assert len(no_lima.stderr.strip().splitlines()) == 1
    refused = node.run("lima", "delete", expect=ExitCode.USAGE)
    assert "pass --yes" in refused.stderr


def test_lima_vm_commands_with_the_fake_limactl(node: Node) -> None:
    """On macOS the same CLI drives a VM: the fake's socket forwards to this containerd."""
    fake = FakeLima(node.base / "lima-fake")
    fake.control(target_socket=str(node.paths.socket))
    env = fake.env()
    assert node.run("lima", "up", **env).stdout.strip() == str(fake.socket)
    status = node.json("lima", "status", **env)
    assert status["running"] is True
    via_lima = node.json("containerd", "status", **env)  # the darwin backend is Lima's
    assert via_lima["socket"] == str(fake.socket)
    assert "Server:" in node.run("ctr", "version", **env).stdout
    node.run("lima", "down", **env)
    node.run("lima", "status", **env, expect=ExitCode.NOT_RUNNING)
    node.run("lima", "delete", "--yes", **env)
    assert not fake.instance_dir.exists()


def test_kubelet_flags(node: Node) -> None:
    flags = node.run("kubelet-flags").stdout.splitlines()
    assert f"--container-runtime-endpoint=unix://{node.paths.socket}" in flags
    assert any(f.startswith("--cgroup-driver=") for f in flags)
    assert node.json("kubelet-flags")["sandbox_image"]


def test_crictl(node: Node) -> None:
    carried = node.json("version")["payload"]["node"]["crictl"]
    if carried:
        assert "RuntimeName:" in node.run("crictl", "version").stdout
        return
    done = node.run("crictl", "ps", expect=int(ExitCode.ERROR))
    [line] = done.stderr.strip().splitlines()
    assert "carries no crictl" in line


def test_upgrade_refuses_before_anything_changes(node: Node, tmp_path: Path) -> None:
    # No release in the folder (or, for `make build`'s file, no release key to check one with):
    # one line naming the remedy, and nothing left beside the file.
    before = node.json("containerd", "status")["supervisor_pid"]
    done = node.run("upgrade", "--from", str(tmp_path), "--check", expect=int(ExitCode.ERROR))
    [line] = done.stderr.strip().splitlines()
    assert "carries no release key" in line or "SHA256SUMS does not exist" in line, line
    assert not node.exe.with_name(f".{node.exe.name}.upgrade").exists()
    assert node.json("containerd", "status")["supervisor_pid"] == before


def test_containerd_stop(node: Node) -> None:
    pid = node.json("containerd", "status")["containerd_pid"]
    assert node.run("containerd", "stop").stdout.startswith("stopped warren supervisor pid")
    assert not health.is_serving(node.paths.socket, 1.0)
    assert not psutil.pid_exists(pid)
    stopped = node.run("containerd", "status", expect=ExitCode.NOT_RUNNING)
    assert stopped.stdout.startswith("state           STOPPED")
    assert node.run("containerd", "stop").returncode == 0  # idempotent


def test_no_command_wrote_to_tmpdir(node: Node) -> None:
    assert list(node.tmpdir.iterdir()) == []
    shutil.rmtree(node.tmpdir)
