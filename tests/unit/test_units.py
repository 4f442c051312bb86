"""Unit tests of the small modules: payload, CArchive/ELF readers, protobuf, pidfiles, logs."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import psutil
import pytest
import zstandard

from warren_bundle.ctr import with_runc_defaults
from warren_bundle.errors import PayloadError, WarrenError
from warren_bundle.payload import elf, onefile
from warren_bundle.payload.format import (
    Manifest,
    Payload,
    open_members,
    read_embedded,
    read_file,
)
from warren_bundle.runtime import grpc_unix, logs, pidfile, process

from support import wait_for

# --- payload ----------------------------------------------------------------------------------


def _manifest_dict(files: list[dict]) -> dict:
    return {
        "format": 1,
        "os": "linux",
        "arch": "amd64",
        "containerd_version": "1.6.20",
        "runc_version": "1.1.5",
        "source": "test",
        "provenance": {},
        "files": files,
    }


def _raw_payload(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize(
    "evil",
    [
        "bin/../../etc/passwd",
        "/bin/containerd",
        "etc/containerd",
        "bin/sub/containerd",
        "bin/cni/sub/bridge",
        "bin/cni/..",
        "bin/sandbox/",
    ],
)
def test_payload_members_outside_bin_are_rejected(tmp_path: Path, evil: str) -> None:
    manifest = json.dumps(_manifest_dict([])).encode()
    payload_file = tmp_path / "evil.tar.zst"
    _raw_payload(payload_file, [_file("manifest.json", manifest), _file(evil, b"x")])
    payload = read_file(payload_file)
    with pytest.raises(PayloadError, match="unexpected member"), open_members(payload) as members:
        list(members)


def test_payload_links_are_rejected(tmp_path: Path) -> None:
    link = tarfile.TarInfo("bin/containerd")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    payload_file = tmp_path / "link.tar.zst"
    manifest = json.dumps(_manifest_dict([])).encode()
    _raw_payload(payload_file, [_file("manifest.json", manifest), (link, None)])
    with (
        pytest.raises(PayloadError, match="non-file member"),
        open_members(read_file(payload_file)) as members,
    ):
        list(members)


def test_bare_payload_file_without_descriptor_is_derived(tmp_path: Path) -> None:
    manifest = _manifest_dict([])
    payload_file = tmp_path / "bare.tar.zst"
    _raw_payload(payload_file, [_file("manifest.json", json.dumps(manifest).encode())])
    payload = read_file(payload_file)
    assert payload.manifest == Manifest.from_dict(manifest)
    assert len(payload.digest) == 64


def test_payload_must_start_with_manifest(tmp_path: Path) -> None:
    payload_file = tmp_path / "nomanifest.tar.zst"
    _raw_payload(payload_file, [_file("bin/runc", b"x")])
    with pytest.raises(PayloadError, match=r"does not start with manifest\.json"):
        read_file(payload_file)


def test_malformed_manifest_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="manifest is malformed"):
        Manifest.from_dict({"os": "linux"})


def test_truncated_payload_is_damaged(staged_payload: Path, tmp_path: Path) -> None:
    good = read_file(staged_payload)
    short = tmp_path / "payload.tar.zst"
    short.write_bytes((staged_payload / "payload.tar.zst").read_bytes()[: good.size // 2])
    truncated = Payload(good.digest, good.size, good.manifest, short)
    with pytest.raises(PayloadError, match=r"truncated|damaged"), open_members(truncated) as ms:
        for member in ms:
            member.stream.read()


# --- the one file's trailer / ELF --------------------------------------------------------------


def _one_file(head: bytes, payload: bytes, desc: bytes) -> bytes:
    """A one file laid out the way scripts/onefile.py lays it out (a stand-in runtime archive)."""
    runtime = onefile.RUNTIME_MAGIC + b"runtime"
    offset = len(head)
    trailer = onefile.Trailer(
        offset,
        len(runtime),
        offset + len(runtime),
        len(payload),
        offset + len(runtime) + len(payload),
        len(desc),
        hashlib.sha256(runtime).hexdigest(),
    )
    return head + runtime + payload + desc + trailer.pack()


def test_embedded_payload_read_from_a_fake_executable(staged_payload: Path, tmp_path: Path) -> None:
    data = (staged_payload / "payload.tar.zst").read_bytes()
    desc = (staged_payload / "payload.json").read_bytes()
    exe = tmp_path / "exe"
    exe.write_bytes(_one_file(b"\0" * 4096, data, desc))
    payload = read_embedded(exe)
    assert payload.embedded and payload.origin == f"embedded in {exe}"
    assert payload.digest == json.loads(desc)["digest"]
    with open_members(payload) as members:
        names = [m.name for m in members if m.stream.read() is not None]
    assert names[0] == "manifest.json" and "containerd" in names


def test_a_trailer_that_points_past_the_end_is_payload_error(
    staged_payload: Path, tmp_path: Path
) -> None:
    whole = _one_file(b"\0" * 64, b"x" * 1000, (staged_payload / "payload.json").read_bytes())
    exe = tmp_path / "cut"
    exe.write_bytes(whole[:200] + whole[-onefile.TRAILER_SIZE :])  # the middle lost
    with pytest.raises(PayloadError, match="points past the end"):
        read_embedded(exe)


def test_executable_without_archive_is_payload_error(tmp_path: Path) -> None:
    exe = tmp_path / "plain"
    exe.write_bytes(b"no archive here" * 10)
    with pytest.raises(PayloadError, match="failed to read embedded binary: no payload in"):
        read_embedded(exe)


def test_elf_arch_of_real_and_fake_binaries(tmp_path: Path) -> None:
    assert elf.arch_of(sys.executable) in ("amd64", "arm64")
    fake = tmp_path / "fake"
    fake.write_bytes(
        b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HHI", 2, 183, 1) + bytes(64)
    )
    assert elf.arch_of(str(fake)) == "arm64"
    (tmp_path / "text").write_text("#!/bin/sh\n" * 10)
    with pytest.raises(elf.NotElfError):
        elf.arch_of(str(tmp_path / "text"))


# --- protobuf wire format ---------------------------------------------------------------------


def test_protobuf_round_trip() -> None:
    encoded = grpc_unix.encode_string_field(1, "io.containerd") + grpc_unix.encode_string_field(
        2, "x" * 300
    )
    fields = grpc_unix.decode_fields(encoded + b"\x18\x96\x01")  # field 3 varint 150
    assert fields == {1: b"io.containerd", 2: b"x" * 300, 3: 150}
    assert grpc_unix.encode_string_field(1, "") == b""


def test_protobuf_truncation_is_an_error() -> None:
    with pytest.raises(grpc_unix.GrpcError):
        grpc_unix.decode_fields(b"\x08\x96")


def test_unary_call_to_missing_socket_names_it(tmp_path: Path) -> None:
    with pytest.raises(grpc_unix.GrpcError, match="socket not found"):
        grpc_unix.unary_call(str(tmp_path / "none.sock"), "/x.Y/Z", b"", 0.5)


# --- pidfiles ---------------------------------------------------------------------------------


def test_pidfile_trusts_only_the_same_process(tmp_path: Path) -> None:
    path = tmp_path / "p.pid"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pidfile.write(path, pidfile.record_for(child.pid))
        assert pidfile.read_trusted(path) is not None
        record = pidfile.read(path)
        assert record is not None
        pidfile.write(path, pidfile.PidRecord(child.pid, record.exe, record.create_time - 5))
        assert pidfile.read_trusted(path) is None, "a reused pid has another start time"
        pidfile.write(path, pidfile.PidRecord(child.pid, "/bin/other", record.create_time))
        assert pidfile.read_trusted(path) is None, "another executable"
    finally:
        child.kill()
        child.wait()
    pidfile.write(path, pidfile.record_for(os.getpid()))
    assert pidfile.read_trusted(path) is not None
    path.write_text("garbage")
    assert pidfile.read_trusted(path) is None


def test_pidfile_keeps_trusting_a_process_across_a_clock_step(tmp_path: Path) -> None:
    # A guest's clock stepped after boot (NTP, chrony's makestep) moves psutil's wall create_time
    # by the step: a record from before it names the same process by its start since boot. Seen
    # as "socket not found" from `warren ctr run` on a booted guest while containerd ran.
    path = tmp_path / "p.pid"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        now = pidfile.record_for(child.pid)
        stepped = dataclasses.replace(now, create_time=now.create_time - 37.0)
        pidfile.write(path, stepped)
        assert pidfile.read_trusted(path) is not None, "disowned by a clock step"
        assert stepped.since_boot is not None
        reused = dataclasses.replace(now, since_boot=stepped.since_boot - 5)
        pidfile.write(path, reused)
        assert pidfile.read_trusted(path) is None, "a reused pid started at another time"
    finally:
        child.kill()
        child.wait()


def test_a_process_recorded_before_its_exec_is_trusted_after_it(tmp_path: Path) -> None:
    # Popen can return while the child is still our own image (seen on a booted guest: the
    # record named warren's runtime, and status disowned the RootlessKit it had just started,
    # for good). The spawned process is known by the binary it was told to run; its start since
    # boot is fixed at the fork. Here the record is taken between fork and exec on purpose.
    sleep = process.executable_of("sleep")
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only waits for the word, then execs
        os.close(go_w)
        os.read(go_r, 1)
        os.execv(sleep, [sleep, "60"])
    os.close(go_r)
    watched: process.OsProcess | None = None
    try:
        assert pidfile.record_for(pid).exe == pidfile.exe_of(psutil.Process())
        watched = process.OsProcess(pid, None, sleep)
        os.write(go_w, b"x")
        wait_for(lambda: psutil.Process(pid).exe() == sleep, what="the child's exec")
        path = tmp_path / "containerd.pid"
        pidfile.write(path, watched.record)
        assert pidfile.read_trusted(path) is not None, "disowned by a record made before exec"
    finally:
        os.close(go_w)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        if watched is not None:
            assert watched.exited.wait(10)


def test_pidfile_record_matches_psutil() -> None:
    record = pidfile.record_for(os.getpid())
    assert record.create_time == psutil.Process().create_time()


# --- logs and backoff -------------------------------------------------------------------------


def test_log_rotation_keeps_backups_and_appends_continue(tmp_path: Path) -> None:
    log = tmp_path / "containerd.log"
    fd = logs.open_for_child(log)
    try:
        os.write(fd, b"a" * 100 + b"\n")
        assert logs.rotate_if_needed(log, max_bytes=50, backups=2)
        os.write(fd, b"after rotation\n")
    finally:
        os.close(fd)
    assert log.read_text() == "after rotation\n", "O_APPEND writes land at the new end"
    assert logs.backup(log, 1).read_text().startswith("a" * 100)
    assert not logs.rotate_if_needed(log, max_bytes=1000)


def test_tail_returns_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "l"
    log.write_text("".join(f"line {i}\n" for i in range(10000)))
    assert list(logs.tail(log, 3)) == ["line 9997", "line 9998", "line 9999"]
    assert list(logs.tail(tmp_path / "missing", 3)) == []


def test_warren_error_is_one_line() -> None:
    err = WarrenError("cause\nacross lines", "remedy  with  spacing")
    assert err.one_line() == "cause across lines; remedy  with  spacing"


# --- ctr arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "img", "id"], ["run", "--runc-binary", "B", "--runc-root", "R", "img", "id"]),
        (
            ["-n", "k8s.io", "run", "--rm", "img", "id"],
            ["-n", "k8s.io", "run", "--runc-binary", "B", "--runc-root", "R", "--rm", "img", "id"],
        ),
        (
            ["c", "create", "img", "x"],
            ["c", "create", "--runc-binary", "B", "--runc-root", "R", "img", "x"],
        ),
        (
            ["run", "--runc-root", "/mine", "i", "x"],
            ["run", "--runc-binary", "B", "--runc-root", "/mine", "i", "x"],
        ),
        (["images", "ls"], ["images", "ls"]),
        (["tasks", "ls"], ["tasks", "ls"]),
        (["version"], ["version"]),
    ],
)
def test_ctr_run_gets_bundled_runc_and_own_root(args: list[str], expected: list[str]) -> None:
    assert with_runc_defaults(args, "B", "R", systemd_cgroup=False) == expected


_RUNC = ["--runc-binary", "B", "--runc-root", "R"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["run", "--rm", "img", "web", "echo", "hi"],
            ["run", *_RUNC, "--runc-systemd-cgroup", "--cgroup", "warren.slice:warren:web",
             "--rm", "img", "web", "echo", "hi"],
        ),
        (
            ["-n", "k8s.io", "run", "-d", "--env", "A=1", "--label=x=y", "img", "c1"],
            ["-n", "k8s.io", "run", *_RUNC, "--runc-systemd-cgroup", "--cgroup",
             "warren.slice:warren:c1", "-d", "--env", "A=1", "--label=x=y", "img", "c1"],
        ),
        (
            ["c", "create", "--runc-systemd-cgroup", "img", "x"],
            ["c", "create", *_RUNC, "--cgroup", "warren.slice:warren:x",
             "--runc-systemd-cgroup", "img", "x"],
        ),
        # The caller's own cgroup wins; no id: left to ctr's own error.
        (["run", "--cgroup", "", "img", "x"], ["run", *_RUNC, "--cgroup", "", "img", "x"]),
        (["run", "img"], ["run", *_RUNC, "img"]),
        (["images", "ls"], ["images", "ls"]),
    ],
)  # fmt: skip
def test_ctr_run_gets_a_systemd_slice_when_systemd_manages_cgroups(
    args: list[str], expected: list[str]
) -> None:
    assert with_runc_defaults(args, "B", "R", systemd_cgroup=True) == expected


def test_tail_reaches_into_rotated_backups(tmp_path: Path) -> None:
    log = tmp_path / "containerd.log"
    log.write_text("old 1\nold 2\n")
    assert logs.rotate_if_needed(log, max_bytes=1)
    log.write_text("new 1\n")
    assert list(logs.tail(log, 2)) == ["old 2", "new 1"]
    assert list(logs.tail(log, 10)) == ["old 1", "old 2", "new 1"]
