"""Staging: each arch's verified binaries in a temp dir beside --out, then swapped into place.

The binaries are written O_EXCL|O_NOFOLLOW, checked to be ELF files for the arch, described by
manifest.json, and replace --out only once every step (for every arch) passed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from warren_bundle.errors import FetchError
from warren_bundle.payload import elf, libc
from warren_bundle.payload import format as payload

CONTAINERD_BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr")
BINARY_MODE = 0o755
DATA_MODE = 0o644  # bin/sandbox/*: image archives, not programs
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
_CHUNK = 1 << 20

assert set(CONTAINERD_BINARIES) | {"runc"} == set(payload.BINARIES)


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


def check_static(path: Path, origin: str) -> None:
    """Refuse a binary that needs a loader or shared libraries: it would not run without glibc."""
    link = elf.linkage_of(str(path))
    if link.static:
        return
    what = [f"interpreter {link.interpreter}"] if link.interpreter else []
    what += [f"needs {', '.join(link.needed)}"] if link.needed else []
    raise FetchError(
        f"{path.name} from {origin} is dynamically linked ({'; '.join(what)}), "
        "not the static binary this source must produce",
        "check the static build flags (CGO_ENABLED, -extldflags -static) and the .a "
        "libraries it links (libseccomp-dev)",
    )


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
    # A static source (debian-static): every binary must have no interpreter and no DT_NEEDED.
    static: bool = False
    requires: dict[str, Any] = field(default_factory=dict)
    # the node parts staged beside the four binaries (payload.Manifest.components)
    components: dict[str, Any] = field(default_factory=dict)

    @property
    def bin_dir(self) -> Path:
        return self.tmp / "bin"

    def names(self) -> list[str]:
        """The four binaries first, then the rest (cni/*, crictl, sandbox/*) by name."""
        rest = sorted(n for n in self.files if n not in payload.BINARIES)
        return [*payload.BINARIES, *rest]

    @staticmethod
    def mode_of(name: str) -> int:
        return DATA_MODE if name.startswith("sandbox/") else BINARY_MODE

    def manifest(self) -> payload.Manifest:
        entries = tuple(
            payload.FileEntry(name, self.files[name][0], self.mode_of(name), self.files[name][1])
            for name in self.names()
        )
        return payload.Manifest(
            os="linux",
            arch=self.arch,
            containerd_version=self.containerd_version,
            runc_version=self.runc_version,
            source=self.source,
            files=entries,
            provenance=self.provenance,
            requires=self.requires,
            components=self.components,
        )

    def finish(self, origin: str) -> None:
        programs = [n for n in self.names() if self.mode_of(n) == BINARY_MODE]
        for name in programs:
            check_elf(self.bin_dir / name, self.arch, origin)
            if self.static:
                check_static(self.bin_dir / name, origin)
        files = [(name, self.bin_dir / name) for name in programs]
        self.requires = libc.requirement_of(files).to_dict()
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


def discard(staged: Sequence[Staged]) -> None:
    for st in staged:
        shutil.rmtree(st.tmp, ignore_errors=True)


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
