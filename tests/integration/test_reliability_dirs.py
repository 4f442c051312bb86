"""Directories and drop-ins another local user controls, and bad path options, through whatever
WARREN_TEST_EXE names (else source).

One trust rule for every directory warren reads config from or writes into; drop-ins are small
regular UTF-8 TOML files of root's; empty or relative dir options are usage errors; remedies
never tell anyone to remove what warren did not make.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths

from support import cleanup_runtime, make_paths, read_pid, run_warren, short_dir

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("root_required")]


@pytest.fixture
def base() -> Iterator[Path]:
    path = short_dir()
    yield path
    cleanup_runtime(make_paths(path), path)


def one_line(out: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The one error line of a failed command (a frozen file may first report unpack dirs)."""
    assert out.returncode == code, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("warren: removed /tmp/_MEI")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


# --- config.d and its drop-ins ----------------------------------------------------------------


def test_a_config_d_owned_by_another_user_is_not_merged(base: Path) -> None:
    """Its drop-in could set [grpc] gid to that user's group (the socket, that is root) or the
    runc binary."""
    paths = make_paths(base)
    paths.config_d.mkdir(parents=True)
    (paths.config_d / "evil.toml").write_text(f"[grpc]\ngid = {nobody().pw_gid}\n")
    os.chown(paths.config_d, nobody().pw_uid, nobody().pw_gid)
    for command in ("config", "start"):
        out = run_warren(paths, "containerd", command)
        one_line(out, ExitCode.PERMISSION, f"config.d {paths.config_d} is owned by uid")
    assert not paths.run_dir.exists() and not paths.config_file.exists()


def test_a_drop_in_owned_by_another_user_is_not_merged(base: Path) -> None:
    paths = make_paths(base)
    paths.config_d.mkdir(parents=True)
    dropin = paths.config_d / "evil.toml"
    dropin.write_text(f"[grpc]\ngid = {nobody().pw_gid}\n")
    os.chown(dropin, nobody().pw_uid, nobody().pw_gid)
    out = run_warren(paths, "containerd", "config")
    one_line(out, ExitCode.PERMISSION, f"drop-in {dropin} is owned by uid {nobody().pw_uid}")
    assert f"gid = {nobody().pw_gid}" not in out.stdout


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.write_bytes(b'[debug]\nlevel = "caf\xe9"\n'), "is not UTF-8 (byte 0xe9"),
        (lambda p: p.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n"), "nests tables deeper"),
        (lambda p: p.write_text("[" + ".".join(["a"] * 200) + "]\n"), "nests tables deeper"),
        (lambda p: os.mkfifo(p), "is not a regular file"),
        (lambda p: p.symlink_to("/dev/zero"), "is not a regular file"),
        (lambda p: p.write_text("# big\n" + "#" * (1 << 20) + "\n"), "is over 1 MiB"),
        (lambda p: p.write_text("[grpc\n"), "is not valid TOML"),
    ],
    ids=["latin-1", "deep-arrays", "deep-tables", "fifo", "dev-zero", "huge", "bad-toml"],
)
def test_a_bad_drop_in_is_one_line_naming_it(base: Path, make: object, says: str) -> None:
    paths = make_paths(base)
    paths.config_d.mkdir(parents=True)
    dropin = paths.config_d / "bad.toml"
    make(dropin)  # type: ignore[operator]
    out = run_warren(paths, "containerd", "config", timeout=60)
    line = one_line(out, ExitCode.ERROR, f"drop-in {dropin} ", says)
    assert f"fix {dropin}, or move it out of {paths.config_d}" in line


# --- run dir, cni/net.d, images ---------------------------------------------------------------


def test_a_run_dir_another_user_owns_is_refused(base: Path) -> None:
    paths = make_paths(base)
    paths.run_dir.mkdir()
    os.chown(paths.run_dir, nobody().pw_uid, nobody().pw_gid)
    out = run_warren(paths, "containerd", "start")
    one_line(out, ExitCode.PERMISSION, f"run dir {paths.run_dir} is owned by uid")
    assert os.listdir(paths.run_dir) == []


def test_a_world_writable_run_dir_is_refused(base: Path) -> None:
    paths = make_paths(base)
    paths.run_dir.mkdir()
    paths.run_dir.chmod(0o777)
    out = run_warren(paths, "containerd", "run")
    one_line(out, ExitCode.PERMISSION, f"run dir {paths.run_dir} is writable by group or others")
    assert os.listdir(paths.run_dir) == []


@pytest.mark.parametrize("takeover", ["chown nobody", "chmod 777"])
def test_status_and_stop_refuse_a_run_dir_another_user_controls(
    base: Path, staged_payload: Path, takeover: str
) -> None:
    """Its pidfiles and state could name any process: status believes none of it and stop
    signals nothing. Here the run dir of a live supervisor is taken over (owned by nobody, or
    made writable by all); once it is root's 0711 again, stop works."""
    paths = make_paths(base)
    started = run_warren(paths, "containerd", "start")
    assert started.returncode == 0, started.stderr
    pids = [read_pid(paths.supervisor_pidfile), read_pid(paths.containerd_pidfile)]
    if takeover == "chown nobody":
        os.chown(paths.run_dir, nobody().pw_uid, nobody().pw_gid)
        says = f"run dir {paths.run_dir} is owned by uid {nobody().pw_uid}"
    else:
        paths.run_dir.chmod(0o777)
        says = f"run dir {paths.run_dir} is writable by group or others"
    for command in ("status", "stop"):
        out = run_warren(paths, "containerd", command)
        one_line(out, ExitCode.PERMISSION, says)
        assert out.stdout == "", out.stdout
    assert all(psutil.pid_exists(pid) for pid in pids), "something was signalled"
    os.chown(paths.run_dir, 0, 0)
    paths.run_dir.chmod(0o711)
    out = run_warren(paths, "containerd", "stop")
    assert out.returncode == 0 and f"stopped warren supervisor pid {pids[0]}" in out.stdout, out


def test_a_symlinked_cni_conf_dir_gets_no_write(base: Path) -> None:
    paths = make_paths(base)
    victim = base / "victim"
    victim.mkdir()
    (paths.config_dir / "cni").mkdir(parents=True)
    (paths.config_dir / "cni" / "net.d").symlink_to(victim)
    out = run_warren(paths, "containerd", "start")
    one_line(out, ExitCode.PERMISSION, "cni/net.d", "is a symlink")
    assert os.listdir(victim) == []


def test_an_images_dir_another_user_owns_is_refused(base: Path) -> None:
    paths = make_paths(base)
    paths.images_dir.mkdir(parents=True)
    os.chown(paths.images_dir, nobody().pw_uid, nobody().pw_gid)
    out = run_warren(paths, "containerd", "start")
    one_line(out, ExitCode.PERMISSION, f"images dir {paths.images_dir} is owned by uid")


# --- path options -----------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--data-dir", "--run-dir", "--config-dir"])
@pytest.mark.parametrize("value", ["", "relative/dir"])
def test_an_empty_or_relative_dir_option_is_a_usage_error(
    base: Path, option: str, value: str
) -> None:
    paths = make_paths(base)
    out = run_warren(paths, option, value, "containerd", "status")
    one_line(out, ExitCode.USAGE, option, "absolute path")


@pytest.mark.parametrize("env", ["WARREN_DATA_DIR", "WARREN_RUN_DIR", "WARREN_CONFIG_DIR"])
def test_an_empty_dir_env_var_is_a_usage_error(base: Path, env: str) -> None:
    paths = make_paths(base)
    out = run_warren(paths, "containerd", "start", **{env: ""})
    one_line(out, ExitCode.USAGE, f"{env} is set but empty")


@pytest.mark.parametrize(
    ("data_dir", "says"),
    [("/", "bin dir /bin is a symlink"), ("/etc/passwd", "data dir /etc/passwd is not a dir")],
)
def test_remedies_never_say_to_remove_what_warren_did_not_make(
    base: Path, data_dir: str, says: str
) -> None:
    paths = Paths(Path(data_dir), base / "run", base / "etc")
    out = run_warren(paths, "containerd", "start")
    line = one_line(out, ExitCode.PERMISSION, says, "pass --data-dir")
    assert "rm " not in line and "remove" not in line, line
