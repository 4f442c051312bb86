"""registries.yaml: parsing, checks, hosts.toml and CRI auth, no-follow writes, log modes."""

from __future__ import annotations

import base64
import os
import stat
import tomllib
from pathlib import Path

import pytest

from tests.support import make_paths
from warren_bundle import registries, registry_hosts, safewrite
from warren_bundle.errors import ConfigError, ExitCode, RegistriesError, UnsafePathError
from warren_bundle.node import network
from warren_bundle.runtime.config import (
    ConfigOptions,
    build_config,
    parse_mirror,
    render_redacted,
    write_config,
)

PASSWORD = "Hunter2-s3cret"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registries.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def _full(tmp_path: Path, ca: Path) -> Path:
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    return _write(
        tmp_path,
        f"""
mirrors:
  docker.io:
    endpoint: ["https://mirror.local:5443", "https://other.local/prefix/path"]
    rewrite:
      "^library/(.*)": "mirrored/$1"
configs:
  "mirror.local:5443":
    auth: {{username: bob, password: {PASSWORD}}}
    tls: {{ca_file: {ca}, cert_file: c.pem, key_file: k.pem}}
  other.local:
    tls: {{insecure_skip_verify: true}}
  private.example:
    auth: {{identity_token: tok-{PASSWORD}}}
""",
    )


def test_k3s_file_is_parsed(tmp_path: Path, ca: Path) -> None:
    regs = registries.load(_full(tmp_path, ca))
    assert regs.mirrors["docker.io"].endpoints == (
        "https://mirror.local:5443",
        "https://other.local/prefix/path",
    )
    assert regs.mirrors["docker.io"].rewrites == (("^library/(.*)", "mirrored/$1"),)
    config = regs.configs["mirror.local:5443"]
    assert config.auth is not None and config.auth.basic() == ("bob", PASSWORD)
    assert config.tls is not None and config.tls.cert_file == tmp_path / "c.pem"
    assert regs.configs["private.example"].auth is not None
    assert PASSWORD not in repr(regs)  # a dataclass repr never shows a credential


def test_auth_field_is_base64_user_password(tmp_path: Path) -> None:
    token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    regs = registries.load(_write(tmp_path, f"configs: {{r.local: {{auth: {{auth: {token}}}}}}}"))
    auth = regs.configs["r.local"].auth
    assert auth is not None and auth.basic() == ("alice", PASSWORD)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("mirrors: [", "not valid YAML"),
        ("mirror: {}", "unknown key 'mirror'"),
        ("mirrors: {docker.io: {endpoints: []}}", "unknown key 'endpoints'"),
        ("configs: {r.local: {tls: {ca: /x}}}", "unknown key 'ca'"),
        ("configs: {r.local: {auth: {user: x}}}", "unknown key 'user'"),
        ("configs: {r.local: {tls: {ca_file: /no/such/ca.pem}}}", "/no/such/ca.pem does not exist"),
        ("configs: {r.local: {tls: {cert_file: /etc/hostname}}}", "together"),
        ("configs: {r.local: {auth: {username: bob}}}", "both username and password"),
        ("configs: {r.local: {auth: {auth: notbase64}}}", "base64"),
        ("mirrors: {docker.io: {endpoint: [ftp://x]}}", "not an http(s) URL"),
        ("mirrors: {'../etc': {endpoint: [https://x]}}", "not a registry host name"),
        ("mirrors: {docker.io: {rewrite: {'(': x}}}", "not a regex"),
    ],
)
def test_a_bad_file_is_one_usage_error(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(RegistriesError) as info:
        registries.load(_write(tmp_path, text))
    assert says in info.value.one_line()
    assert "\n" not in info.value.one_line()
    assert info.value.exit_code == ExitCode.USAGE


def test_credentials_in_an_endpoint_url_are_refused_unrepeated(tmp_path: Path) -> None:
    text = f"mirrors: {{docker.io: {{endpoint: ['https://bob:{PASSWORD}@m.local']}}}}"
    with pytest.raises(RegistriesError) as info:
        registries.load(_write(tmp_path, text))
    assert PASSWORD not in info.value.one_line() and "configs.<host>.auth" in str(info.value)


def test_mirror_option_with_userinfo_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_mirror(f"docker.io=https://bob:{PASSWORD}@mirror/")
    assert PASSWORD not in info.value.one_line()
    assert "registries.yaml" in info.value.one_line()


def test_hosts_toml_per_endpoint(tmp_path: Path, ca: Path) -> None:
    tables = registry_hosts.hosts_tables(registries.load(_full(tmp_path, ca)))
    docker = tables["docker.io"]
    assert docker["server"] == "https://registry-1.docker.io"
    mirror = docker["host"]["https://mirror.local:5443"]
    assert mirror["ca"] == str(ca)
    assert mirror["client"] == [[str(tmp_path / "c.pem"), str(tmp_path / "k.pem")]]
    basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    assert mirror["header"] == {"Authorization": f"Basic {basic}"}
    other = docker["host"]["https://other.local/prefix/path"]
    assert other["override_path"] is True and other["skip_verify"] is True
    # A configs entry without a mirror gets its own hosts.toml with server-level settings.
    assert tables["other.local"] == {"server": "https://other.local", "skip_verify": True}


def test_write_config_keeps_credentials_in_0600_files(tmp_path: Path, ca: Path) -> None:
    paths = make_paths(tmp_path / "w")
    opts = ConfigOptions(registries_file=_full(tmp_path, ca), restrict_oom_score_adj=False)
    write_config(paths, "1.6.20", opts)
    hosts = paths.config_dir / "certs.d" / "docker.io" / "hosts.toml"
    assert stat.S_IMODE(hosts.stat().st_mode) == 0o600
    assert stat.S_IMODE(hosts.parent.stat().st_mode) == 0o700
    plain = paths.config_dir / "certs.d" / "other.local" / "hosts.toml"
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644
    config = tomllib.loads(paths.config_file.read_text())
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert cri["configs"]["mirror.local:5443"]["auth"] == {"username": "bob", "password": PASSWORD}
    assert cri["configs"]["private.example"]["auth"] == {"identitytoken": f"tok-{PASSWORD}"}
    for file in paths.config_dir.rglob("*"):
        if file.is_file() and PASSWORD in file.read_text():
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_containerd_2_gets_auth_in_the_images_plugin(tmp_path: Path, ca: Path) -> None:
    paths = make_paths(tmp_path / "w")
    opts = ConfigOptions(registries_file=_full(tmp_path, ca), restrict_oom_score_adj=False)
    config = build_config(paths, "2.1.0", opts)
    registry = config["plugins"]["io.containerd.cri.v1.images"]["registry"]
    assert registry["config_path"].endswith("certs.d")
    assert registry["configs"]["mirror.local:5443"]["auth"]["username"] == "bob"


def test_shown_config_is_redacted(tmp_path: Path, ca: Path) -> None:
    paths = make_paths(tmp_path / "w")
    opts = ConfigOptions(registries_file=_full(tmp_path, ca), restrict_oom_score_adj=False)
    text = render_redacted(build_config(paths, "1.6.20", opts))
    assert PASSWORD not in text and "<redacted>" in text


def test_a_registry_dropped_from_the_file_loses_its_old_hosts_toml(
    tmp_path: Path, ca: Path
) -> None:
    paths = make_paths(tmp_path / "w")
    opts = ConfigOptions(registries_file=_full(tmp_path, ca), restrict_oom_score_adj=False)
    write_config(paths, "1.6.20", opts)
    assert (paths.config_dir / "certs.d" / "other.local" / "hosts.toml").exists()
    write_config(paths, "1.6.20", ConfigOptions(restrict_oom_score_adj=False))
    assert not (paths.config_dir / "certs.d" / "other.local" / "hosts.toml").exists()
    docker = (paths.config_dir / "certs.d" / "docker.io" / "hosts.toml").read_text()
    assert PASSWORD not in docker


def test_a_symlinked_host_dir_is_refused_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "certs.d"
    elsewhere = tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "docker.io").symlink_to(elsewhere)
    with pytest.raises(UnsafePathError, match="symlink"):
        safewrite.write_file(root, "docker.io/hosts.toml", "x", 0o600)
    assert list(elsewhere.iterdir()) == []


def test_a_symlinked_file_is_replaced_not_written_through(tmp_path: Path) -> None:
    root = tmp_path / "net"
    (root / "net.d").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (root / "net.d" / "10-warren.conflist").symlink_to(victim)
    safewrite.write_file(root, "net.d/10-warren.conflist", "new", 0o644)
    assert victim.read_text() == "keep"
    assert not (root / "net.d" / "10-warren.conflist").is_symlink()


def test_a_dir_writable_by_others_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "certs.d"
    (root / "r.local").mkdir(parents=True)
    os.chmod(root / "r.local", 0o777)
    with pytest.raises(UnsafePathError, match="writable by group or others"):
        safewrite.write_file(root, "r.local/hosts.toml", "x", 0o644)


def test_secret_file_is_never_wider_than_0600(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = safewrite.write_file(tmp_path / "certs.d", "r.local/hosts.toml", "s", 0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rotated_logs_keep_the_live_logs_mode(tmp_path: Path) -> None:
    from warren_bundle.runtime import logs

    log = tmp_path / "containerd.log"
    for _ in range(4):
        fd = logs.open_for_child(log)
        os.write(fd, b"x" * 64)
        os.close(fd)
        assert logs.rotate_if_needed(log, max_bytes=10)
    for n in (1, 2, 3):
        assert stat.S_IMODE(logs.backup(log, n).stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["images", "pull", "r"], ["images", "pull", "--hosts-dir", "/H", "r"]),
        (
            ["-n", "k8s.io", "i", "push", "r"],
            ["-n", "k8s.io", "i", "push", "--hosts-dir", "/H", "r"],
        ),
        (["content", "fetch", "r"], ["content", "fetch", "--hosts-dir", "/H", "r"]),
        (["i", "pull", "--hosts-dir=/x", "r"], ["i", "pull", "--hosts-dir=/x", "r"]),
        (["run", "--rm", "img", "id"], ["run", "--fifo-dir", "/F", "--rm", "img", "id"]),
        (["t", "start", "id"], ["t", "start", "--fifo-dir", "/F", "id"]),
        (
            ["tasks", "exec", "--exec-id", "1", "c"],
            ["tasks", "exec", "--fifo-dir", "/F", "--exec-id", "1", "c"],
        ),
        (["images", "ls"], ["images", "ls"]),
        (["--", "images", "pull"], ["--", "images", "pull"]),
    ],
)
def test_ctr_gets_hosts_dir_and_fifo_dir(args: list[str], expected: list[str]) -> None:
    from warren_bundle.ctr import with_client_defaults

    out = with_client_defaults(args, "/H", "/F")
    assert out == expected
    assert not any("--user" in a or a == "-u" for a in out)


def test_a_failed_pull_is_explained_with_registry_endpoint_and_cause(tmp_path: Path) -> None:
    from warren_bundle.pullerrors import explain, registry_of

    assert registry_of("busybox") == "docker.io"
    assert registry_of("docker.io/library/busybox:1") == "docker.io"
    assert registry_of("r.local:5000/x:1") == "r.local:5000"
    safewrite.write_file(
        tmp_path,
        "docker.io/hosts.toml",
        'server = "https://registry-1.docker.io"\n[host."https://m.local:5443"]\n',
        0o600,
    )
    v17 = (
        'time="t" level=info msg="trying next host" error="pull access denied, repository does '
        "not exist or may require authorization: authorization failed: no basic auth "
        'credentials" host="m.local:5443"\nctr: failed to resolve reference "docker.io/x:1": '
        "pull access denied\n"
    )
    said = explain(v17, ["images", "pull", "docker.io/x:1"], tmp_path, None)
    assert said is not None
    assert said.startswith("warren: registry docker.io via endpoint https://m.local:5443:")
    assert 'configs."m.local:5443".auth' in said
    tls = "ctr: failed to do request: x509: certificate signed by unknown authority\n"
    said = explain(tls, ["i", "pull", "x:1"], tmp_path, Path("/r.yaml"))
    assert said is not None and "TLS failed" in said and "/r.yaml" in said
    assert explain("ctr: not found\n", ["i", "pull", "x:1"], tmp_path, None) is None


@pytest.mark.parametrize("planted", ["etc/certs.d/docker.io", "etc/cni/net.d"])
def test_write_config_refuses_a_planted_symlink_and_writes_nothing_through_it(
    tmp_path: Path, planted: str
) -> None:
    paths = make_paths(tmp_path / "w")
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "w" / planted
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    with pytest.raises(UnsafePathError) as info:
        if planted.endswith("net.d"):  # the default pod network: the node setup writes it
            network.write_default(paths, network.DEFAULT_POD_CIDR)
        else:
            write_config(paths, "1.6.20", ConfigOptions(restrict_oom_score_adj=False))
    assert "symlink" in info.value.one_line() and str(link) in info.value.one_line()
    assert list(target.iterdir()) == []


def test_an_endpoint_with_userinfo_and_a_bad_port_is_refused_unrepeated(tmp_path: Path) -> None:
    text = f"mirrors: {{docker.io: {{endpoint: ['https://bob:{PASSWORD}@m.local:99999999']}}}}"
    with pytest.raises(RegistriesError) as info:
        registries.load(_write(tmp_path, text))
    assert PASSWORD not in info.value.one_line()


def test_docker_io_credentials_also_reach_its_default_endpoint(tmp_path: Path) -> None:
    text = f"configs: {{docker.io: {{auth: {{username: bob, password: {PASSWORD}}}}}}}"
    table = registry_hosts.cri_auth(registries.load(_write(tmp_path, text)))
    assert table["docker.io"] == table["registry-1.docker.io"]
    hosts = registry_hosts.hosts_tables(registries.load(_write(tmp_path, text)))
    assert hosts["docker.io"]["header"]["Authorization"].startswith("Basic ")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_host_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "certs.d"
    (root / "r.local").mkdir(parents=True)
    os.chown(root / "r.local", 65534, 65534)
    with pytest.raises(UnsafePathError, match="owned by uid 65534"):
        safewrite.write_file(root, "r.local/hosts.toml", "x", 0o600)
    assert not (root / "r.local" / "hosts.toml").exists()
