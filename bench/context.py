"""What every measurement shares: the executables under test, scratch dirs, repetition counts."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / "work"  # gitignored: the hello-world build and scratch data dirs


@dataclass(frozen=True)
class Runs:
    launch: int = 21
    extraction: int = 9
    cached_calls: int = 2000
    start: int = 7
    restart: int = 5
    memory_samples: int = 5

    @classmethod
    def quick(cls) -> Runs:
        return cls(launch=5, extraction=3, cached_calls=300, start=2, restart=2, memory_samples=2)


@dataclass
class Bench:
    exe: Path  # the frozen one file under test
    floor_exe: Path  # the hello-world click app frozen with the same spec
    runs: Runs
    work: Path = WORK
    python: str = sys.executable
    _scratch: list[Path] = field(default_factory=list)

    def scratch(self, name: str) -> Path:
        """A fresh empty dir (0755, ours) under bench/work/, removed at the end."""
        path = self.work / "scratch" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o755, parents=True)
        self._scratch.append(path)
        return path

    def run_dir(self) -> Path:
        """A short dir under /tmp for sockets (unix socket paths are limited to 107 bytes)."""
        path = Path(tempfile.mkdtemp(prefix="wbench", dir="/tmp"))
        path.chmod(0o755)
        self._scratch.append(path)
        return path

    def cleanup(self) -> None:
        for path in reversed(self._scratch):
            shutil.rmtree(path, ignore_errors=True)
        self._scratch.clear()

    def env(self, **extra: str) -> dict[str, str]:
        """The caller's environment without anything that would steer warren elsewhere."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WARREN_", "_PYI", "_MEI"))}
        env.pop("CONTAINERD_ADDRESS", None)
        env.update(extra)
        return env
