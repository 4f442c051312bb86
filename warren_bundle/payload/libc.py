"""Can this host run the payload's binaries? The C library they need against the one present.

A dynamically linked payload (Debian's packages) needs the glibc it was linked against, or newer;
a static one (upstream's static builds, --source debian-static) needs none. The requirement is
read from the ELF files themselves (payload/elf.py: PT_INTERP, DT_NEEDED, .gnu.version_r), at
build time into the manifest's "requires" and at extraction time from the files written.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warren_bundle.errors import PlatformError
from warren_bundle.payload import elf

REMEDY = (
    "use a build with the static payload (warren-linux-<arch>-static, or 'make payload "
    "SOURCE=debian-static'), or upgrade this host's glibc"
)


_TRIPLETS = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}
_RELEASE = re.compile(rb"release version (\d+\.\d+)")


def host_glibc() -> str | None:
    """This host's glibc version ('2.36'), or None (musl, or no C library at all).

    From source, Python runs on the host's glibc, which os.confstr names. The frozen runtime runs
    on the glibc it carries, so there confstr would name that one: the host's is read from its
    libc.so.6 instead.
    """
    if getattr(sys, "frozen", False):
        return glibc_of_host_files()
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        return None
    if not text or not text.startswith("glibc "):
        return None
    return text.split(" ", 1)[1].strip()


def glibc_of_host_files(root: Path = Path("/")) -> str | None:
    """The version of the libc.so.6 the host's loader would use, from the banner it carries
    ("... stable release version 2.31."), or None when there is none."""
    triplet = _TRIPLETS.get(os.uname().machine, "")
    rels = [f"lib/{triplet}", f"usr/lib/{triplet}"] if triplet else []
    for rel in (*rels, "lib64", "usr/lib64", "lib", "usr/lib"):
        path = root / rel / "libc.so.6"
        try:
            data = path.read_bytes()
        except OSError:
            continue
        match = _RELEASE.search(data)
        if match:
            return match.group(1).decode()
    return None


def host_libc_name() -> str:
    """What this host has instead of glibc: musl when its loader is present, else none."""
    if host_glibc() is not None:
        return f"glibc {host_glibc()}"
    for lib in ("/lib", "/usr/lib"):
        try:
            if any(n.startswith("ld-musl-") for n in os.listdir(lib)):
                return "musl and no glibc"
        except OSError:
            continue
    return "no glibc"


@dataclass(frozen=True)
class Requirement:
    """The most demanding binary of a set: which one, and the glibc it needs (None: static)."""

    binary: str | None
    glibc: str | None
    dynamic: tuple[str, ...]  # names of the binaries that are dynamically linked

    def to_dict(self) -> dict[str, Any]:
        if not self.dynamic:
            return {"linkage": "static"}
        return {
            "linkage": "dynamic",
            "glibc": self.glibc,
            "binary": self.binary,
            "dynamic": list(self.dynamic),
        }

    @classmethod
    def from_dict(cls, data: object) -> Requirement | None:
        if not isinstance(data, dict) or data.get("linkage") not in ("static", "dynamic"):
            return None
        if data["linkage"] == "static":
            return cls(None, None, ())
        glibc = data.get("glibc")
        return cls(
            str(data.get("binary") or "containerd"),
            str(glibc) if glibc else None,
            tuple(str(n) for n in data.get("dynamic") or ("containerd",)),
        )


def requirement_of(files: Iterable[tuple[str, Path]]) -> Requirement:
    """Read every (name, path) ELF and keep the highest glibc any of them needs."""
    best: tuple[str | None, str | None] = (None, None)
    dynamic: list[str] = []
    for name, path in files:
        try:
            link = elf.linkage_of(str(path))
        except elf.NotElfError:
            continue  # a data file (an image archive), not a program
        if link.static:
            continue
        dynamic.append(name)
        if link.glibc and (best[1] is None or elf.glibc_key(link.glibc) > elf.glibc_key(best[1])):
            best = (name, link.glibc)
        elif best[0] is None:
            best = (name, best[1])
    return Requirement(best[0], best[1], tuple(dynamic))


def problem(req: Requirement, host: str | None, has: str = "no glibc") -> str | None:
    """Why a host with glibc `host` (None: none; `has` says what it has) cannot run binaries
    with this requirement, or None when it can."""
    if not req.dynamic:
        return None
    who = req.binary or req.dynamic[0]
    if host is None:
        needs = f"GLIBC_{req.glibc}" if req.glibc else "glibc"
        return f"{who} is dynamically linked and needs {needs}, this host has {has}"
    if req.glibc and elf.glibc_key(host) < elf.glibc_key(req.glibc):
        return f"{who} needs GLIBC_{req.glibc}, this host has {host}"
    return None


def host_problem(req: Requirement | None) -> str | None:
    """problem() for this host."""
    if req is None:
        return None
    return problem(req, host_glibc(), host_libc_name())


def check(req: Requirement | None) -> None:
    """Raise PlatformError (exit 5) when this host cannot run binaries with `req`."""
    why = host_problem(req)
    if why is not None:
        raise PlatformError(why, REMEDY)


def check_files(files: Iterable[tuple[str, Path]]) -> None:
    """The extraction-time check: read the ELF files just written and refuse what cannot run."""
    try:
        req = requirement_of(files)
    except OSError:
        return  # not ours to judge: the digest check already vouched for the bytes
    check(req)
