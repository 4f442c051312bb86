"""The runtime's record of itself: <runtime>/_internal/warren-runtime.json.

`scripts/onefile.py runtime` writes it when it makes the runtime tree: the Python that was frozen
(asked of the freezing venv's own interpreter: interpreter_record), every distribution warren
needs in it, PyInstaller's version (its bootloader is the runtime's executable) and each C
library in the tree with its SHA-256 and the Debian package that supplied it. `warren version
--sbom` (payload/sbom.py) reads it from the runtime dir it runs from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

RUNTIME_RECORD = "warren-runtime.json"
RUNTIME_LIBS = "_internal"


def _dpkg_owner(path: Path | str) -> dict[str, str] | None:
    """The Debian package that installed `path` (or the first matching a dpkg -S pattern), with
    its version; None when dpkg does not know."""
    try:
        owner = subprocess.run(
            ["dpkg", "-S", str(path)], capture_output=True, text=True, check=True
        ).stdout.split(":")[0]
        version = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", owner], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"package": owner, "version": version} if owner and version else None


def _requirement_names(requires: list[str] | None) -> list[str]:
    names = []
    for req in requires or []:
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        if match:
            names.append(match.group(0))
    return names


def _author(*fields: str | None) -> str:
    """Who publishes a distribution, from its metadata: a name, without the e-mail address."""
    for field in fields:
        if field:
            name = re.sub(r"\s*<[^>]*>", "", str(field).split(",")[0]).strip().strip('"')
            if name:
                return re.sub(r"[\r\n]+", " ", name)[:120]
    return ""


def python_distributions(root: str = "warren-bundle") -> list[dict[str, str]]:
    """`root` and every distribution it needs (not extras), as installed for this interpreter:
    what PyInstaller freezes into the runtime."""
    from importlib import metadata

    seen: dict[str, dict[str, str]] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        meta = dist.metadata
        seen[key] = {
            "name": str(meta["Name"]),
            "version": dist.version,
            "license": str(meta["License-Expression"] or meta["License"] or "")[:200],
            "supplier": _author(meta["Author"], meta["Author-email"], meta["Maintainer"]),
        }
        todo.extend(_requirement_names(dist.requires))
    return sorted(seen.values(), key=lambda d: d["name"].lower())


def python_identity() -> dict[str, str]:
    return {
        "implementation": sys.implementation.name,
        "version": ".".join(str(v) for v in sys.version_info[:3]),
    }


def interpreter_record() -> dict[str, Any]:
    """This interpreter and the distributions warren needs in it: run by `scripts/onefile.py
    runtime` with the Python of the venv PyInstaller froze."""
    python: dict[str, Any] = python_identity()
    minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    owner = _dpkg_owner(Path(sys.base_prefix) / "bin" / minor)
    if owner:
        python["package"] = owner["package"]
        python["package_version"] = owner["version"]
    from importlib import metadata

    record: dict[str, Any] = {"python": python, "distributions": python_distributions()}
    with suppress(metadata.PackageNotFoundError):  # its bootloader is the runtime's executable
        record["freezer"] = {"name": "pyinstaller", "version": metadata.version("pyinstaller")}
    return record


def runtime_record(
    tree: Path, bundled: dict[str, Path], interpreter: dict[str, Any]
) -> dict[str, Any]:
    """What `scripts/onefile.py runtime` writes as <tree>/_internal/warren-runtime.json: the
    Python and the distributions frozen in (interpreter_record of the freezing venv), the C
    libraries bundled from the build host (by file name: its SHA-256 in the tree, the Debian
    package that supplied it)."""
    libs = []
    # Those copied from the host here, and those PyInstaller put in itself (libpython, libssl...).
    shared = {p.name for p in (tree / RUNTIME_LIBS).iterdir() if ".so" in p.name and p.is_file()}
    for name in sorted(shared | set(bundled)):
        data = (tree / RUNTIME_LIBS / name).read_bytes()
        entry: dict[str, Any] = {"file": name, "sha256": hashlib.sha256(data).hexdigest()}
        owner = _dpkg_owner(bundled.get(name, f"*/{name}"))
        if owner:
            entry.update(owner)
        libs.append(entry)
    glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    return {
        "format": 1,
        "source_date_epoch": int(os.environ.get("SOURCE_DATE_EPOCH") or 0),
        "python": interpreter["python"],
        "glibc": glibc.split()[-1] if glibc else "",
        "distributions": interpreter["distributions"],
        "freezer": interpreter.get("freezer"),
        "c_libraries": libs,
    }


def read_runtime_record(runtime: str | None) -> dict[str, Any] | None:
    if not runtime:
        return None
    try:
        data = json.loads((Path(runtime) / RUNTIME_LIBS / RUNTIME_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
