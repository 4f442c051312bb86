"""What a doctor check is and returns: its Level, its Check result, and the Inputs it reads.

A check is a function of Inputs that returns one Check; `passed`, `warned` and `failed` build them.
A failed Check carries the exit code the doctor exits with when it is the first failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from warren_bundle.errors import ExitCode
from warren_bundle.paths import Paths


class Level(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    message: str
    remedy: str | None = None
    exit_code: ExitCode = ExitCode.ERROR  # the doctor's exit status when this is the first FAIL

    def line(self) -> str:
        text = self.message
        if self.remedy and self.level != Level.PASS:
            text = f"{text}; {self.remedy}"
        return f"{self.level.value}  {self.name:<17} {' '.join(text.split())}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.level.value,
            "message": self.message,
            "remedy": self.remedy if self.level != Level.PASS else None,
            "exit_code": int(self.exit_code) if self.level == Level.FAIL else 0,
        }


def passed(name: str, message: str) -> Check:
    return Check(name, Level.PASS, message)


def warned(name: str, message: str, remedy: str) -> Check:
    return Check(name, Level.WARN, message, remedy)


def failed(name: str, message: str, remedy: str, code: ExitCode = ExitCode.ERROR) -> Check:
    return Check(name, Level.FAIL, message, remedy, code)


@dataclass
class Inputs:
    paths: Paths
    payload_option: str | None


CheckFn = Callable[[Inputs], Check]


def nearest_existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (where it would be created)."""
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current
