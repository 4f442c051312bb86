"""`make bench`: every row with its baseline and ratio; --json; results.json; docs/bench.md.

Usage: python -m bench.run [--exe dist/warren-linux-amd64] [--json] [--quick] [--only GROUPS]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from warren_bundle.hostinfo import host_arch
from warren_bundle.paths import Paths
from warren_bundle.payload.format import Payload, read_embedded
from warren_bundle.store.extract import ensure_extracted

from . import extraction, footprint, launch, pods, report, runtime
from .context import REPO, Bench, Runs
from .floor import floor_exe
from .machine import describe
from .notes import annotate
from .rows import Row

GROUPS = ("launch", "extraction", "start", "pods", "size")
RESULTS = REPO / "bench" / "results.json"
BENCH_PAGE = REPO / "docs" / "bench.md"  # holds the benchmark block, between its markers


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument(
        "--exe",
        type=Path,
        default=REPO / "dist" / f"warren-linux-{host_arch()}",
        help="the one file to measure (default: make build's output)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="few runs: a smoke test, not figures")
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups among {', '.join(GROUPS)} (start includes restart, memory)",
    )
    parser.add_argument(
        "--write",
        choices=("auto", "yes", "no"),
        default="auto",
        help="write bench/results.json and the block in docs/bench.md (auto: only for a full run)",
    )
    parser.add_argument("--rebuild-floor", action="store_true", help="refreeze the hello-world")
    parser.add_argument(
        "--note",
        action="append",
        default=[],
        help="a line for the docs/bench.md block (repeatable)",
    )
    return parser.parse_args(argv)


def _check_prerequisites(exe: Path) -> None:
    if not exe.is_file():
        raise SystemExit(f"bench: no executable at {exe}; run 'make build' first")
    missing = [tool for tool in ("tar", "zstd", "cp") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench: {', '.join(missing)} not found; apt-get install zstd tar")


def _not_measured(group: str, subject: str, unit: str, why: str) -> Row:
    return Row(group, subject, None, unit, "-", None, note=why)


def _runtime_rows(bench: Bench, payload: Payload) -> list[Row]:
    if os.geteuid() != 0:
        why = "needs root (containerd mounts and manages cgroups); run make bench as root"
        return [
            _not_measured("start-to-ready", "`warren containerd start`", "ms", why),
            _not_measured("restart", "kill -9 containerd → answers again", "ms", why),
            _not_measured("memory", "supervisor RSS at rest", "MB", why),
        ]
    rt = runtime.Runtime(bench, payload)
    try:
        _progress("start-to-ready against bare containerd")
        rows, bare_ms = runtime.measure_start(rt)
        _progress("restart after kill -9")
        rows += runtime.measure_restart(rt, bare_ms)
        _progress("supervisor memory at rest")
        rows += runtime.measure_memory(rt)
    finally:
        rt.teardown()
    return rows


def _pod_rows(bench: Bench, payload: Payload) -> list[Row]:
    subject = "RunPodSandbox → container running, via CRI"
    if os.geteuid() != 0:
        return [_not_measured("pod start", subject, "ms", "needs root; run make bench as root")]
    if payload.manifest.sandbox_image is None or not payload.manifest.cni_plugins:
        why = "this payload carries no pause image or CNI plugins"
        return [_not_measured("pod start", subject, "ms", why)]
    try:
        import grpc  # noqa: F401 - the tests' CRI client
    except ImportError:
        return [_not_measured("pod start", subject, "ms", "needs grpcio (pip install -e .[test])")]
    return pods.measure(bench, payload)


def measure(bench: Bench, groups: set[str]) -> list[Row]:
    payload = read_embedded(bench.exe)
    warm = bench.scratch("warm") / "data"
    warm_paths = Paths(warm, warm.parent / "run", warm.parent / "etc")
    ensure_extracted(warm_paths, payload)
    steps: list[tuple[str, str, Callable[[], list[Row]]]] = [
        (
            "launch",
            "launch times",
            lambda: launch.measure(bench, warm, warm_paths.binary("containerd")),
        ),
        (
            "extraction",
            "cold extraction against tar and cp",
            lambda: extraction.measure_cold(bench, payload, warm_paths.bin_dir),
        ),
        ("extraction", "cached check", lambda: extraction.measure_cached(bench, payload, warm)),
        ("start", "containerd", lambda: _runtime_rows(bench, payload)),
        ("pods", "pod start through CRI", lambda: _pod_rows(bench, payload)),
        ("size", "sizes", lambda: footprint.measure(bench, payload)),
    ]
    rows: list[Row] = []
    for group, what, step in steps:
        if group in groups:
            if what != "containerd":
                _progress(what)
            rows += step()
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    groups = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = groups - set(GROUPS)
    if unknown:
        raise SystemExit(f"bench: unknown group(s) {', '.join(sorted(unknown))}")
    exe = args.exe.resolve()
    _check_prerequisites(exe)
    machine = describe(REPO / "bench" / "work")
    began = time.monotonic()
    bench = Bench(
        exe=exe,
        floor_exe=floor_exe(args.rebuild_floor),
        runs=Runs.quick() if args.quick else Runs(),
    )
    try:
        rows = measure(bench, groups)
    finally:
        bench.cleanup()
    annotate(rows)
    machine["load_after"] = [round(x, 2) for x in os.getloadavg()]
    full = groups == set(GROUPS) and not args.quick
    extra = {
        "exe": str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else str(exe),
        "notes": args.note,
        "runs": vars(bench.runs),
        "quick": args.quick,
        "groups": sorted(groups),
        "duration_s": round(time.monotonic() - began, 1),
    }
    data = report.results(rows, machine, extra)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(report.terminal_table(rows))
        print()
        print(report.targets_line(rows))
        for note in report.notes(rows):
            print(f"- {note}")
    if args.write == "yes" or (args.write == "auto" and full):
        report.write_json(RESULTS, data)
        report.update_readme(BENCH_PAGE, report.readme_block(rows, machine, args.note))
        _progress(
            f"wrote {RESULTS.relative_to(REPO)} and the block in {BENCH_PAGE.relative_to(REPO)}"
        )
    _progress(f"done in {extra['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
