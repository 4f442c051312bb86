"""Unit tests for warren_bundle.fetch (scripts/fetch_and_verify.py): pins, hostile tarballs, ELF
checks (no network)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from warren_bundle.errors import FetchError, PinError, Unreachable, UnsafeArchive
from warren_bundle.fetch.archive import extract_release_binaries
from warren_bundle.fetch.cli import main, one_line
from warren_bundle.fetch.debian import require_apt
from warren_bundle.fetch.debversion import upstream_version
from warren_bundle.fetch.download import NetOptions, download
from warren_bundle.fetch.pins import (
    DEFAULT_CHECKSUMS,
    ENV_UPSTREAM_BASE,
    Artifact,
    containerd_artifact,
    lookup_pin,
    parse_pins,
    runc_artifact,
)
from warren_bundle.fetch.pipeline import output_dirs
from warren_bundle.fetch.staging import check_elf, check_replaceable
from warren_bundle.payload import elf
from warren_bundle.payload import format as payload

from support import release_artifacts as ra

GOOD_A = "a" * 64
GOOD_B = "b" * 64


# --- pins -----------------------------------------------------------------------------------


def test_parse_pins_reads_sha256sum_format(tmp_path: Path) -> None:
    pin = tmp_path / "runc-1.3.6.sha256"
    pin.write_text(f"# comment\n\n{GOOD_A}  runc.amd64\n{GOOD_B.upper()} *runc.arm64\n")
    assert parse_pins(pin) == {"runc.amd64": GOOD_A, "runc.arm64": GOOD_B}


@pytest.mark.parametrize(
    "line",
    ["deadbeef  runc.amd64", f"{GOOD_A}", f"{'g' * 64}  runc.amd64", "runc.amd64  " + GOOD_A],
)
def test_parse_pins_rejects_malformed_line_naming_file_and_line(tmp_path: Path, line: str) -> None:
    pin = tmp_path / "runc-1.3.6.sha256"
    pin.write_text(f"{GOOD_B}  runc.arm64\n{line}\n")
    with pytest.raises(PinError) as err:
        parse_pins(pin)
    assert f"{pin}:2" in str(err.value)


def test_parse_pins_rejects_conflicting_duplicate(tmp_path: Path) -> None:
    pin = tmp_path / "runc-1.3.6.sha256"
    pin.write_text(f"{GOOD_A}  runc.amd64\n{GOOD_B}  runc.amd64\n")
    with pytest.raises(PinError, match="pinned twice"):
        parse_pins(pin)


def test_lookup_is_scoped_by_version(tmp_path: Path) -> None:
    (tmp_path / "runc-1.3.6.sha256").write_text(f"{GOOD_A}  runc.amd64\n")
    (tmp_path / "runc-1.4.3.sha256").write_text(f"{GOOD_B}  runc.amd64\n")
    assert lookup_pin(tmp_path, runc_artifact("1.3.6", "amd64")) == GOOD_A
    assert lookup_pin(tmp_path, runc_artifact("1.4.3", "amd64")) == GOOD_B


def test_missing_pin_names_file_and_how_to_add_it(tmp_path: Path) -> None:
    (tmp_path / "runc-1.3.6.sha256").write_text(f"{GOOD_A}  runc.amd64\n")
    with pytest.raises(PinError) as err:
        lookup_pin(tmp_path, runc_artifact("1.4.9", "amd64"))
    msg = one_line(err.value)
    assert "runc.amd64" in msg
    assert f"append '<sha256>  runc.amd64' to {tmp_path / 'runc-1.4.9.sha256'}" in msg
    assert "https://github.com/opencontainers/runc/releases/tag/v1.4.9" in msg
    assert "\n" not in msg
    assert err.value.exit_code == 1


def test_missing_line_in_existing_pin_file(tmp_path: Path) -> None:
    (tmp_path / "runc-1.3.6.sha256").write_text(f"{GOOD_A}  runc.amd64\n")
    with pytest.raises(PinError, match=r"no pin for runc\.arm64 \(runc 1\.3\.6\)"):
        lookup_pin(tmp_path, runc_artifact("1.3.6", "arm64"))


# The pins the issue asked for, exactly; a typo here would fail only against the real release.
REPO_PINS = {
    ("containerd", "2.2.7", "containerd-static-2.2.7-linux-amd64.tar.gz"): (
        "a1df5b5398fe9002c0217de7959bb5642e8deb5be965dcfef4c012ee90c09561"
    ),
    ("containerd", "2.2.7", "containerd-static-2.2.7-linux-arm64.tar.gz"): (
        "5b1861b40bfdaa9078bb726eb192a8ec4c2667504b8e87c981189cfe2441bc9d"
    ),
    ("containerd", "2.3.4", "containerd-static-2.3.4-linux-amd64.tar.gz"): (
        "1d0eccd52471ab75e8d4645b538f73dc635f905cd2be776366eb1036a0089595"
    ),
    ("containerd", "2.3.4", "containerd-static-2.3.4-linux-arm64.tar.gz"): (
        "ad21f456a69bca9c183a8bde892a7576d5d09ae88b3e376a47bde4a886037ab3"
    ),
    ("containerd", "2.2.7", "containerd-2.2.7-linux-amd64.tar.gz"): (
        "91cd216ea26a1b8b512219d3f205375c967e7b7de4dae571bc3dd16bfacd34b5"
    ),
    ("containerd", "2.2.7", "containerd-2.2.7-linux-arm64.tar.gz"): (
        "84eb0a161e20ad45465202fa2d6d93b3d9b74666c363e9908706d590a86e2618"
    ),
    ("runc", "1.3.6", "runc.amd64"): (
        "3f3921dbbee7723e9868f97e88e51ffc910206e3ba55646e74d93d24ea76023c"
    ),
    ("runc", "1.3.6", "runc.arm64"): (
        "6be27a061ef89bb14c6cb495405bba80f46cea213b8f79378a6086b1bac6b747"
    ),
    ("runc", "1.4.3", "runc.amd64"): (
        "f6ae8efc0fa40079e1475e97cbe9d1bd3f106a28d6af78a11d9f1bd565515e60"
    ),
    ("runc", "1.4.3", "runc.arm64"): (
        "633301e2e32f8a5ad54031aab4901eb00308bec677dd15faa2751e8f9dab5ca4"
    ),
    # The node parts (issue 11), from the projects' published checksums.
    ("cni-plugins", "1.9.1", "cni-plugins-linux-amd64-v1.9.1.tgz"): (
        "b98f74a0f8522f0a83867178729c1aa70f2158f90c45a2ca8fa791db1c76b303"
    ),
    ("cni-plugins", "1.9.1", "cni-plugins-linux-arm64-v1.9.1.tgz"): (
        "56171987d3947707c3563db2f4001bccaf50fd63468611b9f3cbecb1375ee7ec"
    ),
    ("crictl", "1.37.0", "crictl-v1.37.0-linux-amd64.tar.gz"): (
        "67c983ee8a6bbce73d39a186e633c5fe4f8a70e62171ac3bd92a9c1b2c601670"
    ),
    ("crictl", "1.37.0", "crictl-v1.37.0-linux-arm64.tar.gz"): (
        "c9dfdf9ebc353a0027c88622206a5e90ee6f0e78cfabf1a9ef4dc575298fd555"
    ),
    ("pause", "3.10", "registry.k8s.io/pause:3.10"): (
        "ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a"
    ),
}


@pytest.mark.parametrize(("key", "digest"), REPO_PINS.items(), ids=lambda v: str(v)[:40])
def test_repo_pins(key: tuple[str, str, str], digest: str) -> None:
    component, version, name = key
    assert lookup_pin(DEFAULT_CHECKSUMS, Artifact(component, version, name)) == digest


def test_repo_pin_files_hold_nothing_else() -> None:
    found = {
        (path.name, name)
        for path in DEFAULT_CHECKSUMS.glob("*.sha256")
        for name in parse_pins(path)
    }
    assert found == {(f"{c}-{v}.sha256", n) for c, v, n in REPO_PINS}


# --- artifact names and URLs ----------------------------------------------------------------


def test_artifact_names_and_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_UPSTREAM_BASE, raising=False)
    static = containerd_artifact("2.2.7", "amd64", "static")
    dynamic = containerd_artifact("2.2.7", "arm64", "dynamic")
    runc = runc_artifact("1.3.6", "arm64")
    assert static.upstream_url() == (
        "https://github.com/containerd/containerd/releases/download/v2.2.7/"
        "containerd-static-2.2.7-linux-amd64.tar.gz"
    )
    assert dynamic.name == "containerd-2.2.7-linux-arm64.tar.gz"
    assert runc.upstream_url() == (
        "https://github.com/opencontainers/runc/releases/download/v1.3.6/runc.arm64"
    )
    assert runc.mirror_url("http://m.example/r/") == "http://m.example/r/runc.arm64"


@pytest.mark.parametrize(
    ("debian", "upstream"),
    [
        ("1.6.20~ds1-1+deb12u3", "1.6.20"),
        ("2.1.9+ds1-5", "2.1.9"),
        ("1.1.5+ds1-1+deb12u1", "1.1.5"),
        ("1:2.0.0-1", "2.0.0"),
    ],
)
def test_upstream_version(debian: str, upstream: str) -> None:
    assert upstream_version(debian) == upstream


# --- hostile tarballs -----------------------------------------------------------------------


def _good_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    elf = ra.fake_elf("amd64")
    return [
        (ra.dir_member("bin"), None),
        (ra.file_member("bin/containerd"), elf),
        (ra.file_member("bin/containerd-shim-runc-v2"), elf),
        (ra.file_member("bin/ctr"), elf),
    ]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """tmp/stage/ is the extraction target; tmp/ is where an escape would land."""
    (tmp_path / "stage").mkdir()
    return tmp_path


def _extract(workdir: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> dict:
    tarball = workdir / "containerd-static-2.2.7-linux-amd64.tar.gz"
    tarball.write_bytes(ra.tar_bytes(members))
    return extract_release_binaries(tarball, workdir / "stage")


def test_good_tarball_keeps_only_the_three_binaries(workdir: Path) -> None:
    members = [
        *_good_members(),
        (ra.file_member("bin/containerd-stress"), b"stress"),
        (ra.file_member("bin/containerd-shim-runc-v1"), b"v1"),
        (ra.file_member("README.md"), b"docs"),
    ]
    found = _extract(workdir, members)
    assert sorted(found) == ["containerd", "containerd-shim-runc-v2", "ctr"]
    assert sorted(p.name for p in (workdir / "stage").iterdir()) == sorted(found)
    size, digest = found["ctr"]
    data = (workdir / "stage" / "ctr").read_bytes()
    assert (size, digest) == (len(data), ra.sha256(data))
    assert (workdir / "stage" / "ctr").stat().st_mode & 0o777 == 0o755


def test_leading_dot_slash_is_accepted(workdir: Path) -> None:
    members = [(ra.file_member("./" + i.name), d) for i, d in _good_members() if d]
    assert sorted(_extract(workdir, members)) == ["containerd", "containerd-shim-runc-v2", "ctr"]


HOSTILE = {
    "absolute": (ra.file_member("/tmp/evil"), b"x"),
    "dotdot": (ra.file_member("../evil"), b"x"),
    "bin-dotdot": (ra.file_member("bin/../evil"), b"x"),
    "dotdot-as-binary": (ra.file_member("bin/../bin/ctr"), b"x"),
    "symlink": (ra.special_member("bin/runc-link", tarfile.SYMTYPE, "/etc/passwd"), None),
    "symlink-as-binary": (ra.special_member("bin/ctr", tarfile.SYMTYPE, "../../evil"), None),
    "hardlink": (ra.special_member("bin/hl", tarfile.LNKTYPE, "etc/passwd"), None),
    "chardev": (ra.special_member("bin/null", tarfile.CHRTYPE), None),
    "blockdev": (ra.special_member("dev/sda", tarfile.BLKTYPE), None),
    "fifo": (ra.special_member("bin/fifo", tarfile.FIFOTYPE), None),
}


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("position", ["first", "last"])
def test_hostile_member_is_rejected_and_named(workdir: Path, kind: str, position: str) -> None:
    bad = HOSTILE[kind]
    members = [bad, *_good_members()] if position == "first" else [*_good_members(), bad]
    with pytest.raises(UnsafeArchive) as err:
        _extract(workdir, members)
    assert repr(bad[0].name) in str(err.value)
    assert err.value.exit_code == 1
    assert "\n" not in err.value.one_line()
    # Nothing escaped the staging dir.
    assert sorted(p.name for p in workdir.iterdir()) == [
        "containerd-static-2.2.7-linux-amd64.tar.gz",
        "stage",
    ]


def test_symlink_planted_in_stage_is_not_followed(workdir: Path) -> None:
    victim = workdir / "victim"
    victim.write_bytes(b"keep")
    (workdir / "stage" / "ctr").symlink_to(victim)
    with pytest.raises(FileExistsError):
        _extract(workdir, _good_members())
    assert victim.read_bytes() == b"keep"


def test_duplicate_binary_is_rejected(workdir: Path) -> None:
    members = [*_good_members(), (ra.file_member("bin/ctr"), b"second")]
    with pytest.raises(UnsafeArchive, match="appears twice"):
        _extract(workdir, members)


def test_missing_binary_is_an_error(workdir: Path) -> None:
    members = [m for m in _good_members() if m[0].name != "bin/ctr"]
    with pytest.raises(FetchError, match="has no bin/ctr"):
        _extract(workdir, members)


def test_not_a_tarball(workdir: Path) -> None:
    tarball = workdir / "containerd-static-2.2.7-linux-amd64.tar.gz"
    tarball.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(FetchError, match="not a readable tar archive"):
        extract_release_binaries(tarball, workdir / "stage")


# --- ELF arch -------------------------------------------------------------------------------


def test_elf_of_requested_arch_passes(tmp_path: Path) -> None:
    for arch in ("amd64", "arm64"):
        path = tmp_path / f"ctr-{arch}"
        path.write_bytes(ra.fake_elf(arch))
        check_elf(path, arch, "test")


def test_amd64_elf_requested_as_arm64_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "containerd"
    path.write_bytes(ra.fake_elf("amd64"))
    with pytest.raises(FetchError, match="built for amd64, not arm64"):
        check_elf(path, "arm64", "test")


def test_non_elf_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "runc"
    path.write_bytes(b"#!/bin/sh\nexit 0\n" + bytes(100))
    with pytest.raises(FetchError, match="runc from test is not an ELF executable"):
        check_elf(path, "amd64", "test")


def test_real_binary_arch(tmp_path: Path) -> None:
    real = ra.REAL_BINARIES["runc"]
    if not real.is_file():
        pytest.skip(f"{real} is missing (apt-get install runc)")
    host = elf.arch_of(str(real))
    other = "arm64" if host == "amd64" else "amd64"
    check_elf(real, host, "debian")
    with pytest.raises(FetchError, match=f"built for {host}, not {other}"):
        check_elf(real, other, "debian")


# --- connection classification --------------------------------------------------------------


def test_refused_connection_is_unreachable_and_names_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{ra.closed_port()}/runc.amd64"
    net = NetOptions(connect_timeout=2, read_timeout=2, retries=1, backoff=0.01)
    with pytest.raises(Unreachable) as err:
        download(url, tmp_path / "runc.amd64", GOOD_A, net, "runc.amd64")
    assert "connection refused" in str(err.value)
    assert url in str(err.value)
    assert not list(tmp_path.iterdir())


def test_dns_failure_is_unreachable_without_retries(tmp_path: Path) -> None:
    # .invalid never resolves (RFC 6761), so this needs no network.
    url = "http://warren-test.invalid/runc.amd64"
    net = NetOptions(connect_timeout=2, read_timeout=2, retries=5, backoff=5)
    with pytest.raises(Unreachable, match=r"cannot resolve host warren-test\.invalid"):
        download(url, tmp_path / "runc.amd64", GOOD_A, net, "runc.amd64")


# --- command-line checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--release", "--source", "debian"],
        ["--release", "--from-dir", "/tmp"],
        ["--source", "mirror"],
        ["--source", "dir"],
        ["--source", "upstream", "--mirror", "http://x/"],
        ["--arch", "riscv64"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_output_dirs() -> None:
    assert output_dirs(["amd64"], Path("/o/x"), False) == {"amd64": Path("/o/x")}
    assert output_dirs(["amd64", "arm64"], Path("/o"), True) == {
        "amd64": Path("/o/linux-amd64"),
        "arm64": Path("/o/linux-arm64"),
    }
    assert output_dirs(["arm64"], None, False)["arm64"].parts[-3:] == (
        "build",
        "payload",
        "linux-arm64",
    )


def test_debian_source_without_apt_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FetchError, match="needs apt-get and dpkg-deb"):
        require_apt()


# --- whole runs on fake ELF artifacts (dir source: no network, no real binaries) ------------


def _fake_release(arch: str, runc_arch: str | None = None) -> ra.Release:
    binaries = {name: ra.fake_elf(arch) + name.encode() for name in payload.BINARIES}
    binaries["runc"] = ra.fake_elf(runc_arch or arch) + b"runc"
    return ra.make_release(binaries, arch)


def _run_dir(tmp_path: Path, releases: list[ra.Release], *args: str) -> int:
    folder, checksums = tmp_path / "release", tmp_path / "checksums"
    for rel in releases:
        rel.write_dir(folder)
        rel.write_pins(checksums)
    argv = ["--from-dir", str(folder), "--checksums", str(checksums)]
    argv += ["--cache", str(tmp_path / "cache"), "--level", "1", *args]
    # The pause image comes from a registry (a real local one here), whatever the source.
    with ra.ArtifactServer(ra.Served(files=ra.pause_registry()[0])) as registry:
        os.environ["WARREN_REGISTRY_BASE"] = registry.base
        try:
            return main(argv)
        finally:
            del os.environ["WARREN_REGISTRY_BASE"]


def test_arch_all_stages_both_under_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    releases = [_fake_release("amd64"), _fake_release("arm64")]
    out = tmp_path / "payload"
    assert _run_dir(tmp_path, releases, "--arch", "all", "--out", str(out)) == 0
    for rel in releases:
        manifest = payload.read_file(out / f"linux-{rel.arch}").manifest
        assert manifest.arch == rel.arch and manifest.source == "dir"
        assert manifest.file("runc").sha256 == ra.sha256(rel.binaries["runc"])
    assert sorted(p.name for p in out.iterdir()) == ["linux-amd64", "linux-arm64"]
    assert capsys.readouterr().out.count("payload ") == 2


def test_arch_all_is_all_or_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # arm64's runc is really an amd64 build: the arm64 check fails after amd64 staged fine.
    releases = [_fake_release("amd64"), _fake_release("arm64", runc_arch="amd64")]
    out = tmp_path / "payload"
    assert _run_dir(tmp_path, releases, "--arch", "all", "--out", str(out)) == 1
    assert "runc from dir" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_out_that_is_not_a_staged_payload_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "important"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rel = _fake_release("amd64")
    assert _run_dir(tmp_path, [rel], "--arch", "amd64", "--out", str(out)) == 1
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(FetchError, match="refusing to replace"):
        check_replaceable(out)


# --- the package is build time only; the script is its entry point --------------------------

PACKAGE = Path(__file__).resolve().parents[2] / "warren_bundle"


def _imports_fetch(path: Path) -> bool:
    """Whether a module names warren_bundle.fetch in any import, at top level or in a function."""
    in_package = path.parent.relative_to(PACKAGE).parts
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's own package
                base = ["warren_bundle", *in_package][: len(in_package) + 2 - node.level]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        if any(n == "warren_bundle.fetch" or n.startswith("warren_bundle.fetch.") for n in names):
            return True
    return False


def test_nothing_outside_fetch_imports_it() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "fetch" and _imports_fetch(path)
    ]
    assert offenders == []


def test_cli_never_loads_fetch_and_fetch_loads_requests_lazily() -> None:
    code = (
        "import sys\n"
        "import warren_bundle.cli.main\n"
        "assert not [m for m in sys.modules if m.startswith('warren_bundle.fetch')], 'cli'\n"
        "import warren_bundle.fetch.cli\n"
        "assert 'requests' not in sys.modules, 'requests'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_script_is_the_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, str(ra.SCRIPT), "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: fetch_and_verify.py ")
    assert "--source {auto,upstream,mirror,dir,debian,debian-static}" in proc.stdout
    usage = subprocess.run(
        [sys.executable, str(ra.SCRIPT), "--source", "mirror"], capture_output=True, text=True
    )
    assert usage.returncode == 2
    assert "--source mirror needs --mirror URL" in usage.stderr
