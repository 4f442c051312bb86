"""scripts/fetch_and_verify.py end to end against a real HTTP server on 127.0.0.1.

The artifacts are release-shaped (containerd-static-<v>-linux-<arch>.tar.gz with bin/*, and
runc.<arch>) but built from Debian's real binaries, so the ELF check and the payload are real.
The script runs as a subprocess: exit codes and stderr are what an operator sees.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.payload import elf
from warren_bundle.payload import format as payload

from conftest import require
from support import release_artifacts as ra

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> ra.Release:
    """Built once per session: the tarball alone is ~80 MB of real binaries."""
    missing = ra.missing_real_binaries()
    require(
        not missing,
        f"needs Debian's containerd and runc ({', '.join(missing)} missing): "
        "apt-get install -y containerd runc",
    )
    binaries = {name: path.read_bytes() for name, path in ra.REAL_BINARIES.items()}
    return ra.make_release(binaries, elf.arch_of(str(ra.REAL_BINARIES["containerd"])))


@pytest.fixture
def server(release: ra.Release) -> Iterator[ra.ArtifactServer]:
    files = {f"/mirror/{name}": data for name, data in release.files.items()}
    with ra.ArtifactServer(ra.Served(files=files)) as srv:
        yield srv


@pytest.fixture(scope="module")
def registry(release: ra.Release) -> Iterator[ra.ArtifactServer]:
    """The pause image's registry (a real HTTP server serving the /v2/ paths)."""
    with ra.ArtifactServer(ra.Served(files=release.registry)) as srv:
        yield srv


class Fetch:
    """Runs the script with test dirs: a private cache, test pins, a low zstd level."""

    def __init__(self, tmp: Path, release: ra.Release, registry: str) -> None:
        self.tmp, self.release = tmp, release
        self.cache = tmp / "cache"
        self.checksums = tmp / "checksums"
        self.out = tmp / "payload" / f"linux-{release.arch}"
        # A CI proxy must not swallow requests meant for the local test server.
        self.env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        self.env["WARREN_REGISTRY_BASE"] = registry

    def __call__(self, *args: str, pack: bool = False) -> subprocess.CompletedProcess[str]:
        argv = [
            sys.executable,
            str(ra.SCRIPT),
            "--arch", self.release.arch,
            "--out", str(self.out),
            "--cache", str(self.cache),
            "--checksums", str(self.checksums),
            "--level", "1",
            "--retries", "2",
            "--backoff", "0.05",
            "--connect-timeout", "5",
            "--read-timeout", "10",
            *args,
        ]  # fmt: skip
        if not pack:
            argv.append("--no-pack")
        return subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=300)

    def mirror(
        self, srv: ra.ArtifactServer, *args: str, pack: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return self(f"--mirror={srv.base}/mirror/", *args, pack=pack)

    def manifest(self) -> dict:
        return json.loads((self.out / "manifest.json").read_text())

    def cached(self, component: str) -> Path:
        rel = self.release
        if component == "containerd":
            return self.cache / f"containerd-{rel.containerd_version}" / rel.tarball_name
        return self.cache / f"runc-{rel.runc_version}" / rel.runc_name

    def leftovers(self) -> list[str]:
        """Temp files a failed run must not leave: .part files and staging dirs."""
        found = [str(p) for p in self.cache.rglob("*.part")] if self.cache.exists() else []
        parent = self.out.parent
        if parent.exists():
            found += [str(p) for p in parent.iterdir() if p.name.startswith(".")]
        return found


@pytest.fixture
def fetch(tmp_path: Path, release: ra.Release, registry: ra.ArtifactServer) -> Fetch:
    f = Fetch(tmp_path, release, registry.base)
    release.write_pins(f.checksums)
    return f


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def assert_binaries(fetch: Fetch, source: str) -> dict:
    rel = fetch.release
    manifest = fetch.manifest()
    assert manifest["os"] == "linux"
    assert manifest["arch"] == rel.arch
    assert manifest["containerd_version"] == rel.containerd_version
    assert manifest["runc_version"] == rel.runc_version
    assert manifest["source"] == source
    top = {name.split("/", 1)[0] for name in rel.binaries} | {"sandbox"}
    assert sorted(p.name for p in (fetch.out / "bin").iterdir()) == sorted(top)
    assert {e["name"] for e in manifest["files"]} == {*rel.binaries, "sandbox/pause.tar"}
    for entry in manifest["files"]:
        staged = fetch.out / "bin" / entry["name"]
        if entry["name"] == "sandbox/pause.tar":
            assert entry["mode"] == 0o644
            assert entry["sha256"] == ra.sha256(staged.read_bytes())
            continue
        data = rel.binaries[entry["name"]]
        assert entry["size"] == len(data) == staged.stat().st_size
        assert entry["sha256"] == ra.sha256(data) == ra.sha256(staged.read_bytes())
        assert entry["mode"] == 0o755 == staged.stat().st_mode & 0o777
    image = manifest["components"]["sandbox_image"]
    assert image["ref"] == ra.PAUSE_REF and image["source"] == "registry"
    assert image["index_digest"] == f"sha256:{ra.pause_registry()[1]}"
    assert manifest["components"]["cni"]["plugins"] == list(ra.CNI_PLUGINS)
    arts = {a["name"]: a for a in manifest["provenance"]["artifacts"]}
    assert set(arts) == {rel.tarball_name, rel.runc_name, rel.cni_name, rel.crictl_name}
    for name, art in arts.items():
        assert art["sha256"] == ra.sha256(rel.files[name])
        assert art["url"].endswith("/" + name)
    return manifest


# --- the good path --------------------------------------------------------------------------


def test_mirror_fetch_stages_manifest_and_payload(fetch: Fetch, server: ra.ArtifactServer) -> None:
    # A previous staged output is replaced as a whole.
    (fetch.out / "bin").mkdir(parents=True)
    (fetch.out / "bin" / "stale").write_text("old")
    proc = fetch.mirror(server, pack=True)
    assert proc.returncode == 0, proc.stderr
    manifest = assert_binaries(fetch, "mirror")
    art = {a["name"]: a["url"] for a in manifest["provenance"]["artifacts"]}
    assert art[fetch.release.runc_name] == f"{server.base}/mirror/{fetch.release.runc_name}"
    assert not (fetch.out / "bin" / "containerd-stress").exists()

    packed = payload.read_file(fetch.out)
    blob = (fetch.out / payload.PAYLOAD_FILE).read_bytes()
    assert packed.digest == ra.sha256(blob)
    assert packed.size == len(blob)
    assert packed.manifest.to_dict() == manifest
    with payload.open_members(packed) as members:
        got = {m.name: ra.sha256(m.stream.read()) for m in members}
    pause = ra.sha256((fetch.out / "bin" / "sandbox" / "pause.tar").read_bytes())
    assert got == {payload.MANIFEST_FILE: ra.sha256((fetch.out / "manifest.json").read_bytes())} | {
        n: ra.sha256(d) for n, d in fetch.release.binaries.items()
    } | {"sandbox/pause.tar": pause}
    assert f"sha256:{packed.digest}" in proc.stdout
    for name in payload.BINARIES:
        assert f"bin/{name}" in proc.stdout
    assert fetch.cached("containerd").is_file() and fetch.cached("runc").is_file()
    assert fetch.leftovers() == []


def test_second_run_uses_verified_cache(fetch: Fetch, server: ra.ArtifactServer) -> None:
    assert fetch.mirror(server).returncode == 0
    before = len(server.state.requests)
    proc = fetch.mirror(server)
    assert proc.returncode == 0, proc.stderr
    assert len(server.state.requests) == before
    assert "already in cache" in proc.stderr


def test_damaged_cache_entry_is_fetched_again(fetch: Fetch, server: ra.ArtifactServer) -> None:
    assert fetch.mirror(server).returncode == 0
    fetch.cached("runc").write_bytes(b"tampered")
    proc = fetch.mirror(server)
    assert proc.returncode == 0, proc.stderr
    assert fetch.cached("runc").read_bytes() == fetch.release.files[fetch.release.runc_name]


def test_upstream_layout(fetch: Fetch, release: ra.Release) -> None:
    rel = release
    files = {
        f"/containerd/containerd/releases/download/v{rel.containerd_version}/{rel.tarball_name}": (
            rel.files[rel.tarball_name]
        ),
        f"/opencontainers/runc/releases/download/v{rel.runc_version}/{rel.runc_name}": (
            rel.files[rel.runc_name]
        ),
        f"/containernetworking/plugins/releases/download/v{ra.CNI_VERSION}/{rel.cni_name}": (
            rel.files[rel.cni_name]
        ),
        f"/kubernetes-sigs/cri-tools/releases/download/v{ra.CRICTL_VERSION}/{rel.crictl_name}": (
            rel.files[rel.crictl_name]
        ),
    }
    with ra.ArtifactServer(ra.Served(files=files)) as srv:
        fetch.env["WARREN_UPSTREAM_BASE"] = srv.base
        proc = fetch("--source", "upstream")
    assert proc.returncode == 0, proc.stderr
    manifest = assert_binaries(fetch, "upstream")
    urls = {a["url"] for a in manifest["provenance"]["artifacts"]}
    assert urls == {srv.base + path for path in files}


def test_dir_source(fetch: Fetch, tmp_path: Path) -> None:
    folder = fetch.release.write_dir(tmp_path / "release")
    proc = fetch("--source", "dir", "--from-dir", str(folder))
    assert proc.returncode == 0, proc.stderr
    manifest = assert_binaries(fetch, "dir")
    assert {a["url"] for a in manifest["provenance"]["artifacts"]} == {
        (folder / n).as_uri() for n in fetch.release.files
    }


# --- damaged and unreliable transfers -------------------------------------------------------


def test_flipped_byte_exits_8_and_leaves_nothing(fetch: Fetch, server: ra.ArtifactServer) -> None:
    rel = fetch.release
    path = f"/mirror/{rel.tarball_name}"
    good = rel.files[rel.tarball_name]
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    server.state.files[path] = bytes(bad)
    # A previous good build must survive the failed run untouched.
    (fetch.out / "bin").mkdir(parents=True)
    (fetch.out / "manifest.json").write_text("previous")

    proc = fetch.mirror(server, pack=True)
    assert proc.returncode == 8, proc.stderr
    [line] = error_lines(proc)
    assert f"expected {ra.sha256(good)}" in line
    assert f"got {ra.sha256(bytes(bad))}" in line
    assert rel.tarball_name in line
    assert not fetch.cached("containerd").exists()
    assert fetch.leftovers() == []
    assert (fetch.out / "manifest.json").read_text() == "previous"
    assert sorted(p.name for p in fetch.out.iterdir()) == ["bin", "manifest.json"]


def test_connection_cut_mid_file_is_resumed(fetch: Fetch, server: ra.ArtifactServer) -> None:
    path = f"/mirror/{fetch.release.tarball_name}"
    server.state.cut_once.add(path)
    proc = fetch.mirror(server)
    assert proc.returncode == 0, proc.stderr
    ranges = server.state.ranges(path)
    assert ranges[0] is None
    assert len(ranges) == 2 and ranges[1] is not None
    offset = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset < len(fetch.release.files[fetch.release.tarball_name])
    assert "resuming at byte" in proc.stderr
    assert_binaries(fetch, "mirror")
    assert fetch.leftovers() == []


def test_server_ignoring_range_restarts_from_zero(fetch: Fetch, server: ra.ArtifactServer) -> None:
    path = f"/mirror/{fetch.release.runc_name}"
    server.state.cut_once.add(path)
    server.state.ignore_range = True
    proc = fetch.mirror(server)
    assert proc.returncode == 0, proc.stderr
    ranges = server.state.ranges(path)
    assert len(ranges) == 2 and ranges[1] is not None  # asked to resume, got the whole file
    assert_binaries(fetch, "mirror")


def test_complete_part_file_is_verified_not_refetched(
    fetch: Fetch, server: ra.ArtifactServer
) -> None:
    rel = fetch.release
    part = fetch.cached("runc").with_name(rel.runc_name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(rel.files[rel.runc_name])  # a run that died between download and rename
    proc = fetch.mirror(server)
    assert proc.returncode == 0, proc.stderr
    size = len(rel.files[rel.runc_name])
    assert server.state.ranges(f"/mirror/{rel.runc_name}") == [f"bytes={size}-"]
    assert not part.exists() and fetch.cached("runc").is_file()


def test_stale_part_from_an_earlier_run_gets_one_clean_retry(
    fetch: Fetch, server: ra.ArtifactServer
) -> None:
    rel = fetch.release
    part = fetch.cached("runc").with_name(rel.runc_name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(bytes(1000))  # not a prefix of the real file
    proc = fetch.mirror(server)
    assert proc.returncode == 0, proc.stderr
    assert "failed its digest; fetching it again from byte 0" in proc.stderr
    assert server.state.ranges(f"/mirror/{rel.runc_name}") == ["bytes=1000-", None]
    assert_binaries(fetch, "mirror")


def test_5xx_is_retried(fetch: Fetch, server: ra.ArtifactServer) -> None:
    path = f"/mirror/{fetch.release.runc_name}"
    server.state.statuses[path] = [500, 503]
    proc = fetch.mirror(server)
    assert proc.returncode == 0, proc.stderr
    assert len(server.state.ranges(path)) == 3
    assert "HTTP 500" in proc.stderr and "retrying" in proc.stderr
    assert_binaries(fetch, "mirror")


def test_5xx_gives_up_after_retries(fetch: Fetch, server: ra.ArtifactServer) -> None:
    path = f"/mirror/{fetch.release.runc_name}"
    server.state.statuses[path] = [502] * 10
    proc = fetch.mirror(server)
    assert proc.returncode == 1
    [line] = error_lines(proc)
    assert f"{server.base}{path}" in line and "gave up after 3 attempts in a row" in line
    assert len(server.state.ranges(path)) == 3
    assert not fetch.out.exists()


def test_404_is_one_clear_line(fetch: Fetch, server: ra.ArtifactServer) -> None:
    path = f"/mirror/{fetch.release.runc_name}"
    del server.state.files[path]
    proc = fetch.mirror(server)
    assert proc.returncode == 1
    [line] = error_lines(proc)
    assert f"not found (HTTP 404): {server.base}{path}" in line
    assert len(server.state.ranges(path)) == 1  # a 404 is not retried
    assert not fetch.out.exists()
    assert fetch.leftovers() == []


def test_refused_connection_names_url(fetch: Fetch) -> None:
    base = f"http://127.0.0.1:{ra.closed_port()}/mirror/"
    proc = fetch(f"--mirror={base}")
    assert proc.returncode == 1
    [line] = error_lines(proc)
    assert "connection refused" in line and base + fetch.release.tarball_name in line


# --- pins and policy ------------------------------------------------------------------------


def test_missing_pin_fails_before_any_download(
    tmp_path: Path, release: ra.Release, server: ra.ArtifactServer, registry: ra.ArtifactServer
) -> None:
    fetch = Fetch(tmp_path, release, registry.base)
    release.write_pins(fetch.checksums, skip=(release.runc_name,))
    proc = fetch.mirror(server)
    assert proc.returncode == 1
    [line] = error_lines(proc)
    assert f"no pin for {release.runc_name}" in line
    assert str(fetch.checksums / f"runc-{release.runc_version}.sha256") in line
    assert f"append '<sha256>  {release.runc_name}'" in line
    assert server.state.requests == []
    assert not fetch.out.exists()


def test_dir_source_mismatch_exits_8(fetch: Fetch, tmp_path: Path) -> None:
    folder = fetch.release.write_dir(tmp_path / "release")
    (folder / fetch.release.runc_name).write_bytes(b"\x7fELF not really")
    proc = fetch("--from-dir", str(folder))
    assert proc.returncode == 8
    [line] = error_lines(proc)
    assert "checksum mismatch" in line and "expected" in line and "got" in line
    assert not fetch.out.exists()


def test_release_never_falls_back(fetch: Fetch) -> None:
    fetch.env["WARREN_UPSTREAM_BASE"] = f"http://127.0.0.1:{ra.closed_port()}"
    proc = fetch("--release")
    assert proc.returncode == 1
    [line] = error_lines(proc)
    assert "connection refused" in line and "never fall back to Debian" in line
    assert not fetch.out.exists()


def _debian_reachable() -> bool:
    try:
        with socket.create_connection(("deb.debian.org", 80), timeout=3):
            return True
    except OSError:
        return False


def test_auto_falls_back_to_debian_when_upstream_unreachable(fetch: Fetch) -> None:
    require(
        Path("/usr/bin/apt-get").exists() and Path("/usr/bin/dpkg-deb").exists(),
        "the Debian fallback needs apt-get and dpkg-deb",
    )
    require(_debian_reachable(), "deb.debian.org is not reachable from here")
    fetch.env["WARREN_UPSTREAM_BASE"] = f"http://127.0.0.1:{ra.closed_port()}"
    proc = fetch()
    assert proc.returncode == 0, proc.stderr
    loud = [line for line in proc.stderr.splitlines() if line.startswith("warren: upstream")]
    assert len(loud) == 1
    manifest = fetch.manifest()
    assert manifest["source"] == "debian"
    assert "upstream unreachable" in manifest["provenance"]["fallback"]
    assert (
        f"falling back to Debian packages (containerd {manifest['containerd_version']}, "
        f"runc {manifest['runc_version']})" in loud[0]
    )
    packages = manifest["provenance"]["packages"]
    assert set(packages) == {"containerd", "runc"}
    # The node parts: Debian's CNI plugins and a pause image built here (no registry reached).
    assert manifest["components"]["cni"]["source"] == "debian"
    assert manifest["components"]["sandbox_image"]["source"] == "built"
    names = {e["name"] for e in manifest["files"]}
    assert {f"cni/{p}" for p in ra.CNI_PLUGINS} | {"sandbox/pause.tar"} <= names
    assert "crictl" not in names
    for name, pkg in packages.items():
        deb = fetch.cache / "debian" / pkg["deb"]
        assert ra.sha256(deb.read_bytes()) == pkg["sha256"]
        assert manifest[f"{name}_version"] in pkg["version"]
    for entry in manifest["files"]:
        staged = fetch.out / "bin" / entry["name"]
        assert ra.sha256(staged.read_bytes()) == entry["sha256"]
