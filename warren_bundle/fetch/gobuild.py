"""Static Go builds of Debian source packages, the way dh-golang lays them out (GOPATH mode).

Debian's Go packages build with GO111MODULE=off against the sources its golang-*-dev packages
install under /usr/share/gocode; we do the same, with static linking: containerd and the CNI
plugins with CGO_ENABLED=0, runc with cgo and libseccomp.a linked in (-extldflags -static).
RECIPE_VERSION is part of the cache key: change it whenever a recipe below changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from warren_bundle.errors import FetchError

RECIPE_VERSION = 1
GOCODE = Path("/usr/share/gocode")


@dataclass(frozen=True)
class Recipe:
    """How one source package becomes static binaries."""

    source: str  # the Debian source package
    cgo: bool
    tags: tuple[str, ...]
    targets: tuple[tuple[str, str], ...]  # (package path under the import path, output name)
    ldflags: tuple[str, ...]  # -X flags, with {import}, {upstream} and {version} filled in
    subdir: str = ""  # where the outputs go under the build's output dir (cni/)


CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap", "firewall", "bandwidth")
_CNI_DIRS = {
    "bridge": "main",
    "loopback": "main",
    "host-local": "ipam",
    "portmap": "meta",
    "firewall": "meta",
    "bandwidth": "meta",
}

RECIPES = {
    "containerd": Recipe(
        "containerd",
        cgo=False,
        tags=("netgo", "osusergo", "static_build", "no_btrfs"),
        targets=(
            ("cmd/containerd", "containerd"),
            ("cmd/containerd-shim-runc-v2", "containerd-shim-runc-v2"),
            ("cmd/ctr", "ctr"),
        ),
        ldflags=("{import}/version.Version={upstream}", "{import}/version.Revision={version}"),
    ),
    "runc": Recipe(
        "runc",
        cgo=True,
        tags=("seccomp", "urfave_cli_no_docs", "netgo", "osusergo"),
        targets=(("", "runc"),),
        ldflags=("main.version={upstream}", "main.gitCommit={version}"),
    ),
    "cni": Recipe(
        "golang-github-containernetworking-plugins",
        cgo=False,
        tags=("netgo", "osusergo"),
        targets=tuple((f"plugins/{_CNI_DIRS[p]}/{p}", p) for p in CNI_PLUGINS),
        ldflags=(),
        subdir="cni",
    ),
}


def go_version() -> str | None:
    """`go version`'s toolchain ('go1.19.8 linux/amd64'), or None when Go is not installed."""
    go = shutil.which("go")
    if go is None:
        return None
    try:
        out = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.strip().removeprefix("go version ")


def debian_upstream(version: str) -> str:
    """DEB_VERSION_UPSTREAM: '1.6.20~ds1-1+deb12u3' -> '1.6.20~ds1' (no epoch, no revision)."""
    ver = version.split(":", 1)[-1]
    return ver.rsplit("-", 1)[0] if "-" in ver else ver


def build_env(workspace: Path, gocache: Path, cgo: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GO", "CGO_"))}
    env.update(
        GOPATH=f"{workspace}:{GOCODE}",
        GO111MODULE="off",
        GOCACHE=str(gocache),
        GOFLAGS="",
        GOTOOLCHAIN="local",
        CGO_ENABLED="1" if cgo else "0",
        LC_ALL="C",
    )
    return env


def build(
    recipe: Recipe,
    tree: Path,
    import_path: str,
    version: str,
    out_dir: Path,
    gocache: Path,
) -> float:
    """Build recipe's targets from the unpacked source `tree` into out_dir; seconds taken."""
    if shutil.which("go") is None:
        raise FetchError(
            "the debian-static source needs the Go toolchain, which this host does not have",
            "apt-get install golang-go (make payload installs the build-deps as root)",
        )
    workspace = out_dir.parent / f".gopath-{recipe.source}"
    shutil.rmtree(workspace, ignore_errors=True)
    dest = workspace / "src" / import_path
    dest.parent.mkdir(parents=True)
    shutil.copytree(tree, dest, symlinks=True)
    target_dir = out_dir / recipe.subdir if recipe.subdir else out_dir
    target_dir.mkdir(parents=True, exist_ok=True)
    fields = {"import": import_path, "upstream": debian_upstream(version), "version": version}
    ldflags = ["-s", "-w"]
    for flag in recipe.ldflags:
        ldflags += ["-X", flag.format(**fields)]
    ldflags += ["-extldflags", "-static"]
    started = time.monotonic()
    try:
        for pkg, name in recipe.targets:
            full = f"{import_path}/{pkg}" if pkg else import_path
            cmd = [
                "go",
                "build",
                "-trimpath",
                "-o",
                str(target_dir / name),
                "-tags",
                " ".join(recipe.tags),
                "-ldflags",
                " ".join(ldflags),
                full,
            ]
            _go(cmd, build_env(workspace, gocache, recipe.cgo), dest, f"{name} ({recipe.source})")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return time.monotonic() - started


def _go(cmd: Sequence[str], env: dict[str, str], cwd: Path, what: str) -> None:
    print(f"fetch: go build {what}", file=sys.stderr, flush=True)
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    proc = subprocess.run([*nice, *cmd], capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        tail = " | ".join(lines[-4:])
        raise FetchError(
            f"go build of {what} failed (exit {proc.returncode}): {tail}",
            "check the build-deps (apt-get build-dep of the .dsc) and libseccomp-dev",
        )
