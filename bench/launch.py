"""1. Launch: `warren version` of the one file against the packaging floor and its neighbours."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .context import Bench
from .rows import Row, Target
from .timing import interleaved, time_command

LAUNCH_TARGET = Target("ratio", 1.15)
# The launcher's cost: the one file against its own runtime run in place (no launcher at all).
ONEDIR_TARGET = Target("ratio", 1.10)


def runtime_in_place(bench: Bench, data_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The runtime the one file runs, started directly, as the launcher would (same env)."""
    from warren_bundle.paths import DEFAULT_RUNTIME_ROOT
    from warren_bundle.payload import onefile

    digest = onefile.read_trailer(bench.exe).runtime_digest
    runtime = Path(DEFAULT_RUNTIME_ROOT) / digest  # where the launcher puts it for root
    env = bench.env(
        WARREN_DATA_DIR=str(data_dir), _WARREN_ONEFILE=str(bench.exe), _WARREN_RUNTIME=str(runtime)
    )
    return [str(runtime / "warren"), "version"], env


def measure(bench: Bench, data_dir: Path, containerd: Path) -> list[Row]:
    """`data_dir` holds the extracted payload, so `warren extract` there takes the cached path."""
    env = bench.env()
    cached_env = bench.env(WARREN_DATA_DIR=str(data_dir))
    # The runtime extracted into data_dir first, so both sides take their cached path.
    subprocess.run([str(bench.exe), "version"], env=cached_env, capture_output=True, check=True)
    onedir_argv, onedir_env = runtime_in_place(bench, data_dir)
    commands = {
        "warren": ([str(bench.exe), "version"], cached_env),
        "onedir": (onedir_argv, onedir_env),
        "floor": ([str(bench.floor_exe), "version"], env),
        "source": ([bench.python, "-m", "warren_bundle", "version"], env),
        "containerd": ([str(containerd), "--version"], env),
        "extract_cached": ([str(bench.exe), "extract"], cached_env),
    }
    samples = interleaved(
        {name: (lambda a=argv, e=e: time_command(a, e)) for name, (argv, e) in commands.items()},
        runs=bench.runs.launch,
        warmup=3,
    )
    ms = {name: s.median * 1000 for name, s in samples.items()}
    detail = {name: s.scaled(1000) for name, s in samples.items()}
    group = "launch"
    return [
        Row(
            group,
            "`warren version` (one file)",
            ms["warren"],
            "ms",
            "the same build's onedir runtime run in place (no launcher)",
            ms["onedir"],
            ONEDIR_TARGET,
            note="what the launcher adds: read the trailer, stat the runtime dir, execve",
            detail={"onedir": detail["onedir"]},
        ),
        Row(
            group,
            "`warren version` (one file)",
            ms["warren"],
            "ms",
            "hello-world click app, same spec (floor)",
            ms["floor"],
            LAUNCH_TARGET,
            detail={"warren": detail["warren"], "floor": detail["floor"]},
        ),
        Row(
            group,
            "`warren version` (one file)",
            ms["warren"],
            "ms",
            "`python -m warren_bundle version` (from source)",
            ms["source"],
            note="the frozen runtime against the interpreter and the sources",
            detail={"source": detail["source"]},
        ),
        Row(
            group,
            "`warren version` (one file)",
            ms["warren"],
            "ms",
            "bundled `containerd --version`",
            ms["containerd"],
            detail={"containerd": detail["containerd"]},
        ),
        Row(
            group,
            "`warren extract`, cache current (one file)",
            ms["extract_cached"],
            "ms",
            "`warren version` (one file)",
            ms["warren"],
            note="what every command that needs the binaries pays on top of a launch",
            detail={"extract_cached": detail["extract_cached"]},
        ),
    ]
