"""Debian package versions: the upstream version inside one (its own module: debian.py and
node.py both read it, and node.py is imported by debian.py)."""

from __future__ import annotations

import re


def upstream_version(debian_version: str) -> str:
    """'1.6.20~ds1-1+deb12u3' -> '1.6.20', '1:2.1.9+ds1-5' -> '2.1.9'."""
    ver = debian_version.split(":", 1)[-1]
    ver = ver.rsplit("-", 1)[0] if "-" in ver else ver
    match = re.match(r"\d+(?:\.\d+)*", ver)
    return match.group(0) if match else ver
