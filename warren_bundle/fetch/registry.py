"""Pulling one image by its pinned index digest from an OCI registry (registry.k8s.io/pause).

The index, the platform manifest it names, the config and every layer are checked against their
digests, starting from the pin in checksums/: nothing reaches the payload that the pin does not
vouch for. Anonymous pulls only (a Bearer token challenge is answered without credentials).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from warren_bundle.errors import ChecksumMismatch, FetchError, Unreachable

from .download import NetOptions, describe_connect_error
from .oci import digest_of

if TYPE_CHECKING:
    import requests

ENV_REGISTRY_BASE = "WARREN_REGISTRY_BASE"  # tests: a local server with the same path layout
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
MAX_BLOB = 64 << 20  # a pause image is < 1 MB


@dataclass(frozen=True)
class Pulled:
    manifest: bytes
    blobs: dict[str, bytes]
    index_digest: str
    manifest_digest: str
    url: str


def split_ref(ref: str) -> tuple[str, str, str]:
    """'registry.k8s.io/pause:3.10' -> ('registry.k8s.io', 'pause', '3.10')."""
    host, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    return host, repo, tag


class Registry:
    def __init__(self, host: str, repo: str, net: NetOptions) -> None:
        base = os.environ.get(ENV_REGISTRY_BASE) or f"https://{host}"
        self.base, self.repo, self.net = base.rstrip("/"), repo, net
        self._token: str | None = None

    def _get(self, session: requests.Session, url: str, accept: str) -> requests.Response:
        import requests

        headers = {"Accept": accept, "User-Agent": "warren-bundle-fetch/1"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        timeout = (self.net.connect_timeout, self.net.read_timeout)
        try:
            resp = session.get(url, headers=headers, timeout=timeout)
            if resp.status_code == 401 and self._token is None:
                self._token = self._anonymous_token(session, resp)
                headers["Authorization"] = f"Bearer {self._token}"
                resp = session.get(url, headers=headers, timeout=timeout)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            reason, _dns = describe_connect_error(exc, url)
            raise Unreachable(f"{reason} ({url})") from None
        if resp.status_code != 200:
            raise FetchError(f"HTTP {resp.status_code} from {url}")
        if len(resp.content) > MAX_BLOB:
            raise FetchError(f"{url} is larger than {MAX_BLOB >> 20} MiB: not a pause image")
        return resp

    def _anonymous_token(self, session: requests.Session, resp: requests.Response) -> str:
        challenge = resp.headers.get("WWW-Authenticate", "")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if not challenge.lower().startswith("bearer") or "realm" not in fields:
            raise FetchError(f"{resp.url} asks for credentials ({challenge or 'HTTP 401'})")
        params = {k: v for k, v in fields.items() if k in ("service", "scope")}
        params.setdefault("scope", f"repository:{self.repo}:pull")
        got = session.get(fields["realm"], params=params, timeout=self.net.connect_timeout)
        body: dict[str, Any] = got.json() if got.status_code == 200 else {}
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str):
            raise FetchError(f"no anonymous token from {fields['realm']} (HTTP {got.status_code})")
        return token

    def fetch(self, session: requests.Session, kind: str, digest: str, accept: str) -> bytes:
        url = f"{self.base}/v2/{self.repo}/{kind}/{digest}"
        data = self._get(session, url, accept).content
        if digest_of(data) != digest:
            raise ChecksumMismatch(
                f"checksum mismatch for {url}: expected {digest}, got {digest_of(data)}",
                "the registry served other bytes than the pin names; do not use it",
            )
        return data


def pull(ref: str, index_digest: str, arch: str, net: NetOptions) -> Pulled:
    """The linux/`arch` image of the index pinned as `index_digest`, every blob verified."""
    import requests

    host, repo, _tag = split_ref(ref)
    reg = Registry(host, repo, net)
    with requests.Session() as session:
        index = reg.fetch(session, "manifests", index_digest, ", ".join(INDEX_TYPES))
        entry = _platform_entry(json.loads(index), arch, ref)
        manifest_digest = str(entry["digest"])
        manifest = reg.fetch(session, "manifests", manifest_digest, ", ".join(MANIFEST_TYPES))
        parsed = json.loads(manifest)
        blobs = {}
        for desc in [parsed["config"], *parsed.get("layers", [])]:
            blob_digest = str(desc["digest"])
            blobs[blob_digest] = reg.fetch(session, "blobs", blob_digest, "*/*")
    return Pulled(manifest, blobs, index_digest, manifest_digest, f"{reg.base}/v2/{repo}")


def _platform_entry(index: dict[str, Any], arch: str, ref: str) -> dict[str, Any]:
    for entry in index.get("manifests") or []:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == arch:
            return dict(entry)
    raise FetchError(f"{ref} has no linux/{arch} image in its index")
