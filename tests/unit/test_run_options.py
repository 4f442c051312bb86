"""How containerd was started survives a restart, and `start` with other settings says so.

The supervisor records its RunOptions in its state file. These tests write such a state file,
stand in for the running supervisor (its pid, `control.stop`) and catch the argv of the
supervisor that a rollback, an upgrade's restart or `start --restart` would spawn: the spawn
itself (subprocess.Popen in runtime/control.py) is the seam, so nothing is started.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_extract import make_payload

from warren_bundle.cli.main import main
from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths
from warren_bundle.payload.format import Payload
from warren_bundle.runtime import control, statefile
from warren_bundle.runtime.options import RunOptions
from warren_bundle.store.extract import ensure_extracted
from warren_bundle.store.stamp import read_stamp_in

from support import make_paths

SUPERVISOR_PID = 4242
STARTED_WITH = RunOptions(
    socket_group="daemon",
    registry_mirrors=("docker.io=https://mirror.local",),
    ready_timeout=45.0,
    health_interval=0.5,
    metrics_addr="127.0.0.1:9911",
    pod_cidr="10.99.0.0/16",
)


class Spawned(Exception):
    """Raised by the fake Popen: the argv is what we came for."""


class FakeProcess:
    pid = SUPERVISOR_PID


class Running:
    """A supervisor that runs until `control.stop` is called; the argv of the next spawn."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.alive = True
        self.argv: list[str] = []
        monkeypatch.setattr(control, "require_root", lambda action, paths=None: None)
        monkeypatch.setattr(
            control, "supervisor_process", lambda paths: FakeProcess() if self.alive else None
        )
        monkeypatch.setattr(control, "stop", self._stop)
        monkeypatch.setattr(control.health, "is_serving", lambda socket, timeout: True)
        monkeypatch.setattr(subprocess, "Popen", self._popen)

    def _stop(self, paths: Paths, timeout: float = 10.0) -> str:
        self.alive = False
        return f"stopped warren supervisor pid {SUPERVISOR_PID}"

    def _popen(self, argv: list[str], **_kw: Any) -> None:
        self.argv = list(argv)
        raise Spawned

    def run_args(self) -> list[str]:
        return self.argv[self.argv.index("run") + 1 :]


def _record(paths: Paths, version_dir: Path, options: RunOptions | None) -> None:
    report: dict[str, Any] = {
        "state": "RUNNING",
        "supervisor_pid": SUPERVISOR_PID,
        "version_dir": str(version_dir),
        "containerd_version": read_stamp_in(version_dir)["containerd_version"],  # type: ignore[index]
    }
    if options is not None:
        report["run_options"] = options.to_dict()
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    statefile.write(paths, report)  # type: ignore[arg-type]


def _warren(paths: Paths, *args: str) -> int:
    root = ["--data-dir", str(paths.data_dir), "--run-dir", str(paths.run_dir)]
    root += ["--config-dir", str(paths.config_dir)]
    with pytest.raises(SystemExit) as exited:
        main([*root, *args])
    return int(exited.value.code or 0)


def _assert_started_with(args: list[str], options: RunOptions) -> None:
    assert args == options.args(), f"restarted with {args}, not {options.args()}"


@pytest.fixture
def two_versions(tmp_path: Path) -> tuple[Paths, Payload, Payload]:
    """Version A extracted, then B (A is the previous one), in a store under tmp_path."""
    tmp_path.chmod(0o755)
    paths = make_paths(tmp_path)
    a = make_payload(tmp_path / "a", "a")
    b = make_payload(tmp_path / "b", "b")
    ensure_extracted(paths, a)
    ensure_extracted(paths, b)
    return paths, a, b


def test_rollback_restarts_with_every_option_it_was_started_with(
    two_versions: tuple[Paths, Payload, Payload], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, _, b = two_versions
    _record(paths, paths.version_dir(b.digest), STARTED_WITH)
    running = Running(monkeypatch)
    with pytest.raises(Spawned):
        _warren(paths, "rollback")
    assert not running.alive
    _assert_started_with(running.run_args(), STARTED_WITH)


def test_rollback_ready_timeout_given_replaces_only_that(
    two_versions: tuple[Paths, Payload, Payload], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, _, b = two_versions
    _record(paths, paths.version_dir(b.digest), STARTED_WITH)
    running = Running(monkeypatch)
    with pytest.raises(Spawned):
        _warren(paths, "rollback", "--ready-timeout", "12")
    _assert_started_with(
        running.run_args(), RunOptions(**{**vars(STARTED_WITH), "ready_timeout": 12.0})
    )


def test_an_upgrade_restart_keeps_the_options_it_was_started_with(
    two_versions: tuple[Paths, Payload, Payload], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The supervisor runs version A; `start` from the warren that carries B replaces it.
    paths, a, b = two_versions
    _record(paths, paths.version_dir(a.digest), STARTED_WITH)
    running = Running(monkeypatch)
    with pytest.raises(Spawned):
        _warren(paths, "--payload", str(b.path), "containerd", "start")
    assert not running.alive
    _assert_started_with(running.run_args(), STARTED_WITH)


def test_start_with_a_different_setting_says_which_and_exits_non_zero(
    two_versions: tuple[Paths, Payload, Payload],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths, _, b = two_versions
    _record(paths, paths.version_dir(b.digest), RunOptions(socket_group="daemon"))
    running = Running(monkeypatch)
    mirror = "docker.io=https://other.local"
    code = _warren(
        paths, "--payload", str(b.path), "containerd", "start", "--registry-mirror", mirror
    )
    err = capsys.readouterr().err
    assert code == ExitCode.SETTINGS == 10
    assert f"--registry-mirror: {mirror} (running: none)" in err
    assert "--restart" in err and "stop" in err
    assert running.alive and not running.argv  # nothing stopped, nothing started


def test_start_with_the_same_or_no_settings_is_already_running(
    two_versions: tuple[Paths, Payload, Payload],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths, _, b = two_versions
    _record(paths, paths.version_dir(b.digest), RunOptions(socket_group="daemon"))
    running = Running(monkeypatch)
    assert _warren(paths, "--payload", str(b.path), "containerd", "start") == 0
    assert "containerd already running" in capsys.readouterr().out
    argv = ["--payload", str(b.path), "containerd", "start", "--socket-group", "daemon"]
    assert _warren(paths, *argv) == 0
    assert running.alive and not running.argv


def test_start_restart_applies_the_new_setting_and_keeps_the_others(
    two_versions: tuple[Paths, Payload, Payload], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, _, b = two_versions
    _record(paths, paths.version_dir(b.digest), STARTED_WITH)
    running = Running(monkeypatch)
    mirror = "quay.io=https://q.local"
    with pytest.raises(Spawned):
        _warren(
            paths, "--payload", str(b.path), "containerd", "start", "--restart",
            "--registry-mirror", mirror,
        )  # fmt: skip
    assert not running.alive
    wanted = RunOptions(**{**vars(STARTED_WITH), "registry_mirrors": (mirror,)})
    _assert_started_with(running.run_args(), wanted)


def test_run_options_round_trip_through_the_state_file() -> None:
    assert RunOptions.from_dict(STARTED_WITH.to_dict()) == STARTED_WITH
    assert "force" not in STARTED_WITH.to_dict()
    assert RunOptions.from_dict(None) is None
    assert RunOptions.from_dict({"socket_group": "g", "unknown": 1}) == RunOptions(socket_group="g")


def test_a_library_manager_records_what_it_runs_with(tmp_path: Path) -> None:
    # The library gets what the CLI gets: a ContainerdManager built without RunOptions records
    # the options it was given, so a rollback from the CLI keeps them too.
    from warren_bundle.runtime.config import ConfigOptions
    from warren_bundle.runtime.settings import Settings
    from warren_bundle.runtime.supervisor import ContainerdManager

    mgr = ContainerdManager(
        paths=make_paths(tmp_path),
        config_options=ConfigOptions(
            socket_group="daemon",
            registry_mirrors={"docker.io": ["https://mirror.local"]},
            pod_cidr="10.99.0.0/16",
        ),
        settings=Settings(ready_timeout=45.0, health_interval=0.5),
    )
    recorded = RunOptions.from_dict(mgr.status()["run_options"])
    assert recorded == RunOptions(
        socket_group="daemon",
        registry_mirrors=("docker.io=https://mirror.local",),
        ready_timeout=45.0,
        health_interval=0.5,
        pod_cidr="10.99.0.0/16",
    )
    assert (
        ContainerdManager(paths=make_paths(tmp_path), use_external=True).status()["run_options"]
        is None
    )
