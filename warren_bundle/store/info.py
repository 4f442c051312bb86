"""What `warren version` reports: the launcher and its payload, read from the descriptor."""

from __future__ import annotations

from typing import Any

from warren_bundle import __version__
from warren_bundle.errors import PayloadError
from warren_bundle.payload import signing
from warren_bundle.payload.format import Manifest, flavour, locate


def provenance_summary(manifest: Manifest) -> str:
    """One line: where the carried binaries came from."""
    prov = manifest.provenance
    if manifest.source == "debian":
        packages = prov.get("packages")
        if isinstance(packages, dict) and packages:
            debs = ", ".join(
                f"{p.get('deb')} ({p.get('suite')})"
                for p in packages.values()
                if isinstance(p, dict)
            )
            return f"Debian packages {debs}"
    artifacts = prov.get("artifacts") or []
    urls = [str(a.get("url") or a.get("name")) for a in artifacts if isinstance(a, dict)]
    return ", ".join(urls) or "(no provenance recorded)"


def version_info(payload_option: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"warren": __version__, "flavour": flavour()}
    try:
        payload = locate(payload_option)
    except PayloadError as exc:
        info["payload"] = None
        info["payload_error"] = exc.one_line()
        return info
    m = payload.manifest
    info["payload"] = {
        "digest": payload.digest,
        "size": payload.size,
        "origin": payload.origin,
        "os": m.os,
        "arch": m.arch,
        "containerd_version": m.containerd_version,
        "runc_version": m.runc_version,
        "source": m.source,
        "provenance": m.provenance,
        "provenance_summary": provenance_summary(m),
        "files": [f.__dict__ for f in m.files],
        "node": node_parts(m),
    }
    key = signing.embedded_key(payload.path) if payload.embedded else None
    info["release_key"] = signing.key_fingerprint(key) if key else None
    return info


def sbom_document(payload_option: str | None = None) -> dict[str, Any]:
    """The SPDX 2.3 document of this warren (payload/sbom.py): from the runtime dir it runs
    from when frozen, else (from source) from this interpreter's own distributions."""
    from pathlib import Path

    from warren_bundle import launcher
    from warren_bundle.payload import runtime_record, sbom

    payload = locate(payload_option)
    record = runtime_record.read_runtime_record(launcher.runtime_dir())
    if record is None and not launcher.runtime_dir():
        record = {
            "python": runtime_record.python_identity(),
            "distributions": runtime_record.python_distributions(),
        }
    one_file = launcher.onefile()
    path = Path(one_file) if one_file else (payload.path if payload.embedded else None)
    return sbom.document(payload, record, path)


def node_parts(m: Manifest) -> dict[str, Any]:
    """The CNI plugins, sandbox image and crictl the payload carries."""
    cni = m.components.get("cni") if isinstance(m.components.get("cni"), dict) else {}
    image = m.sandbox_image
    crictl = m.components.get("crictl") if m.has_crictl else None
    return {
        "cni": {
            "version": (cni or {}).get("version"),
            "source": (cni or {}).get("source", m.source),
            "plugins": m.cni_plugins,
        },
        "sandbox_image": image.get("ref") if image else None,
        "sandbox_image_source": image.get("source") if image else None,
        "crictl": (crictl or {}).get("version", "?") if m.has_crictl else None,
    }


def check_runs_here(payload_option: str | None) -> str:
    """One line saying the payload's binaries run on this host; PlatformError when they cannot."""
    from warren_bundle.payload import libc
    from warren_bundle.payload.format import locate

    payload = locate(payload_option)
    requirement = libc.Requirement.from_dict(payload.manifest.requires)
    libc.check(requirement)
    return f"the binaries of this warren run on this host ({libc.host_libc_name()})"
