"""registries.yaml against a real registry on loopback (issue 25): Debian's docker-registry with
TLS from a CA made here and htpasswd auth, named as a mirror of docker.io with credentials and
that CA. A CRI PullImage and `warren ctr images pull docker.io/...` succeed; a wrong password and
a wrong CA each fail naming the endpoint and the cause; the password is found only in 0600
files, never in status, config, logs, metrics, images status or a process's argv.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from warren_bundle.paths import Paths

from conftest import require
from support import (
    TEST_EXE,
    TEST_IMAGE,
    busybox_image,
    cleanup_runtime,
    make_paths,
    run_warren,
    short_dir,
    start_run,
    stop_run,
    wait_for,
)
from support import cri as cri_support

pytestmark = pytest.mark.integration

USER = "warren"
PASSWORD = "Hunter2-loopback-Pw"
# In the registry as library/busybox: docker.io/library/busybox:warren-test through the mirror.
REPO_REF = "library/busybox:warren-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    key, pem = f"{name}.key", f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", key,
             "-out", pem, "-subj", f"/CN={name}", cwd=d)  # fmt: skip


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:PORT
    ca: Path
    wrong_ca: Path
    base: Path


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    for tool in ("docker-registry", "skopeo", "htpasswd", "openssl"):
        require(shutil.which(tool) is not None, f"{tool} missing: apt-get install docker-registry "
                "skopeo apache2-utils openssl")  # fmt: skip
    require(Path("/bin/busybox").is_file(), "busybox-static is not installed")
    base = short_dir("reg")
    _make_ca(base, "ca")
    _make_ca(base, "wrong-ca")
    (base / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=base)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "san.cnf",
             cwd=base)  # fmt: skip
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True
    ).stdout
    (base / "htpasswd").write_text(htpasswd)
    port = _free_port()
    host = f"127.0.0.1:{port}"
    (base / "config.yml").write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(base / "store")}},
                "http": {
                    "addr": host,
                    "tls": {
                        "certificate": str(base / "server.pem"),
                        "key": str(base / "server.key"),
                    },
                },
                "auth": {"htpasswd": {"realm": "warren-test", "path": str(base / "htpasswd")}},
            }
        )
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(base / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=open(base / "registry.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:
        wait_for(lambda: _answers(host, base / "ca.pem"), timeout=30, what="docker-registry")
        busybox_image(base / "busybox.tar")
        certs = base / "skopeo-certs"
        certs.mkdir()
        shutil.copy(base / "ca.pem", certs / "ca.crt")
        subprocess.run(
            ["skopeo", "copy", "--dest-cert-dir", str(certs), "--dest-creds", f"{USER}:{PASSWORD}",
             f"oci-archive:{base / 'busybox.tar'}", f"docker://{host}/{REPO_REF}"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        yield Registry(host, base / "ca.pem", base / "wrong-ca.pem", base)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def _answers(host: str, ca: Path) -> bool:
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    try:
        urllib.request.urlopen(f"https://{host}/v2/", context=context, timeout=2)
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # up, and asking for credentials
    except OSError:
        return False
    return False


def _registries_yaml(reg: Registry, password: str, ca: Path) -> str:
    return json.dumps(
        {
            "mirrors": {"docker.io": {"endpoint": [f"https://{reg.host}"]}},
            "configs": {
                reg.host: {
                    "auth": {"username": USER, "password": password},
                    "tls": {"ca_file": str(ca)},
                }
            },
        }
    )


@dataclass(frozen=True)
class Line:
    """A containerd line: from source its staged payload; under WARREN_TEST_EXE the file."""

    payload: Path
    exe: Path | None


@pytest.fixture(scope="module", params=["1.6", "1.7", "2.x"])
def line(request: pytest.FixtureRequest, staged_payload: Path) -> Line:
    if request.param == "1.6":
        return Line(staged_payload, None)  # under WARREN_TEST_EXE: that file, its payload
    suite, major = {"1.7": ("trixie", "1.7"), "2.x": ("sid", "2")}[request.param]
    # Debian's containerd of that suite (scripts/test_payloads.py stages and caches it).
    return Line(
        cri_support.staged_payload(suite), cri_support.frozen_file(major) if TEST_EXE else None
    )


@dataclass
class Node:
    paths: Paths
    proc: subprocess.Popen[str]
    line: Line

    def warren(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_warren(
            self.paths, *args, payload=self.line.payload, exe=self.line.exe, timeout=timeout
        )


Start = Callable[..., Node]


@pytest.fixture
def node_for(registry: Registry, line: Line, root_required: None) -> Iterator[Start]:
    started: list[tuple[Node, Path]] = []

    def start(password: str = PASSWORD, ca: Path | None = None, *extra: str) -> Node:
        base = short_dir("rg")
        paths = make_paths(base)
        paths.config_dir.mkdir(parents=True)
        (paths.config_dir / "registries.yaml").write_text(
            _registries_yaml(registry, password, ca or registry.ca)
        )
        os.chmod(paths.config_dir / "registries.yaml", 0o600)
        proc = start_run(paths, line.payload, "--health-interval", "1", *extra, exe=line.exe)
        node = Node(paths, proc, line)
        started.append((node, base))
        return node

    yield start
    for node, base in started:
        stop_run(node.proc)
        cleanup_runtime(node.paths, base)


def _cri(paths: Paths) -> cri_support.Cri:
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401

        have = True
    except ImportError:
        have = False
    require(have, "needs grpcio and grpcio-tools (the test extras)")
    return cri_support.Cri(paths.socket)


def _cri_pull(paths: Paths) -> tuple[bool, str]:
    import grpc

    cri = _cri(paths)
    try:
        reply = cri.img("PullImage", image={"image": TEST_IMAGE}, timeout=120)
        return True, str(reply.image_ref)
    except grpc.RpcError as exc:
        return False, str(exc.details())  # type: ignore[attr-defined]
    finally:
        cri.close()


def test_cri_and_ctr_pull_through_the_authenticated_tls_mirror(
    node_for: Start, registry: Registry
) -> None:
    node = node_for()
    ok, detail = _cri_pull(node.paths)
    assert ok, detail
    assert detail.startswith("sha256:")
    done = node.warren("ctr", "images", "pull", TEST_IMAGE, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = node.warren("ctr", "images", "ls", "-q")
    assert TEST_IMAGE in listed.stdout.split()


def test_crictl_pulls_through_cri_where_it_is_carried(node_for: Start, line: Line) -> None:
    base = short_dir("cp")
    try:
        probe = run_warren(
            make_paths(base), "crictl", "--version", payload=line.payload, exe=line.exe
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if "carries no crictl" in probe.stderr:
        pytest.skip("this payload carries no crictl (Debian's source: only upstream builds do)")
    node = node_for()
    done = node.warren("crictl", "pull", TEST_IMAGE, timeout=120)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_a_wrong_password_fails_naming_endpoint_and_cause(
    node_for: Start, registry: Registry
) -> None:
    node = node_for("not-the-password")
    ok, detail = _cri_pull(node.paths)
    assert not ok
    assert registry.host in detail and "401 Unauthorized" in detail, detail
    done = node.warren("ctr", "images", "pull", TEST_IMAGE, timeout=120)
    assert done.returncode != 0
    said = done.stderr.strip().splitlines()[-1]
    assert said.startswith("warren: registry docker.io via endpoint https://" + registry.host), said
    assert "refused the credentials" in said and f'configs."{registry.host}".auth' in said
    assert "not-the-password" not in detail + done.stderr


def test_a_wrong_ca_fails_naming_endpoint_and_cause(node_for: Start, registry: Registry) -> None:
    node = node_for(PASSWORD, registry.wrong_ca)
    ok, detail = _cri_pull(node.paths)
    assert not ok
    assert registry.host in detail and "certificate signed by unknown authority" in detail, detail
    done = node.warren("ctr", "images", "pull", TEST_IMAGE, timeout=120)
    assert done.returncode != 0
    said = done.stderr.strip().splitlines()[-1]
    assert said.startswith("warren: registry docker.io via endpoint https://" + registry.host), said
    assert "TLS failed" in said and f'configs."{registry.host}".tls' in said


def _files_under(*dirs: Path) -> Iterator[Path]:
    for d in dirs:
        for dirpath, _dirs, files in os.walk(d):
            for name in files:
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink():
                    yield path


def test_the_password_is_only_in_0600_files_and_never_in_output(
    node_for: Start, registry: Registry
) -> None:
    node = node_for(PASSWORD, None, "--metrics-addr", "127.0.0.1:0", "--containerd-debug")
    paths = node.paths
    ok, detail = _cri_pull(paths)
    assert ok, detail
    secret = PASSWORD.encode()
    holders = []
    for path in _files_under(paths.data_dir, paths.run_dir, paths.config_dir):
        if path.name == "registries.yaml" or "containerd/io.containerd" in str(path):
            continue  # the user's own file; containerd's content store
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if secret in data or b"SHVudGVyMi1sb29wYmFjay1Qdw" in data:  # base64 prefix too
            holders.append(path)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert path.stat().st_uid == os.geteuid()
    assert holders, "the credential went nowhere containerd reads"
    outputs = [
        node.warren("containerd", "status"),
        node.warren("containerd", "status", "--json"),
        node.warren("containerd", "config"),
        node.warren("containerd", "logs", "-n", "100000"),
        node.warren("images", "status", "--json"),
    ]
    for out in outputs:
        assert PASSWORD not in out.stdout + out.stderr, out.args
    status = json.loads(outputs[1].stdout)
    if status.get("metrics_addr"):
        with urllib.request.urlopen(f"http://{status['metrics_addr']}/metrics", timeout=10) as r:
            assert PASSWORD not in r.read().decode()
    for pid in (status.get("supervisor_pid"), status.get("containerd_pid")):
        if pid:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert secret not in cmdline


def test_the_detached_supervisor_carries_the_file_path_never_a_credential(
    wpaths: Paths, staged_payload: Path, root_required: None, tmp_path: Path
) -> None:
    refused = run_warren(
        wpaths, "containerd", "start", "--registry-mirror", f"docker.io=https://bob:{PASSWORD}@m/"
    )
    assert refused.returncode == 2
    assert PASSWORD not in refused.stdout + refused.stderr
    assert "registries.yaml" in refused.stderr
    assert not wpaths.run_dir.exists() or not any(wpaths.run_dir.iterdir())
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    file = tmp_path / "registries.yaml"
    file.write_text(
        json.dumps(
            {
                "mirrors": {"docker.io": {"endpoint": ["https://127.0.0.1:9"]}},
                "configs": {
                    "127.0.0.1:9": {
                        "auth": {"username": USER, "password": PASSWORD},
                        "tls": {"ca_file": str(ca)},
                    }
                },
            }
        )
    )
    file.chmod(0o644)
    started = run_warren(
        wpaths, "containerd", "start", "--json", "--registries", str(file), timeout=120
    )
    try:
        assert started.returncode == 0, started.stderr
        assert PASSWORD not in started.stdout + started.stderr
        assert "readable by others" in started.stderr  # the 0644 file is named, not its content
        report = json.loads(started.stdout)
        cmdline = Path(f"/proc/{report['supervisor_pid']}/cmdline").read_bytes().split(b"\0")
        assert str(file).encode() in cmdline
        assert not any(PASSWORD.encode() in arg for arg in cmdline)
        hosts = wpaths.config_dir / "certs.d" / "docker.io" / "hosts.toml"
        assert stat.S_IMODE(hosts.stat().st_mode) == 0o600
        assert stat.S_IMODE(hosts.parent.stat().st_mode) == 0o700
    finally:
        run_warren(wpaths, "containerd", "stop", timeout=60)
