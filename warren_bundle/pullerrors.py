"""One line that says why a registry command of `warren ctr` failed: which registry, which
endpoint, and why (authentication or TLS), with the registries.yaml setting that fixes it.

ctr's own last line does not always name the endpoint (1.7/2.x: "authorization failed: no basic
auth credentials"); its "trying next host" log lines do, and hosts.toml lists the endpoints.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

_HOST_LINE = re.compile(r'error="((?:[^"\\]|\\.)*)"\s+host="?([^"\s]+)"?')
_PULLING_FROM = re.compile(r"(?:pulling from host|from host) ([^\s:]+(?::\d+)?)")
_URL_HOST = re.compile(r"https?://([^/\s\"\\]+)/v2/")
_AUTH = ("401 unauthorized", "403 forbidden", "authorization failed", "no basic auth credentials",
         "unauthorized", "pull access denied")  # fmt: skip
_TLS = ("x509:", "tls:", "certificate")


def registry_of(ref: str) -> str:
    """The registry a reference names, docker's way: docker.io when the first part is no host."""
    first, sep, _rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def reference_in(args: list[str]) -> str | None:
    """The image reference among ctr's arguments (the first word that looks like one)."""
    for arg in args:
        if not arg.startswith("-") and ("/" in arg or ":" in arg):
            return arg
    return None


def cause_of(text: str) -> str | None:
    lower = text.lower()
    if any(marker in lower for marker in _TLS):
        return "tls"
    if any(marker in lower for marker in _AUTH):
        return "auth"
    return None


def _endpoints(hosts_dir: Path, registry: str) -> list[str]:
    from warren_bundle import safewrite

    text = safewrite.read_file(hosts_dir, f"{registry}/hosts.toml")
    if text is None:
        return []
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return []
    hosts = list(table.get("host") or {})
    server = table.get("server")
    return [*hosts, *([server] if isinstance(server, str) else [])]


def explain(
    stderr: str, args: list[str], hosts_dir: Path, registries_file: Path | None
) -> str | None:
    """The line to add after ctr's own output, or None when the failure is not auth or TLS."""
    ref = reference_in(args)
    registry = registry_of(ref) if ref else None
    # Endpoints ctr tried and why each failed; the last line of ctr is the first host's error.
    failed = {host: error for error, host in _HOST_LINE.findall(stderr)}
    last = next((ln for ln in reversed(stderr.splitlines()) if ln.startswith("ctr: ")), "")
    cause = cause_of(last) or next((c for e in failed.values() if (c := cause_of(e))), None)
    if cause is None:
        return None
    host = None
    for candidate, error in failed.items():
        if cause_of(error) == cause:
            host = candidate
            break
    if host is None:
        match = _PULLING_FROM.search(last) or _URL_HOST.search(last)
        host = match.group(1) if match else None
    endpoints = _endpoints(hosts_dir, registry) if registry else []
    if host is None and endpoints:
        # ctr said nothing of hosts (2.x pulls in the daemon): the first endpoint tried.
        host = urlsplit(endpoints[0]).netloc or None
    endpoint = next((e for e in endpoints if host and f"//{host}" in e), None)
    where = f"registry {registry or '?'}"
    where += f" via endpoint {endpoint or host}" if (endpoint or host) else ""
    setting = "registries.yaml" if registries_file is None else str(registries_file)
    key = host or registry or "<host>"
    if cause == "auth":
        return (
            f"warren: {where}: the registry refused the credentials (or none were sent); "
            f'check configs."{key}".auth in {setting}'
        )
    return (
        f"warren: {where}: TLS failed, the endpoint's certificate is not trusted or does not "
        f'match; check configs."{key}".tls (ca_file, cert_file/key_file) in {setting}'
    )
