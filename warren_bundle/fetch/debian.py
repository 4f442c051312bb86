"""The Debian source: `apt-get download` of the suite's containerd and runc packages.

Used with --source debian, and by auto when upstream cannot be reached. The versions are the
suite's (--containerd/--runc do not apply); apt verifies the .debs against the signed index.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warren_bundle.errors import ChecksumMismatch, FetchError
from warren_bundle.fsutil import sha256_file

from .debversion import upstream_version
from .download import NetOptions
from .node import stage_debian
from .sandbox import SandboxOptions, stage_sandbox
from .staging import CONTAINERD_BINARIES, Staged, discard, new_staging, write_executable

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# Suites without -updates/-security companions.
DEBIAN_ROLLING = ("sid", "unstable", "experimental")
DEBIAN_PATHS = {
    "containerd": ("usr/bin/containerd",),
    "containerd-shim-runc-v2": ("usr/bin/containerd-shim-runc-v2",),
    "ctr": ("usr/bin/ctr",),
    # bookworm ships /usr/sbin/runc (+ a /usr/bin symlink); later suites may move it.
    "runc": ("usr/sbin/runc", "usr/bin/runc"),
}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DebInfo:
    package: str
    version: str
    suite: str
    arch: str
    deb: Path
    url: str
    sha256: str


def host_suite() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return "bookworm"
    match = re.search(r"^VERSION_CODENAME=\"?([A-Za-z0-9.-]+)", text, re.M)
    return match.group(1) if match else "bookworm"


def host_dpkg_arch() -> str | None:
    try:
        return subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def require_apt() -> None:
    missing = [t for t in ("apt-get", "dpkg-deb") if shutil.which(t) is None]
    if missing:
        raise FetchError(
            f"the Debian source needs {' and '.join(missing)}, which this host does not have",
            "use --source upstream, --mirror URL or --from-dir DIR",
        )


def run_tool(cmd: Sequence[str], what: str, cwd: Path | None = None) -> str:
    env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, env=env)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise FetchError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


class Apt:
    """apt-get for one (suite, arch): the system's own, or a private state dir under the cache.

    The private state never touches the system's lists, cache or dpkg status.
    """

    def __init__(self, suite: str, arch: str, state: Path | None, mirror: str) -> None:
        self.suite, self.arch, self.state, self.mirror = suite, arch, state, mirror
        self._updated = False

    def options(self) -> list[str]:
        if self.state is None:
            return []
        s = self.state
        return [
            f"-oDir::State::Lists={s / 'lists'}",
            f"-oDir::Etc::SourceList={s / 'sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null",
            "-oDir::Etc::Preferences=/dev/null",
            "-oDir::Etc::PreferencesParts=/dev/null",
            f"-oDir::Cache={s / 'cache'}",
            f"-oDir::State::Status={s / 'status'}",
            f"-oAPT::Architecture={self.arch}",
            f"-oAPT::Architectures={self.arch}",
        ]

    def sources(self) -> str:
        opts = f"arch={self.arch}"
        if DEBIAN_KEYRING.is_file():
            opts += f" signed-by={DEBIAN_KEYRING}"
        lines = [f"deb [{opts}] {self.mirror} {self.suite} main"]
        if self.suite not in DEBIAN_ROLLING:
            lines.append(f"deb [{opts}] {self.mirror} {self.suite}-updates main")
            if self.mirror.rstrip("/").endswith("/debian"):
                security = self.mirror.rstrip("/") + "-security"
                lines.append(f"deb [{opts}] {security} {self.suite}-security main")
        return "\n".join(lines) + "\n"

    def update(self) -> None:
        if self.state is None or self._updated:
            return
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        (self.state / "sources.list").write_text(self.sources())
        status = self.state / "status"
        if not status.exists():
            status.write_text("")
        print(f"fetch: apt-get update for {self.suite}/{self.arch} ({self.state})", file=sys.stderr)
        run_tool(["apt-get", "-q", *self.options(), "update"], f"apt-get update ({self.suite})")
        self._updated = True

    def locate(self, package: str) -> tuple[str, str, int, str, str]:
        """(url, file name, size, hash algorithm, hash) of the candidate .deb, from the index."""
        self.update()
        out = run_tool(
            [
                "apt-get",
                "-q",
                *self.options(),
                "--print-uris",
                "download",
                f"{package}:{self.arch}",
            ],
            f"apt-get download {package} ({self.suite}/{self.arch})",
        )
        for line in out.splitlines():
            match = re.match(r"'([^']+)' (\S+) (\d+) (\w+):([0-9a-fA-F]+)", line)
            if match:
                url, name, size, algo, digest = match.groups()
                return url, name, int(size), algo, digest.lower()
        raise FetchError(f"apt-get did not name a .deb for {package} ({self.suite}/{self.arch})")

    def download(self, package: str, dest_dir: Path) -> tuple[Path, str]:
        """Download `package`'s .deb into dest_dir (reusing a good copy); (path, url)."""
        url, name, _size, algo, digest = self.locate(package)
        hash_name = {"SHA256": "sha256", "SHA512": "sha512", "SHA1": "sha1", "MD5SUM": "md5"}
        algo_name = hash_name.get(algo.upper(), "sha256")
        deb = dest_dir / name
        if deb.is_file() and _hash_file(deb, algo_name) == digest:
            return deb, url
        dest_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".apt-", dir=dest_dir) as tmp:
            let_apt_write(Path(tmp))
            run_tool(
                ["apt-get", "-q", *self.options(), "download", f"{package}:{self.arch}"],
                f"apt-get download {package} ({self.suite}/{self.arch})",
                cwd=Path(tmp),
            )
            got = Path(tmp) / name
            if not got.is_file():
                raise FetchError(f"apt-get download {package} did not produce {name}")
            # apt verified it already; this re-check guards the rename below, not the archive.
            if _hash_file(got, algo_name) != digest:
                raise ChecksumMismatch(f"{name} does not match the Debian index ({algo} {digest})")
            os.replace(got, deb)
        return deb, url


def _hash_file(path: Path, algo: str) -> str:
    digest = hashlib.new(algo)
    with open(path, "rb") as fp:
        while chunk := fp.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def let_apt_write(directory: Path) -> None:
    """apt downloads as the `_apt` user; give it the dir so it need not fall back to root."""
    if os.geteuid() != 0:
        return
    try:
        import pwd

        os.chown(directory, pwd.getpwnam("_apt").pw_uid, -1)
    except (KeyError, OSError):
        pass  # apt then downloads unsandboxed and says so: harmless


@dataclass(frozen=True)
class DebianOptions:
    suite: str
    runc_suite: str
    mirror: str
    cache: Path


class DebianSource:
    """Resolves the two packages for each arch, sharing apt contexts across calls."""

    def __init__(self, opts: DebianOptions) -> None:
        require_apt()
        self.opts = opts
        self.host_suite = host_suite()
        self.host_arch = host_dpkg_arch()
        self._apts: dict[tuple[str, str, bool], Apt] = {}

    def _apt(self, suite: str, arch: str, private: bool) -> Apt:
        key = (suite, arch, private)
        if key not in self._apts:
            state = self.opts.cache / "apt" / f"{suite}-{arch}" if private else None
            self._apts[key] = Apt(suite, arch, state, self.opts.mirror)
        return self._apts[key]

    def fetch(self, package: str, suite: str, arch: str) -> DebInfo:
        debs = self.opts.cache / "debian"
        native = suite == self.host_suite and arch == self.host_arch
        try:
            # The host's own apt config first: it knows the host's mirror and proxy.
            deb, url = self._apt(suite, arch, private=not native).download(package, debs)
        except FetchError:
            if not native:
                raise
            # Empty or stale system lists (e.g. a slim image): use a private state instead.
            deb, url = self._apt(suite, arch, private=True).download(package, debs)
        fields = run_tool(
            ["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"],
            f"dpkg-deb -f {deb.name}",
        )
        meta = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
        if meta.get("Package") != package or meta.get("Architecture") != arch:
            raise FetchError(f"{deb.name} is {meta.get('Package')}/{meta.get('Architecture')}")
        return DebInfo(package, meta["Version"], suite, arch, deb, url, sha256_file(deb))

    def take(self, info: DebInfo, names: Mapping[str, str], st: Staged) -> None:
        _take_from_deb(info, {name: (rel,) for name, rel in names.items()}, st)


def _take_from_deb(info: DebInfo, names: Mapping[str, Sequence[str]], st: Staged) -> None:
    """names: the payload name (cni/bridge) -> where the package may hold it."""
    with tempfile.TemporaryDirectory(prefix=".deb-", dir=st.tmp.parent) as tmp:
        root = Path(tmp)
        run_tool(["dpkg-deb", "-x", str(info.deb), str(root)], f"dpkg-deb -x {info.deb.name}")
        for name, rels in names.items():
            src = next(_regular_files(root, rels), None)
            if src is None:
                raise FetchError(f"{info.deb.name} has no regular file at /{' or /'.join(rels)}")
            (st.bin_dir / name).parent.mkdir(exist_ok=True)
            with open(src, "rb") as fp:
                st.files[name] = write_executable(fp, st.bin_dir / name)


def _regular_files(root: Path, rels: Sequence[str]) -> Iterator[Path]:
    for rel in rels:
        try:
            if stat.S_ISREG(os.lstat(root / rel).st_mode):
                yield root / rel
        except FileNotFoundError:
            continue


def fetch_debian(
    arches: Sequence[str], outs: dict[str, Path], opts: DebianOptions, fallback: str | None = None
) -> list[Staged]:
    source = DebianSource(opts)
    staged: list[Staged] = []
    try:
        for arch in arches:
            ctd = source.fetch("containerd", opts.suite, arch)
            runc = source.fetch("runc", opts.runc_suite, arch)
            provenance: dict[str, Any] = {
                "suite": opts.suite,
                "runc_suite": opts.runc_suite,
                "packages": {
                    d.package: {
                        "version": d.version,
                        "suite": d.suite,
                        "deb": d.deb.name,
                        "url": d.url,
                        "sha256": d.sha256,
                    }
                    for d in (ctd, runc)
                },
                "artifacts": [
                    {"name": d.deb.name, "url": d.url, "sha256": d.sha256} for d in (ctd, runc)
                ],
            }
            if fallback:
                provenance["fallback"] = fallback
            st = Staged(
                arch,
                outs[arch],
                new_staging(outs[arch]),
                upstream_version(ctd.version),
                upstream_version(runc.version),
                "debian",
                provenance,
            )
            staged.append(st)
            _take_from_deb(ctd, {n: DEBIAN_PATHS[n] for n in CONTAINERD_BINARIES}, st)
            _take_from_deb(runc, {"runc": DEBIAN_PATHS["runc"]}, st)
            # The node parts: the CNI plugins of the runc suite (one that runs on this host),
            # and a locally built pause image (the Debian source never goes upstream).
            cni = stage_debian(st, source, opts.runc_suite)
            provenance["artifacts"].append(cni)
            # RootlessKit for a user's rootless containerd, from the same (host-runnable) suite;
            # dynamically linked like containerd: the payload's glibc requirement covers it.
            kit = source.fetch("rootlesskit", opts.runc_suite, arch)
            source.take(kit, {"rootlesskit": "usr/bin/rootlesskit"}, st)
            st.components["rootlesskit"] = {
                "version": upstream_version(kit.version),
                "source": "debian",
                "file": "rootlesskit",
                "package": f"{kit.package} {kit.version} ({kit.suite})",
            }
            provenance["artifacts"].append(
                {"name": kit.deb.name, "url": kit.url, "sha256": kit.sha256}
            )
            stage_sandbox(st, SandboxOptions(False, False, Path("."), NetOptions()))
            st.finish(f"debian {ctd.deb.name} / {runc.deb.name}")
            print(
                f"fetch: {arch}: containerd {ctd.version} ({ctd.suite}), "
                f"runc {runc.version} ({runc.suite}) from Debian",
                file=sys.stderr,
            )
    except BaseException:
        discard(staged)
        raise
    return staged
