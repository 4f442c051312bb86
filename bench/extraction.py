"""2–3. Extraction: cold into an empty data dir against tar and cp; then the cached check."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from warren_bundle.paths import Paths
from warren_bundle.payload.format import Payload
from warren_bundle.store.extract import ensure_extracted

from .context import Bench
from .rows import Row, Target
from .timing import interleaved, per_call, time_call, time_command

COLD_TARGET = Target("ratio", 1.5)
CACHED_TARGET = Target("at_most", 1000.0)  # µs


def payload_bytes(payload: Payload, dest: Path) -> Path:
    """The payload's compressed bytes, copied out of the one file, for tar to extract."""
    with open(payload.path, "rb") as src, open(dest, "wb") as out:
        src.seek(payload.offset)
        remaining = payload.size
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                raise RuntimeError(f"{payload.path} ends inside its payload")
            out.write(chunk)
            remaining -= len(chunk)
    return dest


def _paths(data_dir: Path) -> Paths:
    return Paths(data_dir, data_dir.parent / "run", data_dir.parent / "etc")


def measure_cold(bench: Bench, payload: Payload, extracted_bin: Path) -> list[Row]:
    area = bench.scratch("cold")
    archive = payload_bytes(payload, bench.scratch("archive") / "payload.tar.zst")
    target = area / "target"

    def fresh() -> Path:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(mode=0o755)
        return target

    def ours() -> float:
        data = fresh() / "data"
        return time_call(lambda: ensure_extracted(_paths(data), payload))

    def frozen_cli() -> float:
        data = fresh() / "data"
        return time_command([str(bench.exe), "extract"], bench.env(WARREN_DATA_DIR=str(data)))

    def tar() -> float:
        return time_command(["tar", "--zstd", "-xf", str(archive), "-C", str(fresh())])

    def cp() -> float:
        return time_command(["cp", "-r", str(extracted_bin), str(fresh() / "bin")])

    def settle() -> None:
        # Untimed: write back what the last contender left dirty, so the next one starts even.
        shutil.rmtree(target, ignore_errors=True)
        os.sync()

    samples = interleaved(
        {"warren": ours, "tar": tar, "cp": cp, "frozen": frozen_cli},
        runs=bench.runs.extraction,
        warmup=1,
        between=settle,
    )
    ms = {name: s.median * 1000 for name, s in samples.items()}
    detail = {name: s.scaled(1000) for name, s in samples.items()}
    size_mb = sum(f.size for f in payload.manifest.files) / 1e6
    group = "extraction"
    return [
        Row(
            group,
            f"cold extraction, in process ({size_mb:.0f} MB, verified, fsynced)",
            ms["warren"],
            "ms",
            "`tar --zstd -xf` of the same bytes",
            ms["tar"],
            COLD_TARGET,
            detail={"warren": detail["warren"], "tar": detail["tar"]},
        ),
        Row(
            group,
            "cold extraction, in process",
            ms["warren"],
            "ms",
            "`cp -r` of the extracted files",
            ms["cp"],
            detail={"cp": detail["cp"]},
        ),
        Row(
            group,
            "`warren extract` into an empty data dir (one file, launch included)",
            ms["frozen"],
            "ms",
            "`tar --zstd -xf` of the same bytes",
            ms["tar"],
            detail={"frozen": detail["frozen"]},
        ),
    ]


def measure_cached(bench: Bench, payload: Payload, data_dir: Path) -> list[Row]:
    paths = _paths(data_dir)
    binaries = [paths.binary(f.name) for f in payload.manifest.files]
    if not ensure_extracted(paths, payload).cached:
        raise RuntimeError(f"{data_dir} was not extracted before the cached check")

    def check() -> None:
        if not ensure_extracted(paths, payload).cached:
            raise RuntimeError("the cached check re-extracted")

    def stats() -> None:
        for path in binaries:
            os.stat(path)

    calls = bench.runs.cached_calls
    per_call(check, calls // 10)  # warm-up
    ours = per_call(check, calls)
    floor = per_call(stats, calls)
    return [
        Row(
            "extraction",
            "cached check: `ensure_extracted` with the cache current, in process",
            ours.median * 1e6,
            "µs",
            f"{len(binaries)} bare os.stat calls",
            floor.median * 1e6,
            CACHED_TARGET,
            detail={"warren": ours.scaled(1e6), "stat": floor.scaled(1e6)},
        )
    ]
