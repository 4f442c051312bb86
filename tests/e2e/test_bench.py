"""The benchmark harness (bench/): its verdicts, its README block, and one quick real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO

sys.path.insert(0, str(REPO))

from bench.report import END_MARK, START_MARK, markdown_table, terminal_table, update_readme
from bench.rows import Row, Target
from bench.timing import interleaved


def row(value: float | None, baseline: float | None, target: Target | None) -> Row:
    return Row("g", "subject", value, "ms", "base", baseline, target)


@pytest.mark.parametrize(
    ("value", "baseline", "target", "status"),
    [
        (115, 100, Target("ratio", 1.15), "met"),
        (116, 100, Target("ratio", 1.15), "MISSED"),
        (200, 100, Target("over", 100), "met"),
        (201, 100, Target("over", 100), "MISSED"),
        (999, None, Target("at_most", 1000), "met"),
        (1001, None, Target("at_most", 1000), "MISSED"),
        (50, None, Target("ratio", 1.25), "not measured"),
        (None, 100, Target("ratio", 1.25), "not measured"),
        (50, 100, None, "info"),
    ],
)
def test_status_follows_the_target(
    value: float | None, baseline: float | None, target: Target | None, status: str
) -> None:
    assert row(value, baseline, target).status == status


def test_ratio_and_difference() -> None:
    r = row(150, 120, None)
    assert r.ratio == pytest.approx(1.25)
    assert r.difference == pytest.approx(30)
    assert row(150, None, None).ratio is None


def test_tables_carry_every_row_with_baseline_and_ratio() -> None:
    rows = [
        Row("launch", "warren version", 150.0, "ms", "floor", 120.0, Target("ratio", 1.15)),
        Row("size", "the one file", 28.0, "MB", "debs", 28.6, Target("ratio", 1.25)),
    ]
    md = markdown_table(rows)
    assert "| launch: warren version | 150 ms | floor | 120 ms | 1.25× | +30.0 ms | ≤ 1.15× |" in md
    assert "**MISSED**" in md
    assert "0.98×" in md
    text = terminal_table(rows)
    assert "MISSED" in text and "met" in text and "1.25×" in text


def test_readme_block_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nintro\n")
    update_readme(readme, f"{START_MARK}\nfirst\n{END_MARK}\n")
    readme.write_text(readme.read_text() + "\n## Written later by hand\n")
    update_readme(readme, f"{START_MARK}\nsecond\n{END_MARK}\n")

    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n")
    assert "second" in text and "first" not in text
    assert text.count(START_MARK) == 1
    assert text.endswith("## Written later by hand\n")


def test_interleaving_rotates_the_order() -> None:
    calls: list[str] = []

    def contender(name: str) -> float:
        calls.append(name)
        return 1.0

    samples = interleaved(
        {n: (lambda n=n: contender(n)) for n in ("a", "b", "c")}, runs=3, warmup=0
    )
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {n: s.values for n, s in samples.items()} == {n: (1.0, 1.0, 1.0) for n in "abc"}


@pytest.mark.e2e
def test_quick_run_measures_size_and_extraction(frozen_exe: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--exe",
            str(frozen_exe),
            "--quick",
            "--only",
            "extraction,size",
            "--write",
            "no",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout)
    cold = next(r for r in data["rows"] if r["subject"].startswith("cold extraction, in process ("))
    assert cold["baseline"] == "`tar --zstd -xf` of the same bytes"
    assert cold["value"] > 0 and cold["baseline_value"] > 0 and cold["ratio"] > 0
    assert cold["target"] == "≤ 1.5×" and cold["status"] in ("met", "MISSED")
    one_file = next(r for r in data["rows"] if r["subject"] == "the one file")
    assert one_file["value"] == pytest.approx(frozen_exe.stat().st_size / 1e6)
    assert data["machine"]["cores"] >= 1
