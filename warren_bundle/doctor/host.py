"""The host itself: platform, privileges, kernel, overlayfs and cgroups."""

from __future__ import annotations

import os

from warren_bundle.doctor.base import Check, Inputs, failed, nearest_existing, passed, warned
from warren_bundle.errors import ExitCode, WarrenError
from warren_bundle.hostinfo import cgroups, check_supported, host_os, kernel, mounts
from warren_bundle.paths import system_socket_path
from warren_bundle.runtime import health

MIN_KERNEL = (3, 10)
RECOMMENDED_KERNEL = (4, 0)
# runc cannot confine a container without these; the others only lose their limits.
V1_REQUIRED: tuple[str, ...] = ("memory", "devices", "pids")
V1_RECOMMENDED: tuple[str, ...] = ("cpu", "cpuacct", "cpuset", "blkio", "freezer")
V2_REQUIRED: tuple[str, ...] = ("memory", "pids")
V2_RECOMMENDED: tuple[str, ...] = ("cpu", "cpuset", "io")


def check_platform(_: Inputs) -> Check:
    try:
        goos, goarch = check_supported()
    except WarrenError as exc:
        return failed("platform", exc.message, exc.remedy or "", exc.exit_code)
    return passed("platform", f"{goos}/{goarch}")


def check_privileges(inputs: Inputs) -> Check:
    """Seed case "Permission Denied": containerd needs root (mounts, cgroups)."""
    name = "privileges"
    if os.geteuid() == 0:
        return passed(name, "running as root")
    from warren_bundle.runtime.rootless import requirements

    missing = [r for r in requirements() if not r.ok and not r.warning_only]
    if not missing and host_os() == "linux":
        return passed(name, f"not root (uid {os.geteuid()}): containerd runs rootless")
    sock = inputs.paths.socket
    remedy = (
        "run Warren with sudo, or add the user to the containerd group "
        f"(check: ls -l {sock} {system_socket_path()})"
    )
    if missing and host_os() == "linux":
        remedy += f", or set up rootless: {missing[0].fix}"
    if health.is_serving(sock, 1.0):
        return warned(
            name,
            f"not root (uid {os.geteuid()}): the running containerd answers on {sock}, "
            "but starting or stopping it needs root",
            remedy,
        )
    return failed(
        name,
        f"permission denied: uid {os.geteuid()} cannot start containerd (it needs root to "
        "mount filesystems and manage cgroups) nor use its socket",
        remedy,
        ExitCode.PERMISSION,
    )


def check_cgroups(_: Inputs) -> Check:
    name = "cgroups"
    all_mounts = mounts.mounts()
    mode = cgroups.mode(all_mounts)
    remedy_mount = "mount the cgroup hierarchies (cgroupfs-mount) or boot with systemd"
    if mode == "none":
        return failed(
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
        return failed(
            name,
            f"cgroup {mode}: controllers {', '.join(missing)} missing; runc needs them",
            remedy,
        )
    lacking = [c for c in recommended if c not in available]
    present = " ".join(c for c in (*required, *recommended) if c in available)
    if lacking:
        return warned(
            name,
            f"cgroup {mode}: {present}; without {', '.join(lacking)} those limits do not apply",
            remedy,
        )
    return passed(name, f"cgroup {mode}: {present}")


def check_kernel(_: Inputs) -> Check:
    name = "kernel"
    release = kernel.release()
    version = kernel.version(release)
    if version < MIN_KERNEL:
        return failed(
            name, f"{release} is older than 3.10: containerd cannot run", "upgrade the kernel"
        )
    if version < RECOMMENDED_KERNEL:
        return warned(name, f"{release}: 4.x or newer is recommended", "upgrade the kernel")
    return passed(name, release)


def check_overlayfs(inputs: Inputs) -> Check:
    """warren configures the overlayfs snapshotter: without it images cannot be unpacked."""
    name = "overlayfs"
    if "overlay" in kernel.filesystems():
        found = "supported by the kernel"
    elif kernel.fs_module_dir("overlayfs").is_dir():
        found = "available as a module (loaded on first use)"
    else:
        return failed(
            name,
            "overlayfs is not available: containerd's overlayfs snapshotter cannot unpack images",
            "load it with 'modprobe overlay' or use a kernel with CONFIG_OVERLAY_FS",
        )
    root = inputs.paths.containerd_root
    mount = mounts.mount_of(nearest_existing(root))
    if mount is not None and mount.fstype in ("overlay", "aufs"):
        return warned(
            name,
            f"{found}, but {root} is itself on {mount.fstype} ({mount.point}): overlay layers "
            "cannot stack on it",
            "pass --data-dir on a real filesystem (ext4, xfs) or a volume",
        )
    return passed(name, found)
