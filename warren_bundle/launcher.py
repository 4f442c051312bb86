"""The warren file this process runs from, and which build of it this is.

The static flavour is the one-file PyInstaller build wrapped by staticx, which carries its own libc
for older glibc and musl hosts: staticx extracts the program into a temporary bundle dir, runs it
there with its own loader, and removes the dir when that program exits. So `sys.executable` is a
path that lives only as long as this invocation; the file the user ran is in STATICX_PROG_PATH.
"""

from __future__ import annotations

import os
import sys


def _static_bundle() -> str | None:
    """staticx's bundle dir when this process runs from it (an inherited variable does not count:
    the executable itself must lie in that dir)."""
    bundle = os.environ.get("STATICX_BUNDLE_DIR")
    if not bundle or not getattr(sys, "frozen", False):
        return None
    try:
        exe = os.path.realpath("/proc/self/exe")
    except OSError:
        return None
    return bundle if exe.startswith(os.path.realpath(bundle) + os.sep) else None


def flavour() -> str:
    """ "static" (carries its own libc), "dynamic" (links the host's glibc), or "source"."""
    if not getattr(sys, "frozen", False):
        return "source"
    return "static" if _static_bundle() else "dynamic"


def executable() -> str:
    """The file to run to get this same warren again (for a detached supervisor, a unit)."""
    if _static_bundle():
        prog = os.environ.get("STATICX_PROG_PATH")
        if prog and os.path.isfile(prog):
            return os.path.realpath(prog)
    return sys.executable
