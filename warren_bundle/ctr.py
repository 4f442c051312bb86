"""`warren ctr`: the bundled ctr against the detected socket, with the arguments it adds so
containers it starts use the bundled runc and warren's own state.

runc keeps container state under its --root (default /run/containerd/runc, shared with any system
containerd on the host); two containerds that both run a container "web" in namespace "default"
would collide there. `ctr run` and `ctr containers create` accept --runc-binary/--runc-root.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import NoReturn

from warren_bundle.paths import Paths

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


def with_runc_defaults(
    args: list[str], runc_binary: str, runc_root: str, *, systemd_cgroup: bool | None = None
) -> list[str]:
    """Add --runc-binary/--runc-root (bundled runc, warren's own state) to `ctr run` and
    `ctr containers create`; where systemd manages cgroups (`systemd_cgroup`, detected when None,
    as the generated config does) also --runc-systemd-cgroup and a systemd cgroup parent,
    `warren.slice:warren:<id>`: ctr's own runc options replace the config's SystemdCgroup, and the
    container would otherwise land outside any slice (cgroupfs path /<namespace>/<id>)."""
    end = _command_end(args)
    if end is None:
        return list(args)
    extra = []
    if not any(a == "--runc-binary" or a.startswith("--runc-binary=") for a in args):
        extra += ["--runc-binary", runc_binary]
    if not any(a == "--runc-root" or a.startswith("--runc-root=") for a in args):
        extra += ["--runc-root", runc_root]
    if systemd_cgroup is None:
        from warren_bundle.runtime.config import systemd_manages_cgroups

        systemd_cgroup = systemd_manages_cgroups()
    # ctr run/create flags that take no value; any other flag takes one (unless written --f=v).
    bool_flags = {
        "--rm", "--null-io", "--detach", "-d", "--cni", "--runc-systemd-cgroup", "--remap-labels",
        "--net-host", "--privileged", "--read-only", "--tty", "-t", "--allow-new-privs",
        "--seccomp", "--rootfs", "--no-pivot", "--help", "-h",
    }  # fmt: skip
    given = {a.split("=", 1)[0] for a in args[end:] if a.startswith("-")}
    if systemd_cgroup and "--cgroup" not in given:
        positional: list[str] = []
        i = end
        while i < len(args) and len(positional) < 2:
            arg = args[i]
            if arg == "--":
                positional += args[i + 1 : i + 3]
                break
            if arg.startswith("-"):
                i += 1 if "=" in arg or arg in bool_flags else 2
                continue
            positional.append(arg)
            i += 1
        # Without an id ctr fails on its own, with its own message.
        if len(positional) == 2:
            if "--runc-systemd-cgroup" not in given:
                extra += ["--runc-systemd-cgroup"]
            extra += ["--cgroup", f"warren.slice:warren:{positional[1]}"]
    return [*args[:end], *extra, *args[end:]]


def client_tmp(paths: Paths) -> dict[str, str]:
    """TMPDIR for a client run as root: <data-dir>/tmp (0700), not the host's /tmp. A user keeps
    their own TMPDIR."""
    if os.geteuid() != 0:
        return {}
    tmp = paths.client_tmp
    with suppress(OSError):
        tmp.mkdir(mode=0o700)
    return {"TMPDIR": str(tmp)} if tmp.is_dir() and not tmp.is_symlink() else {}


# Commands that talk to a registry (they take --hosts-dir) and that make IO FIFOs (--fifo-dir).
_IMAGE_GROUPS = {"images", "image", "i"}
_TASK_GROUPS = {"tasks", "task", "t"}
_REGISTRY_COMMANDS = {
    **{group: {"pull", "push", "fetch"} for group in _IMAGE_GROUPS},
    "content": {"fetch", "fetch-object", "push-object"},
}
_FIFO_COMMANDS = {group: {"start", "exec"} for group in _TASK_GROUPS}


def _subcommand(args: list[str]) -> tuple[list[str], int]:
    """The command words (e.g. ["images", "pull"]) and the index just past them."""
    i, words = 0, list[str]()
    while i < len(args) and len(words) < 2:
        arg = args[i]
        if arg == "--":
            break
        if arg.startswith("-"):
            if words:
                break
            i += 2 if arg in _GLOBAL_WITH_VALUE else 1
            continue
        words.append(arg)
        i += 1
        if words == ["run"]:
            break
    return words, i


def _given(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def with_client_defaults(args: list[str], hosts_dir: str, fifo_dir: str) -> list[str]:
    """`--hosts-dir <config-dir>/certs.d` for the commands that talk to a registry (ctr resolves
    hosts itself and reads hosts.toml only when told where: the mirrors, CAs, client certs and
    basic credentials of registries.yaml live there), and `--fifo-dir <run-dir>/fifo` for the
    commands that make IO FIFOs (ctr's default is /run/containerd/fifo, a system containerd's).
    Credentials never go on the command line: ctr's --user has no environment variable and its
    prompt needs a terminal, so basic credentials reach ctr through hosts.toml's header."""
    words, end = _subcommand(args)
    extra: list[str] = []
    talks_to_registry = len(words) == 2 and words[1] in _REGISTRY_COMMANDS.get(words[0], ())
    if talks_to_registry and not _given(args[end:], "--hosts-dir"):
        extra += ["--hosts-dir", hosts_dir]
    makes_fifos = words[:1] == ["run"] or (
        len(words) == 2 and words[1] in _FIFO_COMMANDS.get(words[0], ())
    )
    if makes_fifos and not _given(args[end:], "--fifo-dir"):
        extra += ["--fifo-dir", fifo_dir]
    if not extra:
        return list(args)
    return [*args[:end], *extra, *args[end:]]


def rootless_enter(paths: Paths, address: str | None) -> list[str] | None:
    """The nsenter prefix when ctr talks to this user's rootless containerd (its FIFOs, mounts
    and shim sockets are the namespace's), else None."""
    from warren_bundle.paths import rootless_user
    from warren_bundle.runtime.rootless import enter_argv

    if not rootless_user() or address != str(paths.socket):
        return None
    return enter_argv(paths)


def with_rootless_defaults(args: list[str]) -> list[str]:
    """`ctr run` and `ctr containers create` in a user namespace without delegated cgroups:
    `--cgroup ""` and `--cpu-shares 0` (runc cannot create the cgroup ctr names, nor set the
    shares ctr asks for by default), unless given."""
    end = _command_end(args)
    if end is None:
        return list(args)
    given = {a.split("=", 1)[0] for a in args[end:] if a.startswith("-")}
    extra = [] if "--cgroup" in given else ["--cgroup", ""]
    extra += [] if "--cpu-shares" in given else ["--cpu-shares", "0"]
    return [*args[:end], *extra, *args[end:]]


def fifo_dir(paths: Paths) -> Path:
    return paths.run_dir / "fifo"


def exec_ctr(
    paths: Paths, payload_option: str | None, socket: Callable[[], str], args: list[str]
) -> NoReturn:
    """Replace this process with the bundled ctr, pointed at `socket` (unless -a is given)."""
    from warren_bundle.payload.format import locate
    from warren_bundle.runtime.childenv import child_env
    from warren_bundle.store.extract import ensure_extracted
    from warren_bundle.store.stamp import is_current

    payload = locate(payload_option)
    if not is_current(paths, payload):
        ensure_extracted(paths, payload)
    binary = paths.binary("ctr")
    argv = [str(binary)]
    if not any(a in ("-a", "--address") or a.startswith("--address=") for a in args):
        argv += ["--address", socket()]
    from warren_bundle.runtime.config import hosts_dir

    fifos = fifo_dir(paths)
    with suppress(OSError):  # ctr itself says so if it cannot make its FIFOs there
        fifos.mkdir(mode=0o700, parents=True, exist_ok=True)
    args = with_client_defaults(args, str(hosts_dir(paths)), str(fifos))
    address = argv[-1] if len(argv) == 3 else None
    enter = rootless_enter(paths, address)
    runc = (str(paths.binary("runc")), str(paths.runc_root))
    if enter is not None:
        ours = with_runc_defaults(args, *runc, systemd_cgroup=False)
        argv = [*enter, *argv, *with_rootless_defaults(ours)]
        binary = Path(enter[0])
    else:
        argv += with_runc_defaults(args, *runc)
    sys.stdout.flush()
    env = child_env(prepend_path=paths.bin_dir, extra=client_tmp(paths))
    if _talks_to_registry(args):
        sys.exit(_run_explained(paths, argv, env, args))
    os.execve(binary, argv, env)


def _talks_to_registry(args: list[str]) -> bool:
    words, _end = _subcommand(args)
    return len(words) == 2 and words[1] in _REGISTRY_COMMANDS.get(words[0], ())


def _run_explained(paths: Paths, argv: list[str], env: dict[str, str], args: list[str]) -> int:
    """Run ctr as a child, its stderr passed through as it comes; when it fails on
    authentication or TLS, one more line names the registry, the endpoint and the cause."""
    import signal
    import subprocess

    from warren_bundle.pullerrors import explain
    from warren_bundle.registries import resolve
    from warren_bundle.runtime.config import hosts_dir

    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen: list[str] = []
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # ctr gets Ctrl-C and says so itself
    try:
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            sys.stderr.write(line)
            sys.stderr.flush()
            seen.append(line)
            del seen[:-200]
        rc = proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)
    if rc != 0:
        registries_file = resolve(paths.config_dir, os.environ.get("WARREN_REGISTRIES") or None)
        hint = explain("".join(seen), args, hosts_dir(paths), registries_file)
        if hint:
            sys.stderr.write(hint + "\n")
    return rc


def exec_crictl(
    paths: Paths, payload_option: str | None, socket: Callable[[], str], args: list[str]
) -> NoReturn:
    """Replace this process with the bundled crictl, pointed at `socket` for both services."""
    from warren_bundle.errors import NotCarried
    from warren_bundle.payload.format import locate
    from warren_bundle.runtime.childenv import child_env
    from warren_bundle.store.extract import ensure_extracted
    from warren_bundle.store.stamp import is_current

    payload = locate(payload_option)
    if not payload.manifest.has_crictl:
        raise NotCarried(
            f"this warren carries no crictl (payload source {payload.manifest.source}: only "
            "upstream builds include cri-tools)",
            "use 'warren ctr -n k8s.io ...', or a crictl of your own with "
            f"--runtime-endpoint unix://{paths.socket}",
        )
    if not is_current(paths, payload):
        ensure_extracted(paths, payload)
    binary = paths.binary("crictl")
    given = {a.split("=", 1)[0] for a in args}
    argv = [str(binary)]
    endpoint = f"unix://{socket()}"
    if not given & {"-r", "--runtime-endpoint"}:
        argv += ["--runtime-endpoint", endpoint]
    if not given & {"-i", "--image-endpoint"}:
        argv += ["--image-endpoint", endpoint]
    sys.stdout.flush()
    os.execve(
        binary, [*argv, *args], child_env(prepend_path=paths.bin_dir, extra=client_tmp(paths))
    )
