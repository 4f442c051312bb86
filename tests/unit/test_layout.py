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
# An alarm, not a shape: a module past it is worth a look, but a class stays in one module and
# a concern is not split to fit (the supervisor was once spread over seven files for 400).
MAX_LINES = 500


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
        "warren_bundle.store.extract",
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


# --- the module graph: every import at any depth, `if TYPE_CHECKING:` blocks aside --------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _runtime_tree(path: Path) -> ast.Module:
    """The module's AST without its `if TYPE_CHECKING:` bodies (they never run)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            node.body = [ast.Pass()]
    return tree


def _owner(name: str) -> str:
    """The warren_bundle module that defines `name` (a module, or a package's __init__)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _from_target(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(module: str) -> list[tuple[str, str | None]]:
    """(module imported from warren_bundle, name taken from it or None) for each import."""
    path = MODULES[module]
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(_runtime_tree(path)):
        if isinstance(node, ast.Import):
            found += [
                (_owner(a.name), None)
                for a in node.names
                if a.name.split(".")[0] == "warren_bundle"
            ]
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(module, path, node)
            if target.split(".")[0] != "warren_bundle":
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.append((full, None) if full in MODULES else (_owner(target), alias.name))
    return found


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in _imported(m) if t != m} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    # Function-level imports count: they hide a cycle from Python's import order, not from a
    # reader. A type-only import (under TYPE_CHECKING) does not run and does not count.
    graph = _graph()
    cycles = _cycles(graph)
    described = [" ; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in cycles]
    assert not cycles, "import cycles (break them with a lower module): " + " | ".join(described)


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_across_modules() -> None:
    # A name with a leading underscore is its module's own; another module that needs it needs
    # a public name (dunders such as __version__ are public).
    private = sorted(
        f"{m} imports {name} from {owner}"
        for m in MODULES
        for owner, name in _imported(m)
        if name and name.startswith("_") and not name.startswith("__") and owner != m
    )
    assert not private, "; ".join(private)


# What "orchestration" means for the CLI, so that a rule can check it: a command parses, calls
# one function of the runtime's control API, and prints. It does not sequence processes (no
# sleeping, signalling or waiting), take locks, switch versions, or reach into runtime modules
# other than those that make the API.
CLI_RUNTIME_API = {
    "backend",  # the platform's containerd: start, stop, status, socket, rollback
    "control",  # acting on a supervisor from another process
    "switching",  # replacing a supervisor that runs another version, rollback
    "foreground",  # `containerd run`: the supervisor in this process
    "supervisor",  # ContainerdManager, the library API `containerd run` builds
    "config",  # rendering the config (`containerd config`, `node`)
    "settings",  # typed settings the options build
    "options",  # RunOptions: the typed run options, parsed here and passed whole
    "logs",  # reading the log (`containerd logs`)
    "leftovers",  # removing unpack dirs no process uses (`extract`)
}
CLI_FORBIDDEN_CALLS = {
    "os.kill",
    "os.killpg",
    "os.fork",
    "os.waitpid",
    "os.execv",
    "os.execve",
    "os.execvp",
    "time.sleep",
}


def _cli_modules() -> list[str]:
    return sorted(m for m in MODULES if m.startswith("warren_bundle.cli."))


@pytest.mark.parametrize("module", _cli_modules())
def test_the_cli_does_no_orchestration(module: str) -> None:
    problems: list[str] = []
    for target, name in _imported(module):
        parts = target.split(".")
        runtime = parts[:2] == ["warren_bundle", "runtime"] and len(parts) > 2
        if runtime and parts[2] not in CLI_RUNTIME_API:
            problems.append(f"imports {target} (not the runtime's control API)")
        if name and ("lock" in name.lower() or name == "switch_to"):
            problems.append(
                f"imports {name} from {target}: locking and switching are the runtime's"
            )
    for node in ast.walk(_runtime_tree(MODULES[module])):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in CLI_FORBIDDEN_CALLS:
            problems.append(f"calls {ast.unparse(node.func)} (line {node.lineno})")
    assert not problems, f"{module}: " + "; ".join(problems)
