"""Read PyInstaller's CArchive table of contents out of a frozen executable.

The payload travels as an entry of typecode 'a', which the bootloader never extracts; this module
finds such an entry's byte range so it can be streamed straight from the executable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from warren_bundle.payload import elf

COOKIE_MAGIC = b"MEI\014\013\012\013\016"
_COOKIE = struct.Struct("!8sIIII64s")
_TOC_ENTRY = struct.Struct("!IIIIBc")
# On Linux PyInstaller stores the archive in this ELF section; elsewhere it is appended.
ELF_SECTION = "pydata"
_TAIL_SCAN = 256 * 1024


class ArchiveNotFound(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    name: str
    typecode: str
    offset: int  # absolute offset in the executable file
    length: int  # stored bytes
    data_length: int  # bytes once inflated
    compressed: bool


def _archive_end(fp: BinaryIO) -> int:
    """File offset just past the cookie."""
    try:
        section = elf.find_section(fp, ELF_SECTION)
    except elf.NotElfError:
        section = None
    if section is not None:
        offset, size = section
        return offset + size
    fp.seek(0, 2)
    file_size = fp.tell()
    start = max(0, file_size - _TAIL_SCAN)
    fp.seek(start)
    tail = fp.read()
    pos = tail.rfind(COOKIE_MAGIC)
    if pos < 0:
        raise ArchiveNotFound("no PyInstaller archive in this file")
    return start + pos + _COOKIE.size


def read_toc(fp: BinaryIO) -> list[Entry]:
    end = _archive_end(fp)
    fp.seek(end - _COOKIE.size)
    magic, archive_length, toc_offset, toc_length, _pyvers, _pylib = _COOKIE.unpack(
        fp.read(_COOKIE.size)
    )
    if magic != COOKIE_MAGIC:
        raise ArchiveNotFound("PyInstaller archive cookie not found where expected")
    base = end - archive_length
    fp.seek(base + toc_offset)
    toc = fp.read(toc_length)
    entries: list[Entry] = []
    pos = 0
    while pos < len(toc):
        entry_length, offset, length, data_length, compress, typecode = _TOC_ENTRY.unpack_from(
            toc, pos
        )
        raw_name = toc[pos + _TOC_ENTRY.size : pos + entry_length]
        name = raw_name.rstrip(b"\0").decode("utf-8")
        entries.append(
            Entry(
                name, typecode.decode("ascii"), base + offset, length, data_length, bool(compress)
            )
        )
        pos += entry_length
    return entries
