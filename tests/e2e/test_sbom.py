"""`warren version --sbom`: an SPDX 2.3 document of everything the one file carries, offline,
validated with spdx-tools (the SPDX project's own parser and validator)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from warren_bundle.payload import onefile

from support import REPO

pytestmark = pytest.mark.e2e


def sbom_of(cmd: list[str], dest: Path) -> dict[str, Any]:
    done = subprocess.run([*cmd, "version", "--sbom"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    dest.write_text(done.stdout)
    return dict(json.loads(done.stdout))


def validate(path: Path) -> list[str]:
    """What spdx-tools' validator finds wrong with the document at path (nothing: valid)."""
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    document = parse_file(str(path))
    return [m.validation_message for m in validate_full_spdx_document(document, "SPDX-2.3")]


def packages(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in doc["packages"]}


def sha256_of(pkg: dict[str, Any]) -> str | None:
    for checksum in pkg.get("checksums", []):
        if checksum["algorithm"] == "SHA256":
            return str(checksum["checksumValue"])
    return None


def test_the_frozen_files_sbom_validates_and_its_digests_match_the_manifest(
    frozen_exe: Path, tmp_path: Path
) -> None:
    doc = sbom_of([str(frozen_exe)], tmp_path / "sbom.json")

    assert validate(tmp_path / "sbom.json") == []
    assert doc["spdxVersion"] == "SPDX-2.3"
    info = json.loads(
        subprocess.run([frozen_exe, "version", "--json"], capture_output=True, text=True).stdout
    )
    pkgs = packages(doc)
    manifest = info["payload"]
    # Every file of the payload, with the manifest's SHA-256, a version, a supplier and where it
    # came from (containerd, shim, ctr, runc, each CNI plugin, crictl when carried, pause).
    for entry in manifest["files"]:
        pkg = pkgs[entry["name"]]
        assert sha256_of(pkg) == entry["sha256"], entry["name"]
        assert pkg["versionInfo"] != "NOASSERTION", entry["name"]
        assert pkg["supplier"] != "NOASSERTION", entry["name"]
        if not entry["name"].startswith("sandbox/"):  # a pause built here was not downloaded
            assert pkg["downloadLocation"].startswith("http"), entry["name"]
    assert pkgs["containerd"]["versionInfo"] == manifest["containerd_version"]
    assert pkgs["runc"]["versionInfo"] == manifest["runc_version"]
    for plugin in manifest["node"]["cni"]["plugins"]:
        assert f"cni/{plugin}" in pkgs
    # The runtime: Python, every distribution frozen in, the bundled C libraries, the launcher.
    assert pkgs["CPython"]["versionInfo"].startswith("3.")
    for dist in ("click", "zstandard", "psutil", "h2", "PyYAML", "prometheus_client"):
        assert pkgs[dist]["downloadLocation"].startswith("https://pypi.org/project/"), dist
    assert "pyinstaller-bootloader" in pkgs
    assert pkgs["libc.so.6"]["versionInfo"].startswith("2."), pkgs["libc.so.6"]
    assert sha256_of(pkgs["libpython3.11.so.1.0"])
    trailer = onefile.read_trailer(frozen_exe)
    launcher = frozen_exe.read_bytes()[: trailer.runtime_offset]
    assert sha256_of(pkgs["warren-launcher"]) == hashlib.sha256(launcher).hexdigest()
    contained = {r["relatedSpdxElement"] for r in doc["relationships"]}
    assert {p["SPDXID"] for p in doc["packages"][1:]} <= contained


def test_the_sbom_is_the_same_every_time(frozen_exe: Path, tmp_path: Path) -> None:
    first = sbom_of([str(frozen_exe)], tmp_path / "a.json")
    second = sbom_of([str(frozen_exe)], tmp_path / "b.json")

    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert first["creationInfo"]["created"] == second["creationInfo"]["created"]
    assert first["creationInfo"]["created"] != "1970-01-01T00:00:00Z", "the build's time"


def test_from_source_the_sbom_validates_too(tmp_path: Path) -> None:
    staged = REPO / "build" / "payload" / "linux-amd64"
    if not (staged / "payload.json").is_file():
        pytest.skip("no staged payload: make payload")
    sbom_of([sys.executable, "-m", "warren_bundle", "--payload", str(staged)], tmp_path / "s.json")

    assert validate(tmp_path / "s.json") == []
