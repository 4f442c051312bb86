"""Notes computed from the rows themselves: where each missed or borderline figure comes from."""

from __future__ import annotations

from collections.abc import Sequence

from .rows import Row


def _find(
    rows: Sequence[Row], group: str, subject_part: str, baseline_part: str = ""
) -> Row | None:
    return next(
        (
            r
            for r in rows
            if r.group == group
            and subject_part in r.subject
            and baseline_part in r.baseline
            and r.value is not None
        ),
        None,
    )


def annotate(rows: Sequence[Row]) -> None:
    floor_row = _find(rows, "launch", "`warren version`", "hello-world")
    floor = floor_row.baseline_value if floor_row else None
    start = _find(rows, "start-to-ready", "`warren containerd start`")
    run = _find(rows, "start-to-ready", "`warren containerd run`")
    library = _find(rows, "start-to-ready", "ContainerdManager.start()")
    if start is not None and start.baseline_value is not None:
        parts = []
        if floor is not None:
            parts.append(
                f"`start` is one launch (the supervisor is a fork of it), and one launch of the "
                f"hello-world floor takes {floor:.0f} ms"
            )
        if run is not None and run.value is not None:
            parts.append(f"`containerd run` in the foreground is ready in {run.value:.0f} ms")
        if library is not None and library.value is not None:
            added = library.value - start.baseline_value
            parts.append(
                f"the supervisor itself, in process, adds {added:.0f} ms to bare containerd"
            )
        if parts:
            start.note = "; ".join(parts)
    restart = _find(rows, "restart", "kill -9")
    if restart is not None:
        from warren_bundle.runtime.settings import Settings

        restart.note = (
            f"includes the supervisor's first backoff delay "
            f"({Settings().backoff_initial * 1000:.0f} ms) before it respawns containerd"
        )
    memory = _find(rows, "memory", "supervisor RSS")
    if memory is not None:
        python_mb = memory.detail.get("python_process_mb")
        boot_mb = memory.detail.get("bootloader_mb")
        if python_mb is not None and boot_mb is not None:
            memory.note = (
                f"Python process {python_mb:.1f} MB + one-file bootloader {boot_mb:.1f} MB"
            )
    launch = floor_row
    if launch is not None and launch.value is not None and floor is not None:
        launch.note = (
            f"{launch.value - floor:.0f} ms over the floor: warren's own imports and the "
            "extension modules it adds (zstandard, psutil, ...), inflated at every launch"
        )
