"""Shared test helpers: short run dirs, the staged payload, polling, a busybox OCI image, cleanup.

No sleeps as synchronisation: `wait_for` polls a condition until a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from warren_bundle.hostinfo import host_arch  # noqa: E402
from warren_bundle.paths import Paths  # noqa: E402
from warren_bundle.runtime import health  # noqa: E402

T = TypeVar("T")
STAGED = REPO / "build" / "payload" / f"linux-{host_arch()}"
FROZEN = REPO / "dist" / f"warren-linux-{host_arch()}"
# The static flavour `make release` publishes beside it (a payload that needs no libc).
FROZEN_STATIC = REPO / "dist" / f"warren-linux-{host_arch()}-static"
# The warren under test. From source (`python -m warren_bundle`, with the staged payload) unless
# WARREN_TEST_EXE names a frozen file: then every helper here runs that file, with the payload
# it carries, so the integration suites test the artifact users run (`make test-frozen`).
TEST_EXE = os.environ.get("WARREN_TEST_EXE") or None
WARREN = [str(Path(TEST_EXE).resolve())] if TEST_EXE else [sys.executable, "-m", "warren_bundle"]
BUSYBOX = Path("/bin/busybox")
TEST_IMAGE = "docker.io/library/busybox:warren-test"


def wait_for(
    condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def short_dir(prefix: str = "w") -> Path:
    """A short /tmp dir: unix socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def make_paths(base: Path) -> Paths:
    return Paths(data_dir=base / "data", run_dir=base / "run", config_dir=base / "etc")


def warren_env(paths: Paths, payload: Path | None = STAGED, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("WARREN_CONTAINERD_SOCKET", "CONTAINERD_ADDRESS", "WARREN_PAYLOAD"):
        env.pop(var, None)
    env.update(
        WARREN_DATA_DIR=str(paths.data_dir),
        WARREN_RUN_DIR=str(paths.run_dir),
        WARREN_CONFIG_DIR=str(paths.config_dir),
        PYTHONPATH=str(REPO),
    )
    # A frozen file under test uses its own payload; a test that names another one still gets it.
    if payload is not None and not (TEST_EXE and payload == STAGED):
        env["WARREN_PAYLOAD"] = str(payload)
    env.update(extra)
    return env


def run_warren(
    paths: Paths,
    *args: str,
    payload: Path | None = STAGED,
    timeout: float = 120,
    exe: Path | None = None,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    """`exe`: another frozen file to run (with the payload it carries) instead of WARREN."""
    argv = [str(exe)] if exe else WARREN
    return subprocess.run(
        [*argv, *args],
        env=warren_env(paths, None if exe else payload, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def read_pid(path: Path) -> int:
    return int(json.loads(path.read_text())["pid"])


# --- an OCI image made from Debian's busybox-static -------------------------------------------


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    _tar_add(tar, f"blobs/sha256/{digest}", data)
    return digest


def busybox_image(dest: Path, name: str = TEST_IMAGE, arch: str | None = None) -> Path:
    """Write an OCI image-layout tarball with busybox and a few applet links; `ctr` imports it."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer:
        info = tarfile.TarInfo("bin")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        layer.addfile(info)
        _tar_add(layer, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in ("sh", "echo", "sleep", "cat", "ls", "true"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            layer.addfile(link)
    layer_bytes = layer_buf.getvalue()
    layer_digest = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": arch or host_arch(),
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        }
    ).encode()
    with tarfile.open(dest, "w") as tar:
        config_digest = _blob(tar, config)
        _blob(tar, layer_bytes)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": f"sha256:{config_digest}",
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": f"sha256:{layer_digest}",
                        "size": len(layer_bytes),
                    }
                ],
            }
        ).encode()
        manifest_digest = _blob(tar, manifest)
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{manifest_digest}",
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                }
            ],
        }
        _tar_add(tar, "index.json", json.dumps(index).encode())
        _tar_add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    return dest


# --- cleanup: nothing a test started may outlive it -------------------------------------------


def _ctr(paths: Paths, *args: str) -> subprocess.CompletedProcess[str]:
    ctr = paths.binary("ctr")
    binary = str(ctr) if ctr.exists() else "ctr"
    return subprocess.run(
        [binary, "--address", str(paths.socket), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def remove_containers(paths: Paths) -> None:
    if not health.is_serving(paths.socket, 1.0):
        return
    namespaces = _ctr(paths, "namespaces", "ls", "-q").stdout.split()
    for ns in namespaces:
        for task in _ctr(paths, "-n", ns, "tasks", "ls", "-q").stdout.split():
            _ctr(paths, "-n", ns, "tasks", "kill", "-s", "SIGKILL", task)
            _ctr(paths, "-n", ns, "tasks", "rm", "-f", task)
        for container in _ctr(paths, "-n", ns, "containers", "ls", "-q").stdout.split():
            _ctr(paths, "-n", ns, "containers", "rm", container)


def kill_processes_under(*dirs: Path) -> None:
    """SIGKILL every process whose executable or command line lives under one of `dirs`."""
    prefixes = tuple(str(d) + "/" for d in dirs)
    exact = {str(d) for d in dirs}  # `--run-dir /tmp/x/run` names the dir itself
    victims = []
    for proc in psutil.process_iter(["exe", "cmdline"]):
        with suppress(psutil.Error):
            exe = (proc.info.get("exe") or "").removesuffix(" (deleted)")
            cmd = " ".join(proc.info.get("cmdline") or [])
            if proc.pid != os.getpid() and (
                exe.startswith(prefixes)
                or any(p in cmd for p in prefixes)
                or exact.intersection(proc.info.get("cmdline") or [])
            ):
                victims.append(proc)
    for proc in victims:
        with suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=10)


def unmount_under(*dirs: Path) -> None:
    prefixes = tuple(str(d) for d in dirs)
    mounts = []
    with open("/proc/self/mountinfo") as fp:
        for line in fp:
            mountpoint = line.split()[4].encode().decode("unicode_escape")
            if mountpoint.startswith(prefixes):
                mounts.append(mountpoint)
    for mountpoint in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)


def cleanup_runtime(paths: Paths, base: Path | None = None) -> None:
    remove_containers(paths)
    kill_processes_under(paths.data_dir, paths.run_dir)
    unmount_under(paths.data_dir, paths.run_dir)
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


def containerd_started(paths: Paths) -> bool:
    """The supervisor has declared containerd ready (not merely: the socket answers)."""
    from warren_bundle.runtime import statefile as state

    report = state.read(paths) or {}
    return report.get("state") == "RUNNING" and health.is_serving(paths.socket, 1.0)


def start_run(
    paths: Paths, payload: Path, *args: str, exe: Path | None = None
) -> subprocess.Popen[str]:
    """`warren containerd run ARGS` from source, returned once containerd answers on its socket.

    For tests that need run options the shared `supervised` fixture does not pass; the caller
    stops it (SIGTERM) and the `wpaths` teardown kills anything left. `exe`: another frozen
    file, with the payload it carries.
    """
    proc = subprocess.Popen(
        [*([str(exe)] if exe else WARREN), "containerd", "run", *args],
        env=warren_env(paths, None if exe else payload),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(
        lambda: proc.poll() is not None or containerd_started(paths),
        timeout=60,
        what="containerd to answer",
    )
    if proc.poll() is not None:
        _out, err = proc.communicate()
        raise AssertionError(f"warren containerd run exited {proc.returncode}: {err[-2000:]}")
    return proc


def stop_run(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout)
    finally:
        if proc.stderr:
            proc.stderr.close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(text: str) -> Samples:
    """{(sample name, sorted labels): value} from a Prometheus exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def metric_value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def doctor_lines(out: str) -> dict[str, str]:
    """{check name: its whole line} from `warren doctor`'s text output."""
    found = {}
    for line in out.splitlines():
        level, _, rest = line.partition("  ")
        if level in ("PASS", "WARN", "FAIL"):
            found[rest[:17].strip()] = line
    return found


# --- a release folder served over HTTP on 127.0.0.1 (installer and air-gap tests) -------------

INSTALL_SH = REPO / "scripts" / "install.sh"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# This host's release asset, as `make release` names it.
RELEASE_ASSET = f"warren-linux-{host_arch()}"


def stage_release(dest: Path, exe: Path, asset: str | None = None) -> Path:
    """dest/ laid out as `make release` lays out dist/: the binary, install.sh with the public
    key, SHA256SUMS and SHA256SUMS.sig, signed with the tests' release key (session_release_key)."""
    dest.mkdir(parents=True, exist_ok=True)
    name = asset or RELEASE_ASSET
    shutil.copyfile(exe, dest / name)
    shutil.copyfile(INSTALL_SH, dest / "install.sh")
    return sign_release(dest, session_release_key())


def tamper(path: Path, offset: int = 4096) -> None:
    """Flip one byte of `path` in place: an attacker's (or a bad mirror's) file."""
    with open(path, "r+b") as fp:
        fp.seek(offset)
        byte = fp.read(1)
        fp.seek(offset)
        fp.write(bytes([byte[0] ^ 0xFF]))


@contextlib.contextmanager
def install_root(prefix: str) -> Iterator[Path]:
    """A short scratch dir for one installer run, with the TMPDIR it is given; removed after."""
    root = short_dir(prefix)
    (root / "tmp").mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


class FileServer:
    """A real HTTP server for `root` on 127.0.0.1 in a thread; `requests` lists each GET path."""

    def __init__(self, root: Path) -> None:
        import http.server
        import threading

        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

            def log_message(self, format: str, *args: object) -> None:
                requests.append(self.path)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def run_installer(
    base_url: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`curl -sfL URL/install.sh | sh -` as a user would type it."""
    return subprocess.run(
        ["sh", "-c", 'curl -sfL "$0/install.sh" | sh -', base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def staged_containerd_version() -> str:
    """The containerd version the staged payload carries (Debian's 1.6.20 here, 2.x upstream)."""
    return str(json.loads((STAGED / "manifest.json").read_text())["containerd_version"])


def stage_payload(
    dest: Path,
    contents: dict[str, bytes],
    provenance: dict[str, str] | None = None,
    requires: dict[str, object] | None = None,
) -> Path:
    """A staged payload dir (bin/* + manifest.json) as fetch_and_verify leaves it, for pack()."""
    (dest / "bin").mkdir(parents=True)
    files = []
    for name, data in contents.items():
        (dest / "bin" / name).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        files.append({"name": name, "size": len(data), "mode": 0o755, "sha256": sha})
    manifest = {
        "format": 1,
        "os": "linux",
        "arch": host_arch(),
        "containerd_version": "1.6.20",
        "runc_version": "1.1.5",
        "source": "test",
        "provenance": provenance or {},
        "files": files,
    }
    if requires is not None:
        manifest["requires"] = requires
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


SIGN_RELEASE = REPO / "scripts" / "sign_release.sh"


def make_release_key(dest: Path) -> Path:
    """A fresh ECDSA P-256 private key (PEM) at dest, made by openssl as a release manager would."""
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", str(dest)],
        check=True, capture_output=True,
    )  # fmt: skip
    return dest


def public_key(key: Path) -> Path:
    """The public half of `key`, PEM, beside it."""
    pub = key.with_suffix(".pub")
    subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)],
        check=True, capture_output=True,
    )  # fmt: skip
    return pub


@functools.cache
def session_release_key() -> Path:
    """One release key for this test session, made here (never a real key)."""
    import tempfile

    return make_release_key(Path(tempfile.mkdtemp(prefix="warren-key-")) / "release.pem")


def sign_release(dest: Path, key: Path) -> Path:
    """dest (as stage_release left it) signed as `make release` signs: install.sh carries the
    public key, SHA256SUMS is written again over every file but install.sh, SHA256SUMS.sig."""
    names = sorted(
        p.name for p in dest.iterdir()
        if p.is_file() and not p.name.startswith(("SHA256SUMS", "install.sh", "release-key"))
    )  # fmt: skip
    subprocess.run(
        [str(SIGN_RELEASE), str(dest), str(key), *names], check=True, capture_output=True
    )
    return dest
