"""The automatic import of <data-dir>/images: the runtime's default ready hook.

At `containerd run`/`start` (and ensure_containerd()), archives in <data-dir>/images (.tar,
.tar.gz, .tar.zst) are imported once containerd is ready, into the `default` namespace and
`k8s.io` (where the CRI plugin looks). A cache of name/size/mtime
(<data-dir>/.images-imported.json) skips archives already imported while their images are still
in containerd; one bad archive is reported and the others go on. The progress is written to
<run-dir>/images.json so `warren images status --wait` (and `containerd start`) can tell when it
is done.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

from warren_bundle.fsutil import check_trusted_dir, read_json, write_json
from warren_bundle.images import (
    DEFAULT_NAMESPACES,
    ArchiveResult,
    ctr_image_list,
    find_archives,
    import_archive,
)
from warren_bundle.imagewatch import (
    POLL_S,
    ImportCache,
    Sums,
    Watcher,
    cache_path,
    load_sums,
    wait_complete,
)
from warren_bundle.paths import Paths

REPORT_FILE = "images.json"


def report_path(paths: Paths) -> Path:
    return paths.run_dir / REPORT_FILE


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
    check_trusted_dir(paths.images_dir, "images dir", "--data-dir")
    sums = load_sums(paths.images_dir)
    for archive in find_archives(paths.images_dir):
        if not should_continue():
            result = ArchiveResult(str(archive), "skipped", error="containerd is stopping")
        elif not wait_complete(archive, should_continue):
            result = ArchiveResult(str(archive), "skipped", error="gone, or containerd stopping")
        else:
            result = _import_one(ctr, socket, archive, wanted, cache, listed, sums)
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
    sums: Sums | None = None,
) -> ArchiveResult:
    try:
        entry = cache.lookup(archive, namespaces)
        if entry is not None and _still_present(ctr, socket, entry, listed):
            return ArchiveResult(
                str(archive), "cached", list(entry["namespaces"]), list(entry.get("images") or [])
            )
        reason = sums.verdict(archive) if sums is not None else None
        if reason is not None:
            return ArchiveResult(str(archive), "untrusted", error=reason)
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

    def put(self, result: ArchiveResult) -> None:
        """An archive's latest result (the watcher's), replacing an earlier one for it."""
        result.at = time.time()
        entry = result.to_dict()
        kept = [r for r in self.data["results"] if r.get("archive") != result.archive]
        self.data["results"] = [*kept, entry]
        self._save()

    def watching(self, interval: float) -> None:
        self.data["watching"] = {"interval_s": interval, "since": time.time()}
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
    return read_json(report_path(paths))


def auto_import(
    paths: Paths,
    socket: str,
    should_continue: Callable[[], bool],
    echo: Callable[[str], None],
    first: Callable[[], ArchiveResult | None] | None = None,
    report: ImportReport | None = None,
) -> list[ArchiveResult]:
    """The ready hook's work: `first` (the sandbox image), then <data-dir>/images, reporting
    progress as it goes."""
    report = report or ImportReport(paths, DEFAULT_NAMESPACES)

    def on_result(result: ArchiveResult) -> None:
        report.add(result)
        echo(result.describe())

    try:
        sandbox = first() if first is not None else None
        if sandbox is not None:  # kept apart: `results` are the archives of <data-dir>/images
            report.data["sandbox"] = sandbox.to_dict()
            echo(sandbox.describe())
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


def import_and_watch(
    paths: Paths,
    socket: str,
    should_continue: Callable[[], bool],
    echo: Callable[[str], None],
    first: Callable[[], ArchiveResult | None] | None = None,
    ready: Callable[[], bool] = lambda: True,
    interval: float = POLL_S,
) -> None:
    """The import at start, then the watch for archives that arrive while containerd runs."""
    report = ImportReport(paths, DEFAULT_NAMESPACES)
    results = auto_import(paths, socket, should_continue, echo, first, report)

    def on_result(result: ArchiveResult) -> None:
        report.put(result)
        echo(result.describe())

    watcher = Watcher(paths, socket, on_result, ready)
    for result in results:
        watcher.settle(result)
    report.watching(interval)
    watcher.run(should_continue, interval)


def current_report(paths: Paths) -> dict[str, Any]:
    """The import report of the supervisor running now; NotRunningError when there is none."""
    from warren_bundle.errors import NotRunningError
    from warren_bundle.runtime import pidfile

    sup = pidfile.supervisor(paths)
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
