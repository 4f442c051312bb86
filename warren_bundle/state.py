"""The supervisor's state file (<run>/status.json), which `status` and `metrics` read."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

from .paths import Paths


def write(paths: Paths, data: dict[str, Any]) -> None:
    target: Path = paths.state_file
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fp:
            json.dump(data, fp, indent=2, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def read(paths: Paths) -> dict[str, Any] | None:
    try:
        data = json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
