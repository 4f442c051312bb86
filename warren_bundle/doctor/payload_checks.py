"""The payload this warren carries (re-hashed), and the binaries extracted from it to <data>/bin."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from warren_bundle.doctor.base import Check, Inputs, failed, passed, warned
from warren_bundle.errors import ExitCode, PayloadError
from warren_bundle.hostinfo import host_arch

if TYPE_CHECKING:
    from warren_bundle.payload.libc import Requirement


def _digest_of(path: Path, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        fp.seek(offset)
        remaining = size
        while remaining > 0:
            chunk = fp.read(min(1 << 20, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def check_payload(inputs: Inputs) -> Check:
    """Seed case "Binary Not Found": the containerd binaries were not embedded at build time."""
    from warren_bundle.payload.format import locate

    name = "payload"
    try:
        payload = locate(inputs.payload_option)
        actual = _digest_of(payload.path, payload.offset, payload.size)
    except PayloadError as exc:
        return failed(name, exc.message, exc.remedy or "", ExitCode.PAYLOAD)
    except OSError as exc:
        return failed(
            name,
            f"failed to read embedded binary: {exc.strerror or exc}",
            "run 'make build' to download and embed containerd",
            ExitCode.PAYLOAD,
        )
    if actual != payload.digest:
        # A damaged payload is exit 3, as `warren extract` gives for it (PayloadError); 8 is the
        # build pipeline's checksum mismatch.
        return failed(
            name,
            f"failed to read embedded binary: {payload.origin} fails its digest "
            f"(expected {payload.digest[:12]}, got {actual[:12]})",
            "the file is damaged: download warren again, or run 'make build'",
            ExitCode.PAYLOAD,
        )
    m = payload.manifest
    if m.arch != host_arch():
        return failed(
            name,
            f"the payload carries {m.os}/{m.arch} binaries but the host is {host_arch()}",
            f"download warren-linux-{host_arch()} instead",
            ExitCode.PLATFORM,
        )
    return passed(
        name,
        f"containerd {m.containerd_version}, runc {m.runc_version}, "
        f"sha256:{payload.digest[:12]} intact ({payload.origin})",
    )


def check_libc(inputs: Inputs) -> Check:
    """Can this host run the payload's binaries: the glibc they need against the one present."""
    from warren_bundle.payload import libc
    from warren_bundle.payload.format import locate

    name = "libc"
    try:
        payload = locate(inputs.payload_option)
    except PayloadError as exc:
        return warned(name, f"not checked: {exc.message}", exc.remedy or "run 'make build'")
    req = libc.Requirement.from_dict(payload.manifest.requires)
    where = "recorded in the payload"
    if req is None:
        req, where = _requirement_of_extracted(inputs, payload.digest), f"read from {_bin(inputs)}"
    has = libc.host_libc_name()
    if req is None:
        return warned(
            name,
            "the payload does not record which C library its binaries need, and they are not "
            f"extracted yet (this host has {has})",
            "'warren extract' checks the binaries it writes",
        )
    why = libc.host_problem(req)
    if why is not None:
        return failed(name, why, libc.REMEDY, ExitCode.PLATFORM)
    if not req.dynamic:
        return passed(name, f"static binaries: no C library needed ({has}; {where})")
    needs = f"GLIBC_{req.glibc}" if req.glibc else "glibc"
    return passed(name, f"{req.binary} needs {needs}, this host has {has} ({where})")


def _bin(inputs: Inputs) -> Path:
    return inputs.paths.bin_dir


def _requirement_of_extracted(inputs: Inputs, digest: str) -> Requirement | None:
    """What the binaries extracted from this very payload need, read from their ELF headers."""
    from warren_bundle.payload import elf, libc
    from warren_bundle.store.stamp import read_stamp

    stamp = read_stamp(inputs.paths)
    if stamp is None or stamp.get("digest") != digest or not isinstance(stamp.get("files"), dict):
        return None
    files = [(n, inputs.paths.bin_dir / n) for n in stamp["files"]]
    try:
        return libc.requirement_of(files)
    except (OSError, elf.NotElfError):
        return None


def check_binaries(inputs: Inputs) -> Check:
    """What `<data>/bin` holds, checked against the stamp it was written with."""
    from warren_bundle.payload.format import Manifest, locate
    from warren_bundle.store.stamp import damaged_files, read_stamp

    name = "binaries"
    bin_dir = inputs.paths.bin_dir
    stamp = read_stamp(inputs.paths)
    if stamp is None:
        return warned(
            name,
            f"not extracted yet into {bin_dir}",
            "'warren extract' or the first 'warren containerd start' extracts them",
        )
    try:
        recorded = Manifest.from_dict(stamp["manifest"])
    except (PayloadError, KeyError, TypeError):
        return warned(name, f"{inputs.paths.stamp} is unreadable", "run 'warren extract --force'")
    damaged = damaged_files(inputs.paths, recorded)
    if damaged:
        return failed(
            name,
            f"{', '.join(damaged)} in {bin_dir} no longer match their SHA-256 "
            "or can be written by others",
            "run 'warren extract --verify' to repair them",
            ExitCode.PAYLOAD,
        )
    try:
        current = locate(inputs.payload_option).digest
    except PayloadError:
        current = None
    if current is not None and current != stamp.get("digest"):
        return warned(
            name,
            f"{bin_dir} holds payload sha256:{str(stamp.get('digest'))[:12]}, this warren "
            f"carries sha256:{current[:12]}",
            "the next start re-extracts them ('warren extract' does it now)",
        )
    return passed(
        name,
        f"{len(recorded.files)} binaries in {bin_dir} match their SHA-256 "
        f"(containerd {recorded.containerd_version})",
    )
