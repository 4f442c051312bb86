"""Air-gapped images: import OCI/Docker image archives into containerd with the bundled ctr.

At `containerd run`/`start`, archives in <data-dir>/images (.tar, .tar.gz, .tar.zst) are imported
once containerd is ready, into the `default` namespace and `k8s.io` (where the CRI plugin looks).
A cache of name/size/mtime (<data-dir>/.images-imported.json) skips archives already imported;
one bad archive is reported and the others go on. The progress of the automatic import is written
to <run-dir>/images.json so `warren images status --wait` can tell when it is done.

ctr 1.x reads only uncompressed tar streams, so compressed archives are decompressed here (by their
magic bytes, whatever their suffix) and streamed to `ctr images import -`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from warren_bundle.errors import ImageImportError
from warren_bundle.fsutil import write_json
from warren_bundle.paths import Paths
from warren_bundle.runtime.childenv import child_env

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tar.zst")
DEFAULT_NAMESPACES = ("default", "k8s.io")
CACHE_FILE = ".images-imported.json"
REPORT_FILE = "images.json"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
# ctr 1.x: "unpacking docker.io/library/busybox:1 (sha256:…)...done"; 2.x also lists "NAME saved".
_UNPACKING = re.compile(r"unpacking (\S+) \(sha256:[0-9a-f]+\)", re.IGNORECASE)
_SAVED = re.compile(r"^(\S+)\s+saved\s*$", re.MULTILINE)


@dataclass
class ArchiveResult:
    archive: str
    status: str  # imported | cached | failed | skipped
    namespaces: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        name = Path(self.archive).name
        if self.status == "failed":
            return f"image archive {self.archive}: {self.error}"
        if self.status == "cached":
            return f"{name}: already imported (same size and mtime), skipped"
        if self.status == "skipped":
            return f"{name}: not imported ({self.error})"
        images = ", ".join(self.images) or "no named images"
        return (
            f"imported {name} into {', '.join(self.namespaces)}: {images} ({self.duration_s:.1f} s)"
        )


def cache_path(paths: Paths) -> Path:
    return paths.data_dir / CACHE_FILE


def report_path(paths: Paths) -> Path:
    return paths.run_dir / REPORT_FILE


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


def ctr_import(ctr: Path, socket: str, namespace: str, archive: Path) -> list[str]:
    """Stream `archive` into `ctr images import -`; the image names, or ImageImportError."""
    argv = [str(ctr), "--address", socket, "--namespace", namespace, "images", "import", "-"]
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


# --- the cache of imported archives -----------------------------------------------------------


class ImportCache:
    """name -> size, mtime_ns and what was imported where; a changed file is imported again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        with suppress(OSError, ValueError):
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("archives"), dict):
                self.entries = data["archives"]

    @staticmethod
    def _key(archive: Path) -> tuple[int, int]:
        st = archive.stat()
        return st.st_size, st.st_mtime_ns

    def lookup(self, archive: Path, namespaces: Iterable[str]) -> dict[str, Any] | None:
        entry = self.entries.get(archive.name)
        if not entry:
            return None
        size, mtime_ns = self._key(archive)
        wanted = set(namespaces)
        if entry.get("size") != size or entry.get("mtime_ns") != mtime_ns:
            return None
        if not wanted.issubset(entry.get("namespaces") or []):
            return None
        return entry

    def record(self, archive: Path, result: ArchiveResult) -> None:
        size, mtime_ns = self._key(archive)
        self.entries[archive.name] = {
            "size": size,
            "mtime_ns": mtime_ns,
            "namespaces": result.namespaces,
            "images": result.images,
            "imported_at": time.time(),
        }

    def save(self) -> None:
        write_json(self.path, {"archives": self.entries})


# --- the automatic import of <data-dir>/images ------------------------------------------------


def _still_present(
    ctr: Path, socket: str, entry: dict[str, Any], listed: dict[str, set[str] | None]
) -> bool:
    """A cached import counts only while its images are still in containerd (a wiped root)."""
    names = entry.get("images") or []
    for namespace in entry.get("namespaces") or []:
        if namespace not in listed:
            listed[namespace] = ctr_image_list(ctr, socket, namespace)
        present = listed[namespace]
        if present is not None and not set(names).issubset(present):
            return False
    return True


def import_directory(
    paths: Paths,
    socket: str,
    namespaces: Iterable[str] = DEFAULT_NAMESPACES,
    should_continue: Callable[[], bool] = lambda: True,
    on_result: Callable[[ArchiveResult], None] = lambda _r: None,
) -> list[ArchiveResult]:
    """Import each archive in <data-dir>/images not imported before; never raises for one."""
    wanted = list(namespaces)
    ctr = paths.binary("ctr")
    cache = ImportCache(cache_path(paths))
    listed: dict[str, set[str] | None] = {}
    results = []
    for archive in find_archives(paths.images_dir):
        if not should_continue():
            result = ArchiveResult(str(archive), "skipped", error="containerd is stopping")
        else:
            result = _import_one(ctr, socket, archive, wanted, cache, listed)
        results.append(result)
        on_result(result)
    return results


def _import_one(
    ctr: Path,
    socket: str,
    archive: Path,
    namespaces: list[str],
    cache: ImportCache,
    listed: dict[str, set[str] | None],
) -> ArchiveResult:
    try:
        entry = cache.lookup(archive, namespaces)
        if entry is not None and _still_present(ctr, socket, entry, listed):
            return ArchiveResult(
                str(archive), "cached", list(entry["namespaces"]), list(entry.get("images") or [])
            )
        result = import_archive(ctr, socket, archive, namespaces)
        if result.status == "imported":
            cache.record(archive, result)
            cache.save()
            listed.clear()
    except (OSError, subprocess.SubprocessError) as exc:
        result = ArchiveResult(str(archive), "failed", error=f"cannot import: {exc}")
    if result.status == "failed":
        result.error = (
            f"{result.error}; check it (tar -tf, or the tool that saved it) or remove it "
            f"from {archive.parent}"
        )
    return result


class ImportReport:
    """<run-dir>/images.json: the automatic import's progress, for `warren images status`."""

    def __init__(self, paths: Paths, namespaces: Iterable[str]) -> None:
        self.path = report_path(paths)
        self.data: dict[str, Any] = {
            "state": "importing",
            "supervisor_pid": os.getpid(),
            "images_dir": str(paths.images_dir),
            "namespaces": list(namespaces),
            "started_at": time.time(),
            "finished_at": None,
            "results": [],
        }
        self._save()

    def add(self, result: ArchiveResult) -> None:
        self.data["results"].append(result.to_dict())
        self._save()

    def finish(self, error: str | None = None) -> None:
        self.data["state"] = "done" if error is None else "error"
        self.data["error"] = error
        self.data["finished_at"] = time.time()
        self._save()

    def _save(self) -> None:
        with suppress(OSError):
            write_json(self.path, self.data)


def read_report(paths: Paths) -> dict[str, Any] | None:
    try:
        data = json.loads(report_path(paths).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def auto_import(
    paths: Paths,
    socket: str,
    should_continue: Callable[[], bool],
    echo: Callable[[str], None],
) -> list[ArchiveResult]:
    """The ready hook's work: import <data-dir>/images, reporting progress as it goes."""
    report = ImportReport(paths, DEFAULT_NAMESPACES)

    def on_result(result: ArchiveResult) -> None:
        report.add(result)
        echo(result.describe())

    try:
        results = import_directory(paths, socket, DEFAULT_NAMESPACES, should_continue, on_result)
    except Exception as exc:  # the supervisor must outlive any surprise here
        report.finish(f"{type(exc).__name__}: {exc}")
        echo(f"image import stopped: {exc}")
        return []
    report.finish()
    failed = sum(r.status == "failed" for r in results)
    if results:
        echo(
            f"images: {len(results) - failed} of {len(results)} archive(s) in {paths.images_dir} "
            f"present in {', '.join(DEFAULT_NAMESPACES)}" + (f"; {failed} failed" if failed else "")
        )
    return results


def current_report(paths: Paths) -> dict[str, Any]:
    """The import report of the supervisor running now; NotRunningError when there is none."""
    from warren_bundle.errors import NotRunningError
    from warren_bundle.runtime.control import supervisor_process

    sup = supervisor_process(paths)
    if sup is None:
        raise NotRunningError(
            "containerd is not running (no supervisor), so no image import ran",
            "start it with 'warren containerd start'",
        )
    report = read_report(paths)
    # A report left by an earlier supervisor says nothing about this one.
    if report is None or report.get("supervisor_pid") != sup.pid:
        return {"state": "pending", "supervisor_pid": sup.pid, "results": []}
    return report


def wait_for_report(paths: Paths, timeout: float) -> dict[str, Any]:
    from warren_bundle.errors import ReadinessTimeout

    deadline = time.monotonic() + timeout
    while True:
        report = current_report(paths)
        if report.get("state") not in ("pending", "importing"):
            return report
        if time.monotonic() >= deadline:
            raise ReadinessTimeout(
                f"the image import was still {report.get('state')} after {timeout:g}s",
                f"wait longer, or see {paths.log_file}",
            )
        time.sleep(0.1)
