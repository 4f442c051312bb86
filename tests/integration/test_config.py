"""The generated containerd config: its contents, and that real containerd 1.6 and 2.x run it."""

from __future__ import annotations

import grp
import json
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.paths import Paths
from warren_bundle.runtime import health
from warren_bundle.runtime.config import (
    ConfigError,
    ConfigOptions,
    build_config,
    config_version_for,
    parse_mirror,
    write_config,
)
from warren_bundle.runtime.settings import Settings
from warren_bundle.runtime.supervisor import ContainerdManager

from support import (
    REPO,
    TEST_IMAGE,
    cleanup_runtime,
    make_paths,
    run_warren,
    short_dir,
    staged_containerd_version,
    wait_for,
)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return make_paths(tmp_path)


def test_version_follows_containerd_major() -> None:
    assert config_version_for("1.6.20") == 2
    assert config_version_for("v1.7.0") == 2
    assert config_version_for("2.1.9") == 3
    assert config_version_for("2.2.7") == 3


def test_v2_config_has_the_seeds_settings(paths: Paths) -> None:
    cfg = build_config(paths, "1.6.20", ConfigOptions(systemd_cgroup=True))
    assert cfg["version"] == 2
    cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.9"
    assert cri["containerd"]["snapshotter"] == "overlayfs"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {
        "BinaryName": str(paths.binary("runc")),
        "Root": str(paths.runc_root),
        "SystemdCgroup": True,
    }
    assert cri["registry"]["config_path"] == str(paths.config_dir / "certs.d")
    assert cfg["grpc"]["address"] == str(paths.socket)


def test_v3_config_uses_containerd2_plugin_names(paths: Paths) -> None:
    cfg = build_config(paths, "2.1.9", ConfigOptions(systemd_cgroup=False))
    assert cfg["version"] == 3
    images = cfg["plugins"]["io.containerd.cri.v1.images"]
    assert images["snapshotter"] == "overlayfs"
    assert images["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10"
    runc = cfg["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
    assert runc["options"]["BinaryName"] == str(paths.binary("runc"))
    assert runc["options"]["SystemdCgroup"] is False


def test_systemd_cgroup_is_detected_from_the_host(paths: Paths) -> None:
    systemd = Path("/run/systemd/system").is_dir()
    cfg = build_config(paths, "1.6.20", ConfigOptions())
    runc = cfg["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is systemd


def test_written_file_is_0600_and_parses(paths: Paths) -> None:
    written = write_config(paths, "1.6.20", ConfigOptions())
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert tomllib.loads(written.read_text())["version"] == 2
    hosts = (paths.config_dir / "certs.d" / "docker.io" / "hosts.toml").read_text()
    assert tomllib.loads(hosts)["server"] == "https://registry-1.docker.io"


def test_registry_mirror_goes_into_hosts_toml(paths: Paths) -> None:
    host, endpoint = parse_mirror("docker.io=https://mirror.local/")
    write_config(paths, "1.6.20", ConfigOptions(registry_mirrors={host: [endpoint]}))
    hosts = tomllib.loads((paths.config_dir / "certs.d" / "docker.io" / "hosts.toml").read_text())
    assert hosts["server"] == "https://registry-1.docker.io"
    assert hosts["host"]["https://mirror.local"]["capabilities"] == ["pull", "resolve"]


@pytest.mark.parametrize("bad", ["docker.io", "=https://x", "docker.io=ftp://x", ""])
def test_bad_mirror_spec_names_the_form(bad: str) -> None:
    with pytest.raises(ConfigError, match="REGISTRY=URL"):
        parse_mirror(bad)


def test_config_d_is_deep_merged_in_order(paths: Paths) -> None:
    paths.config_d.mkdir(parents=True)
    (paths.config_d / "10-first.toml").write_text(
        '[plugins."io.containerd.grpc.v1.cri"]\nsandbox_image = "example/pause:1"\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd]\nsnapshotter = "native"\n'
    )
    (paths.config_d / "20-second.toml").write_text(
        '[plugins."io.containerd.grpc.v1.cri"]\nsandbox_image = "example/pause:2"\n'
    )
    cri = build_config(paths, "1.6.20", ConfigOptions())["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "example/pause:2"
    assert cri["containerd"]["snapshotter"] == "native"
    assert cri["containerd"]["runtimes"]["runc"]["runtime_type"] == "io.containerd.runc.v2"


def test_broken_config_d_file_is_named(paths: Paths) -> None:
    paths.config_d.mkdir(parents=True)
    (paths.config_d / "bad.toml").write_text("this is = = not toml")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        build_config(paths, "1.6.20", ConfigOptions())


def test_socket_group_sets_grpc_gid(paths: Paths) -> None:
    group = grp.getgrgid(0).gr_name
    cfg = build_config(paths, "1.6.20", ConfigOptions(socket_group=group))
    assert cfg["grpc"]["gid"] == 0
    with pytest.raises(ConfigError, match="socket group 'no-such-group' does not exist"):
        build_config(paths, "1.6.20", ConfigOptions(socket_group="no-such-group"))


def test_config_command_prints_the_config(paths: Paths, staged_payload: Path) -> None:
    out = run_warren(paths, "containerd", "config", "--registry-mirror", "docker.io=https://m.l")
    assert out.returncode == 0, out.stderr
    parsed = tomllib.loads(out.stdout)
    assert parsed["version"] == config_version_for(
        json.loads((staged_payload / "manifest.json").read_text())["containerd_version"]
    )
    assert not paths.config_file.exists(), "printing must not write"


# --- the config runs real containerd 1.6 and 2.x ------------------------------------------


@pytest.fixture(scope="session")
def sid_payload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """containerd 2.x from Debian sid (the host's runc), staged by the product's own script."""
    out = tmp_path_factory.mktemp("sid") / "linux-sid"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "fetch_and_verify.py"),
            "--source",
            "debian",
            "--debian-suite",
            "sid",
            "--out",
            str(out),
            "--level",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        from conftest import require

        require(False, f"cannot stage containerd from sid: {proc.stderr.strip()[-500:]}")
    return out


@pytest.fixture
def short_paths() -> Iterator[Paths]:
    base = short_dir("c")
    paths = make_paths(base)
    yield paths
    cleanup_runtime(paths, base)


def _run_container(paths: Paths, payload: Path, busybox_tar: Path, expect_major: str) -> None:
    mgr = ContainerdManager(paths=paths, payload=payload, settings=Settings(health_interval=1))
    mgr.start()
    try:
        server = health.containerd_version(paths.socket)[0]
        assert server.startswith(expect_major), server
        ctr = [str(paths.binary("ctr")), "--address", str(paths.socket)]
        imported = subprocess.run(
            [*ctr, "images", "import", str(busybox_tar)], capture_output=True, text=True
        )
        assert imported.returncode == 0, imported.stderr
        ran = subprocess.run(
            [*ctr, "run", "--rm", TEST_IMAGE, "cfg-test", "echo", f"config ok on {expect_major}"],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": f"{paths.bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == f"config ok on {expect_major}"
    finally:
        mgr.stop()
    wait_for(lambda: not health.is_serving(paths.socket), timeout=15, what="containerd to stop")


@pytest.mark.integration
@pytest.mark.usefixtures("root_required")
def test_config_runs_containerd_1_6(
    short_paths: Paths, staged_payload: Path, busybox_tar: Path
) -> None:
    _run_container(short_paths, staged_payload, busybox_tar, staged_containerd_version())
    assert tomllib.loads(short_paths.config_file.read_text())["version"] == config_version_for(
        staged_containerd_version()
    )


@pytest.mark.integration
@pytest.mark.usefixtures("root_required")
def test_config_runs_containerd_2_from_sid(
    short_paths: Paths, sid_payload: Path, busybox_tar: Path
) -> None:
    _run_container(short_paths, sid_payload, busybox_tar, "2.")
    assert tomllib.loads(short_paths.config_file.read_text())["version"] == 3
