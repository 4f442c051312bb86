"""The supervisor's state file (<run>/status.json), which `status` and `metrics` read."""

from __future__ import annotations

import json
from typing import Any

from warren_bundle.fsutil import write_json
from warren_bundle.paths import Paths


def write(paths: Paths, data: dict[str, Any]) -> None:
    write_json(paths.state_file, data)


def read(paths: Paths) -> dict[str, Any] | None:
    try:
        data = json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
