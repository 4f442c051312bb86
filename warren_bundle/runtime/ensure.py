"""`ensure_containerd()`: the library's one call for "give me a containerd that answers".

It gets exactly what `warren containerd run` gets, ready hooks included (the air-gap images in
<data-dir>/images are imported once containerd is ready).
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

from warren_bundle.errors import WarrenError
from warren_bundle.paths import DEFAULT_DATA_DIR, system_socket_path
from warren_bundle.runtime import health
from warren_bundle.runtime.supervisor import ContainerdManager

if TYPE_CHECKING:
    from warren_bundle.lima.manager import LimaManager


def ensure_containerd(
    data_dir: str | os.PathLike[str] | None = DEFAULT_DATA_DIR,
    use_external: bool = False,
    *,
    prefer_system: bool = False,
    **kwargs: Any,
) -> ContainerdManager | LimaManager:
    """A started manager: the system containerd when preferred and answering, else the embedded.

    On macOS, the Lima VM's. If the embedded one cannot start and a system containerd answers,
    use that, with a warning.
    """
    from warren_bundle.hostinfo import host_os

    if host_os() == "darwin" and not use_external:
        from warren_bundle.lima.manager import ensure_lima

        return ensure_lima(data_dir)
    if use_external or (prefer_system and health.is_serving(system_socket_path())):
        mgr = ContainerdManager(data_dir, use_external=True, **kwargs)
        mgr.start()
        return mgr
    mgr = ContainerdManager(data_dir, **kwargs)
    try:
        mgr.start()
    except WarrenError as exc:
        if not health.is_serving(system_socket_path()):
            raise
        warnings.warn(
            f"embedded containerd failed ({exc.one_line()}); using {system_socket_path()}",
            stacklevel=2,
        )
        mgr = ContainerdManager(data_dir, use_external=True, **kwargs)
        mgr.start()
    return mgr
