"""`warren upgrade`'s first half: get the next release, check it, and say what would change.

A release is a folder (`make release`'s dist/, or a mirror of it, local or over HTTP(S)) with
SHA256SUMS, SHA256SUMS.sig and one file per platform and flavour. `stage` copies the three this
host needs into a private dir beside the installed file, checks the signature with the release
key inside the RUNNING warren (never one the release brings), then the file's SHA-256 against
the signed list, then the rules (no warren downgrade, containerd's supported steps), and
returns a `Plan`. Nothing outside that private dir has changed when it returns or raises.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from warren_bundle.errors import ChecksumMismatch, FetchError, UpgradeRefused, WarrenError
from warren_bundle.paths import upgrade_dir
from warren_bundle.payload import signing
from warren_bundle.store import compat

SUMS = "SHA256SUMS"
SIG = SUMS + signing.SIGNATURE_SUFFIX
DEFAULT_REPO = "warren-bundle/warren-bundle"
HTTP_TIMEOUT = 60.0
_WARREN_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def asset_name(arch: str, flavour: str) -> str:
    """The release's name for this host's file: warren-linux-<arch>[-static]."""
    return f"warren-linux-{arch}" + ("-static" if flavour == "static" else "")


def release_source(from_: str | None, version: str | None) -> str:
    """Where the release is: --from (a folder or an http(s) URL of one), else the project's
    GitHub release `version` (a tag; the latest when None), as install.sh does."""
    if from_:
        return from_
    base = f"https://github.com/{DEFAULT_REPO}/releases"
    return f"{base}/download/{version}" if version else f"{base}/latest/download"


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def warren_version(text: str | None) -> tuple[int, int, int] | None:
    match = _WARREN_VERSION.match(text or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


@dataclass(frozen=True)
class Side:
    """One end of an upgrade: a warren file's version and what it carries."""

    warren: str
    containerd: str | None
    runc: str | None
    digest: str | None  # the payload's sha256


@dataclass(frozen=True)
class Plan:
    """What `warren upgrade` would do: replace `installed` (now `current`) with `new_file`."""

    installed: Path
    new_file: Path
    source: str
    current: Side
    target: Side
    running: str | None  # the containerd version running now, when one runs

    @property
    def changes_nothing(self) -> bool:
        return self.current == self.target

    def lines(self) -> list[str]:
        a, b = self.current, self.target
        return [
            f"warren {a.warren} -> {b.warren}",
            f"containerd {self.running or a.containerd} -> {b.containerd}",
            f"runc {a.runc} -> {b.runc}",
            f"from {self.source}",
        ]


def _read(source: str, name: str, dest: Path) -> Path:
    """Copy (folder) or download (URL) `name` of the release into dest/name."""
    target = dest / name
    part = target.with_name(target.name + ".part")
    if not is_url(source):
        try:
            shutil.copyfile(Path(source) / name, part)
        except FileNotFoundError as exc:
            raise FetchError(
                f"{Path(source) / name} does not exist",
                "give --from the folder a release was published to (it holds SHA256SUMS, "
                "SHA256SUMS.sig and the warren files)",
            ) from exc
    else:
        # Here, not at the top: urllib.request (http, email, ssl) costs every `containerd
        # start` ~15 ms of imports, since switching.py imports this module.
        import urllib.error
        import urllib.request

        url = f"{source.rstrip('/')}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as reply, open(part, "wb") as fp:
                shutil.copyfileobj(reply, fp, 1 << 20)
        except urllib.error.HTTPError as exc:
            raise FetchError(
                f"cannot download {url}: HTTP {exc.code}",
                "check --from or --version (the release must hold SHA256SUMS, SHA256SUMS.sig "
                "and the warren files)",
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(
                f"cannot download {url}: {reason}", "check the network and --from"
            ) from exc
    os.replace(part, target)
    return target


def _expected_digest(sums: bytes, asset: str) -> str:
    for line in sums.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == asset:
            return parts[0].lower()
    raise ChecksumMismatch(
        f"{SUMS} of this release has no entry for {asset}; nothing was changed",
        "this release may not be built for this host: check --from or --version",
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_download(source: str, asset: str, key_pem: str | None, dest: Path) -> Path:
    """dest/<asset>, its bytes checked against SHA256SUMS, itself checked against SHA256SUMS.sig
    with `key_pem` (the running warren's release key). ChecksumMismatch (exit 8) otherwise."""
    if not key_pem:
        raise WarrenError(
            "this warren carries no release key, so it cannot check a release's signature; "
            "nothing was changed",
            "re-install with install.sh from a signed release (then 'warren upgrade' works)",
        )
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    sums = _read(source, SUMS, dest).read_bytes()
    try:
        sig = _read(source, SIG, dest).read_bytes()
    except FetchError as exc:
        raise ChecksumMismatch(
            f"{exc.message}: the release is not signed; nothing was changed",
            "upgrade only from a release made by 'make release' with the release key",
        ) from exc
    try:
        signing.verify(sums, sig, key_pem)
    except signing.SignatureError as exc:
        raise ChecksumMismatch(
            f"bad signature: {SUMS} of {source} is not signed by this warren's release key "
            f"({exc}); nothing was changed",
            "the release or its mirror was altered, or it is another project's: get it from "
            "the project's releases",
        ) from exc
    expected = _expected_digest(sums, asset)
    path = _read(source, asset, dest)
    actual = _sha256(path)
    if actual != expected:
        raise ChecksumMismatch(
            f"checksum mismatch for {asset}: {SUMS} says sha256 {expected}, the file is "
            f"sha256 {actual}; nothing was changed",
            "download again, or check the mirror behind --from",
        )
    path.chmod(0o755)
    return path


def refusal(current: Side, target: Side, running: str | None) -> UpgradeRefused | None:
    """Why going from `current` (running containerd `running`) to `target` is refused, or None."""
    old, new = warren_version(current.warren), warren_version(target.warren)
    if old is not None and new is not None and new < old:
        return UpgradeRefused(
            f"warren {target.warren} is older than this warren {current.warren}: an upgrade "
            "does not go back; nothing was changed",
            "use 'warren rollback' to go back to the previous containerd, or install that "
            "release with install.sh",
        )
    try:
        compat.check_upgrade(running or current.containerd, target.containerd, force=False)
    except UpgradeRefused as exc:
        return UpgradeRefused(
            exc.message.replace("nothing was stopped", "nothing was changed"), exc.remedy
        )
    return None


def plan(
    installed: Path,
    source: str,
    new_file: Path,
    current: Side,
    target: Side,
    running: str | None,
    want_version: str | None,
) -> Plan:
    """The checked plan; raises when the rules or --version refuse it (nothing changed)."""
    if want_version and warren_version(want_version.lstrip("v")) != warren_version(target.warren):
        raise UpgradeRefused(
            f"{source} holds warren {target.warren}, not {want_version}; nothing was changed",
            "give --from the folder of that release, or leave --version out",
        )
    refused = refusal(current, target, running)
    if refused is not None:
        raise refused
    return Plan(installed, new_file, source, current, target, running)


def discard(installed: Path) -> None:
    """Remove the private download dir beside `installed` (nothing else is in it)."""
    shutil.rmtree(upgrade_dir(installed), ignore_errors=True)
