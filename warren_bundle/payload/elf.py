"""Just enough ELF parsing: the machine a binary is for, and where a named section lies."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

ELF_MAGIC = b"\x7fELF"

# e_machine values for the architectures warren ships.
MACHINES = {62: "amd64", 183: "arm64", 3: "386", 40: "arm"}


class NotElfError(ValueError):
    pass


@dataclass(frozen=True)
class ElfHeader:
    bits: int
    endian: str  # struct prefix: "<" or ">"
    machine: int
    shoff: int
    shentsize: int
    shnum: int
    shstrndx: int

    @property
    def arch(self) -> str:
        return MACHINES.get(self.machine, f"unknown(e_machine={self.machine})")


def read_header(fp: BinaryIO) -> ElfHeader:
    fp.seek(0)
    ident = fp.read(64)
    if len(ident) < 52 or ident[:4] != ELF_MAGIC:
        raise NotElfError("not an ELF file")
    bits = {1: 32, 2: 64}.get(ident[4])
    endian = {1: "<", 2: ">"}.get(ident[5])
    if bits is None or endian is None:
        raise NotElfError("unknown ELF class or byte order")
    (machine,) = struct.unpack_from(endian + "H", ident, 18)
    if bits == 64:
        (shoff,) = struct.unpack_from(endian + "Q", ident, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", ident, 0x3A)
    else:
        (shoff,) = struct.unpack_from(endian + "I", ident, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", ident, 0x2E)
    return ElfHeader(bits, endian, machine, shoff, shentsize, shnum, shstrndx)


def arch_of(path: str) -> str:
    with open(path, "rb") as fp:
        return read_header(fp).arch


def _section_headers(fp: BinaryIO, hdr: ElfHeader) -> list[tuple[int, int, int]]:
    """(name offset, file offset, size) of every section."""
    fp.seek(hdr.shoff)
    table = fp.read(hdr.shentsize * hdr.shnum)
    fmt = hdr.endian + ("IIQQQQ" if hdr.bits == 64 else "IIIIII")
    out = []
    for i in range(hdr.shnum):
        name, _type, _flags, _addr, offset, size = struct.unpack_from(fmt, table, i * hdr.shentsize)
        out.append((name, offset, size))
    return out


def find_section(fp: BinaryIO, name: str) -> tuple[int, int] | None:
    """File offset and size of section `name`, or None."""
    hdr = read_header(fp)
    if not hdr.shoff or not hdr.shnum or hdr.shstrndx >= hdr.shnum:
        return None
    sections = _section_headers(fp, hdr)
    _, str_off, str_size = sections[hdr.shstrndx]
    fp.seek(str_off)
    strtab = fp.read(str_size)
    wanted = name.encode()
    for name_off, offset, size in sections:
        end = strtab.find(b"\0", name_off)
        if strtab[name_off:end] == wanted:
            return offset, size
    return None
