"""The Lima path without a containerd: YAML, options, and every way `limactl` can fail.

`FakeLima` (also used by test_lima_integration.py) drives tests/fake_limactl under a temporary
LIMA_HOME; the platform is forced to macOS with WARREN_PLATFORM=darwin.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from warren_bundle.errors import ExitCode, LimaOptionError, ReadinessTimeout
from warren_bundle.lima.manager import LimaManager
from warren_bundle.lima.template import PROBE_SCRIPT, PROVISION_SCRIPT, LimaSettings, parse_size
from warren_bundle.paths import Paths

from conftest import require
from support import make_paths, run_warren, short_dir, wait_for
from support.lima import GIB, LIST, FakeLima, start_call


@pytest.fixture
def lima_base() -> Iterator[Path]:
    base = short_dir("lm")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fake(lima_base: Path) -> FakeLima:
    return FakeLima(lima_base)


@pytest.fixture
def lpaths(lima_base: Path) -> Paths:
    return make_paths(lima_base / "w")


def warren(
    paths: Paths, fake: FakeLima, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    return run_warren(paths, *args, **{**fake.env(), **extra})


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("warren: ")]
    assert lines, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return lines[-1]


# --- the YAML -----------------------------------------------------------------------------------


def test_yaml_parses_back_with_every_value(lpaths: Paths, fake: FakeLima) -> None:
    done = warren(lpaths, fake, "lima", "yaml")
    assert done.returncode == 0, done.stderr
    cfg = yaml.safe_load(done.stdout)

    assert {(i["arch"], i["location"].rsplit("/", 1)[-1]) for i in cfg["images"]} == {
        ("x86_64", "ubuntu-22.04-server-cloudimg-amd64.img"),
        ("aarch64", "ubuntu-22.04-server-cloudimg-arm64.img"),
    }
    assert all("/22.04/" in i["location"] for i in cfg["images"])
    assert cfg["cpus"] == 2
    assert cfg["memory"] == "2GiB"
    assert cfg["disk"] == "20GiB"
    assert cfg["containerd"] == {"system": True, "user": False}
    assert cfg["mounts"] == []
    assert cfg["portForwards"] == [
        {
            "guestSocket": "/run/containerd/containerd.sock",
            "hostSocket": "{{.Dir}}/sock/containerd.sock",
        }
    ]
    (provision,) = cfg["provision"]
    assert provision["mode"] == "system"
    assert provision["script"] == PROVISION_SCRIPT
    assert 'id -gn "${LIMA_CIDATA_USER}"' in provision["script"]
    assert "systemctl restart containerd" in provision["script"]
    (probe,) = cfg["probes"]
    assert probe["mode"] == "readiness"
    assert probe["script"] == PROBE_SCRIPT
    assert probe["hint"]


def test_yaml_takes_resources_and_mounts(lpaths: Paths, fake: FakeLima, lima_base: Path) -> None:
    ro, rw = lima_base / "ro", lima_base / "rw"
    ro.mkdir()
    rw.mkdir()
    done = warren(
        lpaths, fake, "lima", "yaml", "--cpus", "4", "--memory", "6GiB", "--disk", "60GiB",
        "--mount", str(ro), "--mount", f"{rw}:w",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cfg = yaml.safe_load(done.stdout)
    assert (cfg["cpus"], cfg["memory"], cfg["disk"]) == (4, "6GiB", "60GiB")
    assert cfg["mounts"] == [
        {"location": str(ro), "writable": False},
        {"location": str(rw), "writable": True},
    ]


@pytest.mark.parametrize(
    ("args", "cause"),
    [
        (["--memory", "lots"], "invalid size 'lots'"),
        (["--memory", "64MiB"], "memory '64MiB' is too small"),
        (["--cpus", "0"], "invalid CPU count 0"),
        (["--mount", "/nonexistent/warren-dir"], "cannot mount '/nonexistent/warren-dir'"),
    ],
)
def test_bad_resource_options_change_nothing(
    lpaths: Paths, fake: FakeLima, args: list[str], cause: str
) -> None:
    done = warren(lpaths, fake, "lima", "up", *args)
    assert done.returncode == ExitCode.USAGE
    assert cause in one_error_line(done)
    assert fake.invocations() == []
    assert not lpaths.data_dir.exists()


def test_parse_size() -> None:
    assert parse_size("2GiB") == 2 * GIB
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("20G") == 20 * GIB
    assert parse_size("1.5GiB") == int(1.5 * GIB)
    assert parse_size("1024") == 1024
    for bad in ("", "GiB", "2 XB", "-1GiB", "2GiBs"):
        with pytest.raises(LimaOptionError):
            parse_size(bad)


# --- the provision script and readiness probe, run for real ----------------------------------


def _provision(tmp: Path, user: str) -> tuple[Path, list[str]]:
    """Run the provision script with its drop-in under `tmp` and systemctl recorded."""
    dropin = tmp / "containerd.service.d" / "10-warren-socket-group.conf"
    stub = tmp / "stub"
    stub.mkdir(exist_ok=True)
    calls = tmp / "systemctl.calls"
    (stub / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (stub / "systemctl").chmod(0o755)
    script = PROVISION_SCRIPT.replace(
        "/etc/systemd/system/containerd.service.d/10-warren-socket-group.conf", str(dropin)
    )
    done = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "PATH": f"{stub}:/usr/bin:/bin", "LIMA_CIDATA_USER": user},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return dropin, calls.read_text().splitlines() if calls.exists() else []


def _probe_as(user: str, group: str, sock: Path) -> subprocess.CompletedProcess[str]:
    # One attempt instead of 150 × 2 s: the question is only whether this user can connect.
    script = PROBE_SCRIPT.replace("/run/containerd/containerd.sock", str(sock))
    script = script.replace("$(seq 150)", "1").replace("sleep 2", "true")
    return subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_provision_gives_the_lima_user_the_socket(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "needs root (runs the probe as another user)")
    require(shutil.which("setpriv") is not None, "setpriv (util-linux) is not installed")
    user = "nobody"
    group = subprocess.run(["id", "-gn", user], capture_output=True, text=True).stdout.strip()
    tmp = short_dir("lp")
    try:
        tmp.chmod(0o755)
        sock_path = tmp / "containerd.sock"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(sock_path))
        listener.listen(8)
        os.chmod(sock_path, 0o660)  # root:root 0660, as containerd creates it

        denied = _probe_as(user, group, sock_path)
        assert denied.returncode == 1
        assert f"not reachable by user {user}" in denied.stderr

        dropin, calls = _provision(tmp, user)
        assert calls == ["daemon-reload", "restart containerd"]
        text = dropin.read_text()
        sock = "/run/containerd/containerd.sock"
        assert text == (
            f"[Service]\nExecStartPost=/usr/bin/chgrp {group} {sock}\n"
            f"ExecStartPost=/usr/bin/chmod 0660 {sock}\n"
        )
        # What systemd runs after each containerd start, aimed at our socket.
        for line in text.splitlines()[1:]:
            cmd = line.removeprefix("ExecStartPost=").replace(sock, str(sock_path)).split()
            subprocess.run(cmd, check=True)

        allowed = _probe_as(user, group, sock_path)
        assert allowed.returncode == 0, allowed.stderr

        _dropin, again = _provision(tmp, user)
        assert again == ["daemon-reload", "restart containerd"], "restarted more than once"
        listener.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- failures -----------------------------------------------------------------------------------


def test_not_installed_no_limactl_on_path(lpaths: Paths, fake: FakeLima) -> None:
    assert shutil.which("limactl", path="/usr/bin:/bin") is None
    for args in (("lima", "up"), ("containerd", "start"), ("lima", "status")):
        done = warren(lpaths, fake, *args, PATH="/usr/bin:/bin")
        assert done.returncode == ExitCode.LIMA, (args, done.stderr)
        line = one_error_line(done)
        assert line.startswith("warren: Lima is not installed. Install with: brew install lima")
        assert "no limactl on PATH" in line
    assert not (lpaths.data_dir / "lima" / "warren.yaml").exists()


def test_not_installed_limactl_env_points_nowhere(lpaths: Paths, fake: FakeLima) -> None:
    done = warren(lpaths, fake, "lima", "up", LIMACTL="/nonexistent/limactl")
    assert done.returncode == ExitCode.LIMA
    line = one_error_line(done)
    assert "Lima is not installed. Install with: brew install lima" in line
    assert "LIMACTL names /nonexistent/limactl" in line
    assert fake.invocations() == []


def test_half_created_instance_dir_says_how_to_remove_it(lpaths: Paths, fake: FakeLima) -> None:
    fake.instance_dir.mkdir()
    (fake.instance_dir / "basedisk").write_bytes(b"")

    done = warren(lpaths, fake, "lima", "up")

    assert done.returncode == ExitCode.LIMA
    line = one_error_line(done)
    assert "half-created" in line
    assert f"rm -rf {fake.instance_dir}" in line
    assert fake.invocations() == [LIST, LIST]
    assert (fake.instance_dir / "basedisk").exists(), "warren must not remove it by itself"


def test_interrupted_create_fails_then_is_reported_half_created(
    lpaths: Paths, fake: FakeLima
) -> None:
    fake.control(create_half=True)
    yaml_path = lpaths.data_dir / "lima" / "warren.yaml"

    first = warren(lpaths, fake, "lima", "up")

    assert first.returncode == ExitCode.LIMA
    line = one_error_line(first)
    assert "limactl create --name=warren --tty=false" in line
    assert "failed (exit 1)" in line and "connection reset by peer" in line
    assert fake.invocations() == [
        LIST,
        ["create", "--name=warren", "--tty=false", str(yaml_path)],
        LIST,
    ]

    fake.clear_invocations()
    second = warren(lpaths, fake, "lima", "up")
    assert second.returncode == ExitCode.LIMA
    assert "half-created" in one_error_line(second)
    assert fake.invocations() == [LIST, LIST]


def test_start_failure_names_limactl_and_the_logs(lpaths: Paths, fake: FakeLima) -> None:
    fake.control(fail={"start": "vz driver: VM failed to boot"})

    done = warren(lpaths, fake, "lima", "up")

    assert done.returncode == ExitCode.LIMA
    line = one_error_line(done)
    assert "limactl start warren failed (exit 1)" in line
    assert "vz driver: VM failed to boot" in line
    assert "ha.stderr.log" in line and "warren lima delete --yes" in line
    yaml_path = str(lpaths.data_dir / "lima" / "warren.yaml")
    assert fake.invocations() == [
        LIST,
        ["create", "--name=warren", "--tty=false", yaml_path],
        start_call(),
        LIST,
    ]
    status = json.loads((lpaths.data_dir / "lima" / "status.json").read_text())
    assert status["status"] == "Stopped" and status["running"] is False


def test_socket_that_never_answers_times_out_with_progress(
    lima_base: Path, fake: FakeLima, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.control(start_dead_forward=True)
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    lines: list[str] = []
    settings = LimaSettings(start_timeout=1.5, progress_interval=0.2, poll_interval=0.05)
    mgr = LimaManager(lima_base / "data", settings=settings, progress=lines.append)

    with pytest.raises(ReadinessTimeout) as err:
        mgr.start()

    assert err.value.exit_code == ExitCode.TIMEOUT
    assert f"waiting for containerd on {fake.socket}" in str(err.value)
    assert any(line.startswith("still starting Lima VM 'warren'") for line in lines), lines
    assert fake.invocations()[-2:] == [start_call(2), LIST]


def test_hanging_limactl_start_is_ended_at_the_deadline(lpaths: Paths, fake: FakeLima) -> None:
    fake.control(start_hang=True)

    done = warren(lpaths, fake, "lima", "up", "--timeout", "2")

    assert done.returncode == ExitCode.TIMEOUT
    assert "waiting for limactl start" in one_error_line(done)
    pid = int((fake.home / ".start-hang.pid").read_text())
    wait_for(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
        timeout=15,
        what="the hung limactl start to be ended",
    )


def test_delete_asks_for_yes(lpaths: Paths, fake: FakeLima) -> None:
    fake.instance_dir.mkdir()
    (fake.instance_dir / "lima.yaml").write_text("cpus: 2\n")

    done = warren(lpaths, fake, "lima", "delete")

    assert done.returncode == ExitCode.USAGE
    assert "pass --yes" in done.stderr
    assert fake.invocations() == []
    assert (fake.instance_dir / "lima.yaml").exists()


def test_status_of_absent_vm_exits_7_and_writes_the_status_file(
    lpaths: Paths, fake: FakeLima
) -> None:
    done = warren(lpaths, fake, "lima", "status")
    assert done.returncode == ExitCode.NOT_RUNNING
    assert "Lima VM 'warren' is absent; start it with 'warren lima up'" in one_error_line(done)
    assert "status    absent" in done.stdout

    status = json.loads((lpaths.data_dir / "lima" / "status.json").read_text())
    assert status["instance"] == "warren"
    assert status["status"] == "absent"
    assert status["running"] is False
    assert status["restarts"] == 0
    assert status["memory_bytes"] == 2 * GIB
    assert status["socket"] == str(fake.socket)
    assert isinstance(status["updated_at"], float)


def test_down_of_absent_vm_is_a_no_op(lpaths: Paths, fake: FakeLima) -> None:
    done = warren(lpaths, fake, "lima", "down")
    assert done.returncode == 0, done.stderr
    assert "does not exist" in done.stderr
    # No instance dir under LIMA_HOME: nothing to ask limactl, and nothing written.
    assert fake.invocations() == []
    assert not (lpaths.data_dir / "lima").exists()
