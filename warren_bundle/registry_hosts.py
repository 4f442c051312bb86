"""registries.yaml (registries.py) → what containerd reads: one hosts.toml table per registry
(certs.d, containerd's config_path) and CRI's `registry.configs` auth; redaction for display.
Tables holding a credential (an Authorization header) are written 0600 by runtime/config.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from warren_bundle.registries import REDACTED, SECRET_KEYS, HostConfig, Mirror, Registries

UPSTREAM_SERVERS = {"docker.io": "https://registry-1.docker.io"}


def _host_settings(config: HostConfig | None) -> dict[str, Any]:
    """hosts.toml fields for one endpoint (or the server, at top level) from its configs entry."""
    out: dict[str, Any] = {}
    if config is None:
        return out
    tls = config.tls
    if tls is not None:
        if tls.ca_file:
            out["ca"] = str(tls.ca_file)
        if tls.cert_file and tls.key_file:
            out["client"] = [[str(tls.cert_file), str(tls.key_file)]]
        if tls.insecure_skip_verify:
            out["skip_verify"] = True
    header = config.auth.header() if config.auth else None
    if header:
        out["header"] = {"Authorization": header}
    return out


def _endpoint_key(endpoint: str) -> tuple[str, bool]:
    """hosts.toml's host key and override_path: containerd appends /v2 to a URL without a path;
    a path other than /v2 is used as given (override_path), as k3s does."""
    path = urlsplit(endpoint).path.rstrip("/")
    return endpoint, not (path == "" or path.endswith("/v2"))


def hosts_tables(registries: Registries) -> dict[str, dict[str, Any]]:
    """registry → the hosts.toml table for <config-dir>/certs.d/<registry>/hosts.toml."""
    out: dict[str, dict[str, Any]] = {}
    names = list(registries.mirrors)
    # A configs entry for a registry with no mirror still needs its TLS/auth on the server.
    names += [h for h in registries.configs if h not in registries.mirrors and h != "_default"]
    for registry in names:
        mirror = registries.mirrors.get(registry, Mirror())
        server = UPSTREAM_SERVERS.get(registry, f"https://{registry}")
        table: dict[str, Any] = {}
        if registry != "_default":
            table["server"] = server
            table.update(_host_settings(registries.config_for(registry)))
        hosts: dict[str, Any] = {}
        for endpoint in mirror.endpoints:
            key, override = _endpoint_key(endpoint)
            if key.rstrip("/") == server:
                continue
            entry: dict[str, Any] = {"capabilities": ["pull", "resolve"]}
            if override:
                entry["override_path"] = True
            entry.update(_host_settings(registries.config_for(urlsplit(endpoint).netloc)))
            hosts[key] = entry
        if hosts:
            table["host"] = hosts
        out[registry] = table
    return out


def holds_secret(table: dict[str, Any]) -> bool:
    if "header" in table:
        return True
    return any(holds_secret(v) for v in table.values() if isinstance(v, dict))


def cri_auth(registries: Registries) -> dict[str, Any]:
    """CRI's `registry.configs` table: auth per host, as CRI's credentials callback looks it up
    (by the host it connects to: docker.io's default endpoint is registry-1.docker.io). It is
    what carries an identity token, and what makes a failed CRI pull name its endpoint."""
    table: dict[str, Any] = {}
    for host, config in registries.configs.items():
        if config.auth is None or not config.auth.cri():
            continue
        table[host] = {"auth": config.auth.cri()}
        upstream = UPSTREAM_SERVERS.get(host)
        if upstream:
            table.setdefault(urlsplit(upstream).netloc, {"auth": config.auth.cri()})
    return table


def redact(value: Any) -> Any:
    """A copy of a config table with every credential value replaced by <redacted>."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if k in SECRET_KEYS and isinstance(v, str) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
