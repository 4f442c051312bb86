"""A fake Lima for the Lima tests: tests/fake_limactl under a temporary LIMA_HOME.

The fake keeps its instances in LIMA_HOME, logs each invocation, and forwards the VM's socket to
a real containerd socket a test gives it; no VM can run here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from support import REPO

FAKE_LIMACTL = REPO / "tests" / "fake_limactl"
GIB = 1 << 30


class FakeLima:
    """A LIMA_HOME driven by tests/fake_limactl, with a `limactl` to put first on PATH."""

    def __init__(self, base: Path, instance: str = "warren") -> None:
        self.home = base / "lima"
        self.bin_dir = base / "limabin"
        self.instance = instance
        self.home.mkdir(parents=True, exist_ok=True)
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        wrapper = self.bin_dir / "limactl"
        # The tests' own interpreter (it has PyYAML), whatever python3 is on PATH.
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_LIMACTL}" "$@"\n')
        wrapper.chmod(0o755)

    @property
    def instance_dir(self) -> Path:
        return self.home / self.instance

    @property
    def socket(self) -> Path:
        return self.instance_dir / "sock" / "containerd.sock"

    def control(self, **values: object) -> None:
        path = self.home / ".fake-limactl.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(values)
        path.write_text(json.dumps(current))

    def set_state(self, status: str, errors: list[str] | None = None) -> None:
        state = {"status": status, "errors": errors or []}
        (self.instance_dir / "fake-state.json").write_text(json.dumps(state))

    def invocations(self) -> list[list[str]]:
        path = self.home / ".invocations"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def clear_invocations(self) -> None:
        (self.home / ".invocations").unlink(missing_ok=True)

    def env(self, platform: str = "darwin") -> dict[str, str]:
        """LIMA_HOME, the fake first on PATH, the platform forced, no stray system socket."""
        return {
            "LIMA_HOME": str(self.home),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "LIMACTL": "",
            "WARREN_PLATFORM": platform,
            "WARREN_SYSTEM_SOCKET": str(self.home / "no-system.sock"),
        }


LIST = ["list", "--json"]


def start_call(timeout: int = 900) -> list[str]:
    return ["start", "--tty=false", f"--timeout={timeout}s", "warren"]
