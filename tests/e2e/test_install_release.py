"""`make release`: the frozen file, install.sh and a SHA256SUMS that `sha256sum -c` accepts.

The build itself is not redone here (`-o` the executable): CI's `make test` has just built it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from support import REPO, make_release_key, sha256_file

pytestmark = pytest.mark.e2e


def make_release(
    out: Path, frozen: Path, *args: str, key: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`make release` into out; with a release key made for the test unless `key` says otherwise.
    The static file is packed again with that key; the frozen file (-o) is taken as it is."""
    # Nor make test's ARM64 (exported): these tests list exactly what a release without it holds.
    drop = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARM64")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if key is None:
        key = out.with_name(out.name + "-key.pem")
        make_release_key(key)
    # No key: none from the environment either (.ci/run and make test export one).
    signing = [f"RELEASE_SIGNING_KEY={key}" if key.name else "RELEASE_SIGNING_KEY="]
    if not key.name:
        env.pop("RELEASE_SIGNING_KEY", None)
    return subprocess.run(
        [
            "make",
            "-o",
            str(frozen.relative_to(REPO)),
            "release",
            f"RELEASE_DIR={out}",
            *signing,
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_make_release_writes_artifacts_and_checksums_that_verify(
    frozen_exe: Path, tmp_path: Path
) -> None:
    out = tmp_path / "release"

    done = make_release(out, frozen_exe, "RELEASE_REPO=example-org/warren")

    assert done.returncode == 0, done.stdout + done.stderr
    static = f"{frozen_exe.name}-static"  # make release builds both Linux flavours
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "SHA256SUMS",
            "SHA256SUMS.sig",
            "install.sh",
            "release-key.pub",
            frozen_exe.name,
            f"{frozen_exe.name}.spdx.json",
            static,
            f"{static}.spdx.json",
        ]
    )
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{frozen_exe.name}: OK" in check.stdout and "install.sh: OK" in check.stdout
    assert f"{static}: OK" in check.stdout
    # Each file's SBOM beside it, listed in the signed SHA256SUMS, is what the file prints.
    assert f"{frozen_exe.name}.spdx.json: OK" in check.stdout
    sbom = subprocess.run([frozen_exe, "version", "--sbom"], capture_output=True, text=True)
    assert (out / f"{frozen_exe.name}.spdx.json").read_text() == sbom.stdout
    assert sha256_file(out / frozen_exe.name) == sha256_file(frozen_exe)
    assert "WARREN_DEFAULT_REPO='example-org/warren'" in (out / "install.sh").read_text()
    assert (out / "install.sh").stat().st_mode & 0o111
    # The public key is in install.sh and in the static file packed here; the signature verifies.
    pub = (out / "release-key.pub").read_text()
    assert pub in (out / "install.sh").read_text()
    version = subprocess.run([out / static, "version", "--json"], capture_output=True, text=True)
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", out / "release-key.pub", "-outform", "DER"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert json.loads(version.stdout)["release_key"] == "sha256:" + hashlib.sha256(der).hexdigest()
    sig = base64.b64decode((out / "SHA256SUMS.sig").read_text().strip(), validate=True)
    (tmp_path / "sig.der").write_bytes(sig)
    verify = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", out / "release-key.pub",
         "-signature", tmp_path / "sig.der", out / "SHA256SUMS"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr


def test_make_release_refuses_to_run_without_a_signing_key(
    frozen_exe: Path, tmp_path: Path
) -> None:
    done = make_release(tmp_path / "out", frozen_exe, key=Path(""))

    assert done.returncode != 0
    assert "needs the release key: RELEASE_SIGNING_KEY" in done.stderr
    assert not (tmp_path / "out").exists()


def test_make_release_says_loudly_when_the_payload_is_not_upstream(
    frozen_exe: Path, tmp_path: Path
) -> None:
    version = subprocess.run([frozen_exe, "version", "--json"], capture_output=True, text=True)
    source = json.loads(version.stdout)["payload"]["source"]

    relaxed = make_release(tmp_path / "a", frozen_exe)
    strict = make_release(tmp_path / "b", frozen_exe, "RELEASE_REQUIRE_UPSTREAM=1")

    assert relaxed.returncode == 0, relaxed.stderr
    if source == "debian":
        assert "NOT A PUBLISHABLE RELEASE" in relaxed.stdout
        assert strict.returncode != 0, "a Debian payload must fail a strict release"
    else:
        assert f"payload source: {source}" in relaxed.stdout
        assert strict.returncode == 0, strict.stderr


def test_a_static_payload_is_released_as_one_file_per_architecture(
    frozen_exe: Path, tmp_path: Path
) -> None:
    """STATIC_PAYLOAD_DIR=the payload (release.yml, upstream's static binaries): one file, no
    -static twin; refused when that payload is not static (the twin would be needed)."""
    static_dir = REPO / "build" / "payload-static" / "linux-amd64"
    dynamic_dir = REPO / "build" / "payload" / "linux-amd64"
    if (
        not (static_dir / "manifest.json").is_file()
        or not (dynamic_dir / "manifest.json").is_file()
    ):
        pytest.skip("needs both staged payloads (make payload payload-static)")
    one = f"PAYLOAD_DIR={static_dir}", f"STATIC_PAYLOAD_DIR={static_dir}"

    done = make_release(tmp_path / "one", frozen_exe, *one)

    assert done.returncode == 0, done.stdout + done.stderr
    names = {p.name for p in (tmp_path / "one").iterdir()}
    assert frozen_exe.name in names and not any(n.endswith("-static") for n in names), names
    assert "-static" not in (tmp_path / "one" / "SHA256SUMS").read_text()
    refused = make_release(
        tmp_path / "two",
        frozen_exe,
        f"PAYLOAD_DIR={dynamic_dir}",
        f"STATIC_PAYLOAD_DIR={dynamic_dir}",
    )
    assert refused.returncode != 0
    assert "one file per architecture needs a static payload" in refused.stderr
    assert not (tmp_path / "two" / "SHA256SUMS").exists()


def test_release_workflow_builds_every_os_and_arch_on_native_runners() -> None:
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    jobs = workflow["jobs"]
    built = {
        (os_name, entry["arch"]): entry["runner"]
        for os_name in ("linux", "darwin")
        for entry in jobs[os_name]["strategy"]["matrix"]["include"]
    }
    assert set(built) == {(o, a) for o in ("linux", "darwin") for a in ("amd64", "arm64")}
    assert "arm" in built[("linux", "arm64")], "linux/arm64 must build on an arm64 runner"
    linux_steps = " ".join(str(step.get("run", "")) for step in jobs["linux"]["steps"])
    assert "--release" in linux_steps and "RELEASE_REQUIRE_UPSTREAM=1" in linux_steps
    # Upstream's static binaries: one file per architecture, no -static twin uploaded.
    assert "STATIC_PAYLOAD_DIR=build/payload/linux-" in linux_steps
    uploads = [s for s in jobs["linux"]["steps"] if "upload-artifact" in str(s.get("uses", ""))]
    assert all("-static" not in str(s["with"]["path"]) for s in uploads), uploads
    assert set(jobs["publish"]["needs"]) == {"linux", "darwin"}
