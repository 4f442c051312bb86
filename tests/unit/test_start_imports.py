"""What `containerd start` imports before containerd answers is on its critical path: every
module there is paid at each start (docs/bench.md, start-to-ready). Modules only some paths
need are imported where they are used; this holds the heavy ones out of the start's path."""

from __future__ import annotations

import json
import subprocess
import sys

# The modules the start path loads: the CLI, the client-side control, the supervisor it forks.
START_PATH = [
    "warren_bundle.cli.main",
    "warren_bundle.runtime.backend",
    "warren_bundle.runtime.control",
    "warren_bundle.runtime.switching",
    "warren_bundle.store.checks",
    "warren_bundle.runtime.rundir",
    "warren_bundle.runtime.config",
    "warren_bundle.runtime.foreground",
    "warren_bundle.runtime.supervisor",
    "warren_bundle.runtime.hooks",
    "warren_bundle.safewrite",  # hosts.toml and the CNI conflist, written before the spawn
]
# Each with who needs it instead: an upgrade's download; the gRPC probe (imported after spawn,
# while containerd starts); the image import (in its own thread, after readiness).
NOT_BEFORE_SPAWN = {
    "urllib.request": "warren upgrade --from URL",
    "http.client": "warren upgrade --from URL",
    "h2.connection": "grpc_unix.preload, after containerd is spawned",
    "warren_bundle.airgap": "the image import thread",
    "warren_bundle.store.upgrade": "warren upgrade",
    "warren_bundle.runtime.service": "a restart through the service manager",
    # OpenSSL's init (~15 ms): safewrite's temporary names come from os.urandom, not `secrets`.
    "_hashlib": "a digest check (store.unpack, payload checks), never a plain start",
    "secrets": "nothing on the start path",
    # Only the command's own module: the CLI loads a subcommand's module on its first lookup.
    "warren_bundle.cli.images": "warren images",
    "warren_bundle.cli.lima": "warren lima",
    "warren_bundle.cli.versions": "warren versions, rollback, upgrade",
    "warren_bundle.cli.observe": "warren doctor, metrics",
    "warren_bundle.cli.node": "warren crictl, kubelet-flags",
}


def test_the_start_path_imports_nothing_it_does_not_need_before_spawn() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {START_PATH!r}: importlib.import_module(name)\n"
        "from warren_bundle.cli.main import cli\n"
        "cli.get_command(None, 'containerd')\n"
        f"print(' '.join(m for m in {sorted(NOT_BEFORE_SPAWN)!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not out, {name: NOT_BEFORE_SPAWN[name] for name in out}


def test_every_command_is_loaded_by_name_and_help_lists_them_all() -> None:
    """SUBCOMMANDS is the one table of the commands in other modules: each name loads its own
    command, and the group's listing (help, completion) holds exactly those and main's own."""
    code = (
        "import click, json\n"
        "from warren_bundle.cli.main import SUBCOMMANDS, cli\n"
        "own = sorted(cli.commands)\n"
        "found = {n: getattr(cli.get_command(click.Context(cli), n), 'name', None)"
        " for n in SUBCOMMANDS}\n"
        "print(json.dumps([own, found, cli.list_commands(click.Context(cli))]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    own, found, listed = json.loads(out)
    assert found == {name: name for name in found}
    assert "version" in own
    assert set(listed) == set(own) | set(found)
