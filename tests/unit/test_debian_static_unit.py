"""The debian-static source's pure parts: deb-src lines, the cache key, the recipes' flags
(the build itself is exercised by make payload SOURCE=debian-static and tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from warren_bundle.errors import FetchError
from warren_bundle.fetch import gobuild
from warren_bundle.fetch.debian_static import Dsc, SourceApt, cache_key, import_path

DSC = Dsc(
    "containerd", "1.6.20~ds1-1+deb12u3", "containerd_1.6.20~ds1-1+deb12u3.dsc", "u", "a" * 64
)
RUNC = Dsc("runc", "1.1.5+ds1-1+deb12u1", "runc_1.1.5+ds1-1+deb12u1.dsc", "u", "b" * 64)


def test_source_apt_lists_only_deb_src(tmp_path: Path) -> None:
    text = SourceApt("bookworm", "amd64", tmp_path, "http://deb.debian.org/debian").sources()
    lines = text.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("deb-src [") for line in lines)
    assert any("bookworm-security" in line for line in lines)


def test_cache_key_changes_with_every_input() -> None:
    base = cache_key([DSC, RUNC], "amd64", "go1.19.8 linux/amd64")
    assert base == cache_key([DSC, RUNC], "amd64", "go1.19.8 linux/amd64")
    other_dsc = Dsc(DSC.package, DSC.version, DSC.name, DSC.url, "c" * 64)
    other_ver = Dsc(DSC.package, "1.6.20~ds1-1+deb12u4", DSC.name, DSC.url, DSC.sha256)
    keys = {
        base,
        cache_key([other_dsc, RUNC], "amd64", "go1.19.8 linux/amd64"),
        cache_key([other_ver, RUNC], "amd64", "go1.19.8 linux/amd64"),
        cache_key([DSC, RUNC], "arm64", "go1.19.8 linux/amd64"),
        cache_key([DSC, RUNC], "amd64", "go1.19.9 linux/amd64"),
    }
    assert len(keys) == 5


def test_import_path_from_the_dsc(tmp_path: Path) -> None:
    dsc = tmp_path / "x.dsc"
    dsc.write_text("Source: runc\nGo-Import-Path: github.com/opencontainers/runc\nVersion: 1\n")
    assert import_path(dsc) == "github.com/opencontainers/runc"
    dsc.write_text("Source: zlib\nVersion: 1\n")
    with pytest.raises(FetchError, match="Go-Import-Path"):
        import_path(dsc)


def test_debian_upstream_version() -> None:
    assert gobuild.debian_upstream("1.6.20~ds1-1+deb12u3") == "1.6.20~ds1"
    assert gobuild.debian_upstream("1:2.1.9+ds1-5") == "2.1.9+ds1"
    assert gobuild.debian_upstream("1.0") == "1.0"


def test_recipes_link_statically() -> None:
    runc = gobuild.RECIPES["runc"]
    assert runc.cgo and "seccomp" in runc.tags  # libseccomp.a linked in
    for name in ("containerd", "cni"):
        assert not gobuild.RECIPES[name].cgo
    assert {n for _, n in gobuild.RECIPES["cni"].targets} == set(gobuild.CNI_PLUGINS)
    env = gobuild.build_env(Path("/ws"), Path("/gc"), cgo=False)
    assert env["CGO_ENABLED"] == "0" and env["GO111MODULE"] == "off"
    assert env["GOPATH"] == f"/ws:{gobuild.GOCODE}"
