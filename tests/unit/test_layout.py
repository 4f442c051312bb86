"""The architecture's rules, checked: the CLI only speaks, modules stay small, `version` is cheap.

Each rule is read from the source (every import statement, at any depth), so a violation fails
here before anyone notices it in review.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO

PACKAGE = REPO / "warren_bundle"
# What "process machinery" means for the CLI: it parses, calls the runtime, prints.
PROCESS_MACHINERY = {"subprocess", "threading", "signal", "psutil", "fcntl", "select"}
MAX_LINES = 400


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "module", sorted(p.relative_to(REPO).as_posix() for p in (PACKAGE / "cli").glob("*.py"))
)
def test_the_cli_imports_no_process_machinery(module: str) -> None:
    used = _imports(REPO / module) & PROCESS_MACHINERY
    assert not used, f"{module} imports {sorted(used)}: that work belongs in warren_bundle/runtime"


def test_no_module_is_over_the_line_limit() -> None:
    long = {
        p.relative_to(REPO).as_posix(): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these along their seams (limit {MAX_LINES} lines): {long}"


def test_version_loads_no_runtime_payload_reader_or_heavy_library() -> None:
    # What `warren version` imports decides the one file's launch time (make bench's launch row).
    code = (
        "import sys\n"
        "from warren_bundle.cli.main import main\n"
        "try:\n"
        "    main(['version', '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    loaded = set(out.stderr.split())
    for heavy in (
        "warren_bundle.runtime.supervisor",
        "warren_bundle.extract",
        "warren_bundle.payload.tarstream",
        "warren_bundle.doctor.run",
        "warren_bundle.lima.manager",
        "prometheus_client",
        "yaml",
        "psutil",
        "zstandard",
        "h2",
    ):
        assert heavy not in loaded, f"`warren version` loads {heavy}"
