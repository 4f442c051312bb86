"""The one file's launcher (launcher/launcher.c): the runtime extracted once, verified, never /tmp.

Every test runs the frozen file with its own runtime dir (WARREN_RUNTIME_DIR) or data dir, and
WARREN_LAUNCHER_DEBUG=1 where it counts extractions: the launcher then says "extracting" once per
extraction on stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.paths import DEFAULT_RUNTIME_ROOT
from warren_bundle.payload import onefile

from support import short_dir

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARREN_", "_WARREN_"))}
    env.update(extra)
    return env


def launch(
    exe: Path, *args: str, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, env=_env(**extra)
    )


@pytest.fixture
def base() -> Iterator[Path]:
    path = short_dir("wl")
    yield path
    subprocess.run(["umount", "-l", str(path / "mnt")], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


def _digest(exe: Path) -> str:
    return onefile.read_trailer(exe).runtime_digest


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_ino, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def test_the_first_launch_extracts_and_later_ones_write_nothing(
    frozen_exe: Path, base: Path
) -> None:
    rt = base / "rt"
    first = launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(rt), WARREN_LAUNCHER_DEBUG="1")
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("extracting the runtime") == 1
    final = rt / _digest(frozen_exe)
    assert (final / "warren").is_file() and (final / "_internal" / "libc.so.6").is_file()
    assert sorted(p.name for p in rt.iterdir()) == [".lock", final.name]
    before = _tree(rt)

    again = launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(rt), WARREN_LAUNCHER_DEBUG="1")
    assert again.returncode == 0 and "extracting" not in again.stderr
    assert _tree(rt) == before


def test_root_extracts_into_its_cache_and_never_into_the_data_dir(
    frozen_exe: Path, base: Path, root_required: None
) -> None:
    data = base / "data"
    done = launch(frozen_exe, "--data-dir", str(data), "version", WARREN_LAUNCHER_DEBUG="1")
    assert done.returncode == 0, done.stderr
    assert (Path(DEFAULT_RUNTIME_ROOT) / _digest(frozen_exe) / "warren").is_file()
    assert not data.exists()  # a command that writes nothing there leaves nothing there


def test_the_runtime_runs_in_place_as_one_process(frozen_exe: Path, base: Path) -> None:
    rt = base / "rt"
    proc = subprocess.Popen(
        [str(frozen_exe), "_selfcheck"],
        env=_env(WARREN_RUNTIME_DIR=str(rt)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Its own pid runs the runtime's executable: exec, not a child.
    final = rt / _digest(frozen_exe)
    seen = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            seen = os.readlink(f"/proc/{proc.pid}/exe")
        except OSError:
            break
        if seen == str(final / "warren"):
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert seen == str(final / "warren"), seen
    assert "runtime and its libc" in out


@pytest.mark.parametrize("cut", [0.3, 0.7])
def test_a_truncated_file_is_refused_in_one_line(frozen_exe: Path, base: Path, cut: float) -> None:
    damaged = base / "warren"
    data = frozen_exe.read_bytes()
    damaged.write_bytes(data[: int(len(data) * cut)])
    damaged.chmod(0o755)
    done = launch(damaged, "version", WARREN_RUNTIME_DIR=str(base / "rt"))
    assert done.returncode == ExitCode.PAYLOAD, done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert "download it again" in done.stderr
    assert not (base / "rt").exists() or [p.name for p in (base / "rt").iterdir()] == []


def test_a_runtime_that_fails_its_digest_is_not_used(frozen_exe: Path, base: Path) -> None:
    damaged = base / "warren"
    data = bytearray(frozen_exe.read_bytes())
    trailer = onefile.read_trailer(frozen_exe)
    # Another digest recorded (a valid-looking one): the archive no longer matches it.
    at = len(data) - onefile.TRAILER_SIZE + 48
    data[at : at + 64] = b"0" * 64
    damaged.write_bytes(bytes(data))
    damaged.chmod(0o755)
    rt = base / "rt"
    done = launch(damaged, "version", WARREN_RUNTIME_DIR=str(rt))
    assert done.returncode == ExitCode.CHECKSUM, done.stderr
    assert trailer.runtime_digest in done.stderr and len(done.stderr.splitlines()) == 1
    assert sorted(p.name for p in rt.iterdir()) == [".lock"]  # nothing renamed into place

    # A byte of one compressed file changed: the file is refused, nothing kept.
    data = bytearray(frozen_exe.read_bytes())
    middle = trailer.runtime_offset + trailer.runtime_length // 2
    data[middle] ^= 0xFF
    damaged.write_bytes(bytes(data))
    done = launch(damaged, "version", WARREN_RUNTIME_DIR=str(rt))
    assert done.returncode in (ExitCode.PAYLOAD, ExitCode.CHECKSUM), done.stderr
    assert sorted(p.name for p in rt.iterdir()) == [".lock"]


def test_eight_concurrent_first_launches_extract_once(frozen_exe: Path, base: Path) -> None:
    rt = base / "rt"
    env = _env(WARREN_RUNTIME_DIR=str(rt), WARREN_LAUNCHER_DEBUG="1")
    procs = [
        subprocess.Popen(
            [str(frozen_exe), "version"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = [(p.wait(timeout=180), p.communicate()) for p in procs]
    assert [code for code, _ in results] == [0] * 8, results
    assert sum(err.count("extracting the runtime") for _, (_, err) in results) == 1
    assert sorted(p.name for p in rt.iterdir()) == [".lock", _digest(frozen_exe)]


def test_kill_9_during_a_first_launch_leaves_a_cache_the_next_repairs(
    frozen_exe: Path, base: Path
) -> None:
    rt = base / "rt"
    env = _env(WARREN_RUNTIME_DIR=str(rt))
    final = rt / _digest(frozen_exe)
    killed_mid_way = 0
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4):
        shutil.rmtree(rt, ignore_errors=True)
        proc = subprocess.Popen([str(frozen_exe), "version"], env=env, stdout=subprocess.DEVNULL)
        time.sleep(delay)  # a point in the extraction to cut it at, not a synchronisation
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        if rt.is_dir() and any(p.name.startswith(".tmp-") for p in rt.iterdir()):
            killed_mid_way += 1
        done = launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(rt))
        assert done.returncode == 0, (delay, done.stderr)
        assert sorted(p.name for p in rt.iterdir()) == [".lock", final.name], delay
    assert killed_mid_way >= 1  # at least one kill landed inside an extraction


def test_an_incomplete_runtime_dir_is_rebuilt(frozen_exe: Path, base: Path) -> None:
    rt = base / "rt"
    assert launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(rt)).returncode == 0
    final = rt / _digest(frozen_exe)
    (final / "warren").unlink()
    done = launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(rt))
    assert done.returncode == 0, done.stderr
    assert (final / "warren").is_file()
    assert sorted(p.name for p in rt.iterdir()) == [".lock", final.name]


def test_an_untrusted_runtime_dir_is_refused(frozen_exe: Path, base: Path) -> None:
    target = base / "elsewhere"
    target.mkdir()
    link = base / "link"
    link.symlink_to(target)
    done = launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(link))
    assert done.returncode == ExitCode.PERMISSION and "symlink" in done.stderr, done.stderr
    assert list(target.iterdir()) == []

    open_dir = base / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    done = launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(open_dir))
    assert done.returncode == ExitCode.PERMISSION and "writable by others" in done.stderr
    assert list(open_dir.iterdir()) == []

    if os.geteuid() == 0:
        theirs = base / "theirs"
        theirs.mkdir(mode=0o755)
        os.chown(theirs, 65534, 65534)
        done = launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(theirs))
        assert done.returncode == ExitCode.PERMISSION, done.stderr
        assert list(theirs.iterdir()) == []


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)


def test_a_full_runtime_dir_is_one_line_and_leaves_nothing(
    frozen_exe: Path, base: Path, root_required: None
) -> None:
    _mount_tmpfs(base / "mnt", "size=1m")
    rt = base / "mnt" / "rt"
    done = launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(rt))
    assert done.returncode == ExitCode.NOSPACE, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "no space left" in done.stderr
    assert sorted(p.name for p in rt.iterdir()) == [".lock"]


def test_a_noexec_runtime_dir_names_the_remedy(
    frozen_exe: Path, base: Path, root_required: None
) -> None:
    _mount_tmpfs(base / "mnt", "noexec,size=200m")
    done = launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(base / "mnt" / "rt"))
    assert done.returncode == ExitCode.PLATFORM, done.stderr
    assert "noexec" in done.stderr and "WARREN_RUNTIME_DIR" in done.stderr
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize("value", ["", "relative/dir"])
def test_an_empty_or_relative_runtime_dir_is_a_usage_error(
    frozen_exe: Path, base: Path, value: str
) -> None:
    for args, extra in (
        (["--runtime-dir", value, "version"], {}),
        (["version"], {"WARREN_RUNTIME_DIR": value}),
    ):
        done = launch(frozen_exe, *args, **extra)
        assert done.returncode == ExitCode.USAGE, (args, extra, done.stderr)
        assert len(done.stderr.splitlines()) == 1


def test_a_user_runs_roots_runtime_read_only(
    frozen_exe: Path, base: Path, root_required: None
) -> None:
    rt = base / "rt"
    assert launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(rt)).returncode == 0
    base.chmod(0o755)
    exe = base / "warren"
    shutil.copy2(frozen_exe, exe)
    exe.chmod(0o755)
    before = _tree(rt)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(exe)]
    # nobody's home (/nonexistent) cannot hold a cache: root's complete runtime serves it.
    done = subprocess.run(
        [*as_nobody, "version"],
        capture_output=True,
        text=True,
        env=_env(WARREN_RUNTIME_DIR=str(rt), HOME="/nonexistent"),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert _tree(rt) == before

    # A runtime dir it cannot create: one line naming the remedy.
    done = subprocess.run(
        [*as_nobody, "version"],
        capture_output=True,
        text=True,
        env=_env(WARREN_RUNTIME_DIR=str(base / "none" / "rt"), HOME="/nonexistent"),
        timeout=60,
    )
    assert done.returncode == ExitCode.PERMISSION, done.stderr
    assert "WARREN_RUNTIME_DIR" in done.stderr and len(done.stderr.splitlines()) == 1


def test_the_exit_codes_are_warren_s() -> None:
    source = (REPO / "launcher" / "launcher.c").read_text()
    codes = dict(re.findall(r"#define EXIT_(\w+) (\d+)", source))
    assert codes, "no EXIT_ defines in launcher.c"
    for name, value in codes.items():
        assert ExitCode[name] == int(value), name


# --- a hardened host's /tmp -------------------------------------------------------------------

_TMP_SETUPS = {
    "noexec": "mount -t tmpfs -o noexec,nosuid,nodev tmpfs /tmp",
    "read-only": "mount -t tmpfs -o ro tmpfs /tmp",
    "full": "mount -t tmpfs -o size=1m tmpfs /tmp && (head -c 2M /dev/zero > /tmp/fill || true)",
    "missing TMPDIR": "mount -t tmpfs tmpfs /tmp && export TMPDIR=/nonexistent/tmp",
}


@pytest.mark.parametrize("setup", sorted(_TMP_SETUPS))
def test_everything_works_whatever_tmp_is(
    frozen_exe: Path, root_required: None, setup: str
) -> None:
    """version, extract, start, a container, stop: in a mount namespace whose /tmp is hostile."""
    tag = f"{os.getpid()}{setup[:2]}"
    base = Path(f"/var/lib/wtmp{tag}")
    run = Path(f"/run/wt{tag}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    try:
        from support import TEST_IMAGE, busybox_image

        image = busybox_image(base / "busybox.tar")
        shutil.copy2(frozen_exe, base / "warren")
        w = f"{base}/warren --data-dir {base}/data --run-dir {run} --config-dir {base}/etc"
        script = f"""
set -e
{_TMP_SETUPS[setup]}
before=$(ls -A /tmp | sort | tr '\\n' ' ')
{w} version | head -n 1
{w} extract >/dev/null
{w} containerd start
{w} ctr images import {image} >/dev/null
{w} ctr run --rm {TEST_IMAGE} c1 echo hello-from-the-container
{w} containerd stop
after=$(ls -A /tmp | sort | tr '\\n' ' ')
[ "$before" = "$after" ] || {{ echo "/tmp changed: [$before] -> [$after]"; exit 99; }}
"""
        done = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
            env=_env(PATH=os.environ.get("PATH", "/usr/bin:/bin")),
        )
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert "hello-from-the-container" in done.stdout
        assert "stopped warren supervisor" in done.stdout
    finally:
        subprocess.run([str(base / "warren"), "--data-dir", f"{base}/data", "--run-dir",
                        str(run), "--config-dir", f"{base}/etc", "containerd", "stop"],
                       capture_output=True, timeout=60, check=False)  # fmt: skip
        from support import kill_processes_under, unmount_under

        kill_processes_under(base, run)
        unmount_under(base, run)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)


def test_prune_removes_only_runtimes_no_process_runs_from(frozen_exe: Path, base: Path) -> None:
    import fcntl

    root = base / "rt"
    assert launch(frozen_exe, "version", WARREN_RUNTIME_DIR=str(root)).returncode == 0
    own = root / _digest(frozen_exe)
    unused, held = root / ("a" * 64), root / ("b" * 64)
    for old in (unused, held):
        (old / "_internal").mkdir(parents=True)
        (old / "warren").write_bytes(b"an older warren's runtime")
    fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # as every process running from it holds it
        done = launch(
            frozen_exe,
            "versions",
            "--prune",
            WARREN_RUNTIME_DIR=str(root),
            WARREN_DATA_DIR=str(base / "data"),
        )
        assert done.returncode == 0, done.stderr
        assert f"removed runtime {unused}" in done.stdout
        assert not unused.exists()
        assert held.is_dir() and own.is_dir()
        assert "this warren's" in done.stdout
    finally:
        os.close(fd)
