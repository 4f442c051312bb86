"""payload/signing.py: the release key's fingerprint and the ECDSA P-256 check `warren upgrade`
will use, against signatures made by openssl with keys made here."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest

from warren_bundle.payload import signing

from support import make_release_key, public_key


def openssl_sign(key: Path, data: Path) -> bytes:
    """SHA256SUMS.sig as scripts/sign_release.sh writes it: base64 of the DER signature."""
    der = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key), str(data)],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return base64.b64encode(der) + b"\n"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("keys")
    return make_release_key(root / "release.pem"), make_release_key(root / "other.pem")


def test_openssl_signatures_verify_and_altered_bytes_do_not(
    keys: tuple[Path, Path], tmp_path: Path
) -> None:
    key, _ = keys
    pem = public_key(key).read_text()
    for n in range(12):  # r and s of every length DER gives them (a leading 0x00 or none)
        data = tmp_path / f"sums-{n}"
        data.write_bytes(f"{n:064x}  warren-linux-amd64\n".encode())
        sig = openssl_sign(key, data)

        signing.verify(data.read_bytes(), sig, pem)
        with pytest.raises(signing.SignatureError, match="does not verify"):
            signing.verify(data.read_bytes() + b" ", sig, pem)


def test_another_keys_signature_is_refused(keys: tuple[Path, Path], tmp_path: Path) -> None:
    key, other = keys
    data = tmp_path / "SHA256SUMS"
    data.write_bytes(b"0" * 64 + b"  warren-linux-amd64\n")

    with pytest.raises(signing.SignatureError, match="does not verify"):
        signing.verify(data.read_bytes(), openssl_sign(other, data), public_key(key).read_text())


@pytest.mark.parametrize(
    "sig",
    [b"not base64!", base64.b64encode(b"\x30\x02\x02\x00"), base64.b64encode(b"\x31" * 70)],
)
def test_a_malformed_signature_is_refused(keys: tuple[Path, Path], sig: bytes) -> None:
    with pytest.raises(signing.SignatureError):
        signing.verify(b"data", sig, public_key(keys[0]).read_text())


def test_a_key_that_is_not_p256_is_refused(tmp_path: Path) -> None:
    ed = tmp_path / "ed.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ED25519", "-out", ed], check=True)

    with pytest.raises(signing.SignatureError, match="not an uncompressed ECDSA P-256"):
        signing.verify(b"data", base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01"),
                       public_key(ed).read_text())  # fmt: skip


def test_the_fingerprint_is_the_sha256_of_the_keys_der(keys: tuple[Path, Path]) -> None:
    pub = public_key(keys[0])
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", pub, "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout

    assert signing.key_fingerprint(pub.read_text()) == "sha256:" + hashlib.sha256(der).hexdigest()
