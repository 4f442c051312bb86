"""Remove the unpack dirs that one-file warrens killed with SIGKILL left in the temp dir.

The one-file bootloader unpacks its Python runtime (~16 MB) into <temp>/_MEIxxxxxx, runs the
Python child, and removes the dir when the child exits. SIGKILL gives it no chance: the dir stays
forever, one more at every `kill -9`. Each start (ContainerdManager._start_embedded) and each
`warren extract` removes such dirs, and only those that are provably ours and provably unused:

1. In the temp dir the bootloader unpacks into under this environment (the parent of our own
   sys._MEIPASS when frozen; else, as the bootloader picks: $TMPDIR, $TEMP, $TMP, /tmp, /var/tmp,
   /usr/tmp), and nowhere else: we do not guess where other environments unpacked.
2. Named _MEI*, a directory itself (lstat: a symlink could point anywhere), owned by our euid
   and mode 0700, as the bootloader's mkdtemp makes it: no other user's, and no other non-root
   user could have used it.
3. Holding base_library.zip (a PyInstaller unpack dir) and MARKER (the spec adds it to warren's
   only): another program's unpack dir is not ours to judge, however stale it looks.
4. Not this process's own sys._MEIPASS.
5. Unchanged for MIN_AGE_S: a bootloader that has written its last file and not yet started its
   child has nothing open in its dir, so nothing in /proc shows it is in use; a minute is ample
   for that moment, and a leftover is removed at a later start instead.
6. Used by no live process: none maps a file under it (/proc/PID/maps: the Python child maps
   libpython and extension modules from it for its whole life, and SIGKILL of the bootloader
   leaves that child running), none has its cwd there or a file open under it (a bootloader still
   unpacking), and none has it in its environment (a child between its exec and loading
   libpython: the bootloader passes _PYI_APPLICATION_HOME_DIR and LD_LIBRARY_PATH). Processes
   we may not inspect run as another user, who by 2 cannot use the dir (root aside, and a root
   warren unpacks into dirs root owns).

The static flavour adds one more level: staticx unpacks the frozen program and its libc into
<temp>/staticx-xxxxxx (~30 MB) and removes it when that program exits; SIGKILL of staticx's own
process leaves it too. Such a dir is judged by the same rules, with 3 read as: it holds staticx's
`.staticx.prog` link naming a warren program (warren*), and 4 as: not this process's own bundle
dir (STATICX_BUNDLE_DIR). A static warren's processes keep theirs in use by 6 (they map its libc
and carry STATICX_BUNDLE_DIR in their environment).

Nothing here raises: a dir we cannot judge or remove is left alone.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from contextlib import suppress
from pathlib import Path

PREFIX = "_MEI"
STATICX_PREFIX = "staticx-"
STATICX_PROG_LINK = ".staticx.prog"
# Added by build/spec/warren.spec's datas: what tells warren's unpack dirs from other programs'.
MARKER = "warren-bundle.txt"
PYINSTALLER_FILE = "base_library.zip"
MIN_AGE_S = 60.0
_ENV_DIRS = ("TMPDIR", "TEMP", "TMP")
_FALLBACK_DIRS = ("/tmp", "/var/tmp", "/usr/tmp")


def unpack_parent() -> Path | None:
    """The dir a one-file bootloader started now would unpack into."""
    own = getattr(sys, "_MEIPASS", None)
    if own is not None:
        return Path(own).parent
    for var in _ENV_DIRS:
        value = os.environ.get(var)
        if value and os.path.isdir(value):
            return Path(value)
    for fallback in _FALLBACK_DIRS:
        if os.path.isdir(fallback):
            return Path(fallback)
    return None


def _looks_ours(path: Path, now: float) -> bool:
    """Conditions 2 to 5 (cheap: a few stat calls)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            return False
        if stat.S_IMODE(st.st_mode) != 0o700 or now - st.st_mtime < MIN_AGE_S:
            return False
        if path.name.startswith(STATICX_PREFIX):
            prog = os.readlink(path / STATICX_PROG_LINK)
            return Path(prog).name.startswith("warren") and (path / prog).is_file()
        return (path / PYINSTALLER_FILE).is_file() and (path / MARKER).is_file()
    except OSError:
        return False


def _own_dirs() -> set[str]:
    own = {getattr(sys, "_MEIPASS", None), os.environ.get("STATICX_BUNDLE_DIR")}
    return {os.path.realpath(d) for d in own if d}


def candidates(parent: Path, now: float | None = None) -> list[Path]:
    own = _own_dirs()
    when = time.time() if now is None else now
    found = []
    with suppress(OSError), os.scandir(parent) as entries:
        for entry in entries:
            if not entry.name.startswith((PREFIX, STATICX_PREFIX)):
                continue
            path = Path(entry.path)
            if os.path.realpath(path) not in own and _looks_ours(path, when):
                found.append(path)
    return found


def _uses(pid: str, prefixes: dict[Path, str]) -> set[Path]:
    """Which of the dirs the process uses (maps, cwd, open files, environment)."""
    proc = f"/proc/{pid}"
    used: set[Path] = set()

    def note(text: str) -> None:
        used.update(d for d, prefix in prefixes.items() if (text + "/").startswith(prefix))

    with suppress(OSError):
        with open(f"{proc}/maps", errors="surrogateescape") as maps_file:
            maps = maps_file.read()
        used.update(d for d, prefix in prefixes.items() if prefix in maps)
    with suppress(OSError):
        note(os.readlink(f"{proc}/cwd"))
    with suppress(OSError):
        for fd in os.listdir(f"{proc}/fd"):
            with suppress(OSError):
                note(os.readlink(f"{proc}/fd/{fd}"))
    with suppress(OSError):
        with open(f"{proc}/environ", "rb") as environ_file:
            environ = os.fsdecode(environ_file.read())
        for variable in environ.split("\0"):
            for value in variable.partition("=")[2].split(os.pathsep):
                note(value)
    return used


def in_use(dirs: list[Path]) -> set[Path]:
    """Condition 6: the dirs some live process uses."""
    prefixes = {d: str(d) + "/" for d in dirs}
    used: set[Path] = set()
    with suppress(OSError):
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                used |= _uses(pid, prefixes)
    return used


def remove_stale_unpack_dirs(parent: Path | None = None) -> list[Path]:
    """Remove our unused leftover unpack dirs in `parent` (default: unpack_parent()).

    Returns the dirs it removed.
    """
    where = parent if parent is not None else unpack_parent()
    if where is None:
        return []
    # Real paths: /proc shows them so.
    found = candidates(Path(os.path.realpath(where)))
    if not found:
        return []
    import shutil

    busy = in_use(found)
    removed = []
    for path in found:
        if path in busy:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append(path)
    return removed
