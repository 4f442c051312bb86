"""payload.tarstream, the payload's own tar reader, on what payload.pack and tarfile write."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard

from warren_bundle.errors import PayloadError
from warren_bundle.payload.format import (
    BINARIES,
    MANIFEST_FILE,
    Payload,
    open_members,
    pack,
    read_file,
)
from warren_bundle.payload.tarstream import BLOCK, parse_header, parse_pax

from support import stage_payload


def stage(dest: Path, sizes: dict[str, int]) -> Path:
    """A staged dir (manifest.json + bin/*) with distinct contents of the given sizes."""
    return stage_payload(
        dest,
        {
            name: (hashlib.sha256(name.encode()).digest() * (size // 32 + 1))[:size]
            for name, size in sizes.items()
        },
    )


def contents(payload: Payload) -> dict[str, str]:
    with open_members(payload) as members:
        return {m.name: hashlib.sha256(m.stream.read()).hexdigest() for m in members}


def expected(staged: Path) -> dict[str, str]:
    out = {MANIFEST_FILE: hashlib.sha256((staged / MANIFEST_FILE).read_bytes()).hexdigest()}
    for path in (staged / "bin").iterdir():
        out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def repack(staged: Path, tar_bytes: bytes) -> Payload:
    """Replace the staged payload with these tar bytes, compressed, and a matching descriptor."""
    blob = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(tar_bytes)
    (staged / "payload.tar.zst").write_bytes(blob)
    desc = json.loads((staged / "payload.json").read_text())
    desc.update(digest=hashlib.sha256(blob).hexdigest(), size=len(blob))
    (staged / "payload.json").write_text(json.dumps(desc))
    return read_file(staged)


def tar_of(staged: Path) -> bytes:
    return zstandard.ZstdDecompressor().decompress(
        (staged / "payload.tar.zst").read_bytes(), max_output_size=1 << 30
    )


def test_reads_what_pack_writes_across_block_boundaries(tmp_path: Path) -> None:
    # Sizes around the 512-byte tar block and the reader's 256 KiB decompression blocks.
    sizes = dict(zip(BINARIES, (0, 511, (1 << 18) + 1, 3 * (1 << 18) - 7), strict=True))
    staged = stage(tmp_path, sizes)
    assert contents(pack(staged, level=1)) == expected(staged)


def test_pax_headers_supply_long_names(tmp_path: Path) -> None:
    long_name = "c" * 150  # beyond ustar's 100 bytes (and the 155-byte prefix cannot split it)
    staged = stage(tmp_path, {long_name: 1000})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in (MANIFEST_FILE, f"bin/{long_name}"):
            tar.add(staged / name, arcname=name)
    raw = buf.getvalue()
    assert b"path=bin/" + long_name.encode() in raw, "tarfile did not write a pax header"
    pack(staged, level=1)

    assert contents(repack(staged, raw)) == expected(staged)


def test_damaged_header_names_the_payload(tmp_path: Path) -> None:
    staged = stage(tmp_path, {"runc": 4096})
    pack(staged, level=1)
    raw = bytearray(tar_of(staged))
    manifest_blocks = -(-len((staged / MANIFEST_FILE).read_bytes()) // BLOCK)
    second_header = BLOCK * (1 + manifest_blocks)
    assert raw[second_header : second_header + 8] == b"bin/runc"
    raw[second_header + 10] ^= 0x01
    payload = repack(staged, bytes(raw))

    with pytest.raises(PayloadError, match=r"is damaged \(bad tar header checksum\)") as err:
        contents(payload)
    assert str(payload.path) in str(err.value)


def test_truncated_stream_is_damage_not_a_short_file(tmp_path: Path) -> None:
    staged = stage(tmp_path, {"runc": 100_000})
    pack(staged, level=1)
    raw = tar_of(staged)
    payload = repack(staged, raw[: len(raw) // 2])

    with pytest.raises(PayloadError, match="unexpected end of data"):
        contents(payload)


def test_abandoning_the_members_stops_the_decompressing_thread(tmp_path: Path) -> None:
    staged = stage(tmp_path, {name: 1 << 20 for name in BINARIES})
    payload = pack(staged, level=1)
    before = {t.ident for t in threading.enumerate()}

    with open_members(payload) as members:
        first = next(members)
        assert first.name == MANIFEST_FILE

    leftover = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert leftover == []


def test_header_fields_octal_and_base256() -> None:
    info = tarfile.TarInfo("bin/runc")
    info.size, info.mode = 8 * 2**30, 0o755  # 8 GiB: beyond 11 octal digits, so base-256 (GNU)
    header = parse_header(info.tobuf(format=tarfile.GNU_FORMAT))
    assert (header.name, header.size, header.mode) == ("bin/runc", 8 * 2**30, 0o755)
    assert header.is_file


def test_pax_records_parse() -> None:
    record = b"path=bin/x\n"
    line = f"{len(record) + 3} ".encode() + record
    assert parse_pax(line + b"12 size=345\n") == {"path": "bin/x", "size": "345"}


def test_unread_members_are_skipped(tmp_path: Path) -> None:
    staged = stage(tmp_path, {name: 70_000 + i for i, name in enumerate(BINARIES)})
    payload = pack(staged, level=1)
    with open_members(payload) as members:
        seen = {m.name: (m.size, m.stream.read() if m.name == "runc" else None) for m in members}
    assert sorted(seen) == sorted([MANIFEST_FILE, *BINARIES])
    assert seen["runc"][1] == (staged / "bin" / "runc").read_bytes()
