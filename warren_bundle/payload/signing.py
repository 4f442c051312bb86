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


# --- verifying SHA256SUMS.sig (for `warren upgrade`, which may run where openssl is not) ---------
# ECDSA P-256 verification by hand: about forty lines of integer arithmetic, against the
# `cryptography` wheel (OpenSSL's libcrypto, ~10 MB) in every file for one check per upgrade.
# Verification handles no secret, so constant time does not matter here.

_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_A = _P - 3
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)
# The DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, uncompressed).
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")

_Point = tuple[int, int] | None


class SignatureError(ValueError):
    """The signature, the key or the signed bytes do not check out."""


def _add(p: _Point, q: _Point) -> _Point:
    if p is None:
        return q
    if q is None:
        return p
    if p[0] == q[0] and (p[1] + q[1]) % _P == 0:
        return None
    if p == q:
        slope = (3 * p[0] * p[0] + _A) * pow(2 * p[1], -1, _P) % _P
    else:
        slope = (q[1] - p[1]) * pow(q[0] - p[0], -1, _P) % _P
    x = (slope * slope - p[0] - q[0]) % _P
    return x, (slope * (p[0] - x) - p[1]) % _P


def _mul(k: int, p: _Point) -> _Point:
    result: _Point = None
    while k:
        if k & 1:
            result = _add(result, p)
        p = _add(p, p)
        k >>= 1
    return result


def _public_point(pem: str) -> tuple[int, int]:
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    try:
        der = base64.b64decode(body, validate=True)
    except ValueError as exc:
        raise SignatureError(f"the release key is not PEM ({exc})") from exc
    if len(der) != len(_SPKI_PREFIX) + 65 or not der.startswith(_SPKI_PREFIX + b"\x04"):
        raise SignatureError("the release key is not an uncompressed ECDSA P-256 public key")
    x = int.from_bytes(der[-64:-32], "big")
    y = int.from_bytes(der[-32:], "big")
    if (y * y - (x * x * x + _A * x + _B)) % _P:
        raise SignatureError("the release key is not a point on P-256")
    return x, y


def _der_signature(der: bytes) -> tuple[int, int]:
    """(r, s) of a DER ECDSA-Sig-Value: SEQUENCE { INTEGER r, INTEGER s } (short lengths)."""
    if len(der) < 8 or der[0] != 0x30 or der[1] != len(der) - 2:
        raise SignatureError("the signature is not a DER ECDSA signature")
    values, at = [], 2
    for _ in range(2):
        if at + 2 > len(der) or der[at] != 0x02:
            raise SignatureError("the signature is not a DER ECDSA signature")
        length = der[at + 1]
        values.append(int.from_bytes(der[at + 2 : at + 2 + length], "big"))
        at += 2 + length
    if at != len(der):
        raise SignatureError("the signature has bytes after its two integers")
    return values[0], values[1]


def verify(data: bytes, signature_b64: bytes | str, pem: str) -> None:
    """Check `signature_b64` (a SHA256SUMS.sig: base64 of the DER signature) of `data` against
    the PEM public key; SignatureError when it does not verify."""
    try:
        text = signature_b64.decode("ascii") if isinstance(signature_b64, bytes) else signature_b64
        der = base64.b64decode("".join(text.split()), validate=True)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureError(f"the signature is not base64 ({exc})") from exc
    r, s = _der_signature(der)
    point = _public_point(pem)
    if not (0 < r < _N and 0 < s < _N):
        raise SignatureError("the signature is out of range")
    e = int.from_bytes(hashlib.sha256(data).digest(), "big")
    w = pow(s, -1, _N)
    total = _add(_mul(e * w % _N, _G), _mul(r * w % _N, point))
    if total is None or total[0] % _N != r:
        raise SignatureError("the signature does not verify with the release key")
