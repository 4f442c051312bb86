"""Hostile input and faults at the edges, through whatever WARREN_TEST_EXE names (else source).

Each test is a case of the reliability issue: bad option values are usage errors (exit 2) that
create nothing; a full disk under stderr or the log does not kill the supervisor; nothing is
written through a symlink or a dir another user controls; a socket path containerd cannot
listen on is refused up front.
"""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths

from support import (
    WARREN,
    cleanup_runtime,
    containerd_started,
    make_paths,
    read_pid,
    run_warren,
    short_dir,
    unmount_under,
    wait_for,
    warren_env,
)

pytestmark = pytest.mark.integration


def _nothing_created(paths: Paths) -> None:
    for d in (paths.data_dir, paths.run_dir, paths.config_dir):
        assert not d.exists(), f"{d} was created"


def _usage_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == ExitCode.USAGE, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in out.stderr, out.stderr


# --- case 5: registry mirrors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("../../etc=https://x", "'../../etc' is not a registry host name"),
        ("a/b=https://mirror.local", "'a/b' is not a registry host name"),
        ('docker.io=https://x"\n[host."https://evil"]', "is not an http(s) URL"),
        ("docker.io=https://mirror local", "is not an http(s) URL"),
        ("docker.io=ftp://mirror.local", "is not an http(s) URL"),
        ("docker.io", "use REGISTRY=URL"),
    ],
)
@pytest.mark.parametrize("command", [("containerd", "run"), ("containerd", "config")])
def test_a_bad_registry_mirror_is_a_usage_error_that_writes_nothing(
    wpaths: Paths, spec: str, says: str, command: tuple[str, ...], root_required: None
) -> None:
    out = run_warren(wpaths, *command, "--registry-mirror", spec)
    _usage_error(out, says, "--registry-mirror docker.io=https://mirror.local")
    _nothing_created(wpaths)
    assert not (wpaths.config_dir.parent / "etc" / "hosts.toml").exists()


def test_a_good_mirror_lands_in_hosts_toml_as_data(wpaths: Paths, staged_payload: Path) -> None:
    import tomllib

    from warren_bundle.runtime.config import ConfigOptions, parse_mirror, write_config

    host, url = parse_mirror("localhost:5000=http://127.0.0.1:5000/v2/")
    write_config(wpaths, "1.6.20", ConfigOptions(registry_mirrors={host: [url]}))
    hosts = tomllib.loads((wpaths.config_dir / "certs.d" / host / "hosts.toml").read_text())
    assert hosts == {
        "server": "https://localhost:5000",
        "host": {"http://127.0.0.1:5000/v2": {"capabilities": ["pull", "resolve"]}},
    }


# --- case 6: durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        ("--health-interval", "0"),
        ("--health-interval", "-1"),
        ("--health-interval", "nan"),
        ("--ready-timeout", "nan"),
        ("--ready-timeout", "inf"),
        ("--ready-timeout", "0"),
        ("--health-interval", "1e10"),  # OverflowError in the monitor at once
        ("--health-interval", "0.000001"),  # a core burnt polling
        ("--ready-timeout", "86401"),
    ],
)
@pytest.mark.parametrize("command", ["run", "start"])
def test_a_duration_that_is_not_positive_and_finite_starts_nothing(
    wpaths: Paths, option: tuple[str, str], command: str, root_required: None
) -> None:
    out = run_warren(wpaths, "containerd", command, *option)
    _usage_error(out, f"Invalid value for '{option[0]}'", "is not a number of seconds from 0.05")
    _nothing_created(wpaths)


# --- case 11: socket paths --------------------------------------------------------------------


def test_a_run_dir_too_long_for_a_socket_is_refused_before_anything(
    tmp_path: Path, root_required: None
) -> None:
    deep = tmp_path / ("r" * 90)  # tmp_path itself is ~50 bytes: well over 107 with the socket
    paths = Paths(tmp_path / "data", deep, tmp_path / "etc")
    for command in ("run", "start"):
        out = run_warren(paths, "containerd", command)
        _usage_error(out, "containerd.sock.ttrpc is", "unix sockets allow 107", "shorter --run-dir")
        _nothing_created(paths)
    doctor = run_warren(paths, "doctor")
    assert "FAIL  socket path" in doctor.stdout, doctor.stdout
    assert doctor.returncode == ExitCode.USAGE


# --- case 8: symlinks and dirs others control -------------------------------------------------


@pytest.fixture
def base() -> Iterator[Path]:
    path = short_dir()
    yield path
    cleanup_runtime(make_paths(path), path)


def test_a_symlinked_logs_dir_in_a_world_writable_data_dir_gets_no_write(
    base: Path, root_required: None
) -> None:
    paths = make_paths(base)
    paths.data_dir.mkdir()
    paths.data_dir.chmod(0o777)
    victim_dir = base / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "containerd.log"
    victim.write_text("precious\n")
    (paths.data_dir / "logs").symlink_to(victim_dir)
    for command in ("start", "run"):
        out = run_warren(paths, "containerd", command)
        assert out.returncode == ExitCode.PERMISSION, out.stderr
        assert "writable by group or others" in out.stderr
        assert victim.read_text() == "precious\n", f"{command} wrote through the symlink"
        assert sorted(os.listdir(victim_dir)) == ["containerd.log"]


def test_a_symlinked_logs_dir_is_refused_even_in_a_safe_data_dir(
    base: Path, root_required: None
) -> None:
    paths = make_paths(base)
    paths.data_dir.mkdir()
    victim_dir = base / "victim"
    victim_dir.mkdir()
    (paths.data_dir / "logs").symlink_to(victim_dir)
    out = run_warren(paths, "containerd", "start")
    assert out.returncode == ExitCode.PERMISSION, out.stderr
    assert f"logs dir {paths.data_dir / 'logs'} is a symlink" in out.stderr
    assert os.listdir(victim_dir) == []


def test_a_symlink_another_user_could_swap_on_the_way_is_refused(
    base: Path, root_required: None
) -> None:
    real = base / "real"
    real.mkdir()
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: anyone may create entries here
    link = shared / "warren"
    link.symlink_to(real)
    nobody = pwd.getpwnam("nobody")
    os.lchown(link, nobody.pw_uid, nobody.pw_gid)  # planted by another user
    paths = Paths(link / "data", base / "run", base / "etc")
    out = run_warren(paths, "extract")
    assert out.returncode == ExitCode.PERMISSION, out.stderr
    assert f"{link} (on the way to {paths.data_dir}) is a symlink another user" in out.stderr
    assert os.listdir(real) == []
    # The same link owned by root in a dir only root may write is followed as before.
    shared.chmod(0o755)
    os.lchown(link, 0, 0)
    assert run_warren(paths, "extract").returncode == 0


def test_a_group_writable_binary_is_flagged_and_repaired(base: Path, root_required: None) -> None:
    paths = make_paths(base)
    assert run_warren(paths, "extract").returncode == 0
    binary = paths.binary("containerd")
    binary.chmod(0o775)
    doctor = run_warren(paths, "doctor")
    assert "FAIL  binaries" in doctor.stdout and "written by others" in doctor.stdout
    verify = run_warren(paths, "extract", "--verify")
    assert verify.returncode == 0, verify.stderr
    assert "repaired containerd" in verify.stdout
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    binary.chmod(0o757)
    again = run_warren(paths, "extract")  # without --verify too: mode is seen by stat alone
    assert "repaired containerd" in again.stdout
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755


# --- case 2: stderr and the log on a full disk ------------------------------------------------


def test_run_with_stderr_on_a_full_disk_keeps_supervising(base: Path, root_required: None) -> None:
    paths = make_paths(base)
    with open("/dev/full", "w") as full:
        proc = subprocess.Popen(
            [*WARREN, "containerd", "run", "--health-interval", "0.5"],
            env=warren_env(paths),
            stdout=subprocess.DEVNULL,
            stderr=full,
        )
    try:
        wait_for(lambda: proc.poll() is not None or containerd_started(paths), 60)
        assert proc.poll() is None, "the supervisor died writing to a full stderr"
        os.kill(read_pid(paths.containerd_pidfile), signal.SIGKILL)
        wait_for(lambda: _status(paths).get("restarts") == 1 and containerd_started(paths), 30)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, "a clean stop is exit 0 even when stderr cannot be flushed"
    assert _status(paths).get("state") == "STOPPED"


def _status(paths: Paths) -> dict[str, object]:
    import json

    out = run_warren(paths, "containerd", "status", "--json")
    return dict(json.loads(out.stdout)) if out.stdout.strip() else {}


def test_start_with_a_full_log_disk_leaves_a_living_supervisor(
    base: Path, root_required: None
) -> None:
    paths = make_paths(base)
    paths.logs_dir.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(paths.logs_dir)]
    subprocess.run(mount, check=True)
    try:
        fd = os.open(paths.logs_dir / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError, match="No space left"):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        out = run_warren(paths, "containerd", "start")
        assert out.returncode == 0, out.stderr
        assert "containerd started" in out.stdout
        sup = read_pid(paths.supervisor_pidfile)
        os.kill(sup, 0)  # alive: "started" is true
        ctrd = read_pid(paths.containerd_pidfile)
        os.kill(ctrd, signal.SIGKILL)
        wait_for(lambda: _status(paths).get("restarts") == 1 and containerd_started(paths), 30)
        stopped = run_warren(paths, "containerd", "stop")
        assert stopped.returncode == 0, stopped.stderr
    finally:
        run_warren(paths, "containerd", "stop")
        unmount_under(paths.logs_dir)
