"""The VM layer runs only when asked for (`-m vm`, as `make test-vm` does): each guest boots under
QEMU for minutes. Anywhere else its tests are skipped with the command that runs them."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "vm" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="VM layer (QEMU guests, minutes): run `make test-vm`")
    for item in items:
        if item.get_closest_marker("vm"):
            item.add_marker(skip)
