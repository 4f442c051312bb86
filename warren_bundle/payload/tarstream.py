"""The payload's tar stream, fast: zstd decompressed by a background thread, headers parsed here.

Why not `tarfile` over a `zstandard` stream reader in one thread: extraction then does decompress,
hash and write one after the other, and tarfile copies every byte through its own buffers. Here a
thread decompresses (zstandard and hashlib release the GIL on large buffers) while the caller
hashes and writes the previous blocks, and member data reaches the caller as views of the
decompressed blocks, never copied. The format is what `payload.pack` writes: POSIX ustar headers,
with pax extended headers honoured for path and size.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

from warren_bundle.errors import PayloadError

BLOCK = 512
_READ_SIZE = 1 << 20  # compressed bytes per read
_WRITE_SIZE = 1 << 18  # decompressed bytes per block: small enough to stay in cache for hashing
_QUEUE_BLOCKS = 64  # 16 MiB of decompressed data in flight at most
_ZERO_BLOCK = bytes(BLOCK)


@dataclass(frozen=True)
class _End:
    compressed_sha256: str


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class TarFormatError(ValueError):
    """A header that is not what payload.pack writes (the caller names the payload)."""


class _HashingReader(io.RawIOBase):
    """Reads exactly `length` bytes from `offset`, hashing them as they pass."""

    def __init__(self, fp: BinaryIO, offset: int, length: int) -> None:
        import hashlib

        super().__init__()
        self._fp = fp
        self._remaining = length
        self.sha256 = hashlib.sha256()
        fp.seek(offset)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._remaining)
        if want <= 0:
            return 0
        # Every caller passes a file opened 'rb' (a BufferedReader), which has readinto.
        got: int = self._fp.readinto(view[:want])  # type: ignore[attr-defined]
        if not got:
            raise PayloadError(f"truncated: {self._remaining} bytes missing")
        self.sha256.update(view[:got])
        self._remaining -= got
        return got

    def drain(self) -> None:
        buffer = bytearray(_READ_SIZE)
        while self.readinto(buffer):
            pass


class DecompressedStream:
    """The decompressed bytes of `length` compressed bytes at `offset` of `fp`, in order.

    A daemon thread fills a bounded queue; the caller reads headers with read_exact() and member
    data with chunks(). finish() consumes the rest and returns the SHA-256 of the compressed
    bytes; close() stops the thread early. `origin` names the payload in error messages.
    """

    def __init__(self, fp: BinaryIO, offset: int, length: int, origin: str) -> None:
        self.origin = origin
        self._queue: queue.Queue[bytes | _End | _Failed] = queue.Queue(_QUEUE_BLOCKS)
        self._stop = threading.Event()
        self._block = memoryview(b"")
        self._end: _End | None = None
        self._thread = threading.Thread(
            target=self._produce, args=(fp, offset, length), name="payload-zstd", daemon=True
        )
        self._thread.start()

    # --- producer (background thread) -------------------------------------------------------------

    def _produce(self, fp: BinaryIO, offset: int, length: int) -> None:
        try:
            import zstandard

            raw = _HashingReader(fp, offset, length)
            for block in zstandard.ZstdDecompressor().read_to_iter(
                cast(IO[bytes], raw), read_size=_READ_SIZE, write_size=_WRITE_SIZE
            ):
                if not self._put(block):
                    return
            raw.drain()
            self._put(_End(raw.sha256.hexdigest()))
        except BaseException as exc:
            self._put(_Failed(exc))

    def _put(self, item: bytes | _End | _Failed) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # --- consumer ---------------------------------------------------------------------------------

    def _next_block(self) -> bool:
        """Make the next decompressed block current; False at the end of the stream."""
        if self._end is not None:
            return False
        item = self._queue.get()
        if isinstance(item, _End):
            self._end = item
            return False
        if isinstance(item, _Failed):
            raise self._translate(item.error)
        self._block = memoryview(item)
        return True

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, PayloadError):
            return exc
        if isinstance(exc, OSError):
            return PayloadError(f"cannot read {self.origin}: {exc.strerror or exc}")
        if type(exc).__name__ == "ZstdError":
            return PayloadError(f"{self.origin} is damaged ({exc})")
        return exc

    def chunks(self, size: int) -> Iterator[memoryview]:
        """Exactly `size` bytes, as views into the decompressed blocks."""
        while size > 0:
            if not self._block and not self._next_block():
                raise PayloadError(f"{self.origin} is damaged (unexpected end of data)")
            take = min(size, len(self._block))
            chunk, self._block = self._block[:take], self._block[take:]
            size -= take
            yield chunk

    def read_exact(self, size: int) -> bytes:
        return b"".join(self.chunks(size))

    def skip(self, size: int) -> None:
        for _ in self.chunks(size):
            pass

    def finish(self) -> str:
        """Consume what is left (the tar's zero padding); the compressed bytes' SHA-256."""
        self._block = memoryview(b"")
        while self._next_block():
            self._block = memoryview(b"")
        assert self._end is not None
        return self._end.compressed_sha256

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)


class MemberStream(io.RawIOBase):
    """One member's data: read it as a file, or take it zero-copy with chunks()."""

    def __init__(self, data: DecompressedStream, size: int) -> None:
        super().__init__()
        self._data = data
        self.remaining = size

    def readable(self) -> bool:
        return True

    def chunks(self) -> Iterator[memoryview]:
        for chunk in self._data.chunks(self.remaining):
            self.remaining -= len(chunk)
            yield chunk

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.remaining)
        if want <= 0:
            return 0
        got = 0
        for chunk in self._data.chunks(want):
            view[got : got + len(chunk)] = chunk
            got += len(chunk)
        self.remaining -= got
        return got

    def readall(self) -> bytes:
        return b"".join(self.chunks())

    def discard(self) -> None:
        for _ in self.chunks():
            pass


@dataclass(frozen=True)
class Header:
    name: str
    size: int
    mode: int
    typeflag: bytes

    @property
    def is_file(self) -> bool:
        return self.typeflag in (b"0", b"\0")


def _number(field: bytes, what: str) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # base-256, for values too big for octal
        value = int.from_bytes(field[1:], "big")
        return -value if field[:1] == b"\xff" else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(f"bad tar header: {what} field {field!r}") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def parse_header(block: bytes) -> Header:
    stored = _number(block[148:156], "checksum")
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != computed:
        raise TarFormatError("bad tar header checksum")
    name = _text(block[0:100])
    if block[257:263] == b"ustar\0":
        prefix = _text(block[345:500])
        if prefix:
            name = f"{prefix}/{name}"
    return Header(
        name, _number(block[124:136], "size"), _number(block[100:108], "mode"), block[156:157]
    )


def parse_pax(data: bytes) -> dict[str, str]:
    """Records "LEN key=value\\n", LEN counting the whole record."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("bad pax header") from None
        record = data[space + 1 : pos + length - 1]
        key, sep, value = record.partition(b"=")
        if length <= 0 or not sep:
            raise TarFormatError("bad pax header")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def padding(size: int) -> int:
    return -size % BLOCK


def headers(data: DecompressedStream) -> Iterator[tuple[Header, MemberStream]]:
    """Each regular member's header and data, in archive order, until the end-of-archive block.

    The caller reads (or leaves) each member's data before asking for the next header.
    """
    try:
        yield from _headers(data)
    except TarFormatError as exc:
        raise PayloadError(f"{data.origin} is damaged ({exc})") from exc


def _headers(data: DecompressedStream) -> Iterator[tuple[Header, MemberStream]]:
    pax: dict[str, str] = {}
    while True:
        block = data.read_exact(BLOCK)
        if block == _ZERO_BLOCK:
            return
        header = parse_header(block)
        if header.typeflag in (b"x", b"g"):
            records = parse_pax(data.read_exact(header.size))
            data.skip(padding(header.size))
            if header.typeflag == b"x":
                pax = records
            continue
        if pax:
            try:
                size = int(pax.get("size", header.size))
            except ValueError:
                raise TarFormatError("bad pax size") from None
            header = Header(pax.get("path", header.name), size, header.mode, header.typeflag)
            pax = {}
        stream = MemberStream(data, header.size)
        yield header, stream
        stream.discard()
        data.skip(padding(header.size))
