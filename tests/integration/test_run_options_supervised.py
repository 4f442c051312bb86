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


def applied(paths: Paths, report: dict[str, Any]) -> None:
    """What --socket-group daemon, --metrics-addr and --pod-cidr did to the running containerd."""
    import grp
    import os

    assert report["state"] == "RUNNING", report
    assert os.stat(paths.socket).st_gid == grp.getgrnam("daemon").gr_gid, "socket group"
    assert report.get("metrics_addr"), "no metrics endpoint"
    assert (report.get("node") or {}).get("pod_cidr") == "10.99.0.0/16", report.get("node")


def second_build(staged: Path, tmp_path: Path) -> Path:
    """The staged payload again under another digest (a note in its provenance): the warren of
    an upgrade that carries the same containerd, so the restart and rollback paths run for real."""
    import shutil

    from warren_bundle.payload.format import pack

    dest = tmp_path / "other"
    shutil.copytree(staged / "bin", dest / "bin", symlinks=True)
    manifest = json.loads((staged / "manifest.json").read_text())
    manifest["provenance"]["note"] = "the next build"
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return pack(dest, level=1).path.parent


def test_an_upgrade_restart_and_a_rollback_keep_every_run_option(
    wpaths: Paths, staged_payload: Path, tmp_path: Path
) -> None:
    other = second_build(staged_payload, tmp_path)
    options = ["--socket-group", "daemon", "--health-interval", "2", "--registry-mirror", MIRROR]
    options += ["--pod-cidr", "10.99.0.0/16", "--metrics-addr", "127.0.0.1:0"]
    first = run_warren(wpaths, "containerd", "start", *options)
    assert first.returncode == 0, first.stderr
    try:
        before = status(wpaths)
        applied(wpaths, before)
        recorded = before["run_options"]
        assert recorded["registry_mirrors"] == [MIRROR] and recorded["pod_cidr"] == "10.99.0.0/16"

        # The new warren's plain `start` replaces the old supervisor: the options stay.
        upgraded = run_warren(wpaths, "containerd", "start", payload=other)
        assert upgraded.returncode == 0, upgraded.stderr
        after = status(wpaths)
        applied(wpaths, after)  # before the fix: root's socket, no metrics endpoint
        assert after["supervisor_pid"] != before["supervisor_pid"]
        assert Path(after["version_dir"]).parent == wpaths.versions_dir
        assert after["version_dir"] != before["version_dir"]
        assert after["run_options"] == recorded

        rolled = run_warren(wpaths, "rollback")
        assert rolled.returncode == 0, rolled.stderr
        back = status(wpaths)
        applied(wpaths, back)
        assert back["state"] == "RUNNING"
        assert back["version_dir"] == before["version_dir"]
        assert back["run_options"] == recorded
    finally:
        run_warren(wpaths, "containerd", "stop")
