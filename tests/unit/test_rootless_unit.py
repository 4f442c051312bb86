"""Rootless pieces without RootlessKit running: the user's dirs, the refusals before anything
starts, RootlessKit's command line, ctr's added flags, the doctor's checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from warren_bundle.ctr import with_rootless_defaults
from warren_bundle.doctor.base import Level
from warren_bundle.doctor.rootless import as_check
from warren_bundle.errors import ExitCode, PermissionDeniedError, UsageError
from warren_bundle.paths import DEFAULT_RUN_DIR, Paths
from warren_bundle.runtime import rootless
from warren_bundle.runtime.options import RunOptions, publish_problem
from warren_bundle.sockets import candidates


@pytest.fixture
def user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A user (uid 1000) with HOME=tmp_path and no XDG variables but XDG_RUNTIME_DIR's."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "WARREN_DATA_DIR", "WARREN_RUN_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("WARREN_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    return tmp_path


def test_a_users_defaults_follow_xdg(user: Path) -> None:
    paths = Paths.resolve()
    assert paths.data_dir == user / ".local" / "share" / "warren"
    assert paths.config_dir == user / ".config" / "warren"
    assert paths.run_dir == user / "xdg" / "warren"
    assert paths.rootlesskit_dir == user / "xdg" / "warren" / "rootlesskit"


def test_a_users_socket_comes_before_roots(user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WARREN_CONTAINERD_SOCKET", "CONTAINERD_ADDRESS", "WARREN_SYSTEM_SOCKET"):
        monkeypatch.delenv(var, raising=False)
    found = [(c.kind, c.path) for c in candidates(Paths.resolve())]
    assert found == [
        ("embedded", str(user / "xdg" / "warren" / "containerd.sock")),
        ("embedded-root", "/run/warren-containerd/containerd.sock"),
        ("system", "/run/containerd/containerd.sock"),
    ]


def test_without_xdg_runtime_dir_start_is_a_usage_error(
    user: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    paths = Paths.resolve()
    assert paths.run_dir == Path(DEFAULT_RUN_DIR)  # clients still find root's containerd
    with pytest.raises(UsageError) as refused:
        rootless.check_can_start(paths)
    assert refused.value.exit_code == ExitCode.USAGE
    assert "XDG_RUNTIME_DIR is unset" in str(refused.value) and "--run-dir" in str(refused.value)


def test_a_missing_prerequisite_is_exit_4_naming_its_fix_and_sudo(
    user: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rootless, "user_name", lambda: "warren-no-such-user")
    with pytest.raises(PermissionDeniedError) as refused:
        rootless.check_can_start(Paths.resolve())
    line = str(refused.value)
    assert refused.value.exit_code == ExitCode.PERMISSION
    assert "needs root, or rootless" in line and "sudo" in line
    reqs = {r.name: r for r in rootless.requirements()}
    assert not reqs["subuid"].ok and "usermod --add-subuids" in reqs["subuid"].fix
    assert reqs["cgroup-delegation"].warning_only


def test_rootlesskit_runs_containerd_with_its_own_run_containerd(user: Path) -> None:
    paths = Paths.resolve()
    argv = rootless.command(
        paths, ["/x/containerd", "--address", "s"], ["8080:80", "1.2.3.4:53:53/udp"]
    )
    assert "--net=slirp4netns" in argv and "--port-driver=builtin" in argv
    assert "--copy-up=/etc" in argv and "--copy-up=/run" in argv
    assert f"--state-dir={paths.rootlesskit_dir}" in argv
    assert "--publish=0.0.0.0:8080:80/tcp" in argv and "--publish=1.2.3.4:53:53/udp" in argv
    child = argv[argv.index("/bin/sh") :]
    assert child[:2] == ["/bin/sh", "-c"] and "rm -f /run/containerd" in child[2]
    assert child[-3:] == ["/x/containerd", "--address", "s"]


@pytest.mark.parametrize("spec", ["8080:80", "127.0.0.1:8080:80/tcp", "53:53/udp"])
def test_publish_accepts_rootlesskit_forms(spec: str) -> None:
    assert publish_problem(spec) is None


@pytest.mark.parametrize("spec", ["8080", "a:80", "8080:80/sctp", "0:80", "70000:80"])
def test_publish_refuses_other_forms(spec: str) -> None:
    assert "bad --publish" in (publish_problem(spec) or "")


def test_publish_is_a_recorded_run_option() -> None:
    opts = RunOptions(publish=("8080:80",))
    assert opts.args()[-2:] == ["--publish", "8080:80"]
    assert RunOptions.from_dict(opts.to_dict()) == opts
    assert opts.differences(RunOptions(), {"publish"}) == ["--publish: 8080:80 (running: none)"]


def test_ctr_run_gets_no_cgroup_unless_given() -> None:
    got = with_rootless_defaults(["-n", "default", "run", "--rm", "img", "id"])
    assert got == ["-n", "default", "run", "--cgroup", "", "--cpu-shares", "0", "--rm", "img", "id"]
    given = ["run", "--cgroup", "x", "--cpu-shares=5", "img", "id"]
    assert with_rootless_defaults(given) == given
    assert with_rootless_defaults(["images", "ls"]) == ["images", "ls"]


def test_doctor_turns_requirements_into_checks() -> None:
    missing = rootless.Requirement("subuid", False, "no range", "as root: usermod")
    check = as_check(missing)
    assert check.level == Level.FAIL and check.exit_code == ExitCode.PERMISSION
    assert check.line().endswith("no range; as root: usermod")
    soft = rootless.Requirement("cgroup-delegation", False, "none", "Delegate=", warning_only=True)
    assert as_check(soft).level == Level.WARN
    assert as_check(rootless.Requirement("tun", True, "", "")).level == Level.PASS


def test_rootlesskit_is_the_payloads_when_the_extracted_version_carries_it(
    user: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = Paths.resolve()
    monkeypatch.setattr(rootless.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert rootless.command(paths, ["containerd"], [])[0] == "/usr/bin/rootlesskit"
    own = paths.bin_dir / "rootlesskit"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"\x7fELF")
    own.chmod(0o755)
    assert rootless.command(paths, ["containerd"], [])[0] == str(own)


def test_rootlesskit_carried_by_the_payload_is_enough_for_the_requirement(
    user: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rootless.shutil, "which", lambda name: None)
    monkeypatch.setattr(rootless, "payload_carries_rootlesskit", lambda: False)
    assert not {r.name: r for r in rootless.requirements()}["rootlesskit"].ok
    monkeypatch.setattr(rootless, "payload_carries_rootlesskit", lambda: True)
    assert {r.name: r for r in rootless.requirements()}["rootlesskit"].ok
