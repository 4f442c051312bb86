"""The CLI's contract: exit codes, one-line errors with remedies, socket detection, help."""

from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths

from conftest import Supervised
from support import (
    cleanup_runtime,
    containerd_started,
    make_paths,
    run_warren,
    short_dir,
    staged_containerd_version,
    wait_for,
)

IMPORTANT_COMMANDS = ["version", "extract", "containerd", "socket", "ctr"]


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("warren: ")
    return lines[0]


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return make_paths(tmp_path)


def test_help_lists_the_commands(paths: Paths) -> None:
    out = run_warren(paths, "--help")
    assert out.returncode == 0
    for command in IMPORTANT_COMMANDS:
        assert f"  {command}" in out.stdout


def test_usage_error_is_exit_2(paths: Paths) -> None:
    out = run_warren(paths, "containerd", "frobnicate")
    assert out.returncode == ExitCode.USAGE


def test_windows_is_refused_with_wsl2(paths: Paths) -> None:
    out = run_warren(paths, "containerd", "run", WARREN_PLATFORM="windows")
    assert out.returncode == ExitCode.PLATFORM
    assert "Windows is not supported; use WSL2" in one_error_line(out.stderr)


def test_unsupported_arch_names_what_is_supported(paths: Paths) -> None:
    out = run_warren(paths, "containerd", "run", WARREN_ARCH="riscv64")
    assert out.returncode == ExitCode.PLATFORM
    line = one_error_line(out.stderr)
    assert "'riscv64' is not supported" in line and "amd64, arm64" in line


def test_debug_shows_a_traceback(paths: Paths, tmp_path: Path) -> None:
    out = run_warren(paths, "--debug", "extract", payload=tmp_path / "missing")
    assert out.returncode == ExitCode.PAYLOAD
    assert "Traceback (most recent call last)" in out.stderr


def test_status_when_nothing_runs_is_exit_7(paths: Paths) -> None:
    out = run_warren(paths, "containerd", "status")
    assert out.returncode == ExitCode.NOT_RUNNING
    assert "state           STOPPED" in out.stdout
    assert "warren containerd start" in out.stderr


def test_socket_when_nothing_answers_is_exit_7(paths: Paths, tmp_path: Path) -> None:
    out = run_warren(paths, "socket", WARREN_SYSTEM_SOCKET=str(tmp_path / "none.sock"))
    assert out.returncode == ExitCode.NOT_RUNNING
    line = one_error_line(out.stderr)
    assert "socket not found: no containerd answers on" in line
    assert "warren containerd start" in line


def test_explicit_socket_wins_and_is_validated(paths: Paths, tmp_path: Path) -> None:
    missing = tmp_path / "explicit.sock"
    plain = run_warren(paths, "socket", WARREN_CONTAINERD_SOCKET=str(missing))
    assert plain.returncode == 0
    assert plain.stdout.strip() == str(missing)
    checked = run_warren(paths, "socket", "--validate", CONTAINERD_ADDRESS=f"unix://{missing}")
    assert checked.returncode == ExitCode.NOT_RUNNING
    assert f"socket not found: {missing}" in one_error_line(checked.stderr)


def test_a_client_given_a_missing_socket_says_so_at_once(paths: Paths, tmp_path: Path) -> None:
    # An image import given a --socket nobody listens on used to wait out ctr's 10 s dial
    # timeout, then blame the archive ("check each named archive"). Clients check an explicit
    # socket first; `warren socket` alone still prints it unchecked (above).
    missing = tmp_path / "explicit.sock"
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"\0" * 1024)
    imported = run_warren(paths, "images", "import", "--socket", str(missing), str(archive))
    assert imported.returncode == ExitCode.NOT_RUNNING, imported.stderr
    line = one_error_line(imported.stderr)
    assert str(missing) in line and "archive" not in line
    ctr = run_warren(paths, "ctr", "version", WARREN_CONTAINERD_SOCKET=str(missing))
    assert ctr.returncode == ExitCode.NOT_RUNNING, ctr.stderr
    assert str(missing) in one_error_line(ctr.stderr)
    # A symlink whose target is gone (a forward that went away) is as missing: it used to wait
    # out the 10 s too (exit 1).
    dangling = tmp_path / "forward.sock"
    dangling.symlink_to(tmp_path / "gone" / "containerd.sock")
    linked = run_warren(paths, "ctr", "version", WARREN_CONTAINERD_SOCKET=str(dangling))
    assert linked.returncode == ExitCode.NOT_RUNNING, linked.stderr
    assert f"{dangling} (a symlink to nothing)" in one_error_line(linked.stderr)


@pytest.mark.integration
def test_socket_prefers_embedded_then_system(supervised: Supervised, tmp_path: Path) -> None:
    embedded = run_warren(supervised.paths, "socket", "--json")
    assert embedded.returncode == 0, embedded.stderr
    assert json.loads(embedded.stdout)["kind"] == "embedded"

    other = make_paths(tmp_path / "other")
    system = run_warren(
        other, "socket", "--validate", "--json", WARREN_SYSTEM_SOCKET=str(supervised.paths.socket)
    )
    assert system.returncode == 0, system.stderr
    report = json.loads(system.stdout)
    assert report["kind"] == "system"
    assert report["probe"]["version"].startswith(staged_containerd_version())


@pytest.mark.e2e
def test_non_root_run_is_exit_4_naming_sudo(frozen_exe: Path) -> None:
    """nobody has no /etc/subuid range: neither root nor rootless, it is told both ways out."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop to another user")
    home = short_dir("nobody")  # pytest's own tmp dirs are 0700: another user cannot enter
    home.chmod(0o755)
    exe = home / "warren"
    shutil.copy2(frozen_exe, exe)
    # Root's runtime, which the user runs read-only (nobody has no home for a cache of its own).
    assert subprocess.run([str(exe), "-V"], capture_output=True).returncode == 0
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            str(exe),
            "--data-dir",
            str(home / "data"),
            "--run-dir",  # a user's own: without it the refusal is about XDG_RUNTIME_DIR (exit 2)
            str(home / "run"),
            "containerd",
            "run",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(home)},
        cwd=home,
    )
    shutil.rmtree(home, ignore_errors=True)
    assert out.returncode == ExitCode.PERMISSION, out.stderr
    line = one_error_line(out.stderr)
    assert "needs root" in line and "sudo" in line and "rootless" in line


@pytest.mark.e2e
@pytest.mark.usefixtures("root_required")
def test_socket_group_member_uses_ctr_and_status_without_root(frozen_exe: Path) -> None:
    """--socket-group: the seed's "root or containerd group" — clients need no root."""
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv to drop to another user")
    group = grp.getgrgid(65534).gr_name  # nogroup: nobody's own group, present on Debian
    base = short_dir("g")
    base.chmod(0o755)
    paths = make_paths(base)
    exe = base / "warren"
    shutil.copy2(frozen_exe, exe)
    scratch = base / "tmp"
    scratch.mkdir(mode=0o1777)
    scratch.chmod(0o1777)
    env = {
        "PATH": "/usr/bin:/bin",
        "TMPDIR": str(scratch),
        "WARREN_DATA_DIR": str(paths.data_dir),
        "WARREN_RUN_DIR": str(paths.run_dir),
        "WARREN_CONFIG_DIR": str(paths.config_dir),
    }

    def as_user(gid: int, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["setpriv", "--reuid=65534", f"--regid={gid}", "--clear-groups", str(exe), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=scratch,
        )

    supervisor = subprocess.Popen(
        [str(exe), "containerd", "run", "--socket-group", group],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: supervisor.poll() is not None or containerd_started(paths),
            timeout=60,
            what="containerd with a socket group",
        )
        assert supervisor.poll() is None, supervisor.communicate()[1]
        sock = os.stat(paths.socket)
        assert sock.st_gid == 65534 and stat.S_IMODE(sock.st_mode) == 0o660

        version = as_user(65534, "ctr", "version")
        assert version.returncode == 0, version.stderr
        assert "Server:" in version.stdout

        status = as_user(65534, "containerd", "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "RUNNING"

        outsider = as_user(1, "ctr", "version")
        assert outsider.returncode == ExitCode.PERMISSION
        line = one_error_line(outsider.stderr)
        assert f"permission denied: {paths.socket}" in line and repr(group) in line
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.communicate(timeout=30)
        cleanup_runtime(paths, base)
