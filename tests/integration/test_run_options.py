"""A real supervisor records how it was started; `start` with another setting says so (exit
10) and changes nothing, and `start --restart` applies it while keeping the other settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths

from support import run_warren

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("root_required")]

MIRROR = "docker.io=https://mirror.invalid"


def status(paths: Paths) -> dict[str, Any]:
    out = run_warren(paths, "containerd", "status", "--json")
    assert out.stdout, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def test_start_with_another_setting_is_refused_and_restart_applies_it(
    wpaths: Paths, staged_payload: Path
) -> None:
    first = run_warren(
        wpaths, "containerd", "start", "--socket-group", "root", "--health-interval", "2"
    )
    assert first.returncode == 0, first.stderr
    try:
        before = status(wpaths)
        recorded = before["run_options"]
        assert (recorded["socket_group"], recorded["health_interval"]) == ("root", 2.0)
        assert recorded["registry_mirrors"] == []

        # The defect: this said "containerd already running" and exited 0, applying nothing.
        other = run_warren(wpaths, "containerd", "start", "--registry-mirror", MIRROR)
        assert other.returncode == ExitCode.SETTINGS, other.stdout + other.stderr
        assert f"--registry-mirror: {MIRROR} (running: none)" in other.stderr
        assert "--restart" in other.stderr
        assert status(wpaths)["supervisor_pid"] == before["supervisor_pid"]

        # The same settings, or none: still "already running".
        again = run_warren(wpaths, "containerd", "start", "--socket-group", "root")
        assert again.returncode == 0 and "already running" in again.stdout, again.stderr

        restarted = run_warren(
            wpaths, "containerd", "start", "--restart", "--registry-mirror", MIRROR
        )
        assert restarted.returncode == 0, restarted.stderr
        after = status(wpaths)
        assert after["state"] == "RUNNING"
        assert after["supervisor_pid"] != before["supervisor_pid"]
        kept = after["run_options"]
        assert kept["registry_mirrors"] == [MIRROR]
        assert (kept["socket_group"], kept["health_interval"]) == ("root", 2.0)
        assert "mirror.invalid" in wpaths.config_file.read_text() or any(
            "mirror.invalid" in p.read_text() for p in wpaths.config_dir.rglob("*.toml")
        )
    finally:
        run_warren(wpaths, "containerd", "stop")
