"""`warren upgrade`'s checks before anything changes (store/upgrade.py): the signature with the
running warren's key, the digest, the rules; and how runtime/service.py names a service."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from warren_bundle.errors import ChecksumMismatch, ExitCode, UpgradeRefused, WarrenError
from warren_bundle.runtime import service
from warren_bundle.store import upgrade
from warren_bundle.store.upgrade import Side

from support import REPO, FileServer, make_release_key, public_key, sign_release

ASSET = "warren-linux-amd64"


def _release(dest: Path, key: Path, data: bytes = b"the next warren\n") -> Path:
    dest.mkdir(parents=True)
    (dest / ASSET).write_bytes(data)
    shutil.copyfile(REPO / "scripts" / "install.sh", dest / "install.sh")
    return sign_release(dest, key)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("keys")
    return make_release_key(root / "release.pem"), make_release_key(root / "other.pem")


def _pem(key: Path) -> str:
    return public_key(key).read_text()


def test_a_release_signed_by_the_running_key_is_copied_and_checked(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    src = _release(tmp_path / "rel", keys[0])
    got = upgrade.verified_download(str(src), ASSET, _pem(keys[0]), tmp_path / "dl")
    assert got.read_bytes() == b"the next warren\n"
    assert got.stat().st_mode & 0o111


def test_the_same_release_over_http(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    src = _release(tmp_path / "rel", keys[0])
    with FileServer(src) as server:
        got = upgrade.verified_download(server.url, ASSET, _pem(keys[0]), tmp_path / "dl")
        assert got.read_bytes() == b"the next warren\n"
        assert f"/{ASSET}" in server.requests


def test_a_release_signed_by_another_key_is_refused_with_exit_8(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    src = _release(tmp_path / "rel", keys[1])
    with pytest.raises(ChecksumMismatch, match="bad signature") as err:
        upgrade.verified_download(str(src), ASSET, _pem(keys[0]), tmp_path / "dl")
    assert err.value.exit_code == ExitCode.CHECKSUM == 8
    assert not (tmp_path / "dl" / ASSET).exists()  # the file is not even fetched


def test_a_replaced_file_fails_its_signed_digest(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    src = _release(tmp_path / "rel", keys[0])
    (src / ASSET).write_bytes(b"an attacker's warren\n")
    with pytest.raises(ChecksumMismatch, match="checksum mismatch") as err:
        upgrade.verified_download(str(src), ASSET, _pem(keys[0]), tmp_path / "dl")
    assert err.value.exit_code == 8


def test_an_unsigned_release_or_one_without_this_asset_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    src = _release(tmp_path / "rel", keys[0])
    with pytest.raises(ChecksumMismatch, match="no entry for warren-linux-arm64"):
        upgrade.verified_download(str(src), "warren-linux-arm64", _pem(keys[0]), tmp_path / "a")
    (src / "SHA256SUMS.sig").unlink()
    with pytest.raises(ChecksumMismatch, match="not signed") as err:
        upgrade.verified_download(str(src), ASSET, _pem(keys[0]), tmp_path / "b")
    assert err.value.exit_code == 8


def test_a_warren_without_a_release_key_refuses_and_names_install_sh(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    src = _release(tmp_path / "rel", keys[0])
    with pytest.raises(WarrenError, match="carries no release key") as err:
        upgrade.verified_download(str(src), ASSET, None, tmp_path / "dl")
    assert "install.sh" in str(err.value)
    assert not (tmp_path / "dl").exists()


def test_a_missing_folder_says_what_from_needs(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(WarrenError, match="does not exist") as err:
        upgrade.verified_download(str(tmp_path / "nope"), ASSET, _pem(keys[0]), tmp_path / "d")
    assert "SHA256SUMS.sig" in str(err.value)


CUR = Side("0.2.0", "1.7.24", "1.1.12", "a" * 64)


@pytest.mark.parametrize(
    ("target", "running", "refused"),
    [
        (Side("0.2.1", "2.1.9", "1.2.5", "b"), None, None),  # 1.7 LTS -> 2.1
        (Side("0.2.0", "1.7.25", "1.1.12", "b"), None, None),  # a patch, same warren
        (Side("0.1.9", "1.7.24", "1.1.12", "b"), None, "older than this warren"),
        (Side("0.3.0", "1.6.20", "1.1.5", "b"), None, "downgrade"),
        (Side("0.3.0", "2.1.9", "1.2.5", "b"), "1.6.20", "skips a minor line"),  # what runs
    ],
)
def test_the_rules_refuse_a_downgrade_or_an_unsupported_step(
    target: Side, running: str | None, refused: str | None
) -> None:
    found = upgrade.refusal(CUR, target, running)
    if refused is None:
        assert found is None
    else:
        assert found is not None and refused in found.message
        assert "nothing was changed" in found.message
        assert found.exit_code == ExitCode.ERROR  # the compat rule's exit (UpgradeRefused)


def test_the_plan_says_from_and_to_and_version_must_match(tmp_path: Path) -> None:
    target = Side("0.2.1", "2.1.9", "1.2.5", "b" * 64)
    plan = upgrade.plan(tmp_path / "w", "DIR", tmp_path / "n", CUR, target, "1.7.24", "v0.2.1")
    assert plan.lines()[:3] == [
        "warren 0.2.0 -> 0.2.1",
        "containerd 1.7.24 -> 2.1.9",
        "runc 1.1.12 -> 1.2.5",
    ]
    assert not plan.changes_nothing
    with pytest.raises(UpgradeRefused, match=r"holds warren 0\.2\.1, not v0\.3\.0"):
        upgrade.plan(tmp_path / "w", "DIR", tmp_path / "n", CUR, target, None, "v0.3.0")
    assert upgrade.plan(tmp_path / "w", "D", tmp_path / "n", CUR, CUR, None, None).changes_nothing


def test_where_the_release_is_and_which_asset() -> None:
    assert upgrade.release_source("/srv/rel", "v9") == "/srv/rel"
    assert upgrade.release_source(None, "v0.2.0").endswith("/releases/download/v0.2.0")
    assert upgrade.release_source(None, None).endswith("/releases/latest/download")
    assert upgrade.asset_name("arm64", "static") == "warren-linux-arm64-static"
    assert upgrade.asset_name("amd64", "dynamic") == "warren-linux-amd64"


def test_a_systemd_unit_is_read_from_the_cgroup_and_restarted_by_name() -> None:
    v2 = "0::/system.slice/warren-containerd.service\n"
    v1 = "12:pids:/system.slice/warren-containerd.service\n1:name=systemd:/user.slice/x.scope\n"
    unit_of = service.systemd_unit_of_cgroup
    assert unit_of(v2) == unit_of(v1) == (service.SYSTEMD, "warren-containerd.service")
    assert unit_of("0::/user.slice/user-0.slice/session-3.scope\n") is None
    unit = service.Service(service.SYSTEMD, "warren-containerd.service")
    assert unit.restart_command() == ["systemctl", "restart", "warren-containerd.service"]
    rc = service.Service(service.OPENRC, "warren-containerd", Path("/etc/init.d/w"))
    assert rc.restart_command() == ["openrc-run", "/etc/init.d/w", "restart"]
    bare = service.Service(service.OPENRC, "warren-containerd")
    assert bare.restart_command() == ["rc-service", "warren-containerd", "restart"]


def test_a_user_unit_is_found_under_the_user_manager_and_restarted_with_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """install.sh --rootless's unit runs in the user manager's cgroup: the unit is the innermost
    service (not user@UID.service), and its MainPID and restart go through `systemctl --user`."""
    user = "/user.slice/user-1000.slice/user@1000.service"
    cgroup = f"0::{user}/app.slice/warren-containerd.service\n"
    assert service.systemd_unit_of_cgroup(cgroup) == (
        service.SYSTEMD_USER, "warren-containerd.service")  # fmt: skip
    system = "0::/system.slice/warren-containerd.service\n"
    assert service.systemd_unit_of_cgroup(system) == (service.SYSTEMD, "warren-containerd.service")
    unit = service.Service(service.SYSTEMD_USER, "warren-containerd.service")
    assert unit.restart_command() == ["systemctl", "--user", "restart", "warren-containerd.service"]
    assert unit.describe() == "systemd user service warren-containerd.service"
    # A systemctl that knows the unit only in the user manager (as a user's host does).
    fake = tmp_path / "systemctl"
    fake.write_text('#!/bin/sh\nif [ "$1" = --user ]; then echo 4242; else echo 0; fi\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert service.systemd_main_pid("warren-containerd.service", service.SYSTEMD_USER) == 4242
    assert service.systemd_main_pid("warren-containerd.service") is None


def test_systemctl_runs_without_the_frozen_runtimes_library_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frozen runtime's LD_LIBRARY_PATH points at its bundled glibc: systemctl must not get
    it (a newer host's systemctl does not load with it), but the caller's own value."""
    import sys

    fake = tmp_path / "systemctl"
    fake.write_text('#!/bin/sh\necho "${LD_LIBRARY_PATH:-none}" >"$0.env"\n'
                    '[ -z "$LD_LIBRARY_PATH" ] && echo 4242 || exit 127\n')  # fmt: skip
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/runtime/_internal")
    monkeypatch.delenv("LD_LIBRARY_PATH_ORIG", raising=False)
    assert service.systemd_main_pid("warren-containerd.service") == 4242
    assert (tmp_path / "systemctl.env").read_text() == "none\n"
    monkeypatch.setenv("LD_LIBRARY_PATH_ORIG", "/callers/own")
    unit = service.Service(service.SYSTEMD, "warren-containerd.service")
    with pytest.raises(WarrenError, match="exit 127"):
        service.restart(unit, 5)
    assert (tmp_path / "systemctl.env").read_text() == "/callers/own\n"


def test_a_process_no_manager_runs_is_not_a_service() -> None:
    import os

    assert service.detect_for(os.getpid()) is None


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--from", ""], "--from is empty"),
        (["--check"], "not one (it runs from source)"),
    ],
)
def test_usage_errors_exit_2_before_anything_starts(args: list[str], said: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "warren_bundle", "upgrade", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert said in line
