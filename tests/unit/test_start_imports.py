"""What `containerd start` imports before containerd answers is on its critical path: every
module there is paid at each start (docs/bench.md, start-to-ready). Modules only some paths
need are imported where they are used; this holds the heavy ones out of the start's path."""

from __future__ import annotations

import subprocess
import sys

# The modules the start path loads: the CLI, the client-side control, the supervisor it forks.
START_PATH = [
    "warren_bundle.cli.main",
    "warren_bundle.runtime.backend",
    "warren_bundle.runtime.control",
    "warren_bundle.runtime.switching",
    "warren_bundle.store.checks",
    "warren_bundle.runtime.rundir",
    "warren_bundle.runtime.config",
    "warren_bundle.runtime.foreground",
    "warren_bundle.runtime.supervisor",
    "warren_bundle.runtime.hooks",
]
# Each with who needs it instead: an upgrade's download; the gRPC probe (imported after spawn,
# while containerd starts); the image import (in its own thread, after readiness).
NOT_BEFORE_SPAWN = {
    "urllib.request": "warren upgrade --from URL",
    "http.client": "warren upgrade --from URL",
    "h2.connection": "grpc_unix.preload, after containerd is spawned",
    "warren_bundle.airgap": "the image import thread",
    "warren_bundle.store.upgrade": "warren upgrade",
    "warren_bundle.runtime.service": "a restart through the service manager",
}


def test_the_start_path_imports_nothing_it_does_not_need_before_spawn() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {START_PATH!r}: importlib.import_module(name)\n"
        f"print(' '.join(m for m in {sorted(NOT_BEFORE_SPAWN)!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not out, {name: NOT_BEFORE_SPAWN[name] for name in out}
