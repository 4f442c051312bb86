"""Print the table, write bench/results.json, regenerate the block in docs/bench.md."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .machine import summary
from .rows import Row

START_MARK = "<!-- bench:start -->"
END_MARK = "<!-- bench:end -->"
COLUMNS = ("measurement", "warren", "baseline", "baseline value", "ratio", "Δ", "target", "status")

METHOD = (
    "Each figure is the median of several runs after a warm-up, and each comparison is measured "
    "interleaved with its baseline in the same run (round-robin, rotating order), so a noisy "
    "machine slows both sides alike: read the ratios first. Cold extraction verifies every "
    "SHA-256 and fsyncs; tar and cp do neither. Start-to-ready uses a warm cache (binaries "
    "already extracted) and the same containerd binary, config and flags for the baseline, polled "
    "every 5 ms with `warren_bundle.runtime.health.is_serving`. Restart is measured from "
    "`kill -9` of "
    "containerd under a supervisor started by `warren containerd start` until a new containerd "
    "answers. Memory is RSS at rest, a few seconds after ready."
)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ms", "µs"):
        return f"{value:.0f} {unit}" if abs(value) >= 100 else f"{value:.1f} {unit}"
    if unit == "MB":
        return f"{value:.1f} {unit}"
    return f"{value:g} {unit}"


def fmt_diff(row: Row) -> str:
    diff = row.difference
    if diff is None:
        return "-"
    return ("+" if diff >= 0 else "−") + fmt(abs(diff), row.unit)


def cells(row: Row) -> tuple[str, ...]:
    return (
        f"{row.group}: {row.subject}",
        fmt(row.value, row.unit),
        row.baseline,
        fmt(row.baseline_value, row.unit),
        f"{row.ratio:.2f}×" if row.ratio is not None else "-",
        fmt_diff(row),
        row.target.describe(row.unit) if row.target else "-",
        row.status,
    )


def terminal_table(rows: Sequence[Row], width: int = 36) -> str:
    """Columns wrapped to `width` so that a row stays readable in a terminal."""
    import textwrap

    table = [COLUMNS, *(cells(r) for r in rows)]
    wrapped = [[textwrap.wrap(c, width) or [""] for c in line] for line in table]
    widths = [max(len(part) for line in wrapped for part in line[i]) for i in range(len(COLUMNS))]
    out = []
    for n, line in enumerate(wrapped):
        for k in range(max(len(c) for c in line)):
            parts = [
                (c[k] if k < len(c) else "").ljust(w) for c, w in zip(line, widths, strict=True)
            ]
            out.append("  ".join(parts).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: Sequence[Row]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(" --- " for _ in COLUMNS) + "|",
    ]
    for row in rows:
        line = list(cells(row))
        if row.status == "MISSED":
            line[-1] = "**MISSED**"
        lines.append("| " + " | ".join(esc(c) for c in line) + " |")
    return "\n".join(lines)


def notes(rows: Sequence[Row]) -> list[str]:
    return [f"{r.group}: {r.subject} vs {r.baseline}: {r.note}" for r in rows if r.note]


def targets_line(rows: Sequence[Row]) -> str:
    judged = [r for r in rows if r.target is not None]
    met = [r for r in judged if r.status == "met"]
    missed = [f"{r.group} ({fmt(r.value, r.unit)})" for r in judged if r.status == "MISSED"]
    unmeasured = [r.group for r in judged if r.status == "not measured"]
    text = f"Targets met: {len(met)} of {len(judged)}."
    if missed:
        text += f" Missed: {', '.join(missed)}."
    if unmeasured:
        text += f" Not measured in this run: {', '.join(unmeasured)}."
    return text


def readme_block(rows: Sequence[Row], machine: dict[str, Any], extra_notes: Sequence[str]) -> str:
    parts = [
        START_MARK,
        "## Benchmarks",
        "",
        "`make bench` (`python -m bench.run`, `--json` for machine-readable output) measures "
        "warren against baselines built and run on the same machine in the same run, and writes "
        "`bench/results.json`; it rewrites this section between its markers.",
        "",
        f"Latest run: {summary(machine)}.",
        "",
        markdown_table(rows),
        "",
        targets_line(rows),
        "",
        METHOD,
    ]
    all_notes = [*notes(rows), *extra_notes]
    if all_notes:
        parts += ["", *(f"- {n}" for n in all_notes)]
    parts.append(END_MARK)
    return "\n".join(parts) + "\n"


def update_readme(readme: Path, block: str) -> None:
    """Replace the block between the markers, or append it (the rest of the file is not ours)."""
    text = readme.read_text() if readme.exists() else ""
    pattern = re.compile(re.escape(START_MARK) + r".*?" + re.escape(END_MARK) + r"\n?", re.S)
    if pattern.search(text):
        new = pattern.sub(lambda _m: block, text, count=1)
    else:
        new = text.rstrip("\n") + ("\n\n" if text.strip() else "") + block
    readme.write_text(new)


def results(rows: Sequence[Row], machine: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {"machine": machine, "rows": [r.to_dict() for r in rows], **extra}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
