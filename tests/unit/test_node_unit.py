"""The node parts' pure logic (issue 11): pod CIDR, the default conflist and a user's own, the
CRI config of both versions, capabilities, kubelet flags, protobuf fields, route overlaps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from warren_bundle.hostinfo import caps
from warren_bundle.node import kubelet, network
from warren_bundle.paths import Paths
from warren_bundle.runtime.config import ConfigOptions, build_config
from warren_bundle.runtime.grpc_unix import _varint, encode_string_field, iter_fields

from support import REPO


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "data", tmp_path / "run", tmp_path / "etc")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10.217.0.0/16", "10.217.0.0/16"), (" 192.168.7.0/24 ", "192.168.7.0/24")],
)
def test_pod_cidr_is_normalised(value: str, expected: str) -> None:
    assert network.parse_pod_cidr(value) == expected


@pytest.mark.parametrize("bad", ["10.217.0.1/16", "fd00::/64", "10.0.0.0/30", "nonsense", "10/8x"])
def test_bad_pod_cidr_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        network.parse_pod_cidr(bad)


def test_bad_pod_cidr_is_a_usage_error_before_anything_starts(tmp_path: Path) -> None:
    env = {"WARREN_DATA_DIR": str(tmp_path / "d"), "WARREN_RUN_DIR": str(tmp_path / "r")}
    env["WARREN_CONFIG_DIR"] = str(tmp_path / "e")
    done = subprocess.run(
        [sys.executable, "-m", "warren_bundle", "containerd", "start", "--pod-cidr", "10.1.2.3/8"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**__import__("os").environ, **env},
        timeout=60,
    )
    assert done.returncode == 2
    assert "--pod-cidr" in done.stderr and "CIDR" in done.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()


def test_default_conflist_lives_in_our_dirs(paths: Paths) -> None:
    written = network.write_default(paths, "10.99.0.0/16")
    assert written == paths.config_dir / "cni" / "net.d" / network.CONFLIST
    conf = json.loads(written.read_text())
    bridge, portmap, *_rest = conf["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == network.BRIDGE
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.99.0.0/16"}]]
    assert bridge["ipam"]["dataDir"] == str(paths.data_dir / "cni" / "networks")
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap", "firewall", "bandwidth"]


def test_a_users_own_conflist_wins(paths: Paths) -> None:
    network.write_default(paths, network.DEFAULT_POD_CIDR)
    mine = network.conf_dir(paths) / "05-mine.conflist"
    mine.write_text('{"cniVersion": "1.0.0", "name": "mine", "plugins": []}')
    assert network.write_default(paths, network.DEFAULT_POD_CIDR) is None
    assert sorted(p.name for p in network.conf_dir(paths).iterdir()) == ["05-mine.conflist"]
    assert network.user_confs(paths) == [mine]


def _stamp_with_sandbox(bin_dir: Path, ref: str) -> None:
    from warren_bundle.payload.format import FileEntry, Manifest

    (bin_dir / "sandbox").mkdir(parents=True)
    (bin_dir / "sandbox" / "pause.tar").write_bytes(b"x")
    manifest = Manifest(
        "linux",
        "amd64",
        "1.6.20",
        "1.1.5",
        "test",
        (FileEntry("sandbox/pause.tar", 1, 0o644, "0" * 64),),
        components={"sandbox_image": {"ref": ref, "file": "sandbox/pause.tar"}},
    )
    stamp = {"format": 1, "manifest": manifest.to_dict()}
    (bin_dir / ".manifest.json").write_text(json.dumps(stamp))


@pytest.mark.parametrize(
    ("version", "cri_key", "bin_key"),
    [
        ("1.6.20", "io.containerd.grpc.v1.cri", "bin_dir"),
        ("2.0.5", "io.containerd.cri.v1.runtime", "bin_dir"),
        ("2.1.9", "io.containerd.cri.v1.runtime", "bin_dirs"),
    ],
)
def test_cri_config_of_each_version(
    paths: Paths, tmp_path: Path, version: str, cri_key: str, bin_key: str
) -> None:
    vdir = tmp_path / "v"
    _stamp_with_sandbox(vdir, "localhost/warren/pause:test")
    config = build_config(paths, version, ConfigOptions(restrict_oom_score_adj=True), vdir)
    cri = config["plugins"][cri_key]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["cni"]["conf_dir"] == str(paths.config_dir / "cni" / "net.d")
    want = str(vdir / "cni")
    assert cri["cni"][bin_key] == ([want] if bin_key == "bin_dirs" else want)
    assert kubelet.sandbox_image_of(config) == "localhost/warren/pause:test"
    off = build_config(paths, version, ConfigOptions(restrict_oom_score_adj=False), vdir)
    assert off["plugins"][cri_key]["restrict_oom_score_adj"] is False


def test_capabilities_from_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000001fffeffffff\n")  # all but CAP_SYS_RESOURCE
    mask = caps.effective(status)
    assert mask is not None
    assert caps.has(caps.CAP_SYS_RESOURCE, mask) is False
    assert caps.has(caps.CAP_SYS_ADMIN, mask) is True
    status.write_text("Name:\tx\n")
    assert caps.effective(status) is None


@pytest.mark.parametrize(
    ("version", "infra"), [("1.6.20", True), ("1.7.24", False), ("2.1.9", False)]
)
def test_kubelet_flags(paths: Paths, tmp_path: Path, version: str, infra: bool) -> None:
    vdir = tmp_path / "v"
    _stamp_with_sandbox(vdir, "localhost/warren/pause:test")
    config = build_config(paths, version, ConfigOptions(systemd_cgroup=True), vdir)
    got = kubelet.kubelet_settings(paths, paths.socket, config, version)
    endpoint = f"unix://{paths.socket}"
    assert got["flags"][:3] == [
        f"--container-runtime-endpoint={endpoint}",
        f"--image-service-endpoint={endpoint}",
        "--cgroup-driver=systemd",
    ]
    has_infra = "--pod-infra-container-image=localhost/warren/pause:test" in got["flags"]
    assert has_infra == infra
    assert got["config"]["cgroupDriver"] == "systemd"
    cgroupfs = build_config(paths, version, ConfigOptions(systemd_cgroup=False), vdir)
    assert (
        kubelet.kubelet_settings(paths, paths.socket, cgroupfs, version)["config"]["cgroupDriver"]
        == "cgroupfs"
    )


def test_repeated_protobuf_fields_are_all_read() -> None:
    cond = encode_string_field(1, "NetworkReady") + _varint(2 << 3) + _varint(1)
    status = b"".join(_varint(1 << 3 | 2) + _varint(len(c)) + c for c in (cond, cond))
    assert [n for n, _v in iter_fields(status)] == [1, 1]


def test_overlapping_routes(tmp_path: Path) -> None:
    routes = tmp_path / "route"
    routes.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\n"  # default: ignored
        "eth1\t0000D90A\t00000000\t0001\t0\t0\t0\t0000FFFF\n"  # 10.217.0.0/16
        "eth2\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"  # 192.168.0.0/24
    )
    assert network.overlapping_routes("10.217.0.0/16", routes) == ["10.217.0.0/16 dev eth1"]
    assert network.overlapping_routes("10.218.0.0/16", routes) == []
