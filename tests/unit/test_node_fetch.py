"""The node parts of a payload (issue 11): CNI plugins, crictl and the sandbox image, staged by
scripts/fetch_and_verify.py from release-shaped files and a real local registry, and carried
through the payload format into a version dir."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from warren_bundle.fetch.cli import main
from warren_bundle.paths import Paths
from warren_bundle.payload import format as payload
from warren_bundle.store.extract import ensure_extracted

from support import release_artifacts as ra


def _release(arch: str = "amd64") -> ra.Release:
    binaries = {name: ra.fake_elf(arch) + name.encode() for name in payload.BINARIES}
    return ra.make_release(binaries, arch)


def _stage(tmp_path: Path, registry: dict[str, bytes] | None, *args: str) -> int:
    rel = _release()
    folder, checksums = tmp_path / "release", tmp_path / "checksums"
    rel.write_dir(folder)
    rel.write_pins(checksums)
    argv = ["--from-dir", str(folder), "--checksums", str(checksums), "--arch", "amd64"]
    argv += ["--cache", str(tmp_path / "cache"), "--level", "1", "--out", str(tmp_path / "out")]
    argv += ["--retries", "0", "--connect-timeout", "2", *args]
    if registry is None:
        os.environ["WARREN_REGISTRY_BASE"] = f"http://127.0.0.1:{ra.closed_port()}"
        try:
            return main(argv)
        finally:
            del os.environ["WARREN_REGISTRY_BASE"]
    with ra.ArtifactServer(ra.Served(files=registry)) as srv:
        os.environ["WARREN_REGISTRY_BASE"] = srv.base
        try:
            return main(argv)
        finally:
            del os.environ["WARREN_REGISTRY_BASE"]


def test_upstream_parts_are_staged_and_listed(tmp_path: Path) -> None:
    assert _stage(tmp_path, ra.pause_registry()[0]) == 0
    manifest = payload.read_file(tmp_path / "out").manifest
    assert manifest.cni_plugins == sorted(ra.CNI_PLUGINS)
    assert manifest.has_crictl
    image = manifest.sandbox_image
    assert image is not None and image["ref"] == ra.PAUSE_REF
    # dhcp and README.md are in the CNI tarball but not wanted
    assert not (tmp_path / "out" / "bin" / "cni" / "dhcp").exists()
    # The archive names the platform manifest the pinned index lists for amd64.
    with tarfile.open(tmp_path / "out" / "bin" / "sandbox" / "pause.tar") as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    [entry] = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == ra.PAUSE_REF
    assert entry["digest"] == image["manifest_digest"]


def test_a_registry_blob_that_does_not_match_exits_8(tmp_path: Path) -> None:
    files = dict(ra.pause_registry()[0])
    blob = next(k for k in files if "/blobs/" in k)
    files[blob] = files[blob] + b"tampered"
    assert _stage(tmp_path, files) == 8
    assert not (tmp_path / "out").exists()


def test_unreachable_registry_builds_a_local_pause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc (the local pause build)")
    assert _stage(tmp_path, None) == 0
    err = capsys.readouterr().err
    assert sum("building a local pause image" in line for line in err.splitlines()) == 1
    manifest = payload.read_file(tmp_path / "out").manifest
    image = manifest.sandbox_image
    assert image is not None and image["source"] == "built"
    assert image["ref"] != ra.PAUSE_REF  # never passed off as the upstream image


def test_no_crictl_leaves_it_out(tmp_path: Path) -> None:
    assert _stage(tmp_path, ra.pause_registry()[0], "--no-crictl") == 0
    manifest = payload.read_file(tmp_path / "out").manifest
    assert not manifest.has_crictl
    assert manifest.file("crictl") is None


def test_subdirs_extract_with_their_modes(tmp_path: Path) -> None:
    assert _stage(tmp_path, ra.pause_registry()[0]) == 0
    staged = payload.read_file(tmp_path / "out")
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "etc")
    result = ensure_extracted(paths, staged)
    assert "cni/bridge" in result.written
    assert (paths.bin_dir / "cni" / "bridge").stat().st_mode & 0o777 == 0o755
    assert (paths.bin_dir / "sandbox" / "pause.tar").stat().st_mode & 0o777 == 0o644
    assert ensure_extracted(paths, staged).cached
    # A damaged plugin (same size, so the stamp still matches) is found by --verify, repaired.
    plugin = paths.bin_dir / "cni" / "portmap"
    st = plugin.stat()
    plugin.write_bytes(b"x" * st.st_size)
    os.utime(plugin, ns=(st.st_atime_ns, st.st_mtime_ns))
    repaired = ensure_extracted(paths, staged, verify=True)
    assert repaired.repaired == ["cni/portmap"]
    assert (paths.bin_dir / "cni" / "portmap").read_bytes().startswith(b"\x7fELF")


def test_registry_bearer_challenge_is_answered_anonymously(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from warren_bundle.fetch.download import NetOptions
    from warren_bundle.fetch.registry import ENV_REGISTRY_BASE, pull

    files, index = ra.pause_registry()
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            host = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path.startswith("/token?"):
                assert "scope=repository%3Apause%3Apull" in self.path
                self._send(200, b'{"token": "t0k"}')
                return
            seen.append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") != "Bearer t0k":
                self.send_response(401)
                challenge = f'Bearer realm="{host}/token",service="test"'
                self.send_header("WWW-Authenticate", challenge)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = files.get(self.path)
            self._send(200 if data else 404, data or b"")

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    os.environ[ENV_REGISTRY_BASE] = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        pulled = pull(ra.PAUSE_REF, f"sha256:{index}", "arm64", NetOptions(retries=0))
    finally:
        del os.environ[ENV_REGISTRY_BASE]
        httpd.shutdown()
        httpd.server_close()
    assert seen[0] is None and set(seen[1:]) == {"Bearer t0k"}
    assert len(pulled.blobs) == 2  # config + one layer, each checked against its digest
    assert json.loads(pulled.manifest)["config"]["digest"] in pulled.blobs
