#!/usr/bin/env python3
"""Build the one file: the runtime tree, then launcher + runtime archive + payload + trailer.

    scripts/onefile.py runtime DIR
        Make PyInstaller's onedir tree DIR self-contained: copy in the loader and every C library
        its ELF files need (glibc included), give its executable a placeholder ELF interpreter long
        enough for any runtime path (the launcher writes the real one at extraction), and an RPATH
        of $ORIGIN/_internal. Then it runs the same on glibc >= 2.17 hosts and on musl hosts.
    scripts/onefile.py pack --launcher L --runtime DIR --payload-dir P --out FILE [--release-key K]
        Write FILE (layout: warren_bundle/payload/onefile.py). Same inputs, same bytes. With
        --release-key, the payload descriptor carries that public key (PEM): the key `warren
        upgrade` checks a next release's SHA256SUMS.sig with (warren_bundle/payload/signing.py).

Both are deterministic: entries sorted, no times recorded, zlib at a fixed level.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from warren_bundle.payload.onefile import RUNTIME_MAGIC, TRAILER_SIZE, Trailer
from warren_bundle.payload.runtime_record import RUNTIME_RECORD, runtime_record
from warren_bundle.payload.signing import KEY_FIELD

EXE_NAME = "warren"
LIBS = "_internal"
# The ELF interpreter the frozen executable is built with: the launcher overwrites it in place
# with <runtime-dir>/<digest>/_internal/<loader>, which must fit (launcher.c says so if not).
PLACEHOLDER_LEN = 1023
ZLIB_LEVEL = 6


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as fp:
        return fp.read(4) == b"\x7fELF"


def _elf_files(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink() and _is_elf(p))


_LDD_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(/\S+)\s+\(0x[0-9a-f]+\)$")
_LDD_LOADER = re.compile(r"^\s*(/\S+ld-linux\S*)\s+\(0x[0-9a-f]+\)$")


def _needs(elf: Path, tree: Path) -> tuple[dict[str, Path], Path | None]:
    """What the host's ldd resolves for `elf` outside `tree`: {soname: path}, and the loader."""
    env = dict(os.environ, LD_LIBRARY_PATH=str(tree / LIBS))
    out = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, env=env).stdout
    libs: dict[str, Path] = {}
    loader = None
    for line in out.splitlines():
        if m := _LDD_LINE.match(line):
            path = Path(m.group(2))
            if tree.resolve() not in path.resolve().parents:
                libs[m.group(1)] = path
        elif m := _LDD_LOADER.match(line):
            loader = Path(m.group(1))
    return libs, loader


def write_record(tree: Path, bundled: dict[str, Path], python: str) -> None:
    """<tree>/_internal/warren-runtime.json: what `warren version --sbom` says of the runtime.
    The Python part is asked of `python`, the interpreter of the venv PyInstaller froze."""
    probe = subprocess.run(
        [python, "-c", "import json; from warren_bundle.payload import runtime_record as r; "
         "print(json.dumps(r.interpreter_record()))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    record = runtime_record(tree, bundled, json.loads(probe.stdout))
    path = tree / LIBS / RUNTIME_RECORD
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"{path}: {len(record['distributions'])} Python distributions, "
          f"{len(record['c_libraries'])} C libraries (glibc {record['glibc']})")  # fmt: skip


def make_runtime(tree: Path, python: str) -> None:
    exe = tree / EXE_NAME
    if not exe.is_file():
        raise SystemExit(f"{exe} is missing: freeze with WARREN_ONEDIR=1 first")
    libs: dict[str, Path] = {}
    loader: Path | None = None
    for elf in _elf_files(tree):
        found, elf_loader = _needs(elf, tree)
        libs.update(found)
        loader = loader or elf_loader
    if loader is None:
        raise SystemExit(f"ldd names no ELF loader for {exe}")
    for soname, path in sorted(libs.items()):
        shutil.copy2(path.resolve(), tree / LIBS / soname)
    shutil.copy2(loader.resolve(), tree / LIBS / loader.name)
    write_record(tree, {**libs, loader.name: loader}, python)
    placeholder = "/" + "_" * (PLACEHOLDER_LEN - 1)
    subprocess.run(
        [
            "patchelf",
            "--set-interpreter",
            placeholder,
            "--force-rpath",
            "--set-rpath",
            f"$ORIGIN/{LIBS}",
            str(exe),
        ],
        check=True,
    )
    (tree / ".loader").write_text(f"{LIBS}/{loader.name}\n")
    print(f"{tree}: bundled {', '.join(sorted(libs))} and {loader.name}")


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("<H", len(raw)) + raw


def runtime_archive(tree: Path) -> bytes:
    loader = (tree / ".loader").read_text().strip()
    entries = sorted(p for p in tree.rglob("*") if p.name != ".loader")
    out = [RUNTIME_MAGIC, _str(EXE_NAME), _str(loader), struct.pack("<I", len(entries))]
    for path in entries:
        rel = path.relative_to(tree).as_posix()
        if path.is_symlink():
            target = os.readlink(path).encode()
            out += [b"l", _str(rel), struct.pack("<IQQ", 0o777, len(target), 0), b"\0" * 32]
            out.append(target)
        elif path.is_dir():
            out += [b"d", _str(rel), struct.pack("<IQQ", 0o755, 0, 0), b"\0" * 32]
        else:
            data = path.read_bytes()
            mode = 0o755 if os.access(path, os.X_OK) or _is_elf(path) else 0o644
            packed = zlib.compress(data, ZLIB_LEVEL)
            out += [b"f", _str(rel), struct.pack("<IQQ", mode, len(data), len(packed))]
            out += [hashlib.sha256(data).digest(), packed]
    return b"".join(out)


def with_release_key(descriptor: bytes, key: Path) -> bytes:
    """The payload descriptor with the release key's public PEM in it (payload/signing.py)."""
    pem = key.read_text()
    if "-----BEGIN PUBLIC KEY-----" not in pem:
        raise SystemExit(f"{key}: not a PEM public key (openssl pkey -pubout writes one)")
    data = json.loads(descriptor)
    data[KEY_FIELD] = pem.strip() + "\n"
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def pack(
    launcher: Path, tree: Path, payload_dir: Path | None, dest: Path, key: Path | None = None
) -> None:
    """Write the one file; with no payload dir, a file that carries no binaries (for tests)."""
    head = launcher.read_bytes()
    archive = runtime_archive(tree)
    payload = descriptor = b""
    if payload_dir is not None:
        payload = (payload_dir / "payload.tar.zst").read_bytes()
        descriptor = (payload_dir / "payload.json").read_bytes()
        if key is not None:
            descriptor = with_release_key(descriptor, key)
    runtime_offset = len(head)
    payload_offset = runtime_offset + len(archive)
    descriptor_offset = payload_offset + len(payload)
    trailer = Trailer(
        runtime_offset,
        len(archive),
        payload_offset,
        len(payload),
        descriptor_offset,
        len(descriptor),
        hashlib.sha256(archive).hexdigest(),
    ).pack()
    assert len(trailer) == TRAILER_SIZE
    tmp = dest.with_name(dest.name + ".tmp")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as fp:
        for part in (head, archive, payload, descriptor, trailer):
            fp.write(part)
    tmp.chmod(0o755)
    tmp.replace(dest)
    print(
        f"{dest}: {dest.stat().st_size} bytes (launcher {len(head)}, runtime {len(archive)}, "
        f"payload {len(payload)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    rt = sub.add_parser("runtime")
    rt.add_argument("tree", type=Path)
    rt.add_argument(
        "--python", default=sys.executable, help="the Python of the venv that was frozen"
    )
    pk = sub.add_parser("pack")
    pk.add_argument("--launcher", type=Path, required=True)
    pk.add_argument("--runtime", type=Path, required=True)
    pk.add_argument("--payload-dir", type=Path, help="staged payload (none: no binaries)")
    pk.add_argument("--out", type=Path, required=True)
    pk.add_argument("--release-key", type=Path, help="the release's public key (PEM) to carry")
    args = parser.parse_args()
    if args.cmd == "runtime":
        make_runtime(args.tree, args.python)
    else:
        pack(args.launcher, args.runtime, args.payload_dir, args.out, args.release_key)


if __name__ == "__main__":
    main()
