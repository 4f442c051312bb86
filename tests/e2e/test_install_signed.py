"""install.sh and SHA256SUMS.sig: a release signed with a key made here, served on 127.0.0.1.

The key pair is made by each module run (openssl, as a release manager would); the installer
checks the signature with the host's openssl before it trusts any digest in SHA256SUMS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import (
    RELEASE_ASSET,
    FileServer,
    install_root,
    make_release_key,
    public_key,
    run_installer,
    sha256_file,
    sign_release,
    stage_release,
    tamper,
)

pytestmark = pytest.mark.e2e

ASSET = RELEASE_ASSET


@pytest.fixture(scope="module")
def signed(frozen_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """/good: signed; /replaced-sums: the file and SHA256SUMS replaced with a fresh, valid
    digest, the old signature kept; /other-key: the same, signed again with another key;
    /unsigned: no SHA256SUMS.sig at all."""
    root = tmp_path_factory.mktemp("signed")
    key = make_release_key(root / "release.pem")
    other = make_release_key(root / "other.pem")
    sign_release(stage_release(root / "good", frozen_exe, ASSET), key)

    for name in ("replaced-sums", "other-key"):
        tree = shutil.copytree(root / "good", root / name)
        # An attacker's file: different bytes, SHA256SUMS that matches it.
        tamper(tree / ASSET)
        lines = [
            f"{sha256_file(tree / n)}  {n}\n" if n == ASSET else line + "\n"
            for line in (tree / "SHA256SUMS").read_text().splitlines()
            for n in [line.split()[1]]
        ]
        (tree / "SHA256SUMS").write_text("".join(lines))
    # Signed, and well signed, but by a key this install.sh does not carry.
    other_tree = root / "other-key"
    good_install = (other_tree / "install.sh").read_bytes()
    sign_release(other_tree, other)
    (other_tree / "install.sh").write_bytes(good_install)  # the release's own install.sh
    lines = [
        f"{sha256_file(other_tree / 'install.sh')}  install.sh\n" if "install.sh" in line else line
        for line in (other_tree / "SHA256SUMS").read_text().splitlines(keepends=True)
    ]
    (other_tree / "SHA256SUMS").write_text("".join(lines))
    subprocess.run(
        f"openssl dgst -sha256 -sign {other} SHA256SUMS | openssl base64 -A > SHA256SUMS.sig",
        shell=True, cwd=other_tree, check=True,
    )  # fmt: skip
    unsigned = shutil.copytree(root / "good", root / "unsigned")
    (unsigned / "SHA256SUMS.sig").unlink()
    (root / "good" / "public.pem").write_bytes(public_key(key).read_bytes())
    with FileServer(root) as server:
        yield server


@pytest.fixture
def where() -> Iterator[Path]:
    with install_root("ws") as root:
        yield root


def env_for(root: Path, url: str, path: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
    env.update(
        WARREN_BASE_URL=url,
        WARREN_BIN_DIR=str(root / "bin"),
        WARREN_DATA_DIR=str(root / "data"),
        WARREN_RUN_DIR=str(root / "run"),
        WARREN_CONFIG_DIR=str(root / "etc"),
        TMPDIR=str(root / "tmp"),
    )
    if path is not None:
        env["PATH"] = path
    env.update(extra)
    return env


def installed(root: Path) -> list[str]:
    """What the installer left under root, but its TMPDIR."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.parts[-1] != "tmp")


def path_without(tmp: Path, tool: str) -> str:
    """A PATH of links to every command on this PATH but `tool` (a host without it)."""
    bin_dir = tmp / "path-without"
    bin_dir.mkdir()
    for entry in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        if not os.path.isdir(entry):
            continue
        for name in os.listdir(entry):
            link = bin_dir / name
            if name != tool and not link.exists() and os.access(Path(entry, name), os.X_OK):
                link.symlink_to(Path(entry, name))
    return str(bin_dir)


def test_a_signed_release_installs_with_its_signature_verified(
    signed: FileServer, where: Path, frozen_exe: Path
) -> None:
    url = f"{signed.url}/good"
    done = run_installer(url, env_for(where, url, WARREN_REQUIRE_SIGNATURE="1"))

    assert done.returncode == 0, done.stderr
    assert "SHA256SUMS signature verified" in done.stdout
    assert "NOT verified" not in done.stderr
    assert sha256_file(where / "bin" / "warren") == sha256_file(frozen_exe)
    assert "/good/SHA256SUMS.sig" in signed.requests


@pytest.mark.parametrize("release", ["replaced-sums", "other-key"])
def test_a_replaced_file_and_sums_are_refused_and_nothing_is_installed(
    signed: FileServer, where: Path, release: str
) -> None:
    url = f"{signed.url}/{release}"
    done = run_installer(url, env_for(where, url))

    assert done.returncode == 8, done.stdout + done.stderr
    assert "bad signature" in done.stderr and "nothing was installed" in done.stderr
    assert installed(where) == []
    assert f"/{release}/{ASSET}" not in signed.requests, "no file is fetched under a bad signature"


def test_a_missing_signature_is_refused(signed: FileServer, where: Path) -> None:
    url = f"{signed.url}/unsigned"
    done = run_installer(url, env_for(where, url))

    assert done.returncode == 8, done.stdout + done.stderr
    assert "SHA256SUMS.sig cannot be downloaded" in done.stderr
    assert installed(where) == []


def test_without_openssl_it_warns_plainly_and_installs(signed: FileServer, where: Path) -> None:
    url = f"{signed.url}/good"
    done = run_installer(url, env_for(where, url, path_without(where, "openssl")))

    assert done.returncode == 0, done.stderr
    assert "SHA256SUMS.sig NOT verified: openssl is not installed on this host" in done.stderr
    assert (where / "bin" / "warren").is_file()


def test_without_openssl_a_required_signature_installs_nothing(
    signed: FileServer, where: Path
) -> None:
    url = f"{signed.url}/good"
    env = env_for(where, url, path_without(where, "openssl"), WARREN_REQUIRE_SIGNATURE="1")
    done = run_installer(url, env)

    assert done.returncode == 8, done.stdout + done.stderr
    assert "could not be verified: openssl is not installed" in done.stderr
    assert "nothing was installed" in done.stderr
    assert sorted(p.name for p in where.iterdir()) == ["path-without", "tmp"]


def test_the_signature_is_base64_der_that_openssl_verifies_with_the_published_key(
    signed: FileServer, tmp_path: Path
) -> None:
    """What cosign verify-blob --key takes (base64 of the DER signature), checked with openssl."""
    import base64
    import urllib.request

    for name in ("SHA256SUMS", "SHA256SUMS.sig", "public.pem"):
        with urllib.request.urlopen(f"{signed.url}/good/{name}") as r:
            (tmp_path / name).write_bytes(r.read())
    sig = (tmp_path / "SHA256SUMS.sig").read_text().strip()
    der = base64.b64decode(sig, validate=True)
    assert der[0] == 0x30, "a DER SEQUENCE (r, s)"
    (tmp_path / "sig.der").write_bytes(der)
    check = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "public.pem", "-signature", "sig.der",
         "SHA256SUMS"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0 and "Verified OK" in check.stdout, check.stderr
