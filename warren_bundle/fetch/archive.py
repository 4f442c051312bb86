"""Named binaries out of a release tarball (containerd's bin/*, the CNI plugins, crictl),
refusing any member that is unsafe."""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from warren_bundle.errors import FetchError, UnsafeArchive

from .staging import CONTAINERD_BINARIES, write_executable


def _member_verdict(info: tarfile.TarInfo, wanted: Sequence[str], subdir: str) -> str | None:
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
    expected = [subdir] if subdir else []
    if len(rel) == len(expected) + 1 and rel[:-1] == expected and rel[-1] in wanted:
        return rel[-1]
    return None


def extract_release_binaries(
    tarball: Path,
    dest_dir: Path,
    wanted: Sequence[str] = CONTAINERD_BINARIES,
    subdir: str = "bin",
    what: str = "a containerd release tarball",
) -> dict[str, tuple[int, str]]:
    """Copy <subdir>/<wanted> regular files (subdir "" : top-level ones) out of a release
    tarball into dest_dir.

    Never calls tarfile's extract: output paths are built from the fixed `wanted` names only, so a
    crafted member name cannot reach outside dest_dir. Returns name -> (size, sha256).
    """
    found: dict[str, tuple[int, str]] = {}
    try:
        with tarfile.open(tarball, mode="r|*") as tar:
            for info in tar:
                try:
                    binary = _member_verdict(info, wanted, subdir)
                except UnsafeArchive as exc:
                    raise UnsafeArchive(
                        f"{tarball.name}: refusing {exc.message}",
                        f"this is not {what}; do not use it",
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
        where = f"{subdir}/" if subdir else ""
        raise FetchError(
            f"{tarball.name} has no {where}{f', {where}'.join(missing)}",
            f"is this {what} for linux?",
        )
    return found
