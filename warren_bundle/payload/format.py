"""The payload format: a zstd tar of manifest.json + bin/*, and a small JSON descriptor beside it.

The descriptor (digest, size, manifest) is what lets `warren version` and the extraction cache
answer without decompressing or hashing the payload. In the frozen executable both travel as
PyInstaller CArchive entries of typecode 'a' (never extracted by the bootloader); from source they
are files in a staged payload directory.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from warren_bundle import launcher
from warren_bundle.errors import PayloadError
from warren_bundle.payload import onefile

if TYPE_CHECKING:
    import tarfile

    from warren_bundle.payload.tarstream import MemberStream

# tarfile, hashlib, zstandard and the threaded reader are imported by the functions that use them:
# `warren version` reads only the descriptor, and must not pay for them on every launch.

FORMAT_VERSION = 1
PAYLOAD_FILE = "payload.tar.zst"
DESCRIPTOR_FILE = "payload.json"
MANIFEST_FILE = "manifest.json"
BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr", "runc")
# Subdirs a payload may carry under bin/, one level deep: the CNI plugins (cni/bridge, ...) and
# the sandbox image archive (sandbox/pause.tar). Any source may stage them.
SUBDIRS = ("cni", "sandbox")
CNI_DIR = "cni"
ENV_PAYLOAD = "WARREN_PAYLOAD"
ZSTD_LEVEL = 19
# A 64 MiB window lets ctr and the shim be coded as references into containerd (they share most of
# their Go code): 19.2 MB instead of 25.7 MB at level 19, for ~25 ms more decompression and at most
# 64 MiB of window while extracting. Readers accept up to 2**27 by default.
ZSTD_WINDOW_LOG = 26
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    mode: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    os: str
    arch: str
    containerd_version: str
    runc_version: str
    source: str
    files: tuple[FileEntry, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION
    # What the binaries need of the host's C library (payload/libc.py Requirement.to_dict):
    # {"linkage": "static"} or {"linkage": "dynamic", "glibc": "2.34", "binary": ...}; {} when
    # the payload was staged before this was recorded.
    requires: dict[str, Any] = field(default_factory=dict)
    # What the node parts are, when the payload carries them (all optional):
    # {"cni": {"version", "source", "plugins": [...]}, "sandbox_image": {"ref", "file",
    #  "digest", "source"}, "crictl": {"version", "file"}}
    components: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        try:
            files = tuple(
                FileEntry(str(f["name"]), int(f["size"]), int(f["mode"]), str(f["sha256"]))
                for f in data["files"]
            )
            return cls(
                os=str(data["os"]),
                arch=str(data["arch"]),
                containerd_version=str(data["containerd_version"]),
                runc_version=str(data["runc_version"]),
                source=str(data["source"]),
                files=files,
                provenance=dict(data.get("provenance") or {}),
                format=int(data.get("format", FORMAT_VERSION)),
                requires=dict(data.get("requires") or {}),
                components=dict(data.get("components") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PayloadError(f"manifest is malformed ({exc!r})") from exc

    def file(self, name: str) -> FileEntry | None:
        return next((f for f in self.files if f.name == name), None)

    @property
    def cni_plugins(self) -> list[str]:
        """The CNI plugins carried under bin/cni/, by name."""
        prefix = f"{CNI_DIR}/"
        return sorted(f.name.removeprefix(prefix) for f in self.files if f.name.startswith(prefix))

    @property
    def sandbox_image(self) -> dict[str, Any] | None:
        """{"ref", "file", ...} of the sandbox (pause) image archive it carries, if any."""
        image = self.components.get("sandbox_image")
        if isinstance(image, dict) and self.file(str(image.get("file"))) is not None:
            return image
        return None

    @property
    def has_crictl(self) -> bool:
        return self.file("crictl") is not None


@dataclass(frozen=True)
class Payload:
    """A located payload: its identity, its manifest, and where its compressed bytes are."""

    digest: str
    size: int
    manifest: Manifest
    path: Path  # the file that holds the compressed bytes (the executable when embedded)
    offset: int = 0
    embedded: bool = False

    @property
    def origin(self) -> str:
        if not self.embedded:
            return str(self.path)
        return f"embedded in {self.path}"

    def descriptor(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "digest": self.digest,
            "size": self.size,
            "manifest": self.manifest.to_dict(),
        }


# --- locating ---------------------------------------------------------------------------------


def _descriptor_from_json(raw: bytes, where: str) -> tuple[str, int, Manifest]:
    try:
        data = json.loads(raw)
        if int(data.get("format", 0)) != FORMAT_VERSION:
            raise PayloadError(f"{where}: payload format {data.get('format')} is not supported")
        return str(data["digest"]), int(data["size"]), Manifest.from_dict(data["manifest"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PayloadError(f"{where}: descriptor is unreadable ({exc})") from exc


def read_embedded(executable: Path) -> Payload:
    """The payload the one file carries (warren_bundle/payload/onefile.py says where)."""
    try:
        trailer = onefile.read_trailer(executable)
        with open(executable, "rb") as fp:
            fp.seek(trailer.descriptor_offset)
            raw = fp.read(trailer.descriptor_length)
    except onefile.NotOneFile as exc:
        raise PayloadError(f"no payload in {executable} ({exc})") from exc
    except OSError as exc:
        raise PayloadError(f"cannot read {executable}: {exc}") from exc
    if trailer.payload_length == 0:
        raise PayloadError(f"no payload entry in {executable} (this build has no binaries)")
    digest, size, manifest = _descriptor_from_json(raw, str(executable))
    if size != trailer.payload_length:
        raise PayloadError(
            f"payload entry in {executable} is {trailer.payload_length} bytes, not {size}"
        )
    return Payload(digest, size, manifest, executable, trailer.payload_offset, embedded=True)


def _descriptor_path(payload_file: Path) -> Path:
    if payload_file.name == PAYLOAD_FILE:
        return payload_file.with_name(DESCRIPTOR_FILE)
    return payload_file.with_name(payload_file.name.removesuffix(".tar.zst") + ".json")


def read_file(path: Path) -> Payload:
    payload_file = path / PAYLOAD_FILE if path.is_dir() else path
    if not payload_file.is_file():
        raise PayloadError(f"no payload at {payload_file}")
    size = payload_file.stat().st_size
    desc = _descriptor_path(payload_file)
    if desc.is_file():
        digest, desc_size, manifest = _descriptor_from_json(desc.read_bytes(), str(desc))
        if desc_size != size:
            raise PayloadError(f"{payload_file} is {size} bytes but {desc} says {desc_size}")
        return Payload(digest, size, manifest, payload_file)
    # No descriptor: derive it (slower, but a bare payload file stays usable).
    from warren_bundle.fsutil import sha256_file

    return Payload(sha256_file(payload_file), size, _manifest_from_tar(payload_file), payload_file)


def default_staged_dir() -> Path:
    from warren_bundle.hostinfo import host_arch

    repo = Path(__file__).resolve().parents[2]  # warren_bundle/payload/format.py -> the checkout
    return repo / "build" / "payload" / f"linux-{host_arch()}"


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def locate(explicit: str | os.PathLike[str] | None = None) -> Payload:
    """The payload to use: explicit option/env, else the executable's own, else the staged build."""
    chosen = explicit or os.environ.get(ENV_PAYLOAD)
    if chosen:
        return read_file(Path(chosen))
    if is_frozen():
        return read_embedded(Path(launcher.executable()))
    staged = default_staged_dir()
    if (staged / PAYLOAD_FILE).is_file():
        return read_file(staged)
    raise PayloadError(
        f"no payload: not a frozen build and nothing staged at {staged}",
        "run 'make build' to download and embed containerd, or pass --payload PATH",
    )


# --- reading members --------------------------------------------------------------------------


@dataclass
class Member:
    name: str  # "manifest.json" or the binary's name (without "bin/")
    size: int
    mode: int
    stream: MemberStream  # file-like (read, readinto) and chunks() without copies


def _member_name(name: str, is_file: bool) -> str:
    if not is_file:
        raise PayloadError(f"unexpected non-file member {name!r}")
    if name == MANIFEST_FILE:
        return name
    parts = name.split("/")
    if parts[0] != "bin" or any(p in ("", ".", "..") for p in parts[1:]):
        raise PayloadError(f"unexpected member {name!r}")
    if len(parts) == 2 or (len(parts) == 3 and parts[1] in SUBDIRS):
        return "/".join(parts[1:])
    raise PayloadError(f"unexpected member {name!r}")


@contextmanager
def open_members(payload: Payload) -> Iterator[Iterator[Member]]:
    """Stream the payload's members; when the iteration ends the digest has been checked.

    Each member's stream must be read (or left) before the next member is asked for; its
    `chunks()` hands the data over without copying it.
    """
    from warren_bundle.payload.tarstream import DecompressedStream, headers

    try:
        fp = open(payload.path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise PayloadError(f"cannot open {payload.path}: {exc.strerror}") from exc
    with fp:
        data = DecompressedStream(fp, payload.offset, payload.size, payload.origin)

        def members() -> Iterator[Member]:
            for header, stream in headers(data):
                name = _member_name(header.name, header.is_file)
                yield Member(name, header.size, header.mode, stream)
            actual = data.finish()
            if actual != payload.digest:
                raise PayloadError(
                    f"{payload.origin} fails its digest (expected {payload.digest}, got {actual})"
                )

        try:
            yield members()
        finally:
            data.close()


def _manifest_from_tar(payload_file: Path) -> Manifest:
    import tarfile

    import zstandard

    try:
        with (
            open(payload_file, "rb") as fp,
            zstandard.ZstdDecompressor().stream_reader(fp) as zr,
            tarfile.open(fileobj=zr, mode="r|") as tar,
        ):
            first = tar.next()
            if first is None or first.name != MANIFEST_FILE:
                raise PayloadError(f"{payload_file} does not start with {MANIFEST_FILE}")
            stream = tar.extractfile(first)
            assert stream is not None
            return Manifest.from_dict(json.loads(stream.read()))
    except (OSError, zstandard.ZstdError, tarfile.TarError, ValueError) as exc:
        raise PayloadError(f"{payload_file} is damaged ({exc})") from exc


# --- building (build time only) ---------------------------------------------------------------


def pack(staged_dir: Path, level: int = ZSTD_LEVEL) -> Payload:
    """Pack `staged_dir/{manifest.json,bin/*}` into payload.tar.zst + payload.json, reproducibly."""
    import tarfile

    import zstandard

    manifest_raw = (staged_dir / MANIFEST_FILE).read_bytes()
    manifest = Manifest.from_dict(json.loads(manifest_raw))
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    out = staged_dir / PAYLOAD_FILE
    tmp = out.with_name(out.name + ".tmp")
    # The whole tar first (~100 MB, at build time): compressed in one call, the frame records its
    # size, so a reader allocates a window no larger than the content.
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST_FILE, 0o644, mtime, io.BytesIO(manifest_raw), len(manifest_raw))
        for entry in sorted(manifest.files, key=lambda f: f.name):
            src = staged_dir / "bin" / entry.name
            with open(src, "rb") as fp:
                _add(tar, f"bin/{entry.name}", entry.mode, mtime, fp, src.stat().st_size)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=ZSTD_WINDOW_LOG, write_checksum=True, write_content_size=True, threads=-1
    )
    with open(tmp, "wb") as raw:
        raw.write(
            zstandard.ZstdCompressor(compression_params=params).compress(tar_bytes.getbuffer())
        )
    os.replace(tmp, out)
    from warren_bundle.fsutil import sha256_file

    payload = Payload(sha256_file(out), out.stat().st_size, manifest, out)
    desc = staged_dir / DESCRIPTOR_FILE
    desc.write_text(json.dumps(payload.descriptor(), indent=2, sort_keys=True) + "\n")
    return payload


def _add(tar: tarfile.TarFile, name: str, mode: int, mtime: int, fp: BinaryIO, size: int) -> None:
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, fp)


@cache
def flavour() -> str:
    """ "static" (a payload that needs no libc of the host), "dynamic" (a payload linked against
    the host's glibc), or "source". The frozen runtime carries its own libc either way."""
    if not is_frozen():
        return "source"
    try:
        requires = locate().manifest.requires
    except PayloadError:  # a file without a payload still says what it is
        return "dynamic"
    return "static" if requires.get("linkage") == "static" else "dynamic"
