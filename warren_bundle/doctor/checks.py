"""`warren doctor`: every reason the embedded containerd could fail on this host, one check each.

Each check reports PASS, WARN or FAIL with one line of what it found and, unless it passed, the
remedy. The seed's troubleshooting cases (binary not embedded, permission denied, Lima not
installed, VM fails to start, socket not found) are checks that report the seed's symptom and
solution. The doctor only looks: it creates, removes and starts nothing.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from warren_bundle.errors import ExitCode, PayloadError, WarrenError
from warren_bundle.hostinfo import cgroups, check_supported, host_arch, host_os, kernel, mounts
from warren_bundle.paths import (
    LIMA_INSTANCE,
    Paths,
    lima_home,
    lima_socket_path,
    system_socket_path,
)
from warren_bundle.runtime import health, pidfile

MIN_KERNEL = (3, 10)
RECOMMENDED_KERNEL = (4, 0)
LOW_SPACE = 2**30  # containerd keeps image layers in the data dir: below this, pulls soon fail
BINARIES_ROOM = 64 * 2**20  # spare room beyond the binaries for config, state and logs
LIMACTL_TIMEOUT = 20.0
# runc cannot confine a container without these; the others only lose their limits.
V1_REQUIRED = ("memory", "devices", "pids")
V1_RECOMMENDED = ("cpu", "cpuacct", "cpuset", "blkio", "freezer")
V2_REQUIRED = ("memory", "pids")
V2_RECOMMENDED = ("cpu", "cpuset", "io")


class Level(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    message: str
    remedy: str | None = None
    exit_code: ExitCode = ExitCode.ERROR  # the doctor's exit status when this is the first FAIL

    def line(self) -> str:
        text = self.message
        if self.remedy and self.level != Level.PASS:
            text = f"{text}; {self.remedy}"
        return f"{self.level.value}  {self.name:<17} {' '.join(text.split())}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.level.value,
            "message": self.message,
            "remedy": self.remedy if self.level != Level.PASS else None,
            "exit_code": int(self.exit_code) if self.level == Level.FAIL else 0,
        }


def _pass(name: str, message: str) -> Check:
    return Check(name, Level.PASS, message)


def _warn(name: str, message: str, remedy: str) -> Check:
    return Check(name, Level.WARN, message, remedy)


def _fail(name: str, message: str, remedy: str, code: ExitCode = ExitCode.ERROR) -> Check:
    return Check(name, Level.FAIL, message, remedy, code)


@dataclass
class Inputs:
    paths: Paths
    payload_option: str | None


# --- paths ------------------------------------------------------------------------------------


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (where it would be created)."""
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


# --- platform and payload ---------------------------------------------------------------------


def check_platform(_: Inputs) -> Check:
    try:
        goos, goarch = check_supported()
    except WarrenError as exc:
        return _fail("platform", exc.message, exc.remedy or "", exc.exit_code)
    return _pass("platform", f"{goos}/{goarch}")


def _digest_of(path: Path, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        fp.seek(offset)
        remaining = size
        while remaining > 0:
            chunk = fp.read(min(1 << 20, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def check_payload(inputs: Inputs) -> Check:
    """Seed case "Binary Not Found": the containerd binaries were not embedded at build time."""
    from warren_bundle.payload.format import locate

    name = "payload"
    try:
        payload = locate(inputs.payload_option)
        actual = _digest_of(payload.path, payload.offset, payload.size)
    except PayloadError as exc:
        return _fail(name, exc.message, exc.remedy or "", ExitCode.PAYLOAD)
    except OSError as exc:
        return _fail(
            name,
            f"failed to read embedded binary: {exc.strerror or exc}",
            "run 'make build' to download and embed containerd",
            ExitCode.PAYLOAD,
        )
    if actual != payload.digest:
        return _fail(
            name,
            f"failed to read embedded binary: {payload.origin} fails its digest "
            f"(expected {payload.digest[:12]}, got {actual[:12]})",
            "the file is damaged: download warren again, or run 'make build'",
            ExitCode.CHECKSUM,
        )
    m = payload.manifest
    if m.arch != host_arch():
        return _fail(
            name,
            f"the payload carries {m.os}/{m.arch} binaries but the host is {host_arch()}",
            f"download warren-linux-{host_arch()} instead",
            ExitCode.PLATFORM,
        )
    return _pass(
        name,
        f"containerd {m.containerd_version}, runc {m.runc_version}, "
        f"sha256:{payload.digest[:12]} intact ({payload.origin})",
    )


def check_binaries(inputs: Inputs) -> Check:
    """What `<data>/bin` holds, checked against the stamp it was written with."""
    from warren_bundle.extract import damaged_files, read_stamp
    from warren_bundle.payload.format import Manifest, locate

    name = "binaries"
    bin_dir = inputs.paths.bin_dir
    stamp = read_stamp(inputs.paths)
    if stamp is None:
        return _warn(
            name,
            f"not extracted yet into {bin_dir}",
            "'warren extract' or the first 'warren containerd start' extracts them",
        )
    try:
        recorded = Manifest.from_dict(stamp["manifest"])
    except (PayloadError, KeyError, TypeError):
        return _warn(name, f"{inputs.paths.stamp} is unreadable", "run 'warren extract --force'")
    damaged = damaged_files(inputs.paths, recorded)
    if damaged:
        return _fail(
            name,
            f"{', '.join(damaged)} in {bin_dir} no longer match their SHA-256",
            "run 'warren extract --verify' to repair them",
            ExitCode.CHECKSUM,
        )
    try:
        current = locate(inputs.payload_option).digest
    except PayloadError:
        current = None
    if current is not None and current != stamp.get("digest"):
        return _warn(
            name,
            f"{bin_dir} holds payload sha256:{str(stamp.get('digest'))[:12]}, this warren "
            f"carries sha256:{current[:12]}",
            "the next start re-extracts them ('warren extract' does it now)",
        )
    return _pass(
        name,
        f"{len(recorded.files)} binaries in {bin_dir} match their SHA-256 "
        f"(containerd {recorded.containerd_version})",
    )


# --- privileges and the data dir --------------------------------------------------------------


def check_privileges(inputs: Inputs) -> Check:
    """Seed case "Permission Denied": containerd needs root (mounts, cgroups)."""
    name = "privileges"
    if os.geteuid() == 0:
        return _pass(name, "running as root")
    sock = inputs.paths.socket
    remedy = (
        "run Warren with sudo, or add the user to the containerd group "
        f"(check: ls -l {sock} {system_socket_path()})"
    )
    if health.is_serving(sock, 1.0):
        return _warn(
            name,
            f"not root (uid {os.geteuid()}): the running containerd answers on {sock}, "
            "but starting or stopping it needs root",
            remedy,
        )
    return _fail(
        name,
        f"permission denied: uid {os.geteuid()} cannot start containerd (it needs root to "
        "mount filesystems and manage cgroups) nor use its socket",
        remedy,
        ExitCode.PERMISSION,
    )


def check_data_dir(inputs: Inputs) -> Check:
    from warren_bundle.extract import check_safe

    name = "data dir"
    data_dir = inputs.paths.data_dir
    where = _existing(data_dir)
    owner = os.stat(where).st_uid
    if os.geteuid() != 0 and owner == 0:
        # Not unsafe, just not ours: the remedy is sudo, not chown.
        return _fail(
            name,
            f"permission denied: {where} belongs to root",
            "run warren with sudo, or pass --data-dir to a directory you own",
            ExitCode.PERMISSION,
        )
    try:
        check_safe(inputs.paths)
    except WarrenError as exc:
        return _fail(name, exc.message, exc.remedy or "", exc.exit_code)
    if not os.access(where, os.W_OK | os.X_OK):
        return _fail(
            name,
            f"permission denied: {where} is not writable by uid {os.geteuid()}",
            "run warren with sudo, or pass --data-dir to a directory you own",
            ExitCode.PERMISSION,
        )
    if where != data_dir:
        return _pass(name, f"{data_dir} does not exist yet; {where} is writable to create it")
    mode = stat.S_IMODE(os.stat(data_dir).st_mode)
    return _pass(name, f"{data_dir} is writable (mode {mode:o})")


def check_data_dir_exec(inputs: Inputs) -> Check:
    name = "data dir exec"
    data_dir = inputs.paths.data_dir
    where = _existing(data_dir)
    mount = mounts.mount_of(where)
    point = mount.point if mount else "?"
    try:
        noexec = bool(os.statvfs(where).f_flag & os.ST_NOEXEC)
    except OSError as exc:
        return _warn(name, f"cannot stat {where}: {exc.strerror}", "check the path")
    if noexec:
        return _fail(
            name,
            f"data dir {data_dir} is on a noexec filesystem ({point}): containerd could not be "
            "run from it",
            f"remount it with exec (mount -o remount,exec {point}) or pass --data-dir elsewhere",
        )
    fstype = f"{mount.fstype} " if mount else ""
    return _pass(name, f"{where} allows exec ({fstype}mounted at {point})")


def _binaries_size(inputs: Inputs) -> int:
    from warren_bundle.payload.format import locate

    try:
        return sum(f.size for f in locate(inputs.payload_option).manifest.files)
    except PayloadError:
        return 0


def check_free_space(inputs: Inputs) -> Check:
    name = "free space"
    where = _existing(inputs.paths.data_dir)
    try:
        vfs = os.statvfs(where)
    except OSError as exc:
        return _warn(name, f"cannot stat {where}: {exc.strerror}", "check the path")
    free = vfs.f_bavail * vfs.f_frsize
    needed = _binaries_size(inputs) + BINARIES_ROOM
    text = f"{free / 2**30:.1f} GiB free for {inputs.paths.data_dir}"
    remedy = "free some space or pass --data-dir on a larger filesystem"
    if free < needed:
        return _fail(name, f"{text}, {needed // 2**20} MiB needed", remedy)
    if free < LOW_SPACE:
        return _warn(name, f"{text}: image pulls will soon fill it", remedy)
    return _pass(name, text)


# --- kernel features --------------------------------------------------------------------------


def check_cgroups(_: Inputs) -> Check:
    name = "cgroups"
    all_mounts = mounts.mounts()
    mode = cgroups.mode(all_mounts)
    remedy_mount = "mount the cgroup hierarchies (cgroupfs-mount) or boot with systemd"
    if mode == "none":
        return _fail(
            name, "no cgroup filesystem is mounted: runc cannot run containers", remedy_mount
        )
    if mode == "v2":
        available = cgroups.v2_controllers()
        required, recommended = V2_REQUIRED, V2_RECOMMENDED
        remedy = "enable them in the kernel (cgroup_enable=memory on the kernel command line)"
    else:
        available = cgroups.v1_controllers(all_mounts)
        required, recommended = V1_REQUIRED, V1_RECOMMENDED
        remedy = f"{remedy_mount}; enable them in the kernel (cgroup_enable=memory)"
    missing = [c for c in required if c not in available]
    if missing:
        return _fail(
            name,
            f"cgroup {mode}: controllers {', '.join(missing)} missing; runc needs them",
            remedy,
        )
    lacking = [c for c in recommended if c not in available]
    present = " ".join(c for c in (*required, *recommended) if c in available)
    if lacking:
        return _warn(
            name,
            f"cgroup {mode}: {present}; without {', '.join(lacking)} those limits do not apply",
            remedy,
        )
    return _pass(name, f"cgroup {mode}: {present}")


def check_kernel(_: Inputs) -> Check:
    name = "kernel"
    release = kernel.release()
    version = kernel.version(release)
    if version < MIN_KERNEL:
        return _fail(
            name, f"{release} is older than 3.10: containerd cannot run", "upgrade the kernel"
        )
    if version < RECOMMENDED_KERNEL:
        return _warn(name, f"{release}: 4.x or newer is recommended", "upgrade the kernel")
    return _pass(name, release)


def check_overlayfs(inputs: Inputs) -> Check:
    """warren configures the overlayfs snapshotter: without it images cannot be unpacked."""
    name = "overlayfs"
    if "overlay" in kernel.filesystems():
        found = "supported by the kernel"
    elif kernel.fs_module_dir("overlayfs").is_dir():
        found = "available as a module (loaded on first use)"
    else:
        return _fail(
            name,
            "overlayfs is not available: containerd's overlayfs snapshotter cannot unpack images",
            "load it with 'modprobe overlay' or use a kernel with CONFIG_OVERLAY_FS",
        )
    root = inputs.paths.containerd_root
    mount = mounts.mount_of(_existing(root))
    if mount is not None and mount.fstype in ("overlay", "aufs"):
        return _warn(
            name,
            f"{found}, but {root} is itself on {mount.fstype} ({mount.point}): overlay layers "
            "cannot stack on it",
            "pass --data-dir on a real filesystem (ext4, xfs) or a volume",
        )
    return _pass(name, found)


# --- the running containerd -------------------------------------------------------------------


def check_pidfiles(inputs: Inputs) -> Check:
    name = "pidfiles"
    stale, live = [], []
    for label, path in (
        ("supervisor", inputs.paths.supervisor_pidfile),
        ("containerd", inputs.paths.containerd_pidfile),
    ):
        if not path.exists():
            continue
        record = pidfile.read(path)
        if record is None:
            stale.append(f"{path} is unreadable")
        elif pidfile.alive(record) is None:
            stale.append(f"{path} names pid {record.pid}, which is gone or another program")
        else:
            live.append(f"{label} pid {record.pid}")
    if stale:
        return _warn(
            name,
            f"stale pidfile: {'; '.join(stale)}",
            "the next start removes it ('warren containerd stop' or rm does it now)",
        )
    if live:
        return _pass(name, f"{', '.join(live)} alive")
    return _pass(name, "none (nothing running)")


def check_socket(inputs: Inputs) -> Check:
    """Seed case "Socket Not Found": containerd runs but its socket does not answer."""
    name = "socket"
    sock = inputs.paths.socket
    running = [
        f"{label} pid {trusted[0].pid}"
        for label, path in (
            ("supervisor", inputs.paths.supervisor_pidfile),
            ("containerd", inputs.paths.containerd_pidfile),
        )
        if (trusted := pidfile.read_trusted(path)) is not None
    ]
    probe = health.probe(sock, 2.0)
    if probe.serving:
        owner = "" if running else " (no warren supervisor: not managed)"
        return _pass(name, f"containerd {probe.version or '?'} answers on {sock}{owner}")
    if running:
        return _fail(
            name,
            f"{probe.error or f'socket not found: {sock}'} while {' and '.join(running)} run",
            f"check 'ls -l {sock}' and 'warren containerd status'; restart containerd or Warren "
            "('warren containerd stop', then 'warren containerd start')",
            ExitCode.NOT_RUNNING,
        )
    if probe.exists:
        return _warn(
            name,
            f"stale socket {sock}: nothing answers and no containerd runs",
            f"the next start removes it (or rm {sock})",
        )
    return _warn(
        name,
        f"the embedded containerd is not running (no socket at {sock})",
        "start it with 'warren containerd start'",
    )


def check_system_containerd(inputs: Inputs) -> Check:
    from warren_bundle.sockets import detect

    name = "system containerd"
    system = system_socket_path()
    probe = health.probe(system, 1.0)
    try:
        chosen = detect(inputs.paths, timeout=1.0)
        used = f"clients ('warren socket') use the {chosen.kind} one at {chosen.path}"
    except WarrenError:
        used = "no socket answers for clients yet"
    if probe.serving:
        return _pass(name, f"containerd {probe.version or '?'} answers at {system}; {used}")
    if probe.exists:
        return _warn(
            name,
            f"{system} exists but does not answer ({probe.error})",
            "start the system containerd (systemctl start containerd) or remove the stale socket",
        )
    return _pass(name, f"none at {system}; {used}")


# --- macOS: Lima ------------------------------------------------------------------------------


def _limactl() -> str | None:
    from warren_bundle.errors import LimaError
    from warren_bundle.lima.limactl import find_limactl

    try:
        return find_limactl()
    except LimaError:
        return None


def check_lima_installed(_: Inputs) -> Check:
    """Seed case "Lima Not Installed": limactl is not in PATH."""
    name = "lima"
    limactl = _limactl()
    if limactl is None:
        return _fail(
            name,
            "Lima is not installed (limactl is not in PATH)",
            "install it with 'brew install lima' (check: which limactl)",
            ExitCode.LIMA,
        )
    return _pass(name, f"limactl at {limactl}")


def _lima_instance(limactl: str) -> dict[str, Any] | None:
    """The `warren` entry of `limactl list --json` (one JSON object per line), or None."""
    from warren_bundle.runtime.childenv import child_env

    out = subprocess.run(
        [limactl, "list", "--json"],
        capture_output=True,
        text=True,
        timeout=LIMACTL_TIMEOUT,
        env=child_env(),
        stdin=subprocess.DEVNULL,
    )
    if out.returncode != 0:
        raise WarrenError(f"'limactl list' failed: {out.stderr.strip()[:200]}")
    from warren_bundle.lima.limactl import find_instance

    return find_instance(out.stdout, LIMA_INSTANCE)


def check_lima_vm(_: Inputs) -> Check:
    """Seed case "VM Fails to Start": the VM is broken, or runs without a working socket."""
    name = "lima vm"
    limactl = _limactl()
    if limactl is None:
        return _warn(name, "not checked: Lima is not installed", "brew install lima")
    logs_hint = f"{lima_home() / LIMA_INSTANCE / 'ha.stderr.log'}"
    recreate = (
        f"check 'limactl list' and 'limactl logs {LIMA_INSTANCE}' ({logs_hint}); delete and "
        f"recreate it: limactl delete {LIMA_INSTANCE}, then 'warren lima up'"
    )
    try:
        entry = _lima_instance(limactl)
    except subprocess.TimeoutExpired:
        return _fail(
            name,
            f"'limactl list' did not answer in {LIMACTL_TIMEOUT:.0f}s",
            recreate,
            ExitCode.LIMA,
        )
    except (OSError, ValueError, WarrenError) as exc:
        return _fail(name, f"Lima VM state unknown: {exc}", recreate, ExitCode.LIMA)
    if entry is None:
        return _warn(
            name,
            f"no VM {LIMA_INSTANCE!r} yet",
            "'warren lima up' creates it (the first start downloads an image)",
        )
    status = str(entry.get("status") or "?")
    if status == "Stopped":
        return _warn(name, f"VM {LIMA_INSTANCE!r} is stopped", "start it with 'warren lima up'")
    if status != "Running":
        return _fail(
            name,
            f"Lima VM {LIMA_INSTANCE!r} won't start (status {status})",
            recreate,
            ExitCode.LIMA,
        )
    sock = lima_socket_path()
    probe = health.probe(sock, 2.0)
    if not probe.serving:
        return _fail(
            name,
            f"socket not found: VM {LIMA_INSTANCE!r} runs but {sock} does not answer "
            f"({probe.error})",
            f"check 'ls -l {sock}'; restart the VM: 'warren lima down', then 'warren lima up'",
            ExitCode.NOT_RUNNING,
        )
    return _pass(
        name, f"VM {LIMA_INSTANCE!r} Running; containerd {probe.version} answers on {sock}"
    )


# --- running them all -------------------------------------------------------------------------

CheckFn = Callable[[Inputs], Check]

LINUX_CHECKS: tuple[CheckFn, ...] = (
    check_platform,
    check_payload,
    check_binaries,
    check_privileges,
    check_data_dir,
    check_data_dir_exec,
    check_free_space,
    check_cgroups,
    check_overlayfs,
    check_kernel,
    check_pidfiles,
    check_socket,
    check_system_containerd,
)
DARWIN_CHECKS: tuple[CheckFn, ...] = (
    check_platform,
    check_data_dir,
    check_lima_installed,
    check_lima_vm,
)


def _guarded(fn: CheckFn, inputs: Inputs) -> Check:
    # A check that breaks must not hide the others' answers.
    try:
        return fn(inputs)
    except Exception as exc:  # reported as the check's own result
        name = fn.__name__.removeprefix("check_").replace("_", " ")
        return _warn(
            name,
            f"could not check: {type(exc).__name__}: {exc}",
            "the other checks are unaffected",
        )


def run_checks(paths: Paths, payload_option: str | None = None) -> list[Check]:
    inputs = Inputs(paths, payload_option)
    checks = DARWIN_CHECKS if host_os() == "darwin" else LINUX_CHECKS
    return [_guarded(fn, inputs) for fn in checks]


def exit_status(checks: list[Check]) -> int:
    """0 when nothing failed; else the exit code of the first failed check."""
    for check in checks:
        if check.level == Level.FAIL:
            return int(check.exit_code)
    return 0


def summary(checks: list[Check]) -> dict[str, int]:
    return {level.value: sum(1 for c in checks if c.level == level) for level in Level}
