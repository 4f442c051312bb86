"""The static flavour with the static payload where the default build cannot run: a Debian
bullseye root (glibc 2.31) and a musl root with no glibc at all, by chroot.

In bullseye the file users run extracts, starts a supervised containerd and runs a container of
the busybox test image; a dynamic payload (Debian's bookworm packages, GLIBC_2.34) is refused up
front by `extract` and `doctor`, naming both versions. In the musl root it says its version,
extracts and starts containerd. The bullseye root is debootstrapped once into
$WARREN_TEST_CACHE/bullseye-root (default /var/cache/warren-test) and each test runs on a
throw-away overlay of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest

from warren_bundle.fsutil import locked

from conftest import require
from support import FROZEN_STATIC, STAGED, busybox_image, short_dir, wait_for

pytestmark = pytest.mark.e2e

CACHE = Path(os.environ.get("WARREN_TEST_CACHE") or "/var/cache/warren-test")
BULLSEYE = CACHE / "bullseye-root"
MUSL_LOADERS = {"x86_64": "ld-musl-x86_64.so.1", "aarch64": "ld-musl-aarch64.so.1"}
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root", "LC_ALL": "C"}
# The warren command line inside a root: short dirs (unix socket paths), data on a real fs.
W = [
    "/usr/local/bin/warren",
    "--data-dir",
    "/w/data",
    "--run-dir",
    "/run/w",
    "--config-dir",
    "/w/etc",
]


@pytest.fixture(scope="module")
def static_exe() -> Path:
    require(FROZEN_STATIC.is_file(), f"no static build at {FROZEN_STATIC}: make release-static")
    out = subprocess.run(
        [str(FROZEN_STATIC), "version", "--json"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)["payload"]
    require(
        payload.get("source") == "debian-static",
        f"{FROZEN_STATIC} carries a {payload.get('source')} payload, not debian-static: "
        "make release-static (STATIC_SOURCE=debian-static)",
    )
    return FROZEN_STATIC


def _run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


def _mount(*args: str) -> None:
    done = _run("mount", *args)
    assert done.returncode == 0, f"mount {' '.join(args)}: {done.stderr}"


@pytest.fixture(scope="module")
def bullseye_root(static_exe: Path) -> Path:
    require(os.geteuid() == 0, "needs root (chroot, mounts, containerd)")
    require(shutil.which("debootstrap") is not None, "debootstrap is not installed")
    CACHE.mkdir(parents=True, exist_ok=True)
    with locked(CACHE / ".bullseye-root.lock", None, mode=0o644):
        if not (BULLSEYE / "bin" / "sh").exists():
            tmp = CACHE / "bullseye-root.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            done = _run(
                "debootstrap", "--variant=minbase", "bullseye", str(tmp),
                "http://deb.debian.org/debian", timeout=1200,
            )  # fmt: skip
            assert done.returncode == 0, f"debootstrap bullseye: {done.stderr[-2000:]}"
            tmp.rename(BULLSEYE)
    return BULLSEYE


def _processes_in(root: Path) -> list[psutil.Process]:
    real = os.path.realpath(root)
    found = []
    for proc in psutil.process_iter():
        with suppress(psutil.Error, OSError):
            if os.readlink(f"/proc/{proc.pid}/root") == real:
                found.append(proc)
    return found


@contextmanager
def chroot_root(lower: Path | None) -> Iterator[Path]:
    """A root to chroot into: an overlay of `lower` (or an empty dir), with /proc, /sys (and its
    cgroup mounts), /dev, a tmpfs /run and /w on a real filesystem (containerd's overlayfs
    snapshots cannot live on an overlay). Everything is killed and unmounted afterwards."""
    base = short_dir("sroot")
    root = base / "root"
    try:
        root.mkdir()
        if lower is not None:
            (base / "upper").mkdir()
            (base / "work").mkdir()
            opts = f"lowerdir={lower},upperdir={base / 'upper'},workdir={base / 'work'}"
            _mount("-t", "overlay", "overlay", "-o", opts, str(root))
        for d in ("proc", "sys", "dev", "run", "tmp", "w", "usr/local/bin", "root"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        (base / "w").mkdir()
        _mount("-t", "proc", "proc", str(root / "proc"))
        for fs in ("sys", "dev"):
            _mount("--rbind", f"/{fs}", str(root / fs))
            _mount("--make-rslave", str(root / fs))
        _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(root / "run"))
        _mount("--bind", str(base / "w"), str(root / "w"))
        yield root
    finally:
        victims = _processes_in(root)
        for proc in victims:
            with suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(victims, timeout=10)
        _run("umount", "-R", "-l", str(root))
        shutil.rmtree(base, ignore_errors=True)


def _in(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(root), *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def _start_and_check(root: Path) -> None:
    """containerd start (a detached supervisor), then the server answers ctr version."""
    started = _in(root, *W, "containerd", "start", timeout=180)
    assert started.returncode == 0, started.stderr + started.stdout
    version = _in(root, *W, "ctr", "version")
    assert version.returncode == 0, version.stderr
    assert "Server:" in version.stdout and "1.6.20" in version.stdout, version.stdout


def _stop(root: Path) -> None:
    stopped = _in(root, *W, "containerd", "stop", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: _in(root, *W, "ctr", "version").returncode != 0, 30, what="containerd to stop")


def test_bullseye_runs_a_container_with_the_static_build(
    static_exe: Path, bullseye_root: Path, tmp_path: Path
) -> None:
    with chroot_root(bullseye_root) as root:
        shutil.copy2(static_exe, root / "usr/local/bin/warren")
        busybox_image(root / "w" / "busybox.tar")
        libc_line = _in(root, "ldd", "--version").stdout.splitlines()[0]
        assert libc_line.endswith(" 2.31"), libc_line

        version = _in(root, *W, "version")
        assert version.returncode == 0, version.stderr
        assert "(static build)" in version.stdout

        doctor = _in(root, *W, "doctor")
        assert "static binaries: no C library needed (glibc 2.31" in doctor.stdout, doctor.stdout

        extracted = _in(root, *W, "extract")
        assert extracted.returncode == 0, extracted.stderr
        _start_and_check(root)
        try:
            imported = _in(root, *W, "images", "import", "/w/busybox.tar")
            assert imported.returncode == 0, imported.stderr
            ran = _in(root, *W, "ctr", "run", "--rm", "docker.io/library/busybox:warren-test",
                      "bullseye-1", "echo", "hello from bullseye")  # fmt: skip
            assert ran.returncode == 0, ran.stderr
            assert ran.stdout.strip() == "hello from bullseye"
        finally:
            _stop(root)


def test_bullseye_refuses_a_dynamic_payload_naming_both_glibcs(
    static_exe: Path, bullseye_root: Path
) -> None:
    dynamic = STAGED / "payload.tar.zst"
    require(dynamic.is_file(), f"no staged payload at {STAGED}: make payload")
    manifest = json.loads((STAGED / "manifest.json").read_text())
    require(
        manifest.get("requires", {}).get("glibc") == "2.34",
        f"{STAGED} is not Debian bookworm's dynamic payload (GLIBC_2.34): make payload",
    )
    with chroot_root(bullseye_root) as root:
        shutil.copy2(static_exe, root / "usr/local/bin/warren")
        shutil.copy2(dynamic, root / "w" / "dynamic.tar.zst")
        shutil.copy2(STAGED / "payload.json", root / "w" / "payload.json")

        extracted = _in(root, *W, "--payload", "/w/dynamic.tar.zst", "extract")
        assert extracted.returncode == 5, extracted.stderr
        assert extracted.stderr.count("\n") == 1, extracted.stderr
        assert "containerd needs GLIBC_2.34, this host has 2.31" in extracted.stderr
        assert "static payload" in extracted.stderr
        assert not (root / "w" / "data" / "bin").exists()

        doctor = _in(root, *W, "--payload", "/w/dynamic.tar.zst", "doctor")
        assert doctor.returncode != 0
        line = next(x for x in doctor.stdout.splitlines() if " libc " in x)
        assert line.startswith("FAIL") and "needs GLIBC_2.34, this host has 2.31" in line


def _musl_loader() -> Path:
    return Path("/lib") / MUSL_LOADERS.get(os.uname().machine, "ld-musl")


@pytest.fixture
def musl_root(static_exe: Path) -> Path:
    """A root holding musl's loader and libc (Debian's musl package) and nothing of glibc."""
    require(os.geteuid() == 0, "needs root (chroot, mounts, containerd)")
    loader = _musl_loader()
    require(loader.exists(), f"{loader} is missing: apt-get install musl")
    lower = short_dir("musl")
    (lower / "lib").mkdir()
    shutil.copy2(loader.resolve(), lower / "lib" / loader.name)
    (lower / "etc").mkdir()
    return lower


def test_musl_root_without_glibc_starts_containerd(static_exe: Path, musl_root: Path) -> None:
    try:
        with chroot_root(musl_root) as root:
            shutil.copy2(static_exe, root / "usr/local/bin/warren")
            # What the root holds besides its mounts (never walk /proc: its entries come and go).
            glibc = [p for p in musl_root.rglob("*") if p.name.startswith(("libc.so", "ld-linux"))]
            assert glibc == []
            assert [p.name for p in (root / "lib").iterdir()] == [_musl_loader().name]

            version = _in(root, *W, "version")
            assert version.returncode == 0, version.stderr
            assert "(static build)" in version.stdout

            doctor = _in(root, *W, "doctor")
            assert "static binaries: no C library needed (musl and no glibc" in doctor.stdout

            extracted = _in(root, *W, "extract")
            assert extracted.returncode == 0, extracted.stderr
            for name in ("containerd", "containerd-shim-runc-v2", "ctr", "runc"):
                assert (root / "w" / "data" / "bin" / name).is_file(), name
            _start_and_check(root)
            _stop(root)
    finally:
        shutil.rmtree(musl_root, ignore_errors=True)
