"""Arguments `warren ctr` adds so containers it starts use the bundled runc and warren's own state.

runc keeps container state under its --root (default /run/containerd/runc, shared with any system
containerd on the host); two containerds that both run a container "web" in namespace "default"
would collide there. `ctr run` and `ctr containers create` accept --runc-binary/--runc-root.
"""

from __future__ import annotations

# ctr's global flags that take a value, so the subcommand can be found after them.
_GLOBAL_WITH_VALUE = {"-a", "--address", "-n", "--namespace", "--timeout", "--connect-timeout"}
_CONTAINER_GROUPS = {"containers", "container", "c"}


def _command_end(args: list[str]) -> int | None:
    """Index just past `run` or `containers create`, or None for any other ctr command."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return None
        if arg.startswith("-"):
            i += 2 if arg in _GLOBAL_WITH_VALUE else 1
            continue
        if arg == "run":
            return i + 1
        if arg in _CONTAINER_GROUPS and i + 1 < len(args) and args[i + 1] == "create":
            return i + 2
        return None
    return None


def with_runc_defaults(args: list[str], runc_binary: str, runc_root: str) -> list[str]:
    end = _command_end(args)
    if end is None:
        return list(args)
    extra = []
    if not any(a == "--runc-binary" or a.startswith("--runc-binary=") for a in args):
        extra += ["--runc-binary", runc_binary]
    if not any(a == "--runc-root" or a.startswith("--runc-root=") for a in args):
        extra += ["--runc-root", runc_root]
    return [*args[:end], *extra, *args[end:]]
