"""Extraction: cache fast path, re-extraction, verify/repair, crash safety, locking, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_bundle.errors import ExitCode, PayloadError, UnsafePathError
from warren_bundle.hostinfo import host_arch
from warren_bundle.paths import Paths
from warren_bundle.payload.format import BINARIES, Payload, pack, read_file
from warren_bundle.store.extract import ensure_extracted
from warren_bundle.store.stamp import is_current, read_stamp

from support import REPO, make_paths, run_warren, short_dir, stage_payload, wait_for


def make_payload(dest: Path, seed: str, size: int = 64 * 1024) -> Payload:
    """A small real payload (packed by the product's own packer) with distinct file contents."""
    contents = {
        name: hashlib.sha256(f"{seed}:{name}".encode()).digest() * (size // 32) for name in BINARIES
    }
    return pack(stage_payload(dest, contents, {"seed": seed}), level=1)


def snapshot(paths: Paths) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths.bin_dir.iterdir()}


def installed_hashes(paths: Paths) -> dict[str, str]:
    return {name: hashlib.sha256(paths.binary(name).read_bytes()).hexdigest() for name in BINARIES}


def expected_hashes(payload: Payload) -> dict[str, str]:
    # The four binaries: the node parts (cni/*, sandbox/*) are checked in test_node_fetch.py.
    return {f.name: f.sha256 for f in payload.manifest.files if f.name in BINARIES}


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    tmp_path.chmod(0o755)
    yield tmp_path


@pytest.fixture
def paths(base: Path) -> Paths:
    return make_paths(base)


@pytest.fixture
def payload_a(base: Path) -> Payload:
    return make_payload(base / "payload-a", "a")


@pytest.fixture
def payload_b(base: Path) -> Payload:
    return make_payload(base / "payload-b", "b")


def test_cold_extraction_installs_verified_executables(paths: Paths, payload_a: Payload) -> None:
    result = ensure_extracted(paths, payload_a)

    assert not result.cached
    assert sorted(result.written) == sorted(BINARIES)
    assert installed_hashes(paths) == expected_hashes(payload_a)
    for name in BINARIES:
        assert stat.S_IMODE(paths.binary(name).stat().st_mode) == 0o755
    assert read_stamp(paths)["digest"] == payload_a.digest  # type: ignore[index]
    assert not list(paths.data_dir.glob(".bin-new-*"))
    assert not list(paths.versions_dir.glob(".bin-new-*"))


def test_cache_hit_writes_nothing(paths: Paths, payload_a: Payload) -> None:
    ensure_extracted(paths, payload_a)
    before = snapshot(paths)

    result = ensure_extracted(paths, payload_a)

    assert result.cached
    assert result.written == []
    assert snapshot(paths) == before
    assert is_current(paths, payload_a)


def test_age_alone_never_reextracts(paths: Paths, payload_a: Payload) -> None:
    ensure_extracted(paths, payload_a)
    stamp = json.loads(paths.stamp.read_text())
    stamp["written_at"] = time.time() - 7 * 86400
    paths.stamp.write_text(json.dumps(stamp))
    before = snapshot(paths)

    assert ensure_extracted(paths, payload_a).cached
    assert snapshot(paths) == before


def test_new_digest_reextracts(paths: Paths, payload_a: Payload, payload_b: Payload) -> None:
    ensure_extracted(paths, payload_a)
    inodes = {n: i for n, (i, _) in snapshot(paths).items()}

    result = ensure_extracted(paths, payload_b)

    assert not result.cached
    assert installed_hashes(paths) == expected_hashes(payload_b)
    assert read_stamp(paths)["digest"] == payload_b.digest  # type: ignore[index]
    # Replaced, not rewritten in place: a running containerd keeps its old inode.
    assert all(paths.binary(n).stat().st_ino != inodes[n] for n in BINARIES)


def test_size_change_is_repaired_by_the_fast_path(paths: Paths, payload_a: Payload) -> None:
    ensure_extracted(paths, payload_a)
    with open(paths.binary("runc"), "ab") as fp:
        fp.write(b"extra")

    assert not ensure_extracted(paths, payload_a).cached
    assert installed_hashes(paths) == expected_hashes(payload_a)


def test_same_size_tamper_is_found_and_repaired_by_verify(paths: Paths, payload_a: Payload) -> None:
    ensure_extracted(paths, payload_a)
    victim = paths.binary("containerd")
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # a careful tamper keeps size and mtime

    assert ensure_extracted(paths, payload_a).cached, "stat-only fast path cannot see this"
    result = ensure_extracted(paths, payload_a, verify=True)

    assert result.repaired == ["containerd"]
    assert installed_hashes(paths) == expected_hashes(payload_a)


def test_verify_via_cli_reports_repair(base: Path, paths: Paths, payload_a: Payload) -> None:
    ensure_extracted(paths, payload_a)
    victim = paths.binary("ctr")
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))

    out = run_warren(paths, "extract", "--verify", payload=base / "payload-a")

    assert out.returncode == 0, out.stderr
    assert "repaired ctr" in out.stdout
    assert installed_hashes(paths) == expected_hashes(payload_a)


def test_force_rewrites(paths: Paths, payload_a: Payload) -> None:
    ensure_extracted(paths, payload_a)
    before = snapshot(paths)
    result = ensure_extracted(paths, payload_a, force=True)
    assert not result.cached
    after = snapshot(paths)
    assert all(after[n][0] != before[n][0] for n in BINARIES)


def test_damaged_payload_exits_3_and_leaves_bin_untouched(
    base: Path, paths: Paths, payload_a: Payload, payload_b: Payload
) -> None:
    ensure_extracted(paths, payload_a)
    before = snapshot(paths)
    damaged = base / "payload-b" / "payload.tar.zst"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))

    out = run_warren(paths, "extract", payload=base / "payload-b")

    assert out.returncode == ExitCode.PAYLOAD, out.stderr
    assert out.stderr.startswith("warren: failed to read embedded binary: ")
    assert "make build" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert snapshot(paths) == before
    assert read_stamp(paths)["digest"] == payload_a.digest  # type: ignore[index]
    assert not list(paths.data_dir.glob(".bin-new-*"))
    assert not list(paths.versions_dir.glob(".bin-new-*"))


def test_missing_payload_exits_3(paths: Paths, base: Path) -> None:
    out = run_warren(paths, "extract", payload=base / "nowhere")
    assert out.returncode == ExitCode.PAYLOAD
    assert "failed to read embedded binary: no payload at" in out.stderr
    assert not paths.bin_dir.exists()


def test_digest_mismatch_raises_before_install(paths: Paths, payload_a: Payload) -> None:
    wrong = Payload("0" * 64, payload_a.size, payload_a.manifest, payload_a.path)
    with pytest.raises(PayloadError, match="fails its digest"):
        ensure_extracted(paths, wrong)
    assert not paths.stamp.exists()
    # Nothing installed anywhere: no bin link, no version dir with a binary in it.
    assert not os.path.lexists(paths.bin_dir)
    assert not list(paths.versions_dir.glob("*/*"))


def test_symlinked_bin_dir_is_refused(base: Path, paths: Paths, payload_a: Payload) -> None:
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    paths.data_dir.mkdir()
    paths.bin_dir.symlink_to(elsewhere)

    out = run_warren(paths, "extract", payload=base / "payload-a")

    assert out.returncode == ExitCode.PERMISSION
    assert "is a symlink" in out.stderr
    assert list(elsewhere.iterdir()) == []


def test_group_writable_data_dir_is_refused(paths: Paths, payload_a: Payload) -> None:
    paths.data_dir.mkdir()
    paths.data_dir.chmod(0o775)
    with pytest.raises(UnsafePathError, match=r"writable by group or others.*chmod go-w"):
        ensure_extracted(paths, payload_a)


def test_symlinked_data_dir_is_refused(base: Path, payload_a: Payload) -> None:
    real = base / "real"
    real.mkdir()
    (base / "link").symlink_to(real)
    paths = Paths(base / "link", base / "run", base / "etc")
    with pytest.raises(UnsafePathError, match="symlink"):
        ensure_extracted(paths, payload_a)


def test_payload_for_another_arch_exits_5(base: Path, paths: Paths, payload_a: Payload) -> None:
    other = "arm64" if host_arch() == "amd64" else "amd64"
    out = run_warren(paths, "extract", payload=base / "payload-a", WARREN_ARCH=other)
    assert out.returncode == ExitCode.PLATFORM
    assert f"but the host is {other}" in out.stderr
    assert not paths.bin_dir.exists()


_EXTRACT_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from warren_bundle.paths import Paths
from warren_bundle.payload.format import read_file
from warren_bundle.store.extract import ensure_extracted
paths = Paths(Path({data!r}), Path({data!r}) / "run", Path({data!r}) / "etc")
result = ensure_extracted(paths, read_file(Path({payload!r})))
print(json.dumps({{"cached": result.cached, "written": result.written}}))
"""


def _extract_proc(paths: Paths, payload_dir: Path) -> subprocess.Popen[str]:
    code = _EXTRACT_SCRIPT.format(
        repo=str(REPO), data=str(paths.data_dir), payload=str(payload_dir)
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_four_concurrent_extractions_agree(base: Path, paths: Paths) -> None:
    payload = make_payload(base / "big", "big", size=4 * 2**20)
    procs = [_extract_proc(paths, base / "big") for _ in range(4)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))

    assert sum(1 for r in results if not r["cached"]) == 1, results
    assert installed_hashes(paths) == expected_hashes(payload)
    assert is_current(paths, payload)


def test_kill9_mid_extraction_then_next_run_succeeds(base: Path, staged_payload: Path) -> None:
    run_base = short_dir("kx")
    try:
        paths = make_paths(run_base)
        paths.data_dir.parent.chmod(0o755)
        old = make_payload(base / "old", "old")
        ensure_extracted(paths, old)
        new = read_file(staged_payload)

        proc = _extract_proc(paths, staged_payload)
        wait_for(
            lambda: (
                any(p.iterdir() for p in paths.versions_dir.glob(".bin-new-*"))
                or proc.poll() is not None
            ),
            timeout=60,
            interval=0.002,
            what="extraction to start writing",
        )
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "extraction finished before it could be killed"
        assert list(paths.versions_dir.glob(".bin-new-*")), "the crash left its temp dir behind"

        stamp = read_stamp(paths)
        if stamp is not None:  # killed before installing: the old set is intact
            assert installed_hashes(paths) == expected_hashes(
                old if stamp["digest"] == old.digest else new
            )
        result = ensure_extracted(paths, new)
        assert installed_hashes(paths) == expected_hashes(new)
        assert is_current(paths, new)
        assert result.cached or not list(paths.versions_dir.glob(".bin-new-*"))
    finally:
        shutil.rmtree(run_base, ignore_errors=True)


@pytest.fixture
def tiny_tmpfs(base: Path, root_required: None) -> Iterator[Path]:
    mnt = base / "mnt"
    mnt.mkdir()
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _mount(mnt: Path, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], check=True)
    mnt.chmod(0o755)


def test_noexec_data_dir_names_path_and_remedy(tiny_tmpfs: Path, base: Path) -> None:
    _mount(tiny_tmpfs, "noexec,size=16m")
    paths = Paths(tiny_tmpfs / "data", base / "run", base / "etc")
    make_payload(base / "p", "p")

    out = run_warren(paths, "extract", payload=base / "p")

    assert out.returncode == ExitCode.ERROR
    assert f"data dir {paths.data_dir} is on a noexec filesystem" in out.stderr
    assert "remount it with exec" in out.stderr


def test_full_disk_names_path_and_remedy(tiny_tmpfs: Path, base: Path) -> None:
    _mount(tiny_tmpfs, "size=64k")
    paths = Paths(tiny_tmpfs / "data", base / "run", base / "etc")
    make_payload(base / "p", "p")

    out = run_warren(paths, "extract", payload=base / "p")

    assert out.returncode == ExitCode.ERROR
    assert f"not enough space in {paths.data_dir}" in out.stderr
    assert "--data-dir" in out.stderr
    assert not (paths.bin_dir / "containerd").exists()
