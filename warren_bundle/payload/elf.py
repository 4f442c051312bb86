"""Just enough ELF parsing: the machine a binary is for, where a named section lies, and how it is
linked (interpreter, needed libraries, the highest GLIBC_x.y symbol version it needs)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
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
    phoff: int = 0
    phentsize: int = 0
    phnum: int = 0

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
        phoff, shoff = struct.unpack_from(endian + "QQ", ident, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", ident, 0x36)
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", ident, 0x3A)
    else:
        phoff, shoff = struct.unpack_from(endian + "II", ident, 0x1C)
        phentsize, phnum = struct.unpack_from(endian + "HH", ident, 0x2A)
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", ident, 0x2E)
    return ElfHeader(
        bits, endian, machine, shoff, shentsize, shnum, shstrndx, phoff, phentsize, phnum
    )


def arch_of(path: str) -> str:
    with open(path, "rb") as fp:
        return read_header(fp).arch


@dataclass(frozen=True)
class Section:
    name: int  # offset in the section name table
    type: int
    offset: int
    size: int
    link: int
    info: int


def _sections(fp: BinaryIO, hdr: ElfHeader) -> list[Section]:
    if not hdr.shoff or not hdr.shnum:
        return []
    fp.seek(hdr.shoff)
    table = fp.read(hdr.shentsize * hdr.shnum)
    fmt = hdr.endian + ("IIQQQQII" if hdr.bits == 64 else "IIIIIIII")
    if len(table) < hdr.shentsize * hdr.shnum or hdr.shentsize < struct.calcsize(fmt):
        raise NotElfError("truncated section header table")
    out = []
    for i in range(hdr.shnum):
        name, typ, _flags, _addr, offset, size, link, info = struct.unpack_from(
            fmt, table, i * hdr.shentsize
        )
        out.append(Section(name, typ, offset, size, link, info))
    return out


def _section_headers(fp: BinaryIO, hdr: ElfHeader) -> list[tuple[int, int, int]]:
    """(name offset, file offset, size) of every section."""
    return [(s.name, s.offset, s.size) for s in _sections(fp, hdr)]


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


# --- linkage ----------------------------------------------------------------------------------

PT_INTERP = 3
SHT_DYNAMIC = 6
SHT_GNU_VERNEED = 0x6FFFFFFE
DT_NULL, DT_NEEDED = 0, 1
_MAX_TABLE = 16 << 20  # a sane bound for .dynamic/.dynstr/.gnu.version_r reads


@dataclass(frozen=True)
class Linkage:
    """How a binary is linked: its interpreter, DT_NEEDED libraries, and the glibc it needs."""

    interpreter: str | None
    needed: tuple[str, ...]
    glibc: str | None  # the highest GLIBC_x.y symbol version it needs, e.g. "2.34"

    @property
    def static(self) -> bool:
        return self.interpreter is None and not self.needed


def glibc_key(version: str) -> tuple[int, ...]:
    """'2.34' -> (2, 34), for comparing glibc versions."""
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _read(fp: BinaryIO, offset: int, size: int) -> bytes:
    if size < 0 or size > _MAX_TABLE:
        raise NotElfError(f"implausible table size {size}")
    fp.seek(offset)
    data = fp.read(size)
    if len(data) != size:
        raise NotElfError("truncated file")
    return data


def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset : end if end >= 0 else len(table)].decode("utf-8", "replace")


def _interpreter(fp: BinaryIO, hdr: ElfHeader) -> str | None:
    fmt = hdr.endian + ("IIQ" if hdr.bits == 64 else "II")
    fp.seek(hdr.phoff)
    table = fp.read(hdr.phentsize * hdr.phnum)
    for i in range(hdr.phnum if len(table) >= hdr.phentsize * hdr.phnum else 0):
        base = i * hdr.phentsize
        if hdr.bits == 64:
            p_type, _flags, p_offset = struct.unpack_from(fmt, table, base)
            (p_filesz,) = struct.unpack_from(hdr.endian + "Q", table, base + 32)
        else:
            p_type, p_offset = struct.unpack_from(fmt, table, base)
            (p_filesz,) = struct.unpack_from(hdr.endian + "I", table, base + 16)
        if p_type == PT_INTERP:
            return _cstr(_read(fp, p_offset, p_filesz), 0) or "?"
    return None


def _tables(
    fp: BinaryIO, sections: list[Section], sh_type: int
) -> Iterator[tuple[Section, bytes, bytes]]:
    """Each section of `sh_type` with its bytes and those of the string table it links to."""
    for sec in sections:
        if sec.type != sh_type or sec.link >= len(sections):
            continue
        strs = sections[sec.link]
        yield sec, _read(fp, sec.offset, sec.size), _read(fp, strs.offset, strs.size)


def _needed(fp: BinaryIO, hdr: ElfHeader, sections: list[Section]) -> tuple[str, ...]:
    out: list[str] = []
    fmt = hdr.endian + ("qQ" if hdr.bits == 64 else "iI")
    width = struct.calcsize(fmt)
    for _sec, table, strtab in _tables(fp, sections, SHT_DYNAMIC):
        for off in range(0, len(table) - width + 1, width):
            tag, val = struct.unpack_from(fmt, table, off)
            if tag == DT_NULL:
                break
            if tag == DT_NEEDED:
                out.append(_cstr(strtab, val))
    return tuple(out)


def _glibc_versions(fp: BinaryIO, hdr: ElfHeader, sections: list[Section]) -> list[str]:
    """Every GLIBC_x.y named in .gnu.version_r (Elf_Verneed / Elf_Vernaux, 16 bytes each)."""
    found: list[str] = []
    for sec, table, strtab in _tables(fp, sections, SHT_GNU_VERNEED):
        off = 0
        for _ in range(sec.info or 1 << 16):
            if off + 16 > len(table):
                break
            _ver, cnt, _file, aux, nxt = struct.unpack_from(hdr.endian + "HHIII", table, off)
            a = off + aux
            for _ in range(cnt):
                if a + 16 > len(table):
                    break
                _hash, _flags, _other, name, anext = struct.unpack_from(
                    hdr.endian + "IHHII", table, a
                )
                text = _cstr(strtab, name)
                if text.startswith("GLIBC_") and glibc_key(text[6:]):
                    found.append(text[6:])
                if not anext:
                    break
                a += anext
            if not nxt:
                break
            off += nxt
    return found


def linkage_of(path: str) -> Linkage:
    """Read how `path` is linked, from its program and section headers (no objdump needed)."""
    with open(path, "rb") as fp:
        hdr = read_header(fp)
        try:
            interp = _interpreter(fp, hdr)
            sections = _sections(fp, hdr)
            needed = _needed(fp, hdr, sections)
            versions = _glibc_versions(fp, hdr, sections)
        except struct.error as exc:
            raise NotElfError(f"malformed ELF headers ({exc})") from exc
    glibc = max(versions, key=glibc_key) if versions else None
    return Linkage(interp, needed, glibc)
