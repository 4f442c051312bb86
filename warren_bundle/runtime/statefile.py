"""The supervisor's state file (<run>/status.json), which `status` and `metrics` read."""

from __future__ import annotations

from typing import cast

from warren_bundle.fsutil import read_json, write_json
from warren_bundle.paths import Paths
from warren_bundle.runtime.status import StatusReport


def write(paths: Paths, data: StatusReport) -> None:
    write_json(paths.state_file, data)


def read(paths: Paths) -> StatusReport | None:
    return cast("StatusReport | None", read_json(paths.state_file))
