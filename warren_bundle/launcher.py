"""The warren file this process runs from, and which build of it this is.

The one file is a static launcher (launcher/launcher.c) in front of the frozen runtime and the
payload. The launcher extracts the runtime once per digest (under the data dir for root, the
user's cache dir otherwise) and execs it in place, telling it in _WARREN_ONEFILE which file the
user ran and in _WARREN_RUNTIME which dir it runs from. So `sys.executable` is the runtime's
executable, and the file to run again, or to read the payload from, is the one file.
"""

from __future__ import annotations

import os
import sys

ONEFILE_ENV = "_WARREN_ONEFILE"
RUNTIME_ENV = "_WARREN_RUNTIME"


def _frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def runtime_dir() -> str | None:
    """The runtime dir this process runs from, when the launcher started it here (an inherited
    variable does not count: the executable itself must lie in that dir)."""
    runtime = os.environ.get(RUNTIME_ENV)
    if not runtime or not _frozen():
        return None
    exe = os.path.realpath(sys.executable)
    return runtime if exe.startswith(os.path.realpath(runtime) + os.sep) else None


def onefile() -> str | None:
    """The one file the user ran, when this process runs from its runtime dir."""
    prog = os.environ.get(ONEFILE_ENV)
    if runtime_dir() is None or not prog:
        return None
    prog = prog.removesuffix(" (deleted)")
    return prog if os.path.isfile(prog) else None


def executable() -> str:
    """The file to run to get this same warren again (for a detached supervisor, a unit)."""
    return onefile() or sys.executable
