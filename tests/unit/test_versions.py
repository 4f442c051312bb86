"""One dir per payload digest, bin a link to the current one; the upgrade policy; in use/prune."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_extract import expected_hashes, installed_hashes, make_payload

from warren_bundle.errors import ExitCode, UnsafePathError, UpgradeRefused
from warren_bundle.paths import Paths
from warren_bundle.payload.format import BINARIES, Payload
from warren_bundle.store import compat, versions
from warren_bundle.store.extract import ensure_extracted
from warren_bundle.store.stamp import is_current, read_stamp

from support import make_paths, run_warren, wait_for


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    tmp_path.chmod(0o755)
    return make_paths(tmp_path)


@pytest.fixture
def payload_a(tmp_path: Path) -> Payload:
    return make_payload(tmp_path / "payload-a", "a")


@pytest.fixture
def payload_b(tmp_path: Path) -> Payload:
    return make_payload(tmp_path / "payload-b", "b")


def test_each_payload_gets_its_own_dir_and_bin_links_to_the_current(
    paths: Paths, payload_a: Payload, payload_b: Payload
) -> None:
    ensure_extracted(paths, payload_a)
    dir_a = paths.version_dir(payload_a.digest)
    assert os.readlink(paths.bin_dir) == f"versions/{payload_a.digest}"
    inodes_a = {n: (dir_a / n).stat().st_ino for n in BINARIES}

    result = ensure_extracted(paths, payload_b)

    assert os.readlink(paths.bin_dir) == f"versions/{payload_b.digest}"
    assert result.previous == payload_a.digest
    assert installed_hashes(paths) == expected_hashes(payload_b)
    # The old version is kept, untouched: a running shim's file is never rewritten.
    assert {n: (dir_a / n).stat().st_ino for n in BINARIES} == inodes_a
    assert versions.previous_name(paths) == payload_a.digest
    assert not list(paths.data_dir.glob(".bin-link-*"))


def test_going_back_to_a_kept_version_switches_without_extracting(
    paths: Paths, payload_a: Payload, payload_b: Payload
) -> None:
    ensure_extracted(paths, payload_a)
    ensure_extracted(paths, payload_b)
    dir_a = paths.version_dir(payload_a.digest)
    inodes_a = {n: (dir_a / n).stat().st_ino for n in BINARIES}

    result = ensure_extracted(paths, payload_a)

    # Nothing written: a switch to a kept version counts as a cached extraction.
    assert result.written == [] and result.cached and result.previous == payload_b.digest
    assert os.readlink(paths.bin_dir) == f"versions/{payload_a.digest}"
    assert {n: (dir_a / n).stat().st_ino for n in BINARIES} == inodes_a
    assert is_current(paths, payload_a)


def test_the_old_single_dir_layout_is_moved_into_versions(
    paths: Paths, payload_a: Payload, payload_b: Payload
) -> None:
    ensure_extracted(paths, payload_a)
    # Make the old layout: bin a real dir holding payload a.
    real = paths.version_dir(payload_a.digest)
    os.unlink(paths.bin_dir)
    os.rename(real, paths.bin_dir)
    inode = paths.binary("containerd").stat().st_ino

    ensure_extracted(paths, payload_b)

    assert paths.bin_dir.is_symlink()
    assert (real / "containerd").stat().st_ino == inode, "moved by rename: same inode"
    assert versions.previous_name(paths) == payload_a.digest


def test_an_old_single_dir_bin_of_the_same_payload_is_moved_too(
    paths: Paths, payload_a: Payload
) -> None:
    # A launcher-only update: the host's old-layout bin holds this very payload.
    ensure_extracted(paths, payload_a)
    real = paths.version_dir(payload_a.digest)
    os.unlink(paths.bin_dir)
    os.rename(real, paths.bin_dir)

    assert not is_current(paths, payload_a), "the old layout is never current"
    ensure_extracted(paths, payload_a)

    assert paths.bin_dir.is_symlink()
    assert (real / "containerd").is_file(), "the version dir a start runs from exists"
    assert installed_hashes(paths) == expected_hashes(payload_a)


def test_a_foreign_symlink_named_like_ours_is_refused(
    tmp_path: Path, paths: Paths, payload_a: Payload
) -> None:
    ensure_extracted(paths, payload_a)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for target in (str(elsewhere), "versions/../../elsewhere", "../versions/x"):
        os.unlink(paths.bin_dir)
        os.symlink(target, paths.bin_dir)
        with pytest.raises(UnsafePathError, match="is a symlink"):
            ensure_extracted(paths, payload_a)
    assert list(elsewhere.iterdir()) == []


def test_a_writable_version_dir_behind_our_link_is_refused(
    paths: Paths, payload_a: Payload
) -> None:
    ensure_extracted(paths, payload_a)
    paths.version_dir(payload_a.digest).chmod(0o777)
    with pytest.raises(UnsafePathError, match=r"version dir .* writable by group or others"):
        ensure_extracted(paths, payload_a)


def test_verify_repairs_inside_the_current_version(paths: Paths, payload_a: Payload) -> None:
    ensure_extracted(paths, payload_a)
    victim = paths.version_dir(payload_a.digest) / "runc"
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))

    assert ensure_extracted(paths, payload_a, verify=True).repaired == ["runc"]
    assert installed_hashes(paths) == expected_hashes(payload_a)
    assert read_stamp(paths)["digest"] == payload_a.digest  # type: ignore[index]


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        ("1.6.20", "1.6.38", True),
        ("1.6.38", "1.6.20", True),
        ("1.6.20", "1.7.24", True),
        ("1.7.24", "2.0.0", True),
        ("1.7.24", "2.1.9", True),
        ("2.0.5", "2.1.9", True),
        ("1.6.20", "2.1.9", False),
        ("1.6.20", "1.8.0", False),
        ("1.7.24", "1.6.20", False),
        ("2.1.9", "1.7.24", False),
        ("1.7.24", "2.2.0", False),
        (None, "2.1.9", True),
    ],
)
def test_upgrade_policy(old: str | None, new: str, ok: bool) -> None:
    assert (compat.upgrade_problem(old, new) is None) == ok


def test_a_refusal_names_the_supported_path_and_force_says_what_it_risks() -> None:
    with pytest.raises(UpgradeRefused) as refused:
        compat.check_upgrade("1.6.20", "2.1.9", force=False)
    assert "skips a minor line" in str(refused.value)
    assert compat.SUPPORTED_PATH in refused.value.remedy
    assert refused.value.exit_code == ExitCode.ERROR
    warning = compat.check_upgrade("1.6.20", "2.1.9", force=True)
    assert warning and "--force" in warning and "may fail to read its metadata" in warning


def test_rollback_policy() -> None:
    assert compat.rollback_problem("1.7.24", "1.6.20", "1.7.24") is None
    assert compat.rollback_problem("1.7.24", "1.7.20", "2.1.9") is None
    assert "2.1.9 has run on this data" in (
        compat.rollback_problem("1.7.24", "1.6.20", "2.1.9") or ""
    )
    assert compat.rollback_problem("2.1.9", "1.7.24", "2.1.9")
    assert compat.rollback_problem("1.7.24", "1.5.0", "1.7.24")


def test_a_running_shim_keeps_its_version_from_being_pruned(
    paths: Paths, payload_a: Payload, payload_b: Payload, tmp_path: Path
) -> None:
    c = make_payload(tmp_path / "payload-c", "c")
    ensure_extracted(paths, payload_a)
    ensure_extracted(paths, payload_b)
    ensure_extracted(paths, c)  # a is neither current nor previous now
    shim = paths.version_dir(payload_a.digest) / "containerd-shim-runc-v2"
    shutil.copy("/bin/sleep", shim)
    proc = subprocess.Popen([str(shim), "600"])
    try:
        wait_for(lambda: versions.in_use(paths).get(payload_a.digest), what="the shim to run")
        # Replaced while it runs: /proc/<pid>/exe says "(deleted)", still this version.
        os.unlink(shim)
        listed = {v.name: v for v in versions.list_versions(paths)}
        assert listed[payload_a.digest].used_by == [proc.pid]
        assert listed[c.digest].current and listed[payload_b.digest].previous
        assert versions.prune(paths) == []
        assert paths.version_dir(payload_a.digest).is_dir()
    finally:
        proc.kill()
        proc.wait()
    removed = versions.prune(paths)
    assert [v.name for v in removed] == [payload_a.digest]
    assert not paths.version_dir(payload_a.digest).exists()
    assert paths.version_dir(payload_b.digest).is_dir(), "the previous one is kept"


def test_versions_cli_lists_json_with_sizes(
    tmp_path: Path, paths: Paths, payload_a: Payload, payload_b: Payload
) -> None:
    ensure_extracted(paths, payload_a)
    ensure_extracted(paths, payload_b)
    out = run_warren(paths, "versions", "--json", payload=tmp_path / "payload-b")
    assert out.returncode == 0, out.stderr
    import json

    found = {v["digest"]: v for v in json.loads(out.stdout)["versions"]}
    assert found[payload_b.digest]["current"] and found[payload_a.digest]["previous"]
    assert all(v["size_bytes"] > 0 for v in found.values())
    human = run_warren(paths, "versions", payload=tmp_path / "payload-b")
    assert "(current)" in human.stdout and "(previous)" in human.stdout


def test_prepare_extracts_beside_the_running_version_without_switching(
    paths: Paths, payload_a: Payload, payload_b: Payload
) -> None:
    from warren_bundle.store.extract import prepare

    ensure_extracted(paths, payload_a)
    assert sorted(prepare(paths, payload_b)) == sorted(BINARIES)
    assert os.readlink(paths.bin_dir) == f"versions/{payload_a.digest}", "bin not switched"
    assert prepare(paths, payload_b) == [], "complete: nothing written again"

    result = ensure_extracted(paths, payload_b)

    assert result.written == [] and result.previous == payload_a.digest and result.cached
    assert installed_hashes(paths) == expected_hashes(payload_b)


def test_extract_prepare_cli_writes_the_new_version_dir_and_leaves_bin(
    tmp_path: Path, paths: Paths, payload_a: Payload, payload_b: Payload
) -> None:
    """What install.sh runs before it restarts the service onto a new warren."""
    ensure_extracted(paths, payload_a)
    out = run_warren(paths, "extract", "--prepare", payload=tmp_path / "payload-b")
    assert out.returncode == 0, out.stderr
    target = paths.version_dir(payload_b.digest)
    assert out.stdout.startswith(f"{target}: extracted ") and "ready for a restart" in out.stdout
    assert os.readlink(paths.bin_dir) == f"versions/{payload_a.digest}", "bin not switched"
    assert is_current(paths, payload_a)
    again = run_warren(paths, "extract", "--prepare", payload=tmp_path / "payload-b")
    assert again.stdout == f"{target}: already extracted (payload sha256:{payload_b.digest[:12]})\n"
    # The start onto it then only switches: nothing written, so the extraction counts as cached.
    switched = run_warren(paths, "extract", payload=tmp_path / "payload-b")
    assert switched.stdout.startswith(f"{paths.bin_dir}: switched to {target}, already extracted")
    assert os.readlink(paths.bin_dir) == f"versions/{payload_b.digest}"


def test_extract_prepare_with_verify_or_force_is_a_usage_error(
    tmp_path: Path, paths: Paths, payload_b: Payload
) -> None:
    for other in ("--verify", "--force"):
        out = run_warren(paths, "extract", "--prepare", other, payload=tmp_path / "payload-b")
        assert out.returncode == ExitCode.USAGE, out.stderr
        assert "--prepare only writes a version dir" in out.stderr
    assert not paths.versions_dir.exists(), "nothing extracted"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("1.7.24", (1, 7, 24)),
        ("v2.1.9", (2, 1, 9)),
        ("1.6.20~ds1-1+deb12u3", (1, 6, 20)),
        ("2.0", (2, 0, 0)),
        ("2", (2, 0, 0)),
        ("", None),
        (None, None),
        ("unknown", None),
    ],
)
def test_one_parser_reads_every_containerd_version(text: str | None, parsed: object) -> None:
    # The config's version (2 or 3), CNI's bin_dirs (2.1), CRI's pinned label (1.7) and the
    # upgrade rules all read a version through compat.parse_version.
    from warren_bundle.node.kubelet import reports_pinned
    from warren_bundle.runtime.config import config_version_for

    assert compat.parse_version(text) == parsed
    assert config_version_for(text or "") == (3 if parsed and parsed[0] >= 2 else 2)
    assert reports_pinned(text or "") == bool(parsed and parsed[:2] >= (1, 7))
    assert compat.at_least(text, (2, 1)) == bool(parsed and parsed[:2] >= (2, 1))


def test_a_fifo_or_device_in_a_task_bundle_is_no_record_and_holds_nothing_up(
    paths: Paths, tmp_path: Path
) -> None:
    # containerd's state dir holds a bundle per task, with runc's init.pid and the shim's path.
    # A FIFO in their place used to hold `status`, `versions` and every start (read_text waits
    # for a writer); a symlink to /dev/zero would have been read into memory.
    tasks = paths.state_dir / "io.containerd.runtime.v2.task" / "default"
    fifo, device, live = tasks / "fifo", tasks / "device", tasks / "live"
    for bundle in (fifo, device, live):
        bundle.mkdir(parents=True)
    os.mkfifo(fifo / "init.pid")
    os.mkfifo(fifo / "shim-binary-path")
    (device / "init.pid").symlink_to("/dev/zero")
    (device / "shim-binary-path").symlink_to("/dev/zero")
    (live / "init.pid").write_text(f"{os.getpid()}\n")
    shim = paths.versions_dir / ("a" * 64) / "containerd-shim-runc-v2"
    (live / "shim-binary-path").write_text(str(shim))
    got = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.path[:0] = " + repr(sys.path) + "\n"
         "from pathlib import Path\n"
         "from warren_bundle.store import versions\n"
         "from support import make_paths\n"
         f"paths = make_paths(Path({str(tmp_path)!r}))\n"
         "print(versions.running_containers(paths), versions.in_use(paths))\n"],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout.strip()  # fmt: skip
    assert got == f"1 {{'{'a' * 64}': [{os.getpid()}]}}"
