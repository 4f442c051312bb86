"""The spec's EXCLUDES are promises: nothing warren runs needs a module they drop.

Two checks from source, one per way a dropped module is needed: an import statement somewhere in
warren_bundle (static), and a module the interpreter loads by name, as getaddrinfo() loads the
idna codec (`warren _selfcheck` with the excluded modules made unimportable, as in the frozen file).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from importlib.util import resolve_name
from pathlib import Path

from support import REPO

SPEC = REPO / "build" / "spec" / "warren.spec"
PACKAGE = REPO / "warren_bundle"


def spec_excludes(spec: Path = SPEC) -> list[str]:
    for node in ast.parse(spec.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "EXCLUDES" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"no EXCLUDES list in {spec}")


def is_excluded(name: str, excludes: list[str]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in excludes)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute name) of every import in the file, at any depth; `from a import b` gives
    a and a.b (b may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve_name("." * node.level + (node.module or ""), package)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def runtime_sources() -> list[Path]:
    """Every module of warren_bundle but the build-time warren_bundle.fetch."""
    return sorted(p for p in PACKAGE.rglob("*.py") if "fetch" not in p.relative_to(PACKAGE).parts)


def test_the_spec_excludes_the_build_time_package() -> None:
    excludes = spec_excludes()
    assert "warren_bundle.fetch" in excludes
    assert len(runtime_sources()) > 50


def test_no_module_of_warren_bundle_imports_an_excluded_name() -> None:
    excludes = spec_excludes()
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in runtime_sources()
        for line, name in imports_of(path)
        if is_excluded(name, excludes)
    ]
    assert not offenders, "; ".join(offenders)


# Made unimportable before anything else is imported, as they are in the frozen file.
_BLOCKED_SELFCHECK = """
import importlib.abc, json, sys
EXCLUDES = json.loads(sys.argv[1])

class Excluded(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == e or name.startswith(e + ".") for e in EXCLUDES):
            raise ModuleNotFoundError(f"No module named {name!r} (excluded by the spec)", name=name)
        return None

for name in [m for m in sys.modules if any(m == e or m.startswith(e + ".") for e in EXCLUDES)]:
    del sys.modules[name]
sys.meta_path.insert(0, Excluded())
try:
    import ctypes
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the blocker does not block")
sys.path.insert(0, sys.argv[2])
from warren_bundle.selfcheck import run
report = run()
print(json.dumps(report.to_dict()))
"""


def blocked_selfcheck(excludes: list[str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _BLOCKED_SELFCHECK, json.dumps(excludes), str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        cwd="/",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(json.loads(out.stdout))


def test_selfcheck_passes_with_the_spec_exclusions_unimportable() -> None:
    excludes = spec_excludes()
    assert "ctypes" in excludes  # what the blocker proves it blocks
    report = blocked_selfcheck(excludes)
    checks = report["checks"]
    assert isinstance(checks, dict)
    failures = {name: error for name, error in checks.items() if error is not None}
    assert not failures, failures
    for check in ("idna codec", "getaddrinfo localhost", "metrics server and scrape"):
        assert check in checks
    assert "warren_bundle.runtime.grpc_unix" in report["modules"]
    assert "h2.connection" in report["imports"]  # imported inside a function only
