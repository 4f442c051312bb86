"""What the programs warren starts inherit: never the frozen runtime's LD_LIBRARY_PATH.

The runtime carries its own libc; a host program that loads it through LD_LIBRARY_PATH fails on
an older host ("GLIBC_2.35 not found": modprobe on a booted bullseye guest)."""

from __future__ import annotations

import ast
from pathlib import Path

from warren_bundle.runtime.childenv import child_env, restore_library_path

from support import REPO

SPAWNERS = {
    "subprocess.run",
    "subprocess.Popen",
    "subprocess.check_output",
    "subprocess.check_call",
    "subprocess.call",
    "os.execv",
    "os.execvp",
    "os.execve",
}
# The build pipeline runs from source on the build machine, never in the frozen runtime.
BUILD_ONLY = ("warren_bundle/fetch/", "warren_bundle/payload/runtime_record.py")


def spawns_without_env(path: Path, base: Path = REPO) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in SPAWNERS:
            explicit = any(k.arg == "env" for k in node.keywords)
            if not explicit and ast.unparse(node.func) != "os.execve":
                found.append(f"{path.relative_to(base)}:{node.lineno}")
    return found


def test_every_program_the_runtime_starts_gets_an_explicit_environment() -> None:
    offenders = [
        hit
        for path in sorted((REPO / "warren_bundle").rglob("*.py"))
        if not str(path.relative_to(REPO)).startswith(BUILD_ONLY)
        for hit in spawns_without_env(path)
    ]
    assert offenders == [], "pass env=child_env() (runtime/childenv.py): " + ", ".join(offenders)


def test_the_rule_finds_a_spawn_without_env(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import subprocess\nsubprocess.run(['modprobe', 'br_netfilter'])\n")
    assert spawns_without_env(sample, tmp_path) == ["sample.py:2"]


def test_restore_gives_back_the_callers_value() -> None:
    env = {"LD_LIBRARY_PATH": "/cache/runtime/d/_internal", "LD_LIBRARY_PATH_ORIG": "/opt/lib"}
    restore_library_path(env)
    assert env == {"LD_LIBRARY_PATH": "/opt/lib"}


def test_restore_drops_the_runtimes_value_when_the_caller_had_none() -> None:
    env = {"LD_LIBRARY_PATH": "/cache/runtime/d/_internal", "PATH": "/usr/bin"}
    restore_library_path(env)
    assert env == {"PATH": "/usr/bin"}


def test_a_child_of_the_source_tree_keeps_the_callers_value() -> None:
    assert child_env(base={"LD_LIBRARY_PATH": "/opt/lib"})["LD_LIBRARY_PATH"] == "/opt/lib"
