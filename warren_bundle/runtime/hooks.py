"""Work the runtime does around a ready containerd, for the CLI and library users alike.

- `import_airgap_images`: the default ready hook; imports the carried sandbox image into k8s.io
  (pinned), then <data-dir>/images into the default and
  k8s.io namespaces in a background thread, so the supervisor answers signals meanwhile (as
  k3s's agent ends its containerd Run() by importing the air-gap images).
- `MetricsEndpoint`: /metrics bound before containerd is spawned, closed at stop.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from warren_bundle.runtime.states import ENDED, State

if TYPE_CHECKING:
    from warren_bundle.images import ArchiveResult
    from warren_bundle.metrics import MetricsServer
    from warren_bundle.runtime.supervisor import ContainerdManager


def import_airgap_images(mgr: ContainerdManager) -> threading.Thread | None:
    if mgr.use_external:
        return None  # the system containerd's images are its owner's business

    def should_continue() -> bool:
        return mgr.state not in ENDED

    version_dir = mgr.version.directory if mgr.version else mgr.paths.bin_dir

    def sandbox() -> ArchiveResult | None:
        from warren_bundle.node.sandbox import ensure_imported

        # First: a kubelet's first pod needs it, and it is small.
        return ensure_imported(version_dir, mgr.socket_path)

    def ready() -> bool:
        return mgr.state == State.RUNNING

    def run() -> None:
        # Imported in the thread: the modules of the image import are not a start's to wait for
        # (a ready hook runs before `containerd start` is told that containerd answers).
        from warren_bundle.airgap import import_and_watch

        import_and_watch(mgr.paths, mgr.socket_path, should_continue, mgr.event, sandbox, ready)

    # The import at start, then the watch of <data-dir>/images for archives that arrive later.
    thread = threading.Thread(target=run, name="warren-image-import", daemon=True)
    thread.start()
    return thread


class MetricsEndpoint:
    """Prometheus /metrics for one manager, served from daemon threads."""

    def __init__(self, address: str, mgr: ContainerdManager) -> None:
        from warren_bundle.metrics import MetricsServer, parse_addr

        host, port = parse_addr(address)
        self._server: MetricsServer = MetricsServer(host, port, mgr.status, mgr.paths)
        self.address = self._server.address
        self.url = self._server.url

    def close(self) -> None:
        self._server.close()
