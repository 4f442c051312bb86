"""`warren doctor` on sabotaged setups that need no running containerd."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from warren_bundle.doctor import host, payload_checks, run
from warren_bundle.doctor.base import Check, Inputs, Level
from warren_bundle.errors import ExitCode
from warren_bundle.hostinfo import kernel, mounts
from warren_bundle.paths import Paths
from warren_bundle.runtime import pidfile, rootless
from warren_bundle.runtime.rootless import Requirement

from support import doctor_lines, run_warren


def make_tmp_paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "data", tmp_path / "run", tmp_path / "etc")


def test_no_payload_fails_with_the_seeds_symptom_and_solution(tmp_path: Path) -> None:
    paths = make_tmp_paths(tmp_path)
    out = run_warren(paths, "doctor", payload=tmp_path / "missing.tar.zst")

    assert out.returncode == ExitCode.PAYLOAD, out.stdout + out.stderr
    line = doctor_lines(out.stdout)["payload"]
    assert line.startswith("FAIL  payload")
    assert "failed to read embedded binary: no payload at" in line
    assert "run 'make build' to download and embed containerd" in line
    assert out.stdout.strip().splitlines()[-1].endswith("failed")
    assert not paths.data_dir.exists(), "doctor must not create anything"


def test_a_build_without_the_payload_entry_is_binary_not_embedded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A frozen warren built without binaries: its executable holds no payload entry.
    monkeypatch.delenv("WARREN_PAYLOAD", raising=False)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/bin/true")

    check = payload_checks.check_payload(Inputs(make_tmp_paths(tmp_path), None))

    assert check.level == Level.FAIL
    assert check.exit_code == ExitCode.PAYLOAD
    assert check.message.startswith("failed to read embedded binary: no payload in /bin/true")
    assert check.remedy and "make build" in check.remedy


def test_a_damaged_payload_fails_its_digest(tmp_path: Path, staged_payload: Path) -> None:
    copy = tmp_path / "payload"
    copy.mkdir()
    for name in ("payload.tar.zst", "payload.json"):
        shutil.copy(staged_payload / name, copy / name)
    with open(copy / "payload.tar.zst", "r+b") as fp:
        fp.seek(4096)
        byte = fp.read(1)
        fp.seek(4096)
        fp.write(bytes([byte[0] ^ 0xFF]))

    out = run_warren(make_tmp_paths(tmp_path), "doctor", payload=copy)

    # Exit 3, as `warren extract` gives for the same file; 8 is the build pipeline's mismatch.
    assert out.returncode == ExitCode.PAYLOAD == 3, out.stdout
    line = doctor_lines(out.stdout)["payload"]
    assert line.startswith("FAIL") and "fails its digest" in line
    extracted = run_warren(make_tmp_paths(tmp_path / "x"), "extract", payload=copy)
    assert extracted.returncode == ExitCode.PAYLOAD, extracted.stderr


def test_damaged_binaries_fail_until_repaired(tmp_path: Path, staged_payload: Path) -> None:
    paths = make_tmp_paths(tmp_path)
    assert run_warren(paths, "extract").returncode == 0
    assert doctor_lines(run_warren(paths, "doctor").stdout)["binaries"].startswith("PASS")
    runc = paths.binary("runc")
    data = bytearray(runc.read_bytes())
    data[1000] ^= 0xFF
    runc.write_bytes(bytes(data))

    out = run_warren(paths, "doctor")

    assert out.returncode == ExitCode.PAYLOAD, out.stdout
    line = doctor_lines(out.stdout)["binaries"]
    assert line.startswith("FAIL") and "runc" in line and "warren extract --verify" in line
    assert runc.read_bytes() == bytes(data), "doctor must not repair anything itself"
    assert run_warren(paths, "extract", "--verify").returncode == 0
    assert doctor_lines(run_warren(paths, "doctor").stdout)["binaries"].startswith("PASS")


def dead_pid_record() -> pidfile.PidRecord:
    proc = subprocess.Popen(["sleep", "60"])
    record = pidfile.record_for(proc.pid)
    proc.kill()
    proc.wait()
    return record


def test_a_stale_pidfile_and_socket_warn_and_are_left_alone(
    wpaths: Paths, staged_payload: Path
) -> None:
    paths = wpaths
    paths.run_dir.mkdir(parents=True)
    record = dead_pid_record()
    pidfile.write(paths.containerd_pidfile, record)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(paths.socket))  # closed at once: a socket file nobody answers on

    out = run_warren(paths, "doctor")

    found = doctor_lines(out.stdout)
    assert found["pidfiles"].startswith("WARN")
    assert f"stale pidfile: {paths.containerd_pidfile} names pid {record.pid}" in found["pidfiles"]
    assert "the next start removes it" in found["pidfiles"]
    assert found["socket"].startswith("WARN") and f"stale socket {paths.socket}" in found["socket"]
    assert paths.containerd_pidfile.exists() and paths.socket.exists()
    if os.geteuid() == 0:
        assert out.returncode == 0, out.stdout  # warnings alone do not fail the doctor


def test_not_root_is_permission_denied_with_the_seeds_solution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    missing = Requirement("subuid", False, "no range", "as root: usermod --add-subuids …")
    monkeypatch.setattr(rootless, "requirements", lambda: [missing])

    check = host.check_privileges(Inputs(make_tmp_paths(tmp_path), None))

    assert check.level == Level.FAIL and check.exit_code == ExitCode.PERMISSION
    assert check.message.startswith("permission denied: uid 1000 cannot start containerd")
    assert check.remedy and "sudo" in check.remedy and "containerd group" in check.remedy
    assert "ls -l" in check.remedy
    assert "or set up rootless: as root: usermod --add-subuids" in check.remedy


def test_json_lists_every_check_and_the_exit_code(tmp_path: Path) -> None:
    out = run_warren(make_tmp_paths(tmp_path), "doctor", "--json", payload=tmp_path / "none")

    data = json.loads(out.stdout)
    assert out.returncode == data["exit_code"] == ExitCode.PAYLOAD
    assert data["ok"] is False
    names = [c["name"] for c in data["checks"]]
    for name in ("payload", "privileges", "data dir exec", "cgroups", "socket", "pidfiles"):
        assert name in names
    payload = next(c for c in data["checks"] if c["name"] == "payload")
    assert payload["status"] == "FAIL" and "make build" in payload["remedy"]
    assert sum(data["summary"].values()) == len(data["checks"])
    assert all(c["remedy"] is None for c in data["checks"] if c["status"] == "PASS")


@pytest.mark.parametrize(
    ("release", "level"),
    [
        ("6.18.44-fc-v657", Level.PASS),
        ("4.19.0-21-amd64", Level.PASS),
        ("3.10.0-1160.el7.x86_64", Level.WARN),
        ("3.2.0-4-amd64", Level.FAIL),
    ],
)
def test_kernel_versions(release: str, level: Level, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "release", lambda: release)
    check = host.check_kernel(Inputs(Paths.resolve(), None))
    assert check.level == level
    assert release in check.message


def test_the_mount_of_a_path_is_the_deepest_mount_point() -> None:
    proc = mounts.mount_of(Path("/proc/self/status"))
    assert proc is not None and proc.point == "/proc" and proc.fstype == "proc"
    root = mounts.mount_of(Path("/"))
    assert root is not None and root.point == "/"


def test_a_check_that_breaks_is_reported_and_the_others_still_run() -> None:
    def check_explodes(_: Inputs) -> Check:
        raise RuntimeError("boom")

    result = run._guarded(check_explodes, Inputs(Paths.resolve(), None))
    assert result.level == Level.WARN and result.name == "explodes"
    assert "RuntimeError: boom" in result.message


def test_each_line_carries_level_name_message_and_remedy() -> None:
    failed = Check("socket", Level.FAIL, "socket not found: /x", "restart containerd or Warren")
    assert (
        failed.line()
        == "FAIL  socket            socket not found: /x; restart containerd or Warren"
    )
    passed = Check("kernel", Level.PASS, "6.1", "never shown")
    assert passed.line() == "PASS  kernel            6.1"
