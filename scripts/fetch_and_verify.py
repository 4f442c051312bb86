#!/usr/bin/env python3
"""Download, verify and stage containerd + runc for the warren payload.

Every release artifact is checked against a pin in checksums/ before anything from it is
staged; the staged directory (bin/* + manifest.json + payload.tar.zst + payload.json) replaces
the previous one only when every step passed. Run from the repo root:

    python scripts/fetch_and_verify.py [--arch amd64|arm64|all] [--source auto|...] ...

Exit codes follow warren_bundle.errors.ExitCode: 8 checksum mismatch, 2 usage, 1 anything else.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from warren_bundle.errors import (  # noqa: E402
    ChecksumMismatch,
    ExitCode,
    PlatformError,
    WarrenError,
)
from warren_bundle.fsutil import sha256_file  # noqa: E402
from warren_bundle.hostinfo import host_arch  # noqa: E402
from warren_bundle.payload import elf  # noqa: E402
from warren_bundle.payload import format as payload  # noqa: E402

if TYPE_CHECKING:
    import requests

DEFAULT_CONTAINERD = "2.2.7"
DEFAULT_RUNC = "1.3.6"
ARCHES = ("amd64", "arm64")
SOURCES = ("auto", "upstream", "mirror", "dir", "debian")
CONTAINERD_BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr")
BINARY_MODE = 0o755
# Everything a staged --out may hold; anything else means --out points somewhere it should not.
STAGED_NAMES = frozenset(
    {
        "bin",
        payload.MANIFEST_FILE,
        payload.PAYLOAD_FILE,
        payload.DESCRIPTOR_FILE,
        payload.PAYLOAD_FILE + ".tmp",
    }
)
DEFAULT_CHECKSUMS = REPO / "checksums"
DEFAULT_CACHE = REPO / "build" / "downloads"
DEFAULT_OUT_PARENT = REPO / "build" / "payload"
# Tests (and GitHub-compatible proxies) point this at another host with the same path layout.
ENV_UPSTREAM_BASE = "WARREN_UPSTREAM_BASE"
UPSTREAM_BASE = "https://github.com"
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
# Release artifacts are tens of MB; a server streaming without end must not fill the disk.
MAX_ARTIFACT_BYTES = 1 << 30
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")

assert set(CONTAINERD_BINARIES) | {"runc"} == set(payload.BINARIES)


class FetchError(WarrenError):
    """A build-time failure with one line of cause and remedy (exit 1)."""


class PinError(FetchError):
    """An artifact has no usable pin in checksums/."""


class UnsafeArchive(FetchError):
    """A tarball member that could write outside the staging dir, or is not a plain file."""


class Unreachable(FetchError):
    """The host could not be reached at all (DNS, refused, connect timeout): auto falls back."""


class NotFound(FetchError):
    """HTTP 404: a real error (wrong version or mirror layout), never a reason to fall back."""


# --- artifacts and pins ---------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    component: str  # "containerd" or "runc": selects the pin file and the upstream repository
    version: str
    name: str  # the release asset's file name

    @property
    def pin_file_name(self) -> str:
        return f"{self.component}-{self.version}.sha256"

    @property
    def release_page(self) -> str:
        repo = "containerd/containerd" if self.component == "containerd" else "opencontainers/runc"
        return f"https://github.com/{repo}/releases/tag/v{self.version}"

    def upstream_url(self, base: str | None = None) -> str:
        base = (base or os.environ.get(ENV_UPSTREAM_BASE) or UPSTREAM_BASE).rstrip("/")
        repo = "containerd/containerd" if self.component == "containerd" else "opencontainers/runc"
        return f"{base}/{repo}/releases/download/v{self.version}/{self.name}"

    def mirror_url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{quote(self.name)}"


def containerd_artifact(version: str, arch: str, flavor: str) -> Artifact:
    prefix = "containerd-static" if flavor == "static" else "containerd"
    return Artifact("containerd", version, f"{prefix}-{version}-linux-{arch}.tar.gz")


def runc_artifact(version: str, arch: str) -> Artifact:
    return Artifact("runc", version, f"runc.{arch}")


def parse_pins(path: Path) -> dict[str, str]:
    """Read a sha256sum-format file: `<hex>  <name>` (or `<hex> *<name>`), '#' comments allowed."""
    pins: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not _SHA256_RE.match(parts[0]):
            raise PinError(
                f"{path}:{lineno}: not a sha256sum line: {raw!r}",
                "each line must be '<64 hex digits>  <file name>'",
            )
        digest, name = parts[0].lower(), parts[1].removeprefix("*").strip()
        if pins.get(name, digest) != digest:
            raise PinError(f"{path}:{lineno}: {name} is pinned twice with different digests")
        pins[name] = digest
    return pins


def lookup_pin(checksums: Path, artifact: Artifact) -> str:
    """The pinned SHA-256 of `artifact`, from checksums/<component>-<version>.sha256."""
    pin_file = checksums / artifact.pin_file_name
    pins = parse_pins(pin_file) if pin_file.is_file() else {}
    digest = pins.get(artifact.name)
    if digest is None:
        raise PinError(
            f"no pin for {artifact.name} ({artifact.component} {artifact.version}) in {pin_file}",
            f"append '<sha256>  {artifact.name}' to {pin_file} after checking it against the "
            f"release's published checksums ({artifact.release_page})",
        )
    return digest


# --- hashing and files ----------------------------------------------------------------------


def write_executable(src: IO[bytes], dest: Path) -> tuple[int, str]:
    """Copy a stream into a new file; O_EXCL|O_NOFOLLOW so nothing pre-planted is reused."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(dest, flags, BINARY_MODE)
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(dest, BINARY_MODE)  # the umask may have trimmed the mode given to open()
    return size, digest.hexdigest()


def check_elf(path: Path, arch: str, origin: str) -> None:
    """Refuse a binary that is not an ELF for `arch`: a wrong one would fail only at run time."""
    try:
        found = elf.arch_of(str(path))
    except elf.NotElfError as exc:
        raise FetchError(
            f"{path.name} from {origin} is not an ELF executable ({exc})",
            "the artifact is not a Linux release build; check the source",
        ) from exc
    if found != arch:
        raise FetchError(
            f"{path.name} from {origin} is built for {found}, not {arch}",
            f"fetch the linux-{arch} artifacts, or pass --arch {found}",
        )


# --- the containerd tarball -----------------------------------------------------------------


def _member_verdict(info: tarfile.TarInfo, wanted: Sequence[str]) -> str | None:
    """The binary name to keep for this member, None to skip it; raise for anything unsafe.

    Unsafe members are refused even when they would be skipped: a tarball that carries them is
    not an upstream release, whatever its pin says.
    """
    name = info.name
    if name.startswith("/"):
        raise UnsafeArchive(f"member {name!r} has an absolute path")
    parts = name.split("/")
    if ".." in parts:
        raise UnsafeArchive(f"member {name!r} contains '..'")
    if info.issym() or info.islnk():
        kind = "symlink" if info.issym() else "hardlink"
        raise UnsafeArchive(f"member {name!r} is a {kind} (to {info.linkname!r})")
    if info.ischr() or info.isblk() or info.isfifo():
        raise UnsafeArchive(f"member {name!r} is a device or fifo")
    if not (info.isreg() or info.isdir()):
        raise UnsafeArchive(f"member {name!r} has unsupported type {info.type!r}")
    if info.isdir():
        return None
    rel = [p for p in parts if p not in ("", ".")]
    if len(rel) == 2 and rel[0] == "bin" and rel[1] in wanted:
        return rel[1]
    return None


def extract_release_binaries(
    tarball: Path, dest_dir: Path, wanted: Sequence[str] = CONTAINERD_BINARIES
) -> dict[str, tuple[int, str]]:
    """Copy bin/<wanted> regular files out of a release tarball into dest_dir.

    Never calls tarfile's extract: output paths are built from the fixed `wanted` names only, so a
    crafted member name cannot reach outside dest_dir. Returns name -> (size, sha256).
    """
    found: dict[str, tuple[int, str]] = {}
    try:
        with tarfile.open(tarball, mode="r|*") as tar:
            for info in tar:
                try:
                    binary = _member_verdict(info, wanted)
                except UnsafeArchive as exc:
                    raise UnsafeArchive(
                        f"{tarball.name}: refusing {exc.message}",
                        "this is not a containerd release tarball; do not use it",
                    ) from None
                if binary is None:
                    continue
                if binary in found:
                    raise UnsafeArchive(f"{tarball.name}: member {info.name!r} appears twice")
                stream = tar.extractfile(info)
                assert stream is not None
                found[binary] = write_executable(stream, dest_dir / binary)
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        raise FetchError(f"{tarball.name} is not a readable tar archive ({exc})") from exc
    missing = [n for n in wanted if n not in found]
    if missing:
        raise FetchError(
            f"{tarball.name} has no bin/{', bin/'.join(missing)}",
            "is this a containerd release tarball for linux?",
        )
    return found


# --- downloading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NetOptions:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0


class _Retry(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, connect: bool = False, dns: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connect = connect  # no HTTP response at all: the host may be unreachable
        self.dns = dns


class _Restart(Exception):
    """The partial file cannot be resumed: start again from byte 0 at once."""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests -> urllib3 -> socket)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        todo.extend(a for a in getattr(cur, "args", ()) if isinstance(a, BaseException))
        for attr in ("reason", "__cause__", "__context__"):
            nxt = getattr(cur, attr, None)
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def describe_connect_error(exc: BaseException, url: str) -> tuple[str, bool]:
    """(one-line reason, is_dns) for a failure to open a connection to `url`'s host."""
    import socket

    import urllib3.exceptions

    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    causes = list(_causes(exc))
    if any(isinstance(c, urllib3.exceptions.NameResolutionError | socket.gaierror) for c in causes):
        return f"cannot resolve host {host}", True
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return f"connection refused by {host}:{port}", False
    # urllib3's NewConnectionError subclasses ConnectTimeoutError: only a real timeout counts.
    timeouts = (urllib3.exceptions.ConnectTimeoutError, TimeoutError)
    if any(
        isinstance(c, timeouts) and not isinstance(c, urllib3.exceptions.NewConnectionError)
        for c in causes
    ):
        return f"timed out connecting to {host}:{port}", False
    return f"cannot connect to {host}:{port} ({type(exc).__name__})", False


class Progress:
    """A one-line bar on a terminal (bytes, rate, ETA); one line at start and end otherwise."""

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total: int | None = None
        self.done = 0
        self.start = time.monotonic()
        self._base = 0
        self._last = 0.0

    def begin(self, offset: int, total: int | None, url: str) -> None:
        self.done, self.total, self._base, self.start = offset, total, offset, time.monotonic()
        if not self.tty:
            resumed = f" (resuming at byte {offset})" if offset else ""
            print(f"fetch: downloading {url}{resumed}", file=self.stream, flush=True)

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self._last >= 0.1:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-6)
        rate = (self.done - self._base) / elapsed
        total = f"/{_mb(self.total)}" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            left = int((self.total - self.done) / rate)
            eta = f"  ETA {left // 60}:{left % 60:02d}"
        line = f"  {self.label}  {_mb(self.done)}{total}  {_mb(rate)}/s{eta}"
        self.stream.write("\r" + line.ljust(72))
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


def _mb(n: float | None) -> str:
    return f"{(n or 0) / 1e6:.1f} MB"


def _content_range_start(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) from 'bytes START-END/TOTAL'; Nones when absent or unparsable."""
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    if not match:
        return None, None
    total = None if match.group(2) == "*" else int(match.group(2))
    return int(match.group(1)), total


def _content_range_total(value: str | None) -> int | None:
    """TOTAL from a 416's 'bytes */TOTAL'."""
    match = re.match(r"bytes \*/(\d+)", value or "")
    return int(match.group(1)) if match else None


def _attempt(
    session: requests.Session, url: str, part: Path, net: NetOptions, progress: Progress
) -> None:
    """One GET into `part`, resuming from its current size; raise _Retry/_Restart/FetchError."""
    import requests
    import urllib3

    offset = part.stat().st_size if part.exists() else 0
    # identity: Range offsets and Content-Length must count the file's own bytes.
    headers = {"Accept-Encoding": "identity", "User-Agent": "warren-bundle-fetch/1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(
            url,
            headers=headers,
            stream=True,
            timeout=(net.connect_timeout, net.read_timeout),
        )
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        if isinstance(exc, requests.exceptions.ReadTimeout):
            raise _Retry(f"no response from {url} within {net.read_timeout:g}s") from exc
        reason, dns = describe_connect_error(exc, url)
        raise _Retry(reason, connect=True, dns=dns) from exc
    with resp:
        status = resp.status_code
        if status == 404:
            raise NotFound(
                f"not found (HTTP 404): {url}",
                "check the version and, for a mirror, that it holds the release file names",
            )
        if status == 416 and offset:
            if _content_range_total(resp.headers.get("Content-Range")) == offset:
                return  # the .part is already complete; the digest check decides
            part.unlink()
            raise _Restart
        if status >= 500 or status == 429:
            raise _Retry(f"HTTP {status} {resp.reason} from {url}")
        if status not in (200, 206):
            raise FetchError(f"HTTP {status} {resp.reason}: {url}")
        mode, total = "ab", None
        if status == 206:
            start, total = _content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Restart
        else:
            # 200 to a Range request: the server ignored it and sends everything from byte 0.
            mode, offset = "wb", 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        progress.begin(offset, total, url)
        try:
            with open(part, mode) as fp:
                for chunk in resp.iter_content(1 << 16):
                    fp.write(chunk)
                    progress.advance(len(chunk))
                    if progress.done > MAX_ARTIFACT_BYTES:
                        part.unlink()
                        raise FetchError(
                            f"{url} is larger than {MAX_ARTIFACT_BYTES >> 20} MiB: not a release "
                            "artifact"
                        )
                fp.flush()
                os.fsync(fp.fileno())
        # requests' exceptions are OSErrors too: the transport ones must be caught first.
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            ConnectionError,
            TimeoutError,
        ) as exc:
            raise _Retry(f"download of {url} broke off ({type(exc).__name__})") from exc
        except OSError as exc:
            raise FetchError(f"cannot write {part}: {exc.strerror or exc}") from exc
        finally:
            progress.finish()
        if total is not None and part.stat().st_size != total:
            raise _Retry(f"download of {url} ended at byte {part.stat().st_size} of {total}")


def download(url: str, dest: Path, expected: str, net: NetOptions, label: str) -> bool:
    """Fetch `url` to `dest` via dest.part; True if downloaded, False if dest was already good.

    `dest` appears only after the bytes matched `expected`; a mismatch deletes the .part.
    """
    if dest.is_file():
        if sha256_file(dest) == expected:
            return False
        dest.unlink()  # damaged or stale: fetch it again rather than trust it
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    inherited = part.exists() and part.stat().st_size > 0
    _transfer(url, part, net, label)
    actual = sha256_file(part)
    if actual != expected and inherited:
        # The bad bytes may be an old run's prefix (e.g. from another mirror): one clean try.
        note = f"fetch: resumed {part.name} failed its digest; fetching it again from byte 0"
        print(note, file=sys.stderr)
        part.unlink()
        _transfer(url, part, net, label)
        actual = sha256_file(part)
    if actual != expected:
        part.unlink()
        raise ChecksumMismatch(
            f"checksum mismatch for {dest.name} from {url}: expected {expected}, got {actual}",
            "the file was deleted; if the release was re-published, re-check it and update the pin",
        )
    os.replace(part, dest)
    return True


def _transfer(url: str, part: Path, net: NetOptions, label: str) -> None:
    """Get all of `url` into `part`, resuming and retrying; the caller checks the digest."""
    import requests

    failures = 0
    with requests.Session() as session:
        while True:
            size_before = part.stat().st_size if part.exists() else 0
            try:
                _attempt(session, url, part, net, Progress(label))
                return
            except _Restart:
                continue
            except _Retry as exc:
                grew = part.exists() and part.stat().st_size > size_before
                # Progress made means the link works: keep resuming rather than give up.
                failures = 1 if grew else failures + 1
                if exc.dns or failures > net.retries:
                    if exc.connect:
                        raise Unreachable(f"{exc.reason} ({url})") from None
                    raise FetchError(
                        f"{exc.reason} (gave up after {failures} attempts in a row)",
                        "try again, or use --mirror",
                    ) from None
                delay = min(net.backoff * 2 ** (failures - 1), 30.0)
                print(f"fetch: {exc.reason}; retrying in {delay:g}s", file=sys.stderr, flush=True)
                time.sleep(delay)


# --- staging --------------------------------------------------------------------------------


@dataclass
class Staged:
    """One architecture's verified binaries in a temp dir beside its --out."""

    arch: str
    out: Path
    tmp: Path
    containerd_version: str
    runc_version: str
    source: str
    provenance: dict[str, Any]
    files: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def bin_dir(self) -> Path:
        return self.tmp / "bin"

    def manifest(self) -> payload.Manifest:
        entries = tuple(
            payload.FileEntry(name, self.files[name][0], BINARY_MODE, self.files[name][1])
            for name in payload.BINARIES
        )
        return payload.Manifest(
            os="linux",
            arch=self.arch,
            containerd_version=self.containerd_version,
            runc_version=self.runc_version,
            source=self.source,
            files=entries,
            provenance=self.provenance,
        )

    def finish(self, origin: str) -> None:
        for name in payload.BINARIES:
            check_elf(self.bin_dir / name, self.arch, origin)
        text = json.dumps(self.manifest().to_dict(), indent=2, sort_keys=True) + "\n"
        (self.tmp / payload.MANIFEST_FILE).write_text(text)


def new_staging(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    os.chmod(tmp, 0o755)
    (tmp / "bin").mkdir()
    return tmp


def swap_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` with `tmp`; the previous output goes only once the new one is in place."""
    old = None
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


# --- release sources: upstream, mirror, dir -------------------------------------------------


@dataclass(frozen=True)
class ReleaseOptions:
    containerd: str
    runc: str
    flavor: str
    source: str  # upstream | mirror | dir
    mirror: str | None
    from_dir: Path | None
    checksums: Path
    cache: Path
    net: NetOptions


def _locate(art: Artifact, opts: ReleaseOptions) -> str:
    if opts.source == "mirror":
        assert opts.mirror
        return art.mirror_url(opts.mirror)
    if opts.source == "dir":
        assert opts.from_dir
        return (opts.from_dir / art.name).resolve().as_uri()
    return art.upstream_url()


def obtain(art: Artifact, digest: str, opts: ReleaseOptions) -> tuple[Path, str]:
    """A verified local copy of `art` and where it came from."""
    where = _locate(art, opts)
    if opts.source == "dir":
        assert opts.from_dir
        path = opts.from_dir / art.name
        if not path.is_file():
            raise FetchError(
                f"{art.name} is not in {opts.from_dir}", "copy the release files there"
            )
        actual = sha256_file(path)
        if actual != digest:
            raise ChecksumMismatch(
                f"checksum mismatch for {path}: expected {digest}, got {actual}",
                "replace the file with the published release artifact",
            )
        print(f"fetch: {art.name} from {path} verified", file=sys.stderr)
        return path, where
    # Version-scoped: runc.amd64 of two runc versions must not share a cache slot.
    dest = opts.cache / f"{art.component}-{art.version}" / art.name
    fetched = download(where, dest, digest, opts.net, art.name)
    state = "downloaded and verified" if fetched else "already in cache, verified"
    print(f"fetch: {art.name} {state} (sha256 {digest})", file=sys.stderr)
    return dest, where


def fetch_release(
    arches: Sequence[str], outs: dict[str, Path], opts: ReleaseOptions
) -> list[Staged]:
    plan = {
        arch: [
            containerd_artifact(opts.containerd, arch, opts.flavor),
            runc_artifact(opts.runc, arch),
        ]
        for arch in arches
    }
    # Every pin is resolved before the first byte is fetched: a missing pin costs no download.
    pins = {a: lookup_pin(opts.checksums, a) for arts in plan.values() for a in arts}
    staged: list[Staged] = []
    try:
        for arch, (ctd, runc) in plan.items():
            ctd_path, ctd_url = obtain(ctd, pins[ctd], opts)
            runc_path, runc_url = obtain(runc, pins[runc], opts)
            provenance = {
                "flavor": opts.flavor,
                "artifacts": [
                    {"name": ctd.name, "url": ctd_url, "sha256": pins[ctd]},
                    {"name": runc.name, "url": runc_url, "sha256": pins[runc]},
                ],
            }
            st = Staged(
                arch,
                outs[arch],
                new_staging(outs[arch]),
                opts.containerd,
                opts.runc,
                opts.source,
                provenance,
            )
            staged.append(st)
            st.files.update(extract_release_binaries(ctd_path, st.bin_dir))
            with open(runc_path, "rb") as src:
                st.files["runc"] = write_executable(src, st.bin_dir / "runc")
            st.finish(f"{opts.source} {ctd.name} / {runc.name}")
    except BaseException:
        discard(staged)
        raise
    return staged


def discard(staged: Sequence[Staged]) -> None:
    for st in staged:
        shutil.rmtree(st.tmp, ignore_errors=True)


# --- the debian source ----------------------------------------------------------------------


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


def upstream_version(debian_version: str) -> str:
    """'1.6.20~ds1-1+deb12u3' -> '1.6.20', '1:2.1.9+ds1-5' -> '2.1.9'."""
    ver = debian_version.split(":", 1)[-1]
    ver = ver.rsplit("-", 1)[0] if "-" in ver else ver
    match = re.match(r"\d+(?:\.\d+)*", ver)
    return match.group(0) if match else ver


def require_apt() -> None:
    missing = [t for t in ("apt-get", "dpkg-deb") if shutil.which(t) is None]
    if missing:
        raise FetchError(
            f"the Debian source needs {' and '.join(missing)}, which this host does not have",
            "use --source upstream, --mirror URL or --from-dir DIR",
        )


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None) -> str:
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
        _run(["apt-get", "-q", *self.options(), "update"], f"apt-get update ({self.suite})")
        self._updated = True

    def locate(self, package: str) -> tuple[str, str, int, str, str]:
        """(url, file name, size, hash algorithm, hash) of the candidate .deb, from the index."""
        self.update()
        out = _run(
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
            _let_apt_write(Path(tmp))
            _run(
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


def _let_apt_write(directory: Path) -> None:
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
        fields = _run(
            ["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"],
            f"dpkg-deb -f {deb.name}",
        )
        meta = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
        if meta.get("Package") != package or meta.get("Architecture") != arch:
            raise FetchError(f"{deb.name} is {meta.get('Package')}/{meta.get('Architecture')}")
        return DebInfo(package, meta["Version"], suite, arch, deb, url, sha256_file(deb))


def _take_from_deb(info: DebInfo, names: Sequence[str], st: Staged) -> None:
    with tempfile.TemporaryDirectory(prefix=".deb-", dir=st.tmp.parent) as tmp:
        root = Path(tmp)
        _run(["dpkg-deb", "-x", str(info.deb), str(root)], f"dpkg-deb -x {info.deb.name}")
        for name in names:
            src = next(_regular_files(root, DEBIAN_PATHS[name]), None)
            if src is None:
                raise FetchError(
                    f"{info.deb.name} has no regular file at /{' or /'.join(DEBIAN_PATHS[name])}"
                )
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
            provenance = {
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
            _take_from_deb(ctd, CONTAINERD_BINARIES, st)
            _take_from_deb(runc, ("runc",), st)
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


# --- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fetch_and_verify.py",
        description=(
            "Download containerd and runc, verify them against checksums/, keep only the four "
            "binaries, and stage build/payload/linux-<arch> (bin/*, manifest.json, payload.tar.zst)"
        ),
        epilog=(
            "Sources: upstream = GitHub releases; mirror = the release file names flat under "
            "--mirror URL (e.g. URL/containerd-static-2.2.7-linux-amd64.tar.gz, URL/runc.amd64); "
            "dir = the same names in --from-dir; debian = apt-get download containerd runc "
            "(the suite's versions; --containerd/--runc are ignored); auto = upstream, or debian "
            "when upstream cannot be reached. Exit codes: 8 checksum mismatch, 2 usage, 1 other."
        ),
    )
    p.add_argument("--arch", choices=(*ARCHES, "all"), default=None, help="default: this host's")
    p.add_argument(
        "--containerd",
        metavar="VERSION",
        default=None,
        help=f"containerd release (default {DEFAULT_CONTAINERD})",
    )
    p.add_argument(
        "--runc", metavar="VERSION", default=None, help=f"runc release (default {DEFAULT_RUNC})"
    )
    p.add_argument("--flavor", choices=("static", "dynamic"), default="static")
    p.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="default auto; --mirror/--from-dir alone imply mirror/dir",
    )
    p.add_argument("--mirror", metavar="URL", help="base URL holding the release file names")
    p.add_argument("--from-dir", metavar="DIR", type=Path, help="folder holding the release files")
    p.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=None,
        help="default build/payload/linux-<arch>; with --arch all: the parent dir",
    )
    p.add_argument("--checksums", metavar="DIR", type=Path, default=DEFAULT_CHECKSUMS)
    p.add_argument(
        "--cache",
        metavar="DIR",
        type=Path,
        default=DEFAULT_CACHE,
        help="download cache (default build/downloads)",
    )
    p.add_argument(
        "--debian-suite",
        metavar="SUITE",
        default=None,
        help="Debian suite for containerd (default: this host's)",
    )
    p.add_argument(
        "--debian-runc-suite",
        metavar="SUITE",
        default=None,
        help="Debian suite for runc (default: this host's)",
    )
    p.add_argument("--debian-mirror", metavar="URL", default=DEBIAN_MIRROR)
    p.add_argument(
        "--release", action="store_true", help="upstream or mirror only: never the Debian fallback"
    )
    p.add_argument("--no-pack", action="store_true", help="stage bin/ + manifest.json only")
    p.add_argument(
        "--level",
        type=int,
        default=payload.ZSTD_LEVEL,
        help=f"zstd level for the payload (default {payload.ZSTD_LEVEL})",
    )
    p.add_argument("--retries", type=int, default=3, help="retries per download (default 3)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in s (doubles)")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--read-timeout", type=float, default=60.0)
    p.add_argument("--debug", action="store_true", help="tracebacks on errors")
    return p


def resolve_source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    source = args.source
    if source == "auto" and args.mirror:
        source = "mirror"
    elif source == "auto" and args.from_dir:
        source = "dir"
    if source == "mirror" and not args.mirror:
        parser.error("--source mirror needs --mirror URL")
    if source == "dir" and not args.from_dir:
        parser.error("--source dir needs --from-dir DIR")
    if args.mirror and source != "mirror":
        parser.error(f"--mirror does not go with --source {source}")
    if args.from_dir and source != "dir":
        parser.error(f"--from-dir does not go with --source {source}")
    if args.release and source in ("debian", "dir"):
        parser.error(f"--release builds use upstream or mirror artifacts, not --source {source}")
    return source


def output_dirs(arches: Sequence[str], out: Path | None, all_arches: bool) -> dict[str, Path]:
    if out is None:
        return {a: DEFAULT_OUT_PARENT / f"linux-{a}" for a in arches}
    if all_arches:
        return {a: out / f"linux-{a}" for a in arches}
    return {arches[0]: out}


def check_replaceable(out: Path) -> None:
    """Refuse to replace a directory that is not a staged payload: --out is swapped wholesale."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise FetchError(f"--out {out} exists and is not a directory", "pick another --out")
    if not out.exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in STAGED_NAMES)
    if foreign:
        raise FetchError(
            f"refusing to replace {out}: it holds {', '.join(foreign[:3])}, "
            "which a staged payload never does",
            "pick an empty or previously staged --out",
        )


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """One run per cache at a time: two writers on one .part would corrupt each other's bytes."""
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as fp:
        try:
            fcntl.flock(fp, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"fetch: waiting for another run using {cache}", file=sys.stderr, flush=True)
            fcntl.flock(fp, fcntl.LOCK_EX)
        yield


def stage(
    args: argparse.Namespace, source: str, arches: list[str], outs: dict[str, Path]
) -> list[Staged]:
    cache: Path = args.cache
    debian = DebianOptions(
        args.debian_suite or host_suite(),
        args.debian_runc_suite or host_suite(),
        args.debian_mirror,
        cache,
    )
    if source == "debian":
        if args.containerd or args.runc:
            print(
                "fetch: note: --containerd/--runc are ignored with --source debian", file=sys.stderr
            )
        return fetch_debian(arches, outs, debian)
    release = ReleaseOptions(
        containerd=args.containerd or DEFAULT_CONTAINERD,
        runc=args.runc or DEFAULT_RUNC,
        flavor=args.flavor,
        source="upstream" if source == "auto" else source,
        mirror=args.mirror,
        from_dir=args.from_dir,
        checksums=args.checksums,
        cache=cache,
        net=NetOptions(args.connect_timeout, args.read_timeout, args.retries, args.backoff),
    )
    try:
        return fetch_release(arches, outs, release)
    except Unreachable as exc:
        if source != "auto" or args.release:
            if args.release:
                exc.remedy = "release builds never fall back to Debian; use --mirror URL"
            raise
        try:
            staged = fetch_debian(arches, outs, debian, f"upstream unreachable: {exc.message}")
        except FetchError as deb_exc:
            raise FetchError(
                f"upstream unreachable ({exc.message}) and the Debian fallback failed: "
                f"{deb_exc.message}",
                deb_exc.remedy or "use --mirror URL or --from-dir DIR",
            ) from deb_exc
        st = staged[0]
        print(
            f"warren: upstream unreachable ({exc.message}); falling back to Debian packages "
            f"(containerd {st.containerd_version}, runc {st.runc_version}) — not for release "
            "builds",
            file=sys.stderr,
            flush=True,
        )
        return staged


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    source = resolve_source(args, parser)
    if args.arch in (None, "all"):
        arches = list(ARCHES) if args.arch == "all" else [host_arch()]
    else:
        arches = [args.arch]
    if arches[0] not in ARCHES:
        raise PlatformError(
            f"host architecture {arches[0]!r} is not built", "pass --arch amd64|arm64"
        )
    outs = output_dirs(arches, args.out, args.arch == "all")
    for out in outs.values():
        check_replaceable(out)
    with cache_lock(args.cache):
        staged = stage(args, source, arches, outs)
        try:
            packed = {
                st.arch: None if args.no_pack else payload.pack(st.tmp, level=args.level)
                for st in staged
            }
        except BaseException:
            discard(staged)
            raise
        # Swapped only once every arch passed: --arch all is all or nothing too.
        for st in staged:
            swap_into_place(st.tmp, st.out)
    for st in staged:
        report(st, packed[st.arch])
    return 0


def report(st: Staged, packed: payload.Payload | None) -> None:
    label = f"linux-{st.arch}"
    for name in payload.BINARIES:
        size, digest = st.files[name]
        print(f"{label}  bin/{name:<24} {size:>10} bytes  sha256:{digest}")
    print(
        f"{label}  containerd {st.containerd_version}, runc {st.runc_version} "
        f"(source {st.source}) -> {st.out}"
    )
    if packed is not None:
        out_file = st.out / payload.PAYLOAD_FILE
        print(f"{label}  payload {out_file}  {packed.size} bytes  sha256:{packed.digest}")


def one_line(exc: WarrenError) -> str:
    """Cause and remedy on one line; unlike WarrenError.one_line it keeps runs of spaces, which
    matter in the suggested sha256sum line."""
    text = exc.message if not exc.remedy else f"{exc.message}; {exc.remedy}"
    return " ".join(line.strip() for line in text.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args, parser)
    except WarrenError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if args.debug:
            traceback.print_exc()
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return int(ExitCode.ERROR)


if __name__ == "__main__":
    sys.exit(main())
