"""The one file's layout: the launcher, the runtime archive, the payload, a trailer.

    [static launcher ELF][runtime archive][payload.tar.zst][payload.json][trailer, 128 bytes]

The trailer (little-endian) holds six u64 (offset and length of the runtime archive, the payload
and its descriptor), the runtime archive's SHA-256 in hex (its cache dir's name), a u32 version, a
u32 reserved, and the magic. launcher/launcher.c reads it at every launch; this module reads it to
find the payload, and scripts/onefile.py writes it.

The runtime archive: b"WRT1", the executable's and the loader's paths, an entry count, then per
entry a type (d, f, l), path, mode, size, stored length, SHA-256 of the content, and the content
(zlib for files, the target for links). Simple enough for ~100 lines of C to read with no library
but zlib.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

TRAILER_SIZE = 128
TRAILER_MAGIC = b"WARRENL1"
TRAILER_VERSION = 1
RUNTIME_MAGIC = b"WRT1"
_TRAILER = struct.Struct("<6Q64sII8s")
assert _TRAILER.size == TRAILER_SIZE


class NotOneFile(ValueError):
    """The file has no warren trailer."""


@dataclass(frozen=True)
class Trailer:
    runtime_offset: int
    runtime_length: int
    payload_offset: int
    payload_length: int
    descriptor_offset: int
    descriptor_length: int
    runtime_digest: str

    def pack(self) -> bytes:
        return _TRAILER.pack(
            self.runtime_offset,
            self.runtime_length,
            self.payload_offset,
            self.payload_length,
            self.descriptor_offset,
            self.descriptor_length,
            self.runtime_digest.encode("ascii"),
            TRAILER_VERSION,
            0,
            TRAILER_MAGIC,
        )


def read_trailer(path: Path) -> Trailer:
    """The trailer of `path`; NotOneFile when it has none, or one that points outside it."""
    with open(path, "rb") as fp:
        fp.seek(0, 2)
        size = fp.tell()
        if size < TRAILER_SIZE:
            raise NotOneFile(f"{path} is too short to be a warren file")
        fp.seek(size - TRAILER_SIZE)
        raw = fp.read(TRAILER_SIZE)
    fields = _TRAILER.unpack(raw)
    if fields[-1] != TRAILER_MAGIC:
        raise NotOneFile(f"{path} has no warren trailer (truncated or not a warren file)")
    if fields[7] != TRAILER_VERSION:
        raise NotOneFile(f"{path} has trailer version {fields[7]}, not {TRAILER_VERSION}")
    a, b, c, d, e, f = (int(v) for v in fields[:6])
    trailer = Trailer(a, b, c, d, e, f, fields[6].decode("ascii", "replace"))
    end = size - TRAILER_SIZE
    for offset, length in (
        (trailer.runtime_offset, trailer.runtime_length),
        (trailer.payload_offset, trailer.payload_length),
        (trailer.descriptor_offset, trailer.descriptor_length),
    ):
        if offset + length > end:
            raise NotOneFile(f"{path}: its trailer points past the end (truncated file)")
    return trailer
