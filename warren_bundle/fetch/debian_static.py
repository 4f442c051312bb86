"""The debian-static source: containerd, its shim, ctr and runc built statically from Debian's own
source packages, so that the payload runs on any Linux (older glibc, musl, no libc at all).

`apt-get source` through a private apt state with deb-src lines for the suite (apt checks each
.dsc against the signed Sources index, dpkg-source checks the tarballs against the .dsc), the
build-deps Debian lists (`apt-get build-dep` of the .dsc), then gobuild.py's static recipes.
The binaries are cached outside the clone (--static-cache, /var/cache/warren-build/debian-static)
under a key of the source versions, their .dsc SHA-256, the recipe version, the Go toolchain and
the arch; a warm build only re-reads the index. Every staged binary must be static (no PT_INTERP,
no DT_NEEDED). The CNI plugins are built too and cached under cni/ (bin/cni/<plugin> names).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warren_bundle.errors import ChecksumMismatch, FetchError
from warren_bundle.fsutil import locked, sha256_file
from warren_bundle.payload import format as payload

from . import gobuild
from .debian import Apt, host_dpkg_arch, let_apt_write, require_apt, run_tool
from .debversion import upstream_version
from .staging import Staged, check_static, discard, new_staging, write_executable

DEFAULT_STATIC_CACHE = Path("/var/cache/warren-build/debian-static")
ENV_STATIC_CACHE = "WARREN_STATIC_CACHE"
BUILD_RECORD = "build.json"
PAYLOAD_PACKAGES = ("containerd", "runc")  # the recipes whose binaries the payload carries


def default_static_cache() -> Path:
    return Path(os.environ.get(ENV_STATIC_CACHE) or DEFAULT_STATIC_CACHE)


class SourceApt(Apt):
    """A private apt state that knows the suite's source packages (deb-src only)."""

    def sources(self) -> str:
        return super().sources().replace("deb [", "deb-src [")

    def update(self) -> None:
        """Refresh the lists; offline, lists from an earlier run still name what was built."""
        try:
            super().update()
        except FetchError as exc:
            lists = self.state / "lists" if self.state else None
            if lists is None or not any(lists.glob("*Sources*")):
                raise
            print(
                f"fetch: warning: {exc.message}; using the {self.suite} source lists of an "
                "earlier run",
                file=sys.stderr,
            )
            self._updated = True


@dataclass(frozen=True)
class Dsc:
    """A source package as the signed index names it."""

    package: str
    version: str
    name: str  # the .dsc file name
    url: str
    sha256: str

    def record(self) -> dict[str, str]:
        return {"version": self.version, "dsc": self.name, "url": self.url, "sha256": self.sha256}


def locate(apt: Apt, package: str) -> Dsc:
    """The candidate .dsc of `package` (URL and SHA-256 from the signed Sources index)."""
    apt.update()
    out = run_tool(
        ["apt-get", "-q", *apt.options(), "--print-uris", "source", package],
        f"apt-get source {package} ({apt.suite})",
    )
    for line in out.splitlines():
        match = re.match(r"'([^']+)' (\S+\.dsc) (\d+) SHA256:([0-9a-fA-F]{64})", line)
        if match:
            url, name, _size, digest = match.groups()
            version = name[: -len(".dsc")].split("_", 1)[1]
            return Dsc(package, version, name, url, digest.lower())
    raise FetchError(
        f"the {apt.suite} Sources index names no .dsc with a SHA-256 for {package}",
        f"check --debian-suite (is {package} in {apt.suite} main?)",
    )


def unpack_source(apt: Apt, dsc: Dsc, src_cache: Path) -> tuple[Path, Path]:
    """(unpacked tree, .dsc file) of `dsc` under src_cache, downloading it when not there."""
    home = src_cache / f"{dsc.package}_{dsc.version}"
    dsc_file = home / dsc.name
    tree = home / "tree"
    if tree.is_dir() and dsc_file.is_file() and sha256_file(dsc_file) == dsc.sha256:
        return tree, dsc_file
    src_cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dsc.package}-", dir=src_cache))
    try:
        let_apt_write(tmp)
        run_tool(
            ["apt-get", "-q", *apt.options(), "source", f"{dsc.package}={dsc.version}"],
            f"apt-get source {dsc.package}={dsc.version}",
            cwd=tmp,
        )
        got = tmp / dsc.name
        if not got.is_file() or sha256_file(got) != dsc.sha256:
            raise ChecksumMismatch(f"{dsc.name} does not match the Debian index ({dsc.sha256})")
        trees = [p for p in tmp.iterdir() if p.is_dir() and (p / "debian").is_dir()]
        if len(trees) != 1:
            raise FetchError(f"apt-get source {dsc.package} did not unpack one source tree")
        trees[0].rename(tmp / "tree")
        shutil.rmtree(home, ignore_errors=True)
        tmp.rename(home)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tree, dsc_file


def import_path(dsc_file: Path) -> str:
    match = re.search(r"^Go-Import-Path:\s*(\S+)", dsc_file.read_text(errors="replace"), re.M)
    if not match:
        raise FetchError(f"{dsc_file.name} names no Go-Import-Path: not a Go source package")
    return match.group(1).split(",")[0]


def install_build_deps(trees: Sequence[Path], dsc_files: Sequence[Path]) -> None:
    """`apt-get build-dep` of the .dsc files with the system's apt: installs, never upgrades.
    Nothing runs (and no root is needed) when dpkg-checkbuilddeps finds them all installed."""
    if shutil.which("dpkg-checkbuilddeps") and all(_deps_satisfied(t) for t in trees):
        return
    print("fetch: installing the build-deps (apt-get build-dep)", file=sys.stderr, flush=True)
    try:
        run_tool(
            ["apt-get", "-q", "-y", "--no-upgrade", "--no-install-recommends", "build-dep"]
            + [str(p) for p in dsc_files],
            "apt-get build-dep",
        )
    except FetchError as exc:
        exc.remedy = (
            "run as root with Debian's package index current (apt-get update), or install "
            f"golang-go, libseccomp-dev and the golang-*-dev packages the .dsc names "
            f"(apt-get build-dep {' '.join(str(p) for p in dsc_files)})"
        )
        raise


def _deps_satisfied(tree: Path) -> bool:
    try:
        run_tool(["dpkg-checkbuilddeps"], "dpkg-checkbuilddeps", cwd=tree)
    except FetchError:
        return False
    return True


def cache_key(dscs: Sequence[Dsc], arch: str, go: str) -> str:
    spec = {
        "recipe": gobuild.RECIPE_VERSION,
        "arch": arch,
        "go": go,
        "sources": {d.package: [d.version, d.sha256] for d in dscs},
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _complete(entry: Path) -> bool:
    record = entry / BUILD_RECORD
    if not record.is_file():
        return False
    outs = [n for r in gobuild.RECIPES.values() for _, n in _outputs(r)]
    return all((entry / n).is_file() for n in outs)


def _outputs(recipe: gobuild.Recipe) -> list[tuple[str, str]]:
    return [(p, f"{recipe.subdir}/{n}" if recipe.subdir else n) for p, n in recipe.targets]


@dataclass(frozen=True)
class StaticOptions:
    suite: str
    mirror: str
    cache: Path  # apt state, sources, Go build cache and the built binaries


@dataclass(frozen=True)
class Built:
    """A cache entry: the static binaries of these source packages, and how they were made."""

    entry: Path
    dscs: tuple[Dsc, ...]
    record: dict[str, Any]
    cached: bool
    seconds: float


class StaticBuilder:
    def __init__(self, opts: StaticOptions) -> None:
        require_apt()
        self.opts = opts
        self.apt = SourceApt(
            opts.suite, host_dpkg_arch() or "amd64", opts.cache / "apt", opts.mirror
        )

    def build(self, arch: str) -> Built:
        host = host_dpkg_arch()
        if host is not None and arch != host:
            raise FetchError(
                f"--source debian-static builds for this host's arch ({host}), not {arch}",
                f"build on a {arch} machine, or pass --arch {host}",
            )
        started = time.monotonic()
        dscs = tuple(locate(self.apt, r.source) for r in gobuild.RECIPES.values())
        go = gobuild.go_version()
        if go is not None:
            entry = self.opts.cache / arch / cache_key(dscs, arch, go)
            if _complete(entry):
                return self._built(entry, dscs, True, started)
        trees = [unpack_source(self.apt, d, self.opts.cache / "src") for d in dscs]
        install_build_deps([t for t, _ in trees], [f for _, f in trees])
        go = gobuild.go_version()
        if go is None:
            raise FetchError(
                "apt-get build-dep did not install the Go toolchain", "apt-get install golang-go"
            )
        entry = self.opts.cache / arch / cache_key(dscs, arch, go)
        if not _complete(entry):
            self._build_into(entry, dscs, trees, arch, go)
            return self._built(entry, dscs, False, started)
        return self._built(entry, dscs, True, started)

    def _build_into(
        self,
        entry: Path,
        dscs: Sequence[Dsc],
        trees: Sequence[tuple[Path, Path]],
        arch: str,
        go: str,
    ) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
        try:
            seconds = {}
            for recipe, dsc, (tree, dsc_file) in zip(
                gobuild.RECIPES.values(), dscs, trees, strict=True
            ):
                seconds[dsc.package] = round(
                    gobuild.build(
                        recipe,
                        tree,
                        import_path(dsc_file),
                        dsc.version,
                        tmp / "out",
                        self.opts.cache / "gocache",
                    ),
                    1,
                )
            for name in os.listdir(tmp / "out"):
                os.rename(tmp / "out" / name, tmp / name)
            for recipe in gobuild.RECIPES.values():
                for _, name in _outputs(recipe):
                    # Before the entry is committed: a dynamic build is never cached.
                    check_static(tmp / name, f"the {recipe.source} static build")
            (tmp / "out").rmdir()
            record = {
                "recipe": gobuild.RECIPE_VERSION,
                "arch": arch,
                "go": go,
                "suite": self.opts.suite,
                "sources": {d.package: d.record() for d in dscs},
                "build_seconds": seconds,
                "built_at": int(time.time()),
            }
            (tmp / BUILD_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            os.chmod(tmp, 0o755)
            shutil.rmtree(entry, ignore_errors=True)
            tmp.rename(entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _built(self, entry: Path, dscs: tuple[Dsc, ...], cached: bool, started: float) -> Built:
        record = json.loads((entry / BUILD_RECORD).read_text())
        return Built(entry, dscs, record, cached, time.monotonic() - started)


def provenance(built: Built) -> dict[str, Any]:
    """What the manifest records: each source package's version and .dsc SHA-256, the recipe and
    toolchain. Nothing here depends on whether the build was cached (same inputs, same bytes)."""
    by_name = {d.package: d for d in built.dscs}
    return {
        "suite": built.record["suite"],
        "recipe": built.record["recipe"],
        "go": built.record["go"],
        "linkage": "static",
        "packages": {
            name: by_name[gobuild.RECIPES[name].source].record() for name in PAYLOAD_PACKAGES
        },
        "artifacts": [{"name": d.name, "url": d.url, "sha256": d.sha256} for d in built.dscs],
        "cache_key": built.entry.name,
    }


def fetch_debian_static(
    arches: Sequence[str], outs: dict[str, Path], opts: StaticOptions
) -> list[Staged]:
    builder = StaticBuilder(opts)
    staged: list[Staged] = []
    try:
        opts.cache.mkdir(parents=True, exist_ok=True)
        with locked(opts.cache / ".lock", None, mode=0o644):
            for arch in arches:
                built = builder.build(arch)
                staged.append(_stage(built, arch, outs[arch]))
    except PermissionError as exc:
        discard(staged)
        raise FetchError(
            f"cannot write the static build cache {opts.cache}: permission denied",
            f"run as root, or pass --static-cache DIR (or set {ENV_STATIC_CACHE})",
        ) from exc
    except BaseException:
        discard(staged)
        raise
    return staged


def _stage_cni(built: Built, st: Staged) -> None:
    """The static CNI plugins as bin/cni/<plugin>, the names the debian source stages, once the
    payload format carries subdirs (payload.SUBDIRS) and the staging records components."""
    components = getattr(st, "components", None)
    if "cni" not in getattr(payload, "SUBDIRS", ()) or not isinstance(components, dict):
        return
    recipe = gobuild.RECIPES["cni"]
    (st.bin_dir / recipe.subdir).mkdir(exist_ok=True)
    for _, name in _outputs(recipe):
        with open(built.entry / name, "rb") as fp:
            st.files[name] = write_executable(fp, st.bin_dir / name)
    dsc = next(d for d in built.dscs if d.package == recipe.source)
    components["cni"] = {
        "version": upstream_version(dsc.version),
        "source": "debian-static",
        "plugins": sorted(gobuild.CNI_PLUGINS),
        "dir": recipe.subdir,
        "package": f"{dsc.package} {dsc.version} ({built.record['suite']}, built static)",
    }


def _stage(built: Built, arch: str, out: Path) -> Staged:
    ver = {d.package: d.version for d in built.dscs}
    st = Staged(
        arch,
        out,
        new_staging(out),
        upstream_version(ver["containerd"]),
        upstream_version(ver["runc"]),
        "debian-static",
        provenance(built),
        static=True,
    )
    for recipe in (gobuild.RECIPES[n] for n in PAYLOAD_PACKAGES):
        for _, name in _outputs(recipe):
            with open(built.entry / name, "rb") as fp:
                st.files[name] = write_executable(fp, st.bin_dir / name)
    _stage_cni(built, st)
    st.finish(f"the debian-static build {built.entry}")
    how = "cached" if built.cached else "built"
    print(
        f"fetch: {arch}: containerd {ver['containerd']}, runc {ver['runc']} static from Debian "
        f"sources, {how} in {built.seconds:.1f}s ({built.entry})",
        file=sys.stderr,
    )
    return st
