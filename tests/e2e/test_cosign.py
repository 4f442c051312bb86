"""SHA256SUMS.sig as cosign reads it: `cosign verify-blob --key release-key.pub` on a release.

The release is signed here by scripts/sign_release.sh (what `make release` runs) with a key made
here; `make release`'s own dist/ is checked too when it is there (make test makes it first).
cosign is Debian sid's (bookworm has none), fetched by scripts/fetch_cosign.sh, which .ci/run
runs, into /var/cache/warren-test/cosign; WARREN_COSIGN names another binary. Without cosign the
tests skip locally and fail in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import require
from support import INSTALL_SH, REPO, make_release_key, public_key, sign_release, tamper

pytestmark = pytest.mark.e2e

COSIGN_CACHE = Path(os.environ.get("WARREN_COSIGN_CACHE") or "/var/cache/warren-test/cosign")


def find_cosign() -> Path | None:
    named = os.environ.get("WARREN_COSIGN")
    if named:
        return Path(named)
    cached = COSIGN_CACHE / "current" / "usr" / "bin" / "cosign"
    if cached.is_file():
        return cached
    found = shutil.which("cosign")
    return Path(found) if found else None


@dataclass
class Cosign:
    exe: Path
    home: Path  # its HOME: nothing of root's is read or written

    def verify_blob(
        self, tree: Path, key: Path, sums: str = "SHA256SUMS"
    ) -> subprocess.CompletedProcess[str]:
        """The README's command, offline: a plain key needs no transparency log."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}
        return subprocess.run(
            [str(self.exe), "verify-blob", "--key", str(key), "--signature", "SHA256SUMS.sig",
             "--insecure-ignore-tlog=true", sums],
            cwd=tree, env=env, capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip


@pytest.fixture(scope="module")
def cosign(tmp_path_factory: pytest.TempPathFactory) -> Cosign:
    found = find_cosign()
    require(
        found is not None and os.access(found, os.X_OK),
        "no cosign: scripts/fetch_cosign.sh (Debian sid's, into /var/cache/warren-test/cosign)",
    )
    assert found is not None
    return Cosign(found, tmp_path_factory.mktemp("cosign-home"))


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release dir as `make release` leaves it (an asset, install.sh with the public key,
    SHA256SUMS, SHA256SUMS.sig, release-key.pub), signed with a key made here."""
    root = tmp_path_factory.mktemp("cosign")
    tree = root / "release"
    tree.mkdir()
    (tree / "warren-linux-test").write_bytes(os.urandom(64 << 10))
    shutil.copyfile(INSTALL_SH, tree / "install.sh")
    return sign_release(tree, make_release_key(root / "release.pem"))


def test_cosign_verifies_the_release_signature(cosign: Cosign, release: Path) -> None:
    out = cosign.verify_blob(release, release / "release-key.pub")
    assert out.returncode == 0, out.stderr
    assert "Verified OK" in out.stdout + out.stderr


def test_cosign_refuses_a_changed_sha256sums(cosign: Cosign, release: Path) -> None:
    """One digest in SHA256SUMS replaced (a fresh file's), the signature kept: refused."""
    sums = (release / "SHA256SUMS").read_text()
    first = sums.split()[0]
    forged = release / "SHA256SUMS.forged"
    forged.write_text(sums.replace(first, first[::-1], 1))
    assert forged.read_text() != sums
    out = cosign.verify_blob(release, release / "release-key.pub", sums=forged.name)
    assert out.returncode != 0
    assert "Verified OK" not in out.stdout + out.stderr
    assert "invalid signature" in out.stderr, out.stderr


def test_cosign_refuses_one_flipped_byte(cosign: Cosign, release: Path, tmp_path: Path) -> None:
    tree = shutil.copytree(release, tmp_path / "release")
    tamper(tree / "SHA256SUMS", offset=10)
    out = cosign.verify_blob(tree, tree / "release-key.pub")
    assert out.returncode != 0
    assert "Verified OK" not in out.stdout + out.stderr


def test_cosign_refuses_a_signature_by_another_key(
    cosign: Cosign, release: Path, tmp_path: Path
) -> None:
    """The same SHA256SUMS signed, well, by another key: the release's public key refuses it,
    and that key's own public half accepts it (the signature itself is sound)."""
    tree = shutil.copytree(release, tmp_path / "release")
    other = make_release_key(tmp_path / "other.pem")
    subprocess.run(
        f"openssl dgst -sha256 -sign {other} SHA256SUMS | openssl base64 -A > SHA256SUMS.sig",
        shell=True, cwd=tree, check=True,
    )  # fmt: skip
    refused = cosign.verify_blob(tree, tree / "release-key.pub")
    assert refused.returncode != 0
    assert "Verified OK" not in refused.stdout + refused.stderr
    accepted = cosign.verify_blob(tree, public_key(other))
    assert accepted.returncode == 0, accepted.stderr


def test_cosign_verifies_make_releases_dist(cosign: Cosign) -> None:
    """dist/ as `make release` left it (make test makes it before its tests; CI always)."""
    dist = REPO / "dist"
    require(
        (dist / "SHA256SUMS.sig").is_file() and (dist / "release-key.pub").is_file(),
        "no signed release in dist/: make release RELEASE_SIGNING_KEY=key.pem",
    )
    out = cosign.verify_blob(dist, dist / "release-key.pub")
    assert out.returncode == 0, out.stderr
    assert "Verified OK" in out.stdout + out.stderr
