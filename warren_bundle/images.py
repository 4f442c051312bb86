"""Image archives: find them, read them (tar, gzip, zstd) and import them with the bundled ctr.

The automatic import of <data-dir>/images at every start (its cache and progress report) is
airgap.py's; this module is what one import of one archive takes.

ctr 1.x reads only uncompressed tar streams, so compressed archives are decompressed here (by their
magic bytes, whatever their suffix) and streamed to `ctr images import -`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from warren_bundle.errors import ImageImportError
from warren_bundle.runtime.childenv import child_env

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tar.zst")
DEFAULT_NAMESPACES = ("default", "k8s.io")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
# ctr 1.x: "unpacking docker.io/library/busybox:1 (sha256:…)...done"; 2.x also lists "NAME saved".
_UNPACKING = re.compile(r"unpacking (\S+) \(sha256:[0-9a-f]+\)", re.IGNORECASE)
_SAVED = re.compile(r"^(\S+)\s+saved\s*$", re.MULTILINE)


@dataclass
class ArchiveResult:
    archive: str
    status: str  # imported | cached | failed | skipped | untrusted (not in SHA256SUMS)
    namespaces: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0
    note: str | None = None  # why a cached one needed no work, when not the import cache
    at: float | None = None  # when the watch of <data-dir>/images reported it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        name = Path(self.archive).name
        if self.status == "failed":
            return f"image archive {self.archive}: {self.error}"
        if self.status == "cached":
            return f"{name}: {self.note or 'already imported (same size and mtime), skipped'}"
        if self.status in ("skipped", "untrusted"):
            return f"{name}: not imported ({self.error})"
        images = ", ".join(self.images) or "no named images"
        return (
            f"imported {name} into {', '.join(self.namespaces)}: {images} ({self.duration_s:.1f} s)"
        )


def find_archives(images_dir: Path) -> list[Path]:
    """Image archives in `images_dir` by suffix, sorted by name; hidden files are ignored."""
    try:
        entries = list(images_dir.iterdir())
    except FileNotFoundError:
        return []
    found = [
        p
        for p in entries
        if not p.name.startswith(".") and p.name.endswith(ARCHIVE_SUFFIXES) and p.is_file()
    ]
    return sorted(found, key=lambda p: p.name)


# --- reading an archive -----------------------------------------------------------------------


@contextmanager
def open_archive(path: Path) -> Iterator[BinaryIO]:
    """The archive's tar stream: gzip and zstd are recognised by their magic bytes."""
    with open(path, "rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic.startswith(GZIP_MAGIC):
            import gzip

            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield cast(BinaryIO, gz)
        elif magic == ZSTD_MAGIC:
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(raw) as zst:
                yield zst
        else:
            yield raw


def _stream_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, ValueError)
    with suppress(ImportError):
        import zstandard

        errors += (zstandard.ZstdError,)
    return errors


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1].removeprefix("ctr: ") if lines else ""


def image_names(ctr_output: str) -> list[str]:
    names = _UNPACKING.findall(ctr_output) or _SAVED.findall(ctr_output)
    return list(dict.fromkeys(names))


# --- talking to containerd through ctr --------------------------------------------------------


def ctr_import(
    ctr: Path, socket: str, namespace: str, archive: Path, timeout: float | None = None
) -> list[str]:
    """Stream `archive` into `ctr images import -`; the image names, or ImageImportError.

    `timeout` bounds ctr itself (its --timeout): a ctr whose containerd went away mid-import
    then exits instead of waiting for it forever."""
    argv = [str(ctr), "--address", socket, "--namespace", namespace]
    if timeout is not None:
        argv += ["--timeout", f"{timeout:g}s"]
    argv += ["images", "import", "-"]
    stream_error: BaseException | None = None
    # A file, not a pipe, for ctr's output: a full pipe would block it while we write its stdin.
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=child_env()
        )
        assert proc.stdin is not None
        try:
            with open_archive(archive) as src:
                shutil.copyfileobj(src, proc.stdin, _CHUNK)
        except BrokenPipeError:
            pass  # ctr stopped reading; its output says why
        except _stream_errors() as exc:
            stream_error = exc
            proc.kill()
        finally:
            with suppress(OSError):
                proc.stdin.close()
        rc = proc.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    if stream_error is not None:
        raise ImageImportError(f"cannot read the archive: {stream_error}")
    if rc != 0:
        raise ImageImportError(
            f"import into namespace {namespace} failed: {_last_line(text) or f'ctr exit {rc}'}"
        )
    return image_names(text)


def ctr_image_list(ctr: Path, socket: str, namespace: str) -> set[str] | None:
    """Image names in `namespace`, or None when ctr cannot tell."""
    done = subprocess.run(
        [str(ctr), "--address", socket, "--namespace", namespace, "images", "ls", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    return set(done.stdout.split()) if done.returncode == 0 else None


def import_archive(
    ctr: Path, socket: str, archive: Path, namespaces: Iterable[str]
) -> ArchiveResult:
    started = time.monotonic()
    result = ArchiveResult(str(archive), "imported")
    for namespace in namespaces:
        try:
            names = ctr_import(ctr, socket, namespace, archive)
        except ImageImportError as exc:
            result.status, result.error = "failed", exc.message
            break
        result.namespaces.append(namespace)
        result.images.extend(n for n in names if n not in result.images)
    result.duration_s = time.monotonic() - started
    return result
