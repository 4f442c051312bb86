"""The data dir: whose it is, whether containerd can be run from it, and the room left on it."""

from __future__ import annotations

import os
import stat

from warren_bundle.doctor.base import Check, Inputs, failed, nearest_existing, passed, warned
from warren_bundle.errors import ExitCode, PayloadError, WarrenError
from warren_bundle.hostinfo import mounts

LOW_SPACE = 2**30  # containerd keeps image layers in the data dir: below this, pulls soon fail
BINARIES_ROOM = 64 * 2**20  # spare room beyond the binaries for config, state and logs


def check_data_dir(inputs: Inputs) -> Check:
    from warren_bundle.store.extract import check_safe

    name = "data dir"
    data_dir = inputs.paths.data_dir
    where = nearest_existing(data_dir)
    owner = os.stat(where).st_uid
    if os.geteuid() != 0 and owner == 0:
        # Not unsafe, just not ours: the remedy is sudo, not chown.
        return failed(
            name,
            f"permission denied: {where} belongs to root",
            "run warren with sudo, or pass --data-dir to a directory you own",
            ExitCode.PERMISSION,
        )
    try:
        check_safe(inputs.paths)
    except WarrenError as exc:
        return failed(name, exc.message, exc.remedy or "", exc.exit_code)
    if not os.access(where, os.W_OK | os.X_OK):
        return failed(
            name,
            f"permission denied: {where} is not writable by uid {os.geteuid()}",
            "run warren with sudo, or pass --data-dir to a directory you own",
            ExitCode.PERMISSION,
        )
    if where != data_dir:
        return passed(name, f"{data_dir} does not exist yet; {where} is writable to create it")
    mode = stat.S_IMODE(os.stat(data_dir).st_mode)
    return passed(name, f"{data_dir} is writable (mode {mode:o})")


def check_data_dir_exec(inputs: Inputs) -> Check:
    name = "data dir exec"
    data_dir = inputs.paths.data_dir
    where = nearest_existing(data_dir)
    mount = mounts.mount_of(where)
    point = mount.point if mount else "?"
    try:
        noexec = bool(os.statvfs(where).f_flag & os.ST_NOEXEC)
    except OSError as exc:
        return warned(name, f"cannot stat {where}: {exc.strerror}", "check the path")
    if noexec:
        return failed(
            name,
            f"data dir {data_dir} is on a noexec filesystem ({point}): containerd could not be "
            "run from it",
            f"remount it with exec (mount -o remount,exec {point}) or pass --data-dir elsewhere",
        )
    fstype = f"{mount.fstype} " if mount else ""
    return passed(name, f"{where} allows exec ({fstype}mounted at {point})")


def _binaries_size(inputs: Inputs) -> int:
    from warren_bundle.payload.format import locate

    try:
        return sum(f.size for f in locate(inputs.payload_option).manifest.files)
    except PayloadError:
        return 0


def check_free_space(inputs: Inputs) -> Check:
    name = "free space"
    where = nearest_existing(inputs.paths.data_dir)
    try:
        vfs = os.statvfs(where)
    except OSError as exc:
        return warned(name, f"cannot stat {where}: {exc.strerror}", "check the path")
    free = vfs.f_bavail * vfs.f_frsize
    needed = _binaries_size(inputs) + BINARIES_ROOM
    text = f"{free / 2**30:.1f} GiB free for {inputs.paths.data_dir}"
    remedy = "free some space or pass --data-dir on a larger filesystem"
    if free < needed:
        return failed(name, f"{text}, {needed // 2**20} MiB needed", remedy)
    if free < LOW_SPACE:
        return warned(name, f"{text}: image pulls will soon fill it", remedy)
    return passed(name, text)
