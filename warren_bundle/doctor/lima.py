"""macOS: Lima installed, and the `warren` VM running with its socket answering."""

from __future__ import annotations

from warren_bundle.doctor.base import Check, Inputs, failed, passed, warned
from warren_bundle.errors import ExitCode, LimaError, WarrenError
from warren_bundle.lima.limactl import RUNNING, STOPPED, Limactl, find_limactl
from warren_bundle.paths import LIMA_INSTANCE, lima_home, lima_socket_path
from warren_bundle.runtime import health

LIMACTL_TIMEOUT = 20.0


def _limactl() -> str | None:
    """limactl where warren itself would find it (LIMACTL, then PATH), or None."""
    try:
        return find_limactl()
    except LimaError:
        return None


def check_lima_installed(_: Inputs) -> Check:
    """Seed case "Lima Not Installed": limactl is not in PATH."""
    name = "lima"
    limactl = _limactl()
    if limactl is None:
        return failed(
            name,
            "Lima is not installed (limactl is not in PATH)",
            "install it with 'brew install lima' (check: which limactl)",
            ExitCode.LIMA,
        )
    return passed(name, f"limactl at {limactl}")


def check_lima_vm(_: Inputs) -> Check:
    """Seed case "VM Fails to Start": the VM is broken, or runs without a working socket."""
    name = "lima vm"
    limactl = _limactl()
    if limactl is None:
        return warned(name, "not checked: Lima is not installed", "brew install lima")
    logs_hint = f"{lima_home() / LIMA_INSTANCE / 'ha.stderr.log'}"
    recreate = (
        f"check 'limactl list' and 'limactl logs {LIMA_INSTANCE}' ({logs_hint}); delete and "
        f"recreate it: limactl delete {LIMA_INSTANCE}, then 'warren lima up'"
    )
    try:
        # What the manager reads too: the same run of `limactl list --json`, the same parsing.
        entry = Limactl(limactl).list_instance(LIMA_INSTANCE, LIMACTL_TIMEOUT)
    except WarrenError as exc:  # limactl failed, did not answer in time, or cannot be run
        return failed(name, f"Lima VM state unknown: {exc}", recreate, ExitCode.LIMA)
    if entry is None:
        return warned(
            name,
            f"no VM {LIMA_INSTANCE!r} yet",
            "'warren lima up' creates it (the first start downloads an image)",
        )
    status = str(entry.get("status") or "?")
    if status == STOPPED:
        return warned(name, f"VM {LIMA_INSTANCE!r} is stopped", "start it with 'warren lima up'")
    if status != RUNNING:
        return failed(
            name,
            f"Lima VM {LIMA_INSTANCE!r} won't start (status {status})",
            recreate,
            ExitCode.LIMA,
        )
    sock = lima_socket_path()
    probe = health.probe(sock, 2.0)
    if not probe.serving:
        return failed(
            name,
            f"socket not found: VM {LIMA_INSTANCE!r} runs but {sock} does not answer "
            f"({probe.error})",
            f"check 'ls -l {sock}'; restart the VM: 'warren lima down', then 'warren lima up'",
            ExitCode.NOT_RUNNING,
        )
    return passed(
        name, f"VM {LIMA_INSTANCE!r} Running; containerd {probe.version} answers on {sock}"
    )
