"""The Lima lifecycle end to end: the fake limactl forwards to a REAL containerd socket.

One containerd (Debian's, staged as the payload, under `warren containerd run`) serves the module;
each test gets a fresh LIMA_HOME and data dir, and the platform is forced to macOS.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths
from warren_bundle.runtime import health

from conftest import require
from support import (
    WARREN,
    cleanup_runtime,
    make_paths,
    run_warren,
    short_dir,
    staged_containerd_version,
    start_run,
    stop_run,
    warren_env,
)
from support.lima import GIB, LIST, FakeLima, start_call

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def containerd_socket(staged_payload: Path) -> Iterator[Path]:
    """A real containerd for the fake VM's socket forward to point at."""
    require(os.geteuid() == 0, "needs root (containerd mounts and cgroups)")
    base = short_dir("lc")
    paths = make_paths(base)
    try:
        proc = start_run(paths, staged_payload)
        try:
            yield paths.socket
        finally:
            stop_run(proc)
    finally:
        cleanup_runtime(paths, base)


@pytest.fixture(scope="module")
def server_version(containerd_socket: Path) -> str:
    """What the real containerd reports directly; through the forward it must say the same."""
    version = health.containerd_version(containerd_socket)[0]
    assert version.startswith(staged_containerd_version()), version
    return version


@pytest.fixture
def env(containerd_socket: Path) -> Iterator[tuple[Paths, FakeLima]]:
    base = short_dir("li")
    fake = FakeLima(base)
    fake.control(target_socket=str(containerd_socket))
    paths = make_paths(base / "w")
    yield paths, fake
    cleanup_runtime(paths, base)


def warren(
    env: tuple[Paths, FakeLima], *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    paths, fake = env
    return run_warren(paths, *args, **{**fake.env(), **extra})


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stderr
    return done


def lima_status(paths: Paths) -> dict[str, object]:
    return json.loads((paths.data_dir / "lima" / "status.json").read_text())


def up(env: tuple[Paths, FakeLima], *args: str) -> subprocess.CompletedProcess[str]:
    """`warren lima up` from scratch, then forget its invocations."""
    done = ok(warren(env, "lima", "up", *args))
    env[1].clear_invocations()
    return done


# --- the lifecycle ------------------------------------------------------------------------------


def test_fresh_create_and_start_answers_grpc_and_ctr(
    env: tuple[Paths, FakeLima], server_version: str
) -> None:
    paths, fake = env
    yaml_path = paths.data_dir / "lima" / "warren.yaml"

    done = ok(warren(env, "lima", "up"))

    assert done.stdout.strip() == str(fake.socket)
    assert fake.invocations() == [
        LIST,
        ["create", "--name=warren", "--tty=false", str(yaml_path)],
        start_call(),
        LIST,
    ]
    assert ok(warren(env, "lima", "yaml")).stdout == yaml_path.read_text()
    assert (fake.instance_dir / "lima.yaml").read_text() == yaml_path.read_text()
    assert "the first start downloads an Ubuntu 22.04 image" in done.stderr
    probe = health.probe(fake.socket)
    assert probe.serving and probe.version == server_version, probe

    status = lima_status(paths)
    assert status["status"] == "Running" and status["running"] is True
    assert status["restarts"] == 0
    assert status["memory_bytes"] == 2 * GIB
    assert status["socket"] == str(fake.socket)

    ctr = ok(warren(env, "ctr", "version"))
    server = ctr.stdout.split("Server:")[1]
    assert f"Version:  {server_version}" in server


def test_concurrent_ups_create_the_vm_once(env: tuple[Paths, FakeLima]) -> None:
    paths, fake = env
    procs = [
        subprocess.Popen(
            [*WARREN, "lima", "up"],
            env={**warren_env(paths), **fake.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(proc.wait(60), *proc.communicate()) for proc in procs]

    for rc, out, err in results:
        assert rc == 0, err
        assert out.strip() == str(fake.socket)
    calls = [call[0] for call in fake.invocations()]
    assert calls.count("create") == 1 and calls.count("start") == 1, calls


def test_running_vm_is_reused_without_start(env: tuple[Paths, FakeLima]) -> None:
    paths, fake = env
    up(env)

    again = ok(warren(env, "lima", "up"))

    assert fake.invocations() == [LIST, LIST]
    assert "already running" in again.stderr
    assert again.stdout.strip() == str(fake.socket)
    assert lima_status(paths)["restarts"] == 0


def test_stopped_vm_is_started(env: tuple[Paths, FakeLima]) -> None:
    paths, fake = env
    up(env)
    ok(warren(env, "lima", "down"))
    assert fake.invocations() == [LIST, ["stop", "warren"], LIST]
    assert not health.is_serving(fake.socket)
    assert lima_status(paths)["status"] == "Stopped"
    fake.clear_invocations()

    ok(warren(env, "lima", "up"))

    assert fake.invocations() == [LIST, start_call(), LIST]
    assert health.is_serving(fake.socket)
    assert lima_status(paths)["restarts"] == 0, "a plain start is not a restart"


def test_broken_vm_is_forced_off_then_started(env: tuple[Paths, FakeLima]) -> None:
    paths, fake = env
    up(env)
    fake.set_state("Broken", errors=["hostagent process 4242 is not running"])

    done = ok(warren(env, "lima", "up"))

    assert fake.invocations() == [LIST, ["stop", "-f", "warren"], start_call(), LIST]
    assert "is Broken (hostagent process 4242 is not running)" in done.stderr
    assert health.is_serving(fake.socket)
    status = lima_status(paths)
    assert status["status"] == "Running" and status["restarts"] == 1


def test_failed_recovery_is_recorded(env: tuple[Paths, FakeLima]) -> None:
    paths, fake = env
    up(env)
    fake.set_state("Broken")
    fake.control(fail={"start": "qemu: could not open disk image"})

    done = warren(env, "lima", "up")

    assert done.returncode == ExitCode.LIMA
    assert "limactl start warren failed (exit 1): qemu: could not open disk image" in done.stderr
    assert fake.invocations() == [LIST, ["stop", "-f", "warren"], start_call(), LIST]
    status = lima_status(paths)
    assert status["status"] == "Stopped" and status["running"] is False
    assert status["restarts"] == 1


def test_dead_forward_restarts_the_vm(env: tuple[Paths, FakeLima]) -> None:
    paths, fake = env
    up(env)
    # What a host sleep leaves: the VM still Running, its forwarded socket answering nothing.
    fake.socket.unlink()
    fake.socket.symlink_to("/nonexistent/dead-forward.sock")

    done = ok(warren(env, "lima", "up", "--forward-grace", "0.5"))

    assert fake.invocations() == [LIST, ["stop", "warren"], start_call(), LIST]
    assert "does not answer" in done.stderr and "restarting the VM" in done.stderr
    assert health.is_serving(fake.socket)
    assert lima_status(paths)["restarts"] == 1

    # The count survives across processes (the metrics read it from the status file).
    fake.set_state("Broken")
    ok(warren(env, "lima", "up"))
    assert lima_status(paths)["restarts"] == 2


def test_failing_graceful_stop_falls_back_to_force(env: tuple[Paths, FakeLima]) -> None:
    paths, fake = env
    up(env)
    fake.control(fail={"stop": 'did not receive an event with the "exiting" status'})

    done = ok(warren(env, "lima", "down"))

    assert fake.invocations() == [LIST, ["stop", "warren"], ["stop", "-f", "warren"], LIST]
    assert 'did not receive an event with the "exiting" status' in done.stderr
    assert "forcing it off" in done.stderr
    assert lima_status(paths)["status"] == "Stopped"
    assert not health.is_serving(fake.socket)


def test_forced_stop_failing_too_is_a_lima_error(env: tuple[Paths, FakeLima]) -> None:
    paths, fake = env
    up(env)
    fake.control(fail={"stop": "graceful failed", "stop_force": "permission denied: qemu pid"})

    done = warren(env, "lima", "down")

    assert done.returncode == ExitCode.LIMA
    assert "limactl stop -f warren failed (exit 1): permission denied: qemu pid" in done.stderr
    assert fake.invocations() == [LIST, ["stop", "warren"], ["stop", "-f", "warren"], LIST]
    assert lima_status(paths)["status"] == "Running", "the status file says what was left"


def test_delete_with_yes_stops_and_deletes(env: tuple[Paths, FakeLima]) -> None:
    paths, fake = env
    up(env)

    ok(warren(env, "lima", "delete", "--yes"))

    assert fake.invocations() == [LIST, ["stop", "warren"], ["delete", "warren"], LIST]
    assert not fake.instance_dir.exists()
    assert lima_status(paths)["status"] == "absent"


def test_status_json_of_a_running_vm(env: tuple[Paths, FakeLima], server_version: str) -> None:
    paths, fake = env
    up(env, "--memory", "3GiB", "--cpus", "3")

    report = json.loads(ok(warren(env, "lima", "status", "--json")).stdout)

    assert report["status"] == "Running" and report["running"] is True
    assert report["socket_answers"] is True
    assert report["server_version"] == server_version
    assert report["memory_bytes"] == 3 * GIB and report["cpus"] == 3
    assert report["socket"] == str(fake.socket)
    on_disk = lima_status(paths)
    for key in ("instance", "status", "running", "restarts", "memory_bytes", "socket"):
        assert on_disk[key] == report[key], key


def test_status_of_a_running_vm_with_a_dead_forward(env: tuple[Paths, FakeLima]) -> None:
    paths, fake = env
    up(env)
    fake.socket.unlink()
    fake.socket.symlink_to("/nonexistent/dead-forward.sock")

    done = warren(env, "lima", "status", "--json")

    assert done.returncode == ExitCode.NOT_RUNNING
    assert "is running but containerd does not answer" in done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "Running"
    assert report["running"] is False and report["socket_answers"] is False
    assert lima_status(paths)["running"] is False
    assert fake.invocations() == [LIST], "status only looks"


# --- macOS: containerd start|stop|status and socket go through Lima ---------------------------


def test_containerd_commands_and_socket_use_lima_on_macos(
    env: tuple[Paths, FakeLima], server_version: str
) -> None:
    paths, fake = env

    started = ok(warren(env, "containerd", "start"))
    assert started.stdout.strip() == (
        f"containerd {server_version} running in Lima VM 'warren': {fake.socket}"
    )
    assert fake.invocations()[:3] == [
        LIST,
        ["create", "--name=warren", "--tty=false", str(paths.data_dir / "lima" / "warren.yaml")],
        start_call(),
    ]
    status = json.loads(ok(warren(env, "containerd", "status", "--json")).stdout)
    assert status["status"] == "Running" and status["socket_answers"] is True
    assert ok(warren(env, "socket")).stdout.strip() == str(fake.socket)
    validated = ok(warren(env, "socket", "--validate"))
    assert f"lima containerd {server_version} answers" in validated.stderr

    ok(warren(env, "containerd", "stop"))
    assert lima_status(paths)["status"] == "Stopped"
    stopped = warren(env, "containerd", "status")
    assert stopped.returncode == ExitCode.NOT_RUNNING
    assert "Lima VM 'warren' is Stopped" in stopped.stderr
    no_socket = warren(env, "socket")
    assert no_socket.returncode == ExitCode.NOT_RUNNING
    assert "warren lima up" in no_socket.stderr


def test_linux_keeps_its_own_containerd_commands(env: tuple[Paths, FakeLima]) -> None:
    _paths, fake = env
    done = warren(env, "containerd", "status", WARREN_PLATFORM="linux")
    assert done.returncode == ExitCode.NOT_RUNNING
    assert fake.invocations() == [], "Linux must not call limactl"


def test_ensure_containerd_on_macos_is_a_started_lima_manager(
    env: tuple[Paths, FakeLima], server_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, fake = env
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    from warren_bundle import LimaManager, ensure_containerd

    mgr = ensure_containerd(paths.data_dir)

    assert isinstance(mgr, LimaManager)
    assert mgr.socket_path == str(fake.socket)
    assert health.containerd_version(mgr.socket_path)[0] == server_version
    mgr.stop()
    assert not health.is_serving(mgr.socket_path)
    assert fake.invocations()[-3:] == [LIST, ["stop", "warren"], LIST]


# --- the frozen executable ----------------------------------------------------------------------


@pytest.mark.e2e
def test_frozen_lima_up_and_ctr_version(
    env: tuple[Paths, FakeLima], server_version: str, frozen_exe: Path
) -> None:
    paths, fake = env
    exe_env = {**warren_env(paths, None), **fake.env()}

    def frozen(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(frozen_exe), *args], env=exe_env, capture_output=True, text=True, timeout=120
        )

    done = frozen("lima", "up")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(fake.socket)
    ctr = frozen("ctr", "version")
    assert ctr.returncode == 0, ctr.stderr
    assert f"Version:  {server_version}" in ctr.stdout.split("Server:")[1]
