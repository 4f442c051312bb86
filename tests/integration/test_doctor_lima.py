"""`warren doctor` on macOS (WARREN_PLATFORM=darwin): the seed's Lima troubleshooting cases.

The only stand-in is a fake `limactl` that answers `list --json`; the socket it forwards to is a
real containerd's when the VM is meant to be running.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths

from conftest import Supervised
from support import doctor_lines, run_warren, staged_containerd_version


def fake_limactl(bin_dir: Path, status: str | None, list_fails: bool = False) -> Path:
    """A limactl whose `list --json` reports the `warren` instance in `status` (None: absent)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    entry = json.dumps({"name": "warren", "status": status, "dir": "/nowhere"})
    other = json.dumps({"name": "default", "status": "Running"})
    listing = other if status is None else f"{other}\n{entry}"
    body = (
        "echo 'FATA[0000] cannot read instances' >&2; exit 1"
        if list_fails
        else f"cat <<'EOF'\n{listing}\nEOF"
    )
    script = bin_dir / "limactl"
    script.write_text(f'#!/bin/sh\ncase "$1" in\n  list)\n{body}\n    ;;\n  *) exit 2 ;;\nesac\n')
    script.chmod(0o755)
    return script


def darwin_doctor(
    paths: Paths, path_dirs: list[Path], lima_home: Path, *args: str
) -> tuple[int, dict[str, str], str]:
    """(exit code, {check: line}, stdout) of `warren doctor ARGS` with the platform forced."""
    out = run_warren(
        paths,
        "doctor",
        *args,
        WARREN_PLATFORM="darwin",
        PATH=os.pathsep.join([*(str(d) for d in path_dirs), "/usr/bin", "/bin"]),
        LIMA_HOME=str(lima_home),
        LIMACTL="",
    )
    return out.returncode, doctor_lines(out.stdout), out.stdout


def tmp_paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "data", tmp_path / "run", tmp_path / "etc")


def test_lima_not_installed(tmp_path: Path) -> None:
    code, found, text = darwin_doctor(tmp_paths(tmp_path), [], tmp_path / "lima")

    assert code == ExitCode.LIMA, text
    assert found["lima"].startswith("FAIL  lima")
    assert "Lima is not installed" in found["lima"]
    assert "brew install lima" in found["lima"] and "which limactl" in found["lima"]
    assert "payload" not in found and "cgroups" not in found, "Linux checks ran on macOS"


@pytest.mark.parametrize("status", ["Broken", "Starting"])
def test_a_vm_that_fails_to_start(tmp_path: Path, status: str) -> None:
    fake_limactl(tmp_path / "bin", status)

    code, found, text = darwin_doctor(tmp_paths(tmp_path), [tmp_path / "bin"], tmp_path / "lima")

    assert code == ExitCode.LIMA, text
    assert found["lima"].startswith("PASS")
    line = found["lima vm"]
    assert line.startswith("FAIL") and f"won't start (status {status})" in line
    assert "limactl list" in line and "limactl logs warren" in line
    assert "limactl delete warren" in line


def test_limactl_list_failing_is_a_vm_failure(tmp_path: Path) -> None:
    fake_limactl(tmp_path / "bin", "Running", list_fails=True)
    code, found, text = darwin_doctor(tmp_paths(tmp_path), [tmp_path / "bin"], tmp_path / "lima")
    assert code == ExitCode.LIMA, text
    assert found["lima vm"].startswith("FAIL") and "cannot read instances" in found["lima vm"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [("Stopped", "is stopped; start it with 'warren lima up'"), (None, "no VM 'warren' yet")],
)
def test_a_stopped_or_absent_vm_warns(tmp_path: Path, status: str | None, expected: str) -> None:
    fake_limactl(tmp_path / "bin", status)
    code, found, text = darwin_doctor(tmp_paths(tmp_path), [tmp_path / "bin"], tmp_path / "lima")
    assert code == 0, text
    assert found["lima vm"].startswith("WARN") and expected in found["lima vm"]


def test_a_running_vm_without_its_socket_is_socket_not_found(tmp_path: Path) -> None:
    fake_limactl(tmp_path / "bin", "Running")
    code, found, text = darwin_doctor(tmp_paths(tmp_path), [tmp_path / "bin"], tmp_path / "lima")
    assert code == ExitCode.NOT_RUNNING, text
    line = found["lima vm"]
    assert line.startswith("FAIL") and "socket not found" in line
    assert str(tmp_path / "lima" / "warren" / "sock" / "containerd.sock") in line


@pytest.mark.integration
def test_a_running_vm_whose_socket_answers_passes(supervised: Supervised, tmp_path: Path) -> None:
    fake_limactl(tmp_path / "bin", "Running")
    sock_dir = tmp_path / "lima" / "warren" / "sock"
    sock_dir.mkdir(parents=True)
    (sock_dir / "containerd.sock").symlink_to(supervised.paths.socket)

    code, _, text = darwin_doctor(
        tmp_paths(tmp_path), [tmp_path / "bin"], tmp_path / "lima", "--json"
    )

    data = json.loads(text)
    assert code == 0, text
    vm = next(c for c in data["checks"] if c["name"] == "lima vm")
    assert (
        vm["status"] == "PASS"
        and "answers on" in vm["message"]
        and staged_containerd_version() in vm["message"]
    )
