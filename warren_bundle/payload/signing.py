"""The release key a warren file carries, and what it signs.

`make release` signs SHA256SUMS with the release key's private half (ECDSA P-256, SHA-256;
scripts/sign_release.sh) and publishes the signature as SHA256SUMS.sig: one line of base64 of the
DER signature, the form `openssl dgst -verify` takes once decoded and `cosign verify-blob --key`
takes as it is. The public half (PEM, SubjectPublicKeyInfo) is packed into every file of the
release, in its payload descriptor (scripts/onefile.py pack --release-key), and into install.sh.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from warren_bundle.payload import onefile

# The descriptor's field that holds the PEM public key (absent: a build made without a key).
KEY_FIELD = "release_key"
SIGNATURE_SUFFIX = ".sig"


def embedded_key(executable: Path) -> str | None:
    """The release key's PEM packed into `executable`, or None (not a one file, or no key)."""
    try:
        trailer = onefile.read_trailer(executable)
        with open(executable, "rb") as fp:
            fp.seek(trailer.descriptor_offset)
            raw = fp.read(trailer.descriptor_length)
        value = json.loads(raw).get(KEY_FIELD) if raw else None
    except (onefile.NotOneFile, OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value.strip() else None


def key_fingerprint(pem: str) -> str:
    """sha256:<hex> of the key's DER (what `openssl pkey -pubin -outform DER | sha256sum` says)."""
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    return "sha256:" + hashlib.sha256(base64.b64decode(body)).hexdigest()
