"""Warren bundle: containerd and runc carried in one executable.

Library use::

    from warren_bundle import ensure_containerd
    mgr = ensure_containerd("/var/lib/warren")
    print(mgr.socket_path)
    mgr.stop()

Names are loaded on first use, so importing the package stays cheap for the CLI.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    # Locations are paths.py's, never repeated here.
    "DEFAULT_DATA_DIR": "paths",
    "CONTAINERD_SOCKET_PATH": "paths",
    "CONTAINERD_CONFIG_PATH": "paths",
    "ContainerdManager": "runtime.supervisor",
    "ensure_containerd": "runtime.ensure",
    "State": "runtime.states",
    "Settings": "runtime.settings",
    "LimaManager": "lima.manager",
    "ensure_lima": "lima.manager",
    "WarrenError": "errors",
    "ExitCode": "errors",
    "Paths": "paths",
    "ConfigOptions": "runtime.config",
}

__all__ = [
    "CONTAINERD_CONFIG_PATH",
    "CONTAINERD_SOCKET_PATH",
    "DEFAULT_DATA_DIR",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'warren_bundle' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
