"""Running the doctor: which checks run on this OS, in what order, and the exit status they give."""

from __future__ import annotations

from warren_bundle.doctor import host, lima, node, payload_checks, proxy, sockets, storage
from warren_bundle.doctor.base import Check, CheckFn, Inputs, Level, warned
from warren_bundle.doctor.rootless import rootless_checks
from warren_bundle.hostinfo import host_os
from warren_bundle.paths import Paths, rootless_user

LINUX_CHECKS: tuple[CheckFn, ...] = (
    host.check_platform,
    payload_checks.check_payload,
    payload_checks.check_libc,
    payload_checks.check_binaries,
    host.check_privileges,
    storage.check_data_dir,
    storage.check_data_dir_exec,
    storage.check_free_space,
    host.check_cgroups,
    host.check_overlayfs,
    host.check_kernel,
    sockets.check_socket_path,
    sockets.check_pidfiles,
    sockets.check_socket,
    sockets.check_system_containerd,
    proxy.check_proxy,
    # What a kubelet pointed at the socket needs (CRI).
    node.check_cni,
    node.check_sandbox_image,
    node.check_iptables,
    node.check_forwarding,
    node.check_bridge_netfilter,
    node.check_oom_score_adj,
    node.check_cgroup_driver,
)
DARWIN_CHECKS: tuple[CheckFn, ...] = (
    host.check_platform,
    storage.check_data_dir,
    lima.check_lima_installed,
    lima.check_lima_vm,
)


def _guarded(fn: CheckFn, inputs: Inputs) -> Check:
    # A check that breaks must not hide the others' answers.
    try:
        return fn(inputs)
    except Exception as exc:  # reported as the check's own result
        name = fn.__name__.removeprefix("check_").replace("_", " ")
        return warned(
            name,
            f"could not check: {type(exc).__name__}: {exc}",
            "the other checks are unaffected",
        )


def run_checks(paths: Paths, payload_option: str | None = None) -> list[Check]:
    inputs = Inputs(paths, payload_option)
    checks = DARWIN_CHECKS if host_os() == "darwin" else LINUX_CHECKS
    found = [_guarded(fn, inputs) for fn in checks]
    if rootless_user():  # after "privileges", which says whether rootless is possible at all
        at = next((i + 1 for i, c in enumerate(found) if c.name == "privileges"), len(found))
        found[at:at] = rootless_checks()
    return found


def exit_status(checks: list[Check]) -> int:
    """0 when nothing failed; else the exit code of the first failed check."""
    for check in checks:
        if check.level == Level.FAIL:
            return int(check.exit_code)
    return 0


def summary(checks: list[Check]) -> dict[str, int]:
    return {level.value: sum(1 for c in checks if c.level == level) for level in Level}
