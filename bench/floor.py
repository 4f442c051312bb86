"""Build the hello-world baseline with build/spec/warren.spec: same excludes and options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .context import REPO, WORK

SPEC = REPO / "build" / "spec" / "warren.spec"
HELLO = Path(__file__).resolve().parent / "hello_click.py"
NAME = "hello-click"


def floor_exe(rebuild: bool = False) -> Path:
    """The frozen hello-world, rebuilt when the spec or the script changed since the last build."""
    out = WORK / "dist" / f"{NAME}-onedir" / "warren"  # the spec freezes onedir
    inputs = (SPEC, HELLO, Path(__file__))
    if (
        not rebuild
        and out.is_file()
        and all(out.stat().st_mtime >= p.stat().st_mtime for p in inputs)
    ):
        return out
    env = {k: v for k, v in os.environ.items() if k != "WARREN_PAYLOAD_DIR"}
    # As the Makefile freezes the runtime (PYZ_STORED): its modules stored, not deflated.
    env.update(
        WARREN_ENTRY=str(HELLO), WARREN_EXE_NAME=NAME, PYINSTALLER_ZLIB_COMPRESSION_LEVEL="0"
    )
    pyinstaller = Path(sys.executable).with_name("pyinstaller")
    print(f"bench: freezing the hello-world floor with {SPEC.relative_to(REPO)}", file=sys.stderr)
    subprocess.run(
        [
            str(pyinstaller),
            "--noconfirm",
            "--log-level",
            "WARN",
            "--workpath",
            str(WORK / "pyinstaller"),
            "--distpath",
            str(WORK / "dist"),
            str(SPEC),
        ],
        env=env,
        check=True,
        cwd=REPO,
    )
    return out
