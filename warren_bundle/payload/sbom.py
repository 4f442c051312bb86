"""The SPDX 2.3 JSON document `warren version --sbom` prints: what this file carries, offline.

Built from what the file itself holds: the payload manifest (containerd, its shim, ctr, runc,
each CNI plugin, crictl, the sandbox image; each with the SHA-256 the manifest records and the
download location its provenance names), the runtime's record of itself (warren-runtime.json,
written into the runtime tree by `scripts/onefile.py runtime`: the Python runtime, every Python
distribution frozen in, the C libraries bundled with it) and the launcher (the bytes of the one
file before the runtime archive). Deterministic: the same file gives the same document (the
created time is the build's SOURCE_DATE_EPOCH, the namespace is made of digests).
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warren_bundle import __version__
from warren_bundle.payload import onefile
from warren_bundle.payload.format import Manifest, Payload

NAMESPACE_BASE = "https://github.com/warren-bundle/warren-bundle/spdx"
NOASSERTION = "NOASSERTION"

# Who makes each upstream component (the supplier when the payload is upstream's own build).
_UPSTREAM_SUPPLIER = {
    "containerd": "Organization: The containerd Authors (CNCF)",
    "runc": "Organization: Open Container Initiative",
    "cni": "Organization: The CNI Authors (CNCF containernetworking)",
    "crictl": "Organization: The Kubernetes Authors (kubernetes-sigs/cri-tools)",
    "rootlesskit": "Organization: The rootless-containers Authors",
    "pause": "Organization: The Kubernetes Authors",
}
# Words that name a component's artifact in the manifest's provenance.
_ARTIFACT_WORDS = {
    "containerd": ("containerd",),
    "runc": ("runc",),
    "cni": ("cni-plugins", "containernetworking"),
    "crictl": ("crictl", "cri-tools"),
    "rootlesskit": ("rootlesskit",),
    "pause": ("pause",),
}


# --- the document -----------------------------------------------------------------------------


def _spdx_id(*parts: str) -> str:
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]+", "-", "-".join(parts)).strip("-")


def _package(
    spdx_id: str,
    name: str,
    version: str,
    supplier: str,
    location: str,
    sha256: str | None = None,
    purl: str | None = None,
    comment: str | None = None,
) -> dict[str, Any]:
    pkg: dict[str, Any] = {
        "SPDXID": spdx_id,
        "name": name,
        "versionInfo": version or NOASSERTION,
        "supplier": supplier or NOASSERTION,
        "downloadLocation": location or NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
    }
    if sha256:
        pkg["checksums"] = [{"algorithm": "SHA256", "checksumValue": sha256}]
    if purl:
        pkg["externalRefs"] = [
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }
        ]
    if comment:
        pkg["comment"] = comment
    return pkg


def _location(manifest: Manifest, component: str) -> str:
    """Where the component was downloaded from, as the manifest's provenance records it."""
    prov = manifest.provenance
    packages = prov.get("packages")
    if isinstance(packages, dict) and isinstance(packages.get(component), dict):
        url = packages[component].get("url")
        if url:
            return str(url)
    words = _ARTIFACT_WORDS.get(component, (component,))
    for artifact in prov.get("artifacts") or []:
        if not isinstance(artifact, dict):
            continue
        name = str(artifact.get("name") or "") + " " + str(artifact.get("url") or "")
        if any(w in name for w in words) and artifact.get("url"):
            if component == "containerd" and "runc" in name:
                continue
            return str(artifact["url"])
    return NOASSERTION


def _supplier(manifest: Manifest, component: str, source: str | None = None) -> str:
    source = source or manifest.source
    if source.startswith("debian"):
        return "Organization: Debian"
    if source == "built":
        return "Organization: warren bundle (built from its own source)"
    return _UPSTREAM_SUPPLIER.get(component, NOASSERTION)


def _component_of(name: str) -> str:
    if name.startswith("cni/"):
        return "cni"
    if name.startswith("sandbox/"):
        return "pause"
    if name in ("containerd", "containerd-shim-runc-v2", "ctr"):
        return "containerd"
    return name


def payload_packages(manifest: Manifest) -> list[dict[str, Any]]:
    """One package per file the payload carries, with the manifest's SHA-256."""
    cni = manifest.components.get("cni") if isinstance(manifest.components.get("cni"), dict) else {}
    crictl = manifest.components.get("crictl")
    image = manifest.sandbox_image or {}
    out = []
    for entry in manifest.files:
        component = _component_of(entry.name)
        source = manifest.source
        if component == "containerd":
            version = manifest.containerd_version
        elif component == "runc":
            version = manifest.runc_version
        elif component == "cni":
            version = str((cni or {}).get("version") or "")
            source = str((cni or {}).get("source") or source)
        elif component == "crictl":
            version = str((crictl or {}).get("version") or "") if isinstance(crictl, dict) else ""
        elif component == "rootlesskit":
            kit = manifest.components.get("rootlesskit")
            version = str(kit.get("version") or "") if isinstance(kit, dict) else ""
        else:
            ref = str(image.get("ref") or "")
            version = ref.rsplit(":", 1)[-1] if ":" in ref else ""
            source = str(image.get("source") or source)
        location = _location(manifest, component)
        comment = None
        if component == "pause":
            comment = f"sandbox image {image.get('ref')} ({image.get('manifest_digest')})"
            if source == "built":
                location = NOASSERTION
        out.append(
            _package(
                _spdx_id("payload", entry.name),
                entry.name,
                version,
                _supplier(manifest, component, source),
                location,
                entry.sha256,
                comment=comment,
            )
        )
    return out


def runtime_packages(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The Python runtime, the distributions frozen in, the bundled C libraries."""
    if record is None:
        return []
    out = []
    python = record.get("python") or {}
    deb = python.get("package")
    out.append(
        _package(
            _spdx_id("runtime-python"),
            "CPython"
            if python.get("implementation") == "cpython"
            else str(python.get("implementation")),
            str(python.get("version") or ""),
            "Organization: Debian" if deb else "Organization: Python Software Foundation",
            NOASSERTION,
            comment=f"Debian package {deb} {python.get('package_version')}" if deb else None,
        )
    )
    for dist in record.get("distributions") or []:
        name, version = str(dist["name"]), str(dist["version"])
        if name == "warren-bundle":
            continue  # the document's subject
        out.append(
            _package(
                _spdx_id("python", name),
                name,
                version,
                _supplier_of(str(dist.get("supplier") or "")),
                f"https://pypi.org/project/{name}/{version}/",
                purl=f"pkg:pypi/{re.sub(r'[-_.]+', '-', name).lower()}@{version}",
            )
        )
    freezer = record.get("freezer")
    if isinstance(freezer, dict) and freezer.get("version"):
        version = str(freezer["version"])
        out.append(
            _package(
                _spdx_id("runtime-bootloader"),
                "pyinstaller-bootloader",
                version,
                "Organization: PyInstaller Development Team",
                f"https://pypi.org/project/pyinstaller/{version}/",
                purl=f"pkg:pypi/pyinstaller@{version}",
                comment="the runtime's executable: PyInstaller's onedir bootloader",
            )
        )
    for lib in record.get("c_libraries") or []:
        deb = lib.get("package")
        out.append(
            _package(
                _spdx_id("clib", str(lib["file"])),
                str(lib["file"]),
                str(lib.get("version") or ""),
                "Organization: Debian" if deb else NOASSERTION,
                NOASSERTION,
                str(lib.get("sha256") or "") or None,
                purl=f"pkg:deb/debian/{deb}@{lib.get('version')}" if deb else None,
                comment=f"from Debian package {deb}" if deb else None,
            )
        )
    return out


def _supplier_of(name: str) -> str:
    """SPDX's supplier field for a distribution's author: an organization or a person."""
    if not name:
        return NOASSERTION
    group = re.search(r"authors|foundation|team|project|developers|contributors", name, re.I)
    return f"{'Organization' if group else 'Person'}: {name}"


def launcher_digest(one_file: Path) -> tuple[str, str] | None:
    """(sha256 of the launcher: the bytes before the runtime archive, the runtime's digest)."""
    try:
        trailer = onefile.read_trailer(one_file)
        digest = hashlib.sha256()
        with open(one_file, "rb") as fp:
            left = trailer.runtime_offset
            while left:
                chunk = fp.read(min(left, 1 << 20))
                if not chunk:
                    return None
                digest.update(chunk)
                left -= len(chunk)
    except (OSError, onefile.NotOneFile):
        return None
    return digest.hexdigest(), trailer.runtime_digest


def document(
    payload: Payload, record: dict[str, Any] | None, one_file: Path | None
) -> dict[str, Any]:
    """The SPDX 2.3 document (a dict, for json.dumps)."""
    manifest = payload.manifest
    launcher = launcher_digest(one_file) if one_file else None
    name = f"warren-{manifest.os}-{manifest.arch}"
    epoch = int((record or {}).get("source_date_epoch") or os.environ.get("SOURCE_DATE_EPOCH") or 0)
    created = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    identity = hashlib.sha256(
        f"{__version__} {payload.digest} {launcher[1] if launcher else ''}".encode()
    ).hexdigest()[:32]
    top = _package(
        "SPDXRef-warren",
        "warren",
        __version__,
        "Organization: warren bundle",
        NOASSERTION,
        comment=f"payload sha256:{payload.digest}"
        + (f"; runtime sha256:{launcher[1]}" if launcher else ""),
    )
    packages = [top, *payload_packages(manifest), *runtime_packages(record)]
    if launcher:
        packages.append(
            _package(
                "SPDXRef-launcher",
                "warren-launcher",
                __version__,
                "Organization: warren bundle",
                NOASSERTION,
                launcher[0],
                comment="launcher/launcher.c (static, musl): the file's bytes before the runtime",
            )
        )
    relationships = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": "SPDXRef-warren",
        }
    ]
    relationships += [
        {
            "spdxElementId": "SPDXRef-warren",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": p["SPDXID"],
        }
        for p in packages[1:]
    ]
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{name} {__version__} ({manifest.source} payload)",
        "documentNamespace": f"{NAMESPACE_BASE}/{name}-{__version__}-{identity}",
        "creationInfo": {"created": created, "creators": [f"Tool: warren-{__version__}"]},
        "packages": packages,
        "relationships": relationships,
    }
