"""scripts/install.sh end to end: the real frozen file served over HTTP on 127.0.0.1, installed with
`curl -sfL URL/install.sh | sh -` into temporary bin and systemd dirs.

systemd is not running here, so the installer's documented rule applies: the unit is written
because WARREN_SYSTEMD_DIR is set, and is neither enabled nor started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from warren_bundle.hostinfo import host_arch
from warren_bundle.payload import onefile

from conftest import IN_CI, have
from support import (
    INSTALL_SH,
    RELEASE_ASSET,
    FileServer,
    install_root,
    run_installer,
    session_release_key,
    sha256_file,
    sign_release,
    stage_release,
    tamper,
)

pytestmark = pytest.mark.e2e

ASSET = RELEASE_ASSET
UNIT_NAME = "warren-containerd.service"


REPO = Path(__file__).resolve().parents[2]


def pack_needing_glibc(exe: Path, glibc: str, dest: Path, staged: Path) -> None:
    """`exe` packed again with its payload's manifest saying its binaries need GLIBC_`glibc`."""
    trailer = onefile.read_trailer(exe)
    staged.mkdir()
    with open(exe, "rb") as fp:
        fp.seek(trailer.payload_offset)
        (staged / "payload.tar.zst").write_bytes(fp.read(trailer.payload_length))
        fp.seek(trailer.descriptor_offset)
        descriptor = json.loads(fp.read(trailer.descriptor_length))
    descriptor["manifest"]["requires"] = {
        "linkage": "dynamic", "glibc": glibc, "binary": "containerd", "dynamic": ["containerd"]
    }  # fmt: skip
    (staged / "payload.json").write_text(json.dumps(descriptor))
    arch = host_arch()
    subprocess.run(
        [str(REPO / ".venv/bin/python"), str(REPO / "scripts/onefile.py"), "pack",
         "--launcher", str(REPO / f"build/launcher/warren-launcher-{arch}"),
         "--runtime", str(REPO / f"build/runtime/warren-linux-{arch}-onedir"),
         "--payload-dir", str(staged), "--out", str(dest)],
        check=True, capture_output=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def releases(frozen_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """/good: a release as `make release` lays it out; /tampered: the binary altered after
    SHA256SUMS was written; /darwin: the same bytes published as the macOS asset."""
    root = tmp_path_factory.mktemp("releases")
    stage_release(root / "good", frozen_exe, ASSET)
    tampered = stage_release(root / "tampered", frozen_exe, ASSET)
    tamper(tampered / ASSET)
    stage_release(root / "darwin", frozen_exe, ASSET.replace("linux", "darwin"))
    # Published correctly, but not a program this host can run (another arch, say).
    garbage = root / "garbage.bin"
    garbage.write_bytes(b"\x7fELF" + bytes(range(256)) * 64)
    stage_release(root / "foreign", garbage, ASSET)
    # /oldhost: the default build's binaries need a glibc newer than this host's (as on an
    # older host), the static build beside it runs.
    oldhost = stage_release(root / "oldhost", frozen_exe, ASSET)
    pack_needing_glibc(frozen_exe, "99.0", oldhost / ASSET, root / "staged-99")
    shutil.copyfile(frozen_exe, oldhost / f"{ASSET}-static")
    sign_release(oldhost, session_release_key())
    with FileServer(root) as server:
        yield server


@dataclass
class Target:
    """Where one test installs to; none of these dirs exists until the installer makes it."""

    root: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "usr" / "bin"

    @property
    def systemd_dir(self) -> Path:
        return self.root / "systemd" / "system"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def binary(self) -> Path:
        return self.bin_dir / "warren"

    @property
    def unit(self) -> Path:
        return self.systemd_dir / UNIT_NAME

    @property
    def uninstaller(self) -> Path:
        return self.bin_dir / "warren-uninstall.sh"

    def env(self, base_url: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
        env.update(
            WARREN_BASE_URL=base_url,
            WARREN_BIN_DIR=str(self.bin_dir),
            WARREN_SYSTEMD_DIR=str(self.systemd_dir),
            WARREN_DATA_DIR=str(self.data_dir),
            WARREN_RUN_DIR=str(self.run_dir),
            WARREN_CONFIG_DIR=str(self.config_dir),
            WARREN_RUNTIME_DIR=str(self.root / "runtime"),
            TMPDIR=str(self.root / "tmp"),
        )
        env.update(extra)
        return env

    def tree(self) -> dict[str, str]:
        """Every path under root (but the installer's TMPDIR) with its type and content hash."""
        found = {}
        for path in sorted(self.root.rglob("*")):
            rel = str(path.relative_to(self.root))
            if rel == "tmp":
                continue
            if path.is_symlink():
                found[rel] = "link"
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = f"{path.stat().st_mode:o} {sha256_file(path)}"
        return found


@pytest.fixture
def target() -> Iterator[Target]:
    with install_root("wi") as root:
        yield Target(root)


def install(
    server: FileServer, target: Target, release: str = "good", **extra: str
) -> subprocess.CompletedProcess[str]:
    return run_installer(f"{server.url}/{release}", target.env(f"{server.url}/{release}", **extra))


def unit_settings(unit: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


# --- tests ------------------------------------------------------------------------------------


def test_curl_pipe_sh_installs_the_verified_binary_and_writes_the_unit(
    releases: FileServer, target: Target, frozen_exe: Path
) -> None:
    done = install(releases, target)

    assert done.returncode == 0, done.stderr
    assert sha256_file(target.binary) == sha256_file(frozen_exe)
    assert target.binary.stat().st_mode & 0o777 == 0o755
    assert f"sha256 {sha256_file(frozen_exe)} verified against SHA256SUMS" in done.stdout
    assert "/good/SHA256SUMS" in releases.requests and f"/good/{ASSET}" in releases.requests
    version = subprocess.run([target.binary, "version"], capture_output=True, text=True)
    assert version.returncode == 0 and "containerd " in version.stdout, version.stderr

    unit = unit_settings(target.unit)
    assert unit["ExecStart"] == [f"{target.binary} containerd run --ready-timeout 120"]
    for key, value in {
        "KillMode": "process",
        "Delegate": "yes",
        "Restart": "always",
        "RestartSec": "5",
        "LimitNOFILE": "1048576",
        "OOMScoreAdjust": "-999",
        "WantedBy": "multi-user.target",
        # READY=1 and WATCHDOG=1 come from warren itself (runtime/sdnotify.py), the main process.
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "60",
        "TimeoutStartSec": "300",
    }.items():
        assert unit[key] == [value], key
    assert sorted(unit["Environment"]) == [
        f"WARREN_CONFIG_DIR={target.config_dir}",
        f"WARREN_DATA_DIR={target.data_dir}",
        f"WARREN_RUNTIME_DIR={target.root / 'runtime'}",
        f"WARREN_RUN_DIR={target.run_dir}",
    ]
    assert "systemd is not running on this host" in done.stdout
    assert "not enabled" in done.stdout
    assert target.uninstaller.stat().st_mode & 0o777 == 0o755
    assert list((target.root / "tmp").iterdir()) == [], "the download dir was left behind"


def test_unit_and_uninstaller_pass_the_linters(releases: FileServer, target: Target) -> None:
    assert install(releases, target).returncode == 0
    if not have("systemd-analyze"):
        _missing("systemd-analyze (Debian package systemd)")
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(target.unit)], capture_output=True, text=True
    )
    # verify exits 0 even for settings it ignores; each one is a line on stderr.
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    assert subprocess.run(["dash", "-n", str(target.uninstaller)]).returncode == 0
    if not have("shellcheck"):
        _missing("shellcheck")
    check = subprocess.run(
        ["shellcheck", "-s", "sh", str(target.uninstaller)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout


def test_the_unit_has_no_stray_specifier(releases: FileServer, target: Target) -> None:
    """systemd reads "%x" in a unit as a specifier, and drops an Exec line whose specifier it does
    not know (systemd-analyze verify says nothing): every literal % must be written %%."""
    assert install(releases, target).returncode == 0
    for line in target.unit.read_text().splitlines():
        if line.startswith("Exec"):
            assert "%" not in line.replace("%%", ""), line


def test_install_sh_is_posix_sh_and_shellcheck_clean() -> None:
    assert subprocess.run(["dash", "-n", str(INSTALL_SH)]).returncode == 0
    if not have("shellcheck"):
        _missing("shellcheck")
    check = subprocess.run(["shellcheck", "-s", "sh", str(INSTALL_SH)], capture_output=True)
    assert check.returncode == 0, check.stdout.decode()


def test_same_hash_already_installed_is_not_downloaded_again(
    releases: FileServer, target: Target
) -> None:
    assert install(releases, target).returncode == 0
    before = target.binary.stat()
    releases.requests.clear()

    again = install(releases, target)

    assert again.returncode == 0, again.stderr
    assert "already this release" in again.stdout and "no download" in again.stdout
    assert f"/good/{ASSET}" not in releases.requests
    assert "/good/SHA256SUMS" in releases.requests
    after = target.binary.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_different_binary_is_replaced(
    releases: FileServer, target: Target, frozen_exe: Path
) -> None:
    target.bin_dir.mkdir(parents=True)
    shutil.copyfile("/bin/true", target.binary)
    target.binary.chmod(0o755)

    done = install(releases, target)

    assert done.returncode == 0, done.stderr
    assert f"/good/{ASSET}" in releases.requests
    assert sha256_file(target.binary) == sha256_file(frozen_exe)


def test_tampered_artifact_installs_nothing_and_prints_both_digests(
    releases: FileServer, target: Target, frozen_exe: Path
) -> None:
    done = install(releases, target, release="tampered")

    assert done.returncode == 8, (done.stdout, done.stderr)
    expected = sha256_file(frozen_exe)  # what SHA256SUMS says
    assert f"expected sha256 {expected}" in done.stderr
    got = done.stderr.split("got sha256 ")[1][:64]
    assert got != expected and len(got) == 64
    assert "nothing was installed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, "one line of error"
    assert target.tree() == {}, "the tampered download left files behind"
    assert list((target.root / "tmp").iterdir()) == []


def test_skip_download_sets_up_the_service_without_fetching(
    releases: FileServer, target: Target, frozen_exe: Path
) -> None:
    target.bin_dir.mkdir(parents=True)
    shutil.copy2(frozen_exe, target.binary)
    releases.requests.clear()

    # Air-gapped: install.sh is a local copy and nothing may be fetched.
    done = subprocess.run(
        ["sh", str(INSTALL_SH)],
        env=target.env(f"{releases.url}/good", WARREN_INSTALL_SKIP_DOWNLOAD="true"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert releases.requests == []
    assert "air-gapped install" in done.stdout
    assert unit_settings(target.unit)["ExecStart"] == [
        f"{target.binary} containerd run --ready-timeout 120"
    ]

    gone = subprocess.run([target.uninstaller], capture_output=True, text=True)
    assert gone.returncode == 0, gone.stderr
    assert target.binary.is_file(), "uninstall removed a binary the installer did not write"
    assert not target.unit.exists() and not target.uninstaller.exists()


def test_skip_download_without_the_binary_fails_and_writes_nothing(
    releases: FileServer, target: Target
) -> None:
    done = install(releases, target, WARREN_INSTALL_SKIP_DOWNLOAD="true")

    assert done.returncode == 1
    assert f"{target.binary} does not exist" in done.stderr
    assert target.tree() == {}


def test_uninstall_removes_exactly_what_install_wrote(releases: FileServer, target: Target) -> None:
    # Things that were there before and must still be there after.
    target.bin_dir.mkdir(parents=True)
    (target.bin_dir / "other-tool").write_text("#!/bin/sh\n")
    target.systemd_dir.mkdir(parents=True)
    (target.systemd_dir / "other.service").write_text("[Unit]\n")
    before = target.tree()
    assert install(releases, target).returncode == 0
    (target.data_dir / "images").mkdir(parents=True)
    (target.data_dir / "images" / "app.tar").write_bytes(b"kept without --purge")
    data_files = {k: v for k, v in target.tree().items() if k.startswith("data")}

    gone = subprocess.run([target.uninstaller], capture_output=True, text=True)

    assert gone.returncode == 0, gone.stderr
    assert target.tree() == {**before, **data_files}


def test_uninstall_purge_also_deletes_warren_dirs_and_dirs_it_created(
    releases: FileServer, target: Target
) -> None:
    assert install(releases, target).returncode == 0
    for d in (target.data_dir / "bin", target.run_dir, target.config_dir):
        d.mkdir(parents=True)
        (d / "file").write_text("x")

    # In a network namespace of its own: the purge's killall must not see this host's pod network
    # (another warren's bridge and rules, on a shared test machine).
    gone = subprocess.run(
        ["unshare", "--net", target.uninstaller, "--purge"], capture_output=True, text=True
    )

    assert gone.returncode == 0, gone.stderr
    assert target.tree() == {}, "purge left something behind"


def test_install_and_uninstall_run_without_home(releases: FileServer, target: Target) -> None:
    # A systemd unit, cloud-init's runcmd and `env -i` run the installer with HOME unset; under
    # set -u one unguarded $HOME stopped it at once with exit 2 (seen on booted guests).
    url = f"{releases.url}/good"
    env = {k: v for k, v in target.env(url).items() if k != "HOME"}

    done = run_installer(url, env)

    assert done.returncode == 0, done.stderr
    assert target.binary.is_file() and target.unit.is_file()
    gone = subprocess.run(
        ["unshare", "--net", target.uninstaller, "--purge"], capture_output=True, text=True, env=env
    )
    assert gone.returncode == 0, gone.stderr
    assert target.tree() == {}, "purge left something behind"


def test_uninstall_rejects_unknown_arguments(releases: FileServer, target: Target) -> None:
    assert install(releases, target).returncode == 0
    before = target.tree()
    bad = subprocess.run([target.uninstaller, "--purge-all"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr
    assert target.tree() == before


@pytest.mark.parametrize(
    ("setting", "value", "code", "message"),
    [
        ("WARREN_ARCH", "mips", 5, "architecture 'mips' is not supported"),
        ("WARREN_PLATFORM", "FreeBSD", 5, "operating system 'FreeBSD' is not supported"),
        ("WARREN_BIN_DIR", "relative/bin", 2, "is not an absolute path"),
        ("WARREN_DATA_DIR", "/tmp/has space", 2, "contains spaces"),
        ("WARREN_FLAVOR", "tiny", 2, "is not a build flavor"),
    ],
)
def test_bad_settings_fail_with_one_line_and_write_nothing(
    releases: FileServer, target: Target, setting: str, value: str, code: int, message: str
) -> None:
    done = install(releases, target, **{setting: value})

    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert target.tree() == {}


def test_a_binary_that_cannot_run_here_is_not_installed(
    releases: FileServer, target: Target
) -> None:
    done = install(releases, target, release="foreign")

    assert done.returncode == 5, (done.stdout, done.stderr)
    assert f"the downloaded {ASSET} does not run on this host" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert target.tree() == {}, "a binary that cannot run was left installed"


def test_the_static_build_is_installed_where_the_default_one_cannot_start(
    releases: FileServer, target: Target, frozen_exe: Path
) -> None:
    done = install(releases, target, release="oldhost")

    assert done.returncode == 0, done.stderr
    assert f"{ASSET} does not run on this host" in done.stdout
    assert f"using {ASSET}-static" in done.stdout
    assert sha256_file(target.binary) == sha256_file(frozen_exe)
    assert [r for r in releases.requests if "oldhost/warren" in r] == [
        f"/oldhost/{ASSET}",
        f"/oldhost/{ASSET}-static",
    ]
    assert not list(target.bin_dir.glob(".warren.new.*")), "a tried file was left behind"

    # Run again on the same release: the static file in place is this release.
    releases.requests.clear()
    again = install(releases, target, release="oldhost")
    assert again.returncode == 0, again.stderr
    assert f"already this release ({ASSET}-static" in again.stdout
    assert not [r for r in releases.requests if "oldhost/warren" in r], releases.requests


def test_forcing_the_dynamic_build_where_it_cannot_start_installs_nothing(
    releases: FileServer, target: Target
) -> None:
    done = install(releases, target, release="oldhost", WARREN_FLAVOR="dynamic")

    assert done.returncode == 5, (done.stdout, done.stderr)
    assert f"the downloaded {ASSET} does not run on this host" in done.stderr
    assert "leave WARREN_FLAVOR unset" in done.stderr
    assert f"/oldhost/{ASSET}-static" not in releases.requests
    assert target.tree() == {}


def test_wget_is_used_when_curl_is_missing(
    releases: FileServer, target: Target, frozen_exe: Path
) -> None:
    if not have("wget"):
        _missing("wget")
    # A PATH with every command of this host but curl.
    tools = target.root / "tools"
    tools.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
            if entry.name != "curl" and not (tools / entry.name).exists():
                (tools / entry.name).symlink_to(entry)
    env = target.env(f"{releases.url}/good", PATH=str(tools))
    assert shutil.which("curl", path=env["PATH"]) is None

    done = subprocess.run(
        ["sh", str(INSTALL_SH)], env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert f"/good/{ASSET}" in releases.requests
    assert sha256_file(target.binary) == sha256_file(frozen_exe)


def test_missing_release_file_is_a_download_error(releases: FileServer, target: Target) -> None:
    done = install(releases, target, WARREN_FLAVOR="static")  # not published in /good

    assert done.returncode == 1
    assert f"has no entry for {ASSET}-static" in done.stderr
    assert target.tree() == {}


def test_macos_installs_the_binary_and_points_at_lima(
    releases: FileServer, target: Target, frozen_exe: Path
) -> None:
    # The darwin asset here is the Linux build renamed: what is tested is the installer's path.
    # Its runtime (a Linux one) goes elsewhere: a real darwin file has none in the data dir.
    elsewhere = target.root.parent / f"{target.root.name}-runtime"
    done = install(
        releases, target, release="darwin", WARREN_PLATFORM="darwin",
        WARREN_RUNTIME_DIR=str(elsewhere),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert f"/darwin/{ASSET.replace('linux', 'darwin')}" in releases.requests
    assert sha256_file(target.binary) == sha256_file(frozen_exe)
    assert "warren lima up" in done.stdout
    assert not target.systemd_dir.exists(), "no systemd unit on macOS"
    assert "OS='darwin'" in target.uninstaller.read_text()

    gone = subprocess.run(
        [target.uninstaller],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WARREN_RUNTIME_DIR": str(elsewhere)},
    )
    shutil.rmtree(elsewhere, ignore_errors=True)
    assert gone.returncode == 0, gone.stderr
    assert target.tree() == {}


def test_read_only_usr_local_bin_falls_back_to_opt_bin(
    releases: FileServer, target: Target, root_required: None
) -> None:
    if not Path("/usr/local/bin").is_dir():
        _missing("/usr/local/bin")
    host_had_it = Path("/opt/bin/warren").exists()
    # A private mount namespace: /usr/local/bin read-only and an empty /opt, as on an
    # immutable-/usr host; nothing outside the namespace sees either.
    script = f"""
set -e
mount --make-rprivate /
mount --bind /usr/local/bin /usr/local/bin
mount -o remount,bind,ro /usr/local/bin
mount -t tmpfs tmpfs /opt
curl -sfL "$WARREN_BASE_URL/install.sh" | sh -
/opt/bin/warren -V
grep '^ExecStart=' "$WARREN_SYSTEMD_DIR/{UNIT_NAME}"
"""
    env = target.env(f"{releases.url}/good")
    del env["WARREN_BIN_DIR"]
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "/usr/local/bin is not writable" in done.stdout
    assert "warren, version" in done.stdout
    assert "ExecStart=/opt/bin/warren containerd run --ready-timeout 120" in done.stdout
    assert Path("/opt/bin/warren").exists() == host_had_it, (
        "the install leaked out of its namespace"
    )


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"CI prerequisite missing: {what}")
    pytest.skip(f"{what} is not installed")


# --- the proxy and the service's environment -----------------------------------------------------


def test_the_proxy_is_carried_into_the_service_environment(
    releases: FileServer, target: Target
) -> None:
    proxy = {
        # A password with the characters systemd and sh would otherwise read: % $ " \ `
        "HTTPS_PROXY": 'http://user:p%40$s"\\`x@192.0.2.1:3128',
        "http_proxy": "http://192.0.2.1:3128",
        "NO_PROXY": "127.0.0.1,.corp",  # the release is served on 127.0.0.1: no proxy for it
        "CONTAINERD_HTTPS_PROXY": "http://192.0.2.2:3128",
        "CONTAINERD_NO_PROXY": ".registry.corp",
        "WARREN_POD_CIDR": "10.50.0.0/16",
        "WARREN_SERVICE_CIDR": "10.96.0.0/12",
    }
    done = install(releases, target, **proxy)
    assert done.returncode == 0, done.stderr

    env_file = target.systemd_dir / f"{UNIT_NAME}.env"
    assert env_file.stat().st_mode & 0o777 == 0o600, "a proxy URL may carry a password"
    unit = unit_settings(target.unit)
    assert unit["EnvironmentFile"] == [f"-{env_file}"]
    assert unit["ExecStart"] == [
        f"{target.binary} containerd run --ready-timeout 120 --pod-cidr 10.50.0.0/16"
    ]
    assert not [v for v in unit["Environment"] if "PROXY" in v], "no proxy in the 0644 unit"
    # sh reads what systemd reads: KEY="value" with \ " $ ` escaped, and no specifier there.
    read = subprocess.run(
        ["sh", "-c", f'set -a; . "{env_file}"; env'], capture_output=True, text=True, env={}
    )
    got = dict(line.partition("=")[::2] for line in read.stdout.splitlines() if "PROXY" in line)
    no_proxy = "127.0.0.1,.corp,localhost,10.50.0.0/16,10.96.0.0/12"
    assert got == {
        "HTTPS_PROXY": proxy["HTTPS_PROXY"],
        "HTTP_PROXY": "http://192.0.2.1:3128",
        "NO_PROXY": no_proxy,
        "CONTAINERD_HTTPS_PROXY": "http://192.0.2.2:3128",
        "CONTAINERD_NO_PROXY": ".registry.corp,localhost,127.0.0.1,10.50.0.0/16,10.96.0.0/12",
    }
    assert f"NO_PROXY: {no_proxy}" in done.stdout
    assert "p%40" not in done.stdout + done.stderr

    assert subprocess.run([target.uninstaller], capture_output=True).returncode == 0
    assert not env_file.exists()


def test_without_a_proxy_the_environment_file_is_empty(
    releases: FileServer, target: Target
) -> None:
    unset = {k: "" for k in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy")}
    assert install(releases, target, **unset).returncode == 0
    env_file = target.systemd_dir / f"{UNIT_NAME}.env"
    assert [ln for ln in env_file.read_text().splitlines() if not ln.startswith("#")] == []


@pytest.mark.parametrize("cidr", ["10.1.0.0", "ten/8", "10.0.0.0/8/8", "10.0.0.0/8;x"])
def test_a_bad_pod_cidr_is_a_usage_error(releases: FileServer, target: Target, cidr: str) -> None:
    done = install(releases, target, WARREN_POD_CIDR=cidr)
    assert done.returncode == 2 and "is not an IPv4 network" in done.stderr
    assert target.tree() == {}
