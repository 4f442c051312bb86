"""What the frozen file must be able to do, checked inside the frozen file (`warren _selfcheck`).

build/spec/warren.spec EXCLUDES modules to keep each launch small. An exclusion something needs
breaks only the path that needs it, and only in the frozen file: getaddrinfo() loads the `idna`
codec by name (no import statement shows it), the codec needs unicodedata, and excluding that made
every `--metrics-addr` crash with "unknown encoding: idna". So `make build` runs this right after
freezing, and a bad exclusion fails the build instead of a user's command:

- every module of warren_bundle (but the build-time warren_bundle.fetch) imports, and so does
  every name their code imports, at any depth (the lazy imports of grpc_unix, metrics, lima ...);
- "localhost" resolves with socket.getaddrinfo, and a name encodes with the "idna" codec;
- a metrics server starts on 127.0.0.1:0 and a scrape of it answers;
- in the frozen file, the process runs from the launcher's runtime dir on the libc it carries.

Nothing here starts containerd or needs root. tests/unit/test_spec_excludes.py runs the same
checks from source with the spec's EXCLUDES made unimportable.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import Any

PACKAGE = "warren_bundle"
# Build time only, excluded from the frozen file; importing it from anything else is a bug.
BUILD_ONLY = "warren_bundle.fetch"


@dataclass
class Report:
    modules: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    checks: dict[str, str | None] = field(default_factory=dict)  # name: None (ok) or the error

    @property
    def failures(self) -> dict[str, str]:
        return {name: error for name, error in self.checks.items() if error is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"modules": self.modules, "imports": self.imports, "checks": self.checks}


def _is_build_only(name: str) -> bool:
    return name == BUILD_ONLY or name.startswith(BUILD_ONLY + ".")


def package_modules() -> list[str]:
    """Every module of warren_bundle this interpreter can find, but fetch and __main__."""
    found = [PACKAGE]

    def walk(package: str) -> None:
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__, package + "."):
            if _is_build_only(info.name) or info.name.endswith(".__main__"):
                continue
            found.append(info.name)
            if info.ispkg:
                walk(info.name)

    walk(PACKAGE)
    return sorted(found)


def _code_objects(code: CodeType) -> Iterator[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _code_objects(const)


def imported_names(module_name: str) -> set[str]:
    """Absolute names the module's code imports anywhere (functions and TYPE_CHECKING too).

    `from A import b` yields A and, when b is not an attribute of A, A.b (a submodule).
    """
    import dis

    spec = importlib.util.find_spec(module_name)
    loader = spec.loader if spec is not None else None
    get_code = getattr(loader, "get_code", None)
    if get_code is None:
        raise ImportError(f"no code for {module_name}")
    code = get_code(module_name)
    package = module_name if spec is not None and spec.submodule_search_locations else ""
    package = package or module_name.rpartition(".")[0]
    names: set[str] = set()
    for each in _code_objects(code):
        instructions = list(dis.get_instructions(each))
        for i, ins in enumerate(instructions):
            if ins.opname != "IMPORT_NAME" or i < 2:
                continue
            level, fromlist = instructions[i - 2].argval, instructions[i - 1].argval
            name = str(ins.argval)
            if isinstance(level, int) and level > 0:
                name = importlib.util.resolve_name("." * level + name, package)
            names.add(name)
            for item in fromlist or ():
                if item != "*":
                    names.add(f"{name}:{item}")
    return names


def _import(name: str) -> None:
    module_name, _, attr = name.partition(":")
    module = importlib.import_module(module_name)
    if attr and not hasattr(module, attr):
        importlib.import_module(f"{module_name}.{attr}")


def check_imports(report: Report) -> None:
    report.modules = package_modules()
    wanted: set[str] = set()
    for module in report.modules:
        try:
            importlib.import_module(module)
            wanted |= imported_names(module)
        except Exception as exc:
            report.checks[f"import {module}"] = _describe(exc)
    failed: set[str] = set()
    for name in sorted(wanted):  # "a" sorts before "a:b": a module before its names
        module, _, _attr = name.partition(":")
        shown = name.replace(":", ".")
        if module in failed:
            continue
        if _is_build_only(shown):
            report.checks[f"import {shown}"] = "warren_bundle.fetch is build time only"
            failed.add(module)
            continue
        try:
            _import(name)
        except Exception as exc:
            report.checks[f"import {shown}"] = _describe(exc)
            failed.add(name)
    report.imports = sorted({name.partition(":")[0] for name in wanted})


def check_idna() -> None:
    # The codec is looked up by name; importing it names what it lacks (unicodedata).
    importlib.import_module("encodings.idna")
    encoded = "bücher.example".encode("idna")
    if encoded != b"xn--bcher-kva.example":
        raise ValueError(f"idna gave {encoded!r}")


def check_getaddrinfo() -> None:
    import socket

    if not socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM):
        raise OSError("getaddrinfo('localhost') returned nothing")


def check_metrics() -> None:
    import tempfile

    from warren_bundle.metrics import MetricsServer, scrape
    from warren_bundle.paths import Paths

    with tempfile.TemporaryDirectory(prefix="warren-selfcheck-") as tmp:
        base = Path(tmp)
        paths = Paths(data_dir=base / "data", run_dir=base / "run", config_dir=base / "etc")
        server = MetricsServer("127.0.0.1", 0, lambda: {"state": "STOPPED"}, paths)
        try:
            text = scrape(server.address, timeout=10.0)
        finally:
            server.close()
    if "embedded_containerd_running 0.0" not in text:
        raise ValueError(f"the scrape of {server.url} lacks embedded_containerd_running")


def check_runtime() -> None:
    """Frozen: this process runs from the launcher's runtime dir, on the libc that dir carries."""
    if not getattr(sys, "frozen", False):
        return
    from warren_bundle import launcher

    runtime = launcher.runtime_dir()
    if runtime is None:
        raise RuntimeError(f"{sys.executable} was not started by the warren launcher")
    with open("/proc/self/maps") as fp:
        libcs = {line.split()[-1] for line in fp if "/libc.so" in line}
    if libcs != {os.path.join(runtime, "_internal", "libc.so.6")}:
        raise RuntimeError(f"libc mapped from {sorted(libcs)}, not from {runtime}")


CHECKS: dict[str, Callable[[], None]] = {
    "idna codec": check_idna,
    "getaddrinfo localhost": check_getaddrinfo,
    "metrics server and scrape": check_metrics,
    "runtime and its libc": check_runtime,
}


def _describe(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def run() -> Report:
    report = Report()
    check_imports(report)
    for name, check in CHECKS.items():
        try:
            check()
            report.checks[name] = None
        except Exception as exc:
            report.checks[name] = _describe(exc)
    return report
