"""A kill during the stamp write leaves atomic_write's temp file; the next extraction removes it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from warren_bundle.payload.format import BINARIES, pack
from warren_bundle.store.extract import ensure_extracted
from warren_bundle.store.stamp import is_current

from support import REPO, make_paths, stage_payload

# Extracts, and SIGKILLs itself the moment atomic_write opens the stamp's temp file: a kill in
# the middle of the stamp write, at a point no timing could hit reliably.
_KILLED_IN_STAMP_WRITE = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from warren_bundle.store.extract import ensure_extracted
from warren_bundle.paths import Paths
from warren_bundle.payload.format import read_file

paths = Paths(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
payload = read_file(Path(sys.argv[5]))
# The stamp is written in the version dir, before bin is pointed at it.
stamp = paths.version_dir(payload.digest) / paths.stamp.name

def kill_in_stamp_write(frame, event, arg):
    caller = frame.f_back
    if (
        event == "call" and frame.f_code.co_name == "fdopen" and caller is not None
        and caller.f_code.co_name == "atomic_write" and caller.f_locals.get("path") == stamp
    ):
        os.kill(os.getpid(), signal.SIGKILL)

sys.setprofile(kill_in_stamp_write)
ensure_extracted(paths, payload)
"""


def test_a_stamp_temp_file_left_by_a_kill_is_removed_by_the_next_extraction(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o755)
    contents = {name: f"{name} of the test payload".encode() * 100 for name in BINARIES}
    payload = pack(stage_payload(tmp_path / "staged", contents), level=1)
    paths = make_paths(tmp_path)
    child = subprocess.run(
        [
            *(sys.executable, "-c", _KILLED_IN_STAMP_WRITE, str(REPO)),
            *(str(p) for p in (paths.data_dir, paths.run_dir, paths.config_dir, payload.path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    version_dir = paths.version_dir(payload.digest)
    temp_files = list(version_dir.glob(f".{paths.stamp.name}.*"))
    assert temp_files, "the kill left no temp file of the stamp"
    assert not paths.stamp.exists()
    assert not (version_dir / paths.stamp.name).exists()

    result = ensure_extracted(paths, payload)
    assert not result.cached
    assert is_current(paths, payload)
    assert [p.name for p in paths.bin_dir.iterdir() if p.name.startswith(".")] == [paths.stamp.name]
    assert paths.bin_dir.resolve() == version_dir.resolve()
