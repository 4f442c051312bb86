"""HTTP downloads of release artifacts: timeouts, retries with backoff, resume from a .part file.

A file reaches its cache path only after its bytes matched the pin. `requests` is imported
when a download starts, never when the package is imported.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from warren_bundle.errors import ChecksumMismatch, FetchError, NotFound, Unreachable
from warren_bundle.fsutil import sha256_file

if TYPE_CHECKING:
    import requests

# Release artifacts are tens of MB; a server streaming without end must not fill the disk.
MAX_ARTIFACT_BYTES = 1 << 30


@dataclass(frozen=True)
class NetOptions:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0


class _Retry(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, connect: bool = False, dns: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connect = connect  # no HTTP response at all: the host may be unreachable
        self.dns = dns


class _Restart(Exception):
    """The partial file cannot be resumed: start again from byte 0 at once."""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests -> urllib3 -> socket)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        todo.extend(a for a in getattr(cur, "args", ()) if isinstance(a, BaseException))
        for attr in ("reason", "__cause__", "__context__"):
            nxt = getattr(cur, attr, None)
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def describe_connect_error(exc: BaseException, url: str) -> tuple[str, bool]:
    """(one-line reason, is_dns) for a failure to open a connection to `url`'s host."""
    import socket

    import urllib3.exceptions

    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    causes = list(_causes(exc))
    if any(isinstance(c, urllib3.exceptions.NameResolutionError | socket.gaierror) for c in causes):
        return f"cannot resolve host {host}", True
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return f"connection refused by {host}:{port}", False
    # urllib3's NewConnectionError subclasses ConnectTimeoutError: only a real timeout counts.
    timeouts = (urllib3.exceptions.ConnectTimeoutError, TimeoutError)
    if any(
        isinstance(c, timeouts) and not isinstance(c, urllib3.exceptions.NewConnectionError)
        for c in causes
    ):
        return f"timed out connecting to {host}:{port}", False
    return f"cannot connect to {host}:{port} ({type(exc).__name__})", False


class Progress:
    """A one-line bar on a terminal (bytes, rate, ETA); one line at start and end otherwise."""

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total: int | None = None
        self.done = 0
        self.start = time.monotonic()
        self._base = 0
        self._last = 0.0

    def begin(self, offset: int, total: int | None, url: str) -> None:
        self.done, self.total, self._base, self.start = offset, total, offset, time.monotonic()
        if not self.tty:
            resumed = f" (resuming at byte {offset})" if offset else ""
            print(f"fetch: downloading {url}{resumed}", file=self.stream, flush=True)

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self._last >= 0.1:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-6)
        rate = (self.done - self._base) / elapsed
        total = f"/{_mb(self.total)}" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            left = int((self.total - self.done) / rate)
            eta = f"  ETA {left // 60}:{left % 60:02d}"
        line = f"  {self.label}  {_mb(self.done)}{total}  {_mb(rate)}/s{eta}"
        self.stream.write("\r" + line.ljust(72))
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


def _mb(n: float | None) -> str:
    return f"{(n or 0) / 1e6:.1f} MB"


def _content_range_start(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) from 'bytes START-END/TOTAL'; Nones when absent or unparsable."""
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    if not match:
        return None, None
    total = None if match.group(2) == "*" else int(match.group(2))
    return int(match.group(1)), total


def _content_range_total(value: str | None) -> int | None:
    """TOTAL from a 416's 'bytes */TOTAL'."""
    match = re.match(r"bytes \*/(\d+)", value or "")
    return int(match.group(1)) if match else None


def _attempt(
    session: requests.Session, url: str, part: Path, net: NetOptions, progress: Progress
) -> None:
    """One GET into `part`, resuming from its current size; raise _Retry/_Restart/FetchError."""
    import requests
    import urllib3

    offset = part.stat().st_size if part.exists() else 0
    # identity: Range offsets and Content-Length must count the file's own bytes.
    headers = {"Accept-Encoding": "identity", "User-Agent": "warren-bundle-fetch/1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(
            url,
            headers=headers,
            stream=True,
            timeout=(net.connect_timeout, net.read_timeout),
        )
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        if isinstance(exc, requests.exceptions.ReadTimeout):
            raise _Retry(f"no response from {url} within {net.read_timeout:g}s") from exc
        reason, dns = describe_connect_error(exc, url)
        raise _Retry(reason, connect=True, dns=dns) from exc
    with resp:
        status = resp.status_code
        if status == 404:
            raise NotFound(
                f"not found (HTTP 404): {url}",
                "check the version and, for a mirror, that it holds the release file names",
            )
        if status == 416 and offset:
            if _content_range_total(resp.headers.get("Content-Range")) == offset:
                return  # the .part is already complete; the digest check decides
            part.unlink()
            raise _Restart
        if status >= 500 or status == 429:
            raise _Retry(f"HTTP {status} {resp.reason} from {url}")
        if status not in (200, 206):
            raise FetchError(f"HTTP {status} {resp.reason}: {url}")
        mode, total = "ab", None
        if status == 206:
            start, total = _content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Restart
        else:
            # 200 to a Range request: the server ignored it and sends everything from byte 0.
            mode, offset = "wb", 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        progress.begin(offset, total, url)
        try:
            with open(part, mode) as fp:
                for chunk in resp.iter_content(1 << 16):
                    fp.write(chunk)
                    progress.advance(len(chunk))
                    if progress.done > MAX_ARTIFACT_BYTES:
                        part.unlink()
                        raise FetchError(
                            f"{url} is larger than {MAX_ARTIFACT_BYTES >> 20} MiB: not a release "
                            "artifact"
                        )
                fp.flush()
                os.fsync(fp.fileno())
        # requests' exceptions are OSErrors too: the transport ones must be caught first.
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            ConnectionError,
            TimeoutError,
        ) as exc:
            raise _Retry(f"download of {url} broke off ({type(exc).__name__})") from exc
        except OSError as exc:
            raise FetchError(f"cannot write {part}: {exc.strerror or exc}") from exc
        finally:
            progress.finish()
        if total is not None and part.stat().st_size != total:
            raise _Retry(f"download of {url} ended at byte {part.stat().st_size} of {total}")


def download(url: str, dest: Path, expected: str, net: NetOptions, label: str) -> bool:
    """Fetch `url` to `dest` via dest.part; True if downloaded, False if dest was already good.

    `dest` appears only after the bytes matched `expected`; a mismatch deletes the .part.
    """
    if dest.is_file():
        if sha256_file(dest) == expected:
            return False
        dest.unlink()  # damaged or stale: fetch it again rather than trust it
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    inherited = part.exists() and part.stat().st_size > 0
    _transfer(url, part, net, label)
    actual = sha256_file(part)
    if actual != expected and inherited:
        # The bad bytes may be an old run's prefix (e.g. from another mirror): one clean try.
        note = f"fetch: resumed {part.name} failed its digest; fetching it again from byte 0"
        print(note, file=sys.stderr)
        part.unlink()
        _transfer(url, part, net, label)
        actual = sha256_file(part)
    if actual != expected:
        part.unlink()
        raise ChecksumMismatch(
            f"checksum mismatch for {dest.name} from {url}: expected {expected}, got {actual}",
            "the file was deleted; if the release was re-published, re-check it and update the pin",
        )
    os.replace(part, dest)
    return True


def _transfer(url: str, part: Path, net: NetOptions, label: str) -> None:
    """Get all of `url` into `part`, resuming and retrying; the caller checks the digest."""
    import requests

    failures = 0
    with requests.Session() as session:
        while True:
            size_before = part.stat().st_size if part.exists() else 0
            try:
                _attempt(session, url, part, net, Progress(label))
                return
            except _Restart:
                continue
            except _Retry as exc:
                grew = part.exists() and part.stat().st_size > size_before
                # Progress made means the link works: keep resuming rather than give up.
                failures = 1 if grew else failures + 1
                if exc.dns or failures > net.retries:
                    if exc.connect:
                        raise Unreachable(f"{exc.reason} ({url})") from None
                    raise FetchError(
                        f"{exc.reason} (gave up after {failures} attempts in a row)",
                        "try again, or use --mirror",
                    ) from None
                delay = min(net.backoff * 2 ** (failures - 1), 30.0)
                print(f"fetch: {exc.reason}; retrying in {delay:g}s", file=sys.stderr, flush=True)
                time.sleep(delay)
