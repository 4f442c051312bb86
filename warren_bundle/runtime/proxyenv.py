"""The proxy containerd uses: the service's HTTP_PROXY, HTTPS_PROXY and NO_PROXY, or, for
containerd alone, their CONTAINERD_-prefixed forms (as k3s reads them), which take their place.

install.sh writes them into the service's environment file; the supervisor gives containerd the
result of `for_containerd`, and `warren doctor` reports it (doctor/proxy.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
PREFIX = "CONTAINERD_"


def for_containerd(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with each CONTAINERD_<NAME> moved to <NAME> (its lower-case form dropped, since Go
    would read either)."""
    out = dict(env)
    for name in NAMES:
        own = out.pop(PREFIX + name, None)
        if own:
            out[name] = own
            out.pop(name.lower(), None)
    return out


def in_effect(env: Mapping[str, str]) -> dict[str, str]:
    """{NAME: value} of the proxy settings `env` gives a Go program (upper case wins, as in Go)."""
    found = {}
    for name in NAMES:
        value = env.get(name) or env.get(name.lower())
        if value:
            found[name] = value
    return found


def hide_password(value: str) -> str:
    """A proxy URL as it may be shown: user:password@ becomes user:***@."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", value)
