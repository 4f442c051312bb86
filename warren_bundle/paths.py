"""Every location warren uses, with the seed's defaults and their env/option overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from warren_bundle.hostinfo import host_os

DEFAULT_DATA_DIR = "/var/lib/warren"
DEFAULT_RUN_DIR = "/run/warren-containerd"
DEFAULT_CONFIG_DIR = "/etc/warren-containerd"
# The launcher's (launcher/launcher.c): root's runtime cache, and a user's under their home.
DEFAULT_RUNTIME_ROOT = "/var/cache/warren/runtime"
USER_RUNTIME_SUBDIR = "warren/runtime"
ENV_RUNTIME_DIR = "WARREN_RUNTIME_DIR"
CONTAINERD_SOCKET_PATH = f"{DEFAULT_RUN_DIR}/containerd.sock"
CONTAINERD_CONFIG_PATH = f"{DEFAULT_CONFIG_DIR}/config.toml"
SYSTEM_SOCKET_PATH = "/run/containerd/containerd.sock"
LIMA_INSTANCE = "warren"
# A user without root (rootless: containerd in a user namespace, runtime/rootless.py): XDG dirs.
USER_SUBDIR = "warren"

ENV_DATA_DIR = "WARREN_DATA_DIR"
ENV_RUN_DIR = "WARREN_RUN_DIR"
ENV_CONFIG_DIR = "WARREN_CONFIG_DIR"
ENV_SYSTEM_SOCKET = "WARREN_SYSTEM_SOCKET"

# The kernel's sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def rootless_user() -> bool:
    """A user without root on Linux: containerd runs rootless, in a user namespace."""
    return host_os() == "linux" and os.geteuid() != 0


def _xdg(env: str, fallback: Path) -> Path:
    value = os.environ.get(env)
    return Path(value) if value and os.path.isabs(value) else fallback


def user_run_dir() -> Path | None:
    """$XDG_RUNTIME_DIR/warren, or None when XDG_RUNTIME_DIR is unset (or relative)."""
    value = os.environ.get("XDG_RUNTIME_DIR")
    return Path(value) / USER_SUBDIR if value and os.path.isabs(value) else None


def _pick(explicit: str | os.PathLike[str] | None, env: str, default: str) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(env) or default)


def lima_home() -> Path:
    return Path(os.environ.get("LIMA_HOME") or Path.home() / ".lima")


def lima_socket_path(instance: str = LIMA_INSTANCE) -> Path:
    return lima_home() / instance / "sock" / "containerd.sock"


def system_socket_path() -> Path:
    return Path(os.environ.get(ENV_SYSTEM_SOCKET) or SYSTEM_SOCKET_PATH)


# containerd listens on <socket> and on <socket>.ttrpc: the longer one must fit sun_path too.
TTRPC_SUFFIX = ".ttrpc"


SHORTER_RUN_DIR = "pass a shorter --run-dir (WARREN_RUN_DIR), e.g. /run/warren-containerd"


def socket_path_problem(socket: Path) -> str | None:
    """Why containerd could not listen on `socket` (and its .ttrpc twin), or None when it can."""
    longest = len(os.fsencode(socket)) + len(TTRPC_SUFFIX)
    if longest <= MAX_SOCKET_PATH:
        return None
    return (
        f"the socket path {socket}{TTRPC_SUFFIX} is {longest} bytes; unix sockets allow "
        f"{MAX_SOCKET_PATH}"
    )


def check_socket_path(socket: Path) -> None:
    """Refuse, as a usage error before anything starts, a socket containerd cannot listen on."""
    problem = socket_path_problem(socket)
    if problem:
        from warren_bundle.errors import UsageError

        raise UsageError(problem, SHORTER_RUN_DIR)


def dir_option_problem(value: str | None, option: str, env: str) -> str | None:
    """Why a dir option's value (or its env var's) cannot be used, or None when it can.

    An empty value is not "the default": a script with an unset variable would act on the
    system's dirs. A relative one would be resolved against whatever cwd each process has
    (containerd runs from /), so only absolute paths are taken.
    """
    if value is None:
        if os.environ.get(env) == "":
            return f"{env} is set but empty; unset it for the default, or give an absolute path"
        return None
    source = option if value != os.environ.get(env) else f"{env} ({option})"
    if value == "":
        return f"{source} is empty; leave it out for the default, or give an absolute path"
    if "\0" in value:
        return f"{source} contains a NUL byte; give an absolute path"
    if not os.path.isabs(value):
        return (
            f"{source} {value!r} is relative; give an absolute path, e.g. {Path(value).absolute()}"
        )
    return None


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    run_dir: Path
    config_dir: Path

    @classmethod
    def resolve(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        config_dir: str | os.PathLike[str] | None = None,
    ) -> Paths:
        defaults = (DEFAULT_DATA_DIR, DEFAULT_RUN_DIR, DEFAULT_CONFIG_DIR)
        if host_os() == "darwin":
            # Lima runs as the user: nothing of warren's needs root on macOS.
            home = Path.home() / ".warren"
            defaults = (str(home), str(home / "run"), str(home / "etc"))
        elif rootless_user():
            # Without XDG_RUNTIME_DIR a user's clients look at root's run dir (a socket group
            # member's); `containerd run|start` refuses it (runtime/rootless.py).
            home = Path.home()
            defaults = (
                str(_xdg("XDG_DATA_HOME", home / ".local" / "share") / USER_SUBDIR),
                str(user_run_dir() or DEFAULT_RUN_DIR),
                str(_xdg("XDG_CONFIG_HOME", home / ".config") / USER_SUBDIR),
            )
        return cls(
            data_dir=_pick(data_dir, ENV_DATA_DIR, defaults[0]),
            run_dir=_pick(run_dir, ENV_RUN_DIR, defaults[1]),
            config_dir=_pick(config_dir, ENV_CONFIG_DIR, defaults[2]),
        )

    # data dir
    @property
    def bin_dir(self) -> Path:
        return self.data_dir / "bin"

    @property
    def client_tmp(self) -> Path:
        """TMPDIR for the bundled clients run as root (ctr mounts images there): never /tmp,
        which a hardened host mounts noexec, read-only or small."""
        return self.data_dir / "tmp"

    @property
    def stamp(self) -> Path:
        return self.bin_dir / ".manifest.json"

    @property
    def versions_dir(self) -> Path:
        """One dir per payload digest: <data>/versions/<digest>; bin is a symlink to one."""
        return self.data_dir / "versions"

    def version_dir(self, digest: str) -> Path:
        return self.versions_dir / digest

    @property
    def previous_file(self) -> Path:
        """The version bin pointed at before the last switch (what rollback goes back to)."""
        return self.versions_dir / ".previous.json"

    @property
    def pin_file(self) -> Path:
        """Written by `warren rollback`: containerd runs this version whatever warren starts it."""
        return self.versions_dir / ".pinned.json"

    @property
    def extract_lock(self) -> Path:
        return self.data_dir / ".extract.lock"

    @property
    def data_lock(self) -> Path:
        """Held by the one supervisor using this data dir; names its run dir and pid."""
        return self.data_dir / ".supervisor.lock"

    @property
    def containerd_root(self) -> Path:
        return self.data_dir / "containerd"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "containerd.log"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def lima_dir(self) -> Path:
        return self.data_dir / "lima"

    # run dir
    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    @property
    def runc_root(self) -> Path:
        return self.run_dir / "runc"

    @property
    def containerd_pidfile(self) -> Path:
        return self.run_dir / "containerd.pid"

    @property
    def supervisor_pidfile(self) -> Path:
        return self.run_dir / "warren.pid"

    @property
    def supervisor_lock(self) -> Path:
        return self.run_dir / "warren.lock"

    @property
    def rootlesskit_dir(self) -> Path:
        """RootlessKit's --state-dir: its child_pid (the namespaces ctr enters) and api.sock."""
        return self.run_dir / "rootlesskit"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "status.json"

    @property
    def last_words(self) -> Path:
        """A supervisor's FATAL record, written in place when the state file cannot be."""
        return self.run_dir / "warren.last-words"

    # config dir
    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def config_d(self) -> Path:
        return self.config_dir / "config.d"

    def binary(self, name: str) -> Path:
        return self.bin_dir / name


def runtime_roots() -> list[Path]:
    """Where the launcher may have extracted runtimes, as it picks (launcher/launcher.c):
    WARREN_RUNTIME_DIR, root's cache, this user's cache."""
    env = os.environ.get(ENV_RUNTIME_DIR)
    xdg = os.environ.get("XDG_CACHE_HOME")
    user = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    found = [Path(env)] if env and os.path.isabs(env) else []
    return [*found, Path(DEFAULT_RUNTIME_ROOT), user / USER_RUNTIME_SUBDIR]


# --- `warren upgrade`: beside the installed file, so the final rename stays on one filesystem --


def upgrade_dir(installed: Path) -> Path:
    """Where `warren upgrade` downloads and checks the next release: a private dir beside the
    installed file (the new file is renamed from there over it, atomically)."""
    return installed.with_name(f".{installed.name}.upgrade")


def previous_file(installed: Path) -> Path:
    """The file an upgrade replaced, kept beside it (`<file>.previous`)."""
    return installed.with_name(f"{installed.name}.previous")
