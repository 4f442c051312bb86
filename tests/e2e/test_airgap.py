"""An air-gapped host: the installed frozen file, in a network namespace with no interfaces but a
down loopback (`unshare -n`), on an empty data dir holding one image archive, extracts, starts,
imports and runs a container, then stops.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import IN_CI, have
from support import (
    TEST_IMAGE,
    FileServer,
    busybox_image,
    cleanup_runtime,
    make_paths,
    run_installer,
    short_dir,
    stage_release,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

GREETING = "hello from an air-gapped warren"

OFFLINE_SCRIPT = f"""
set -eu
printf 'interfaces:'
awk -F: 'NR > 2 {{ gsub(/ /, "", $1); printf " %s", $1 }}' /proc/net/dev
echo
if curl -s -o /dev/null --max-time 5 "$RELEASE_URL/SHA256SUMS"; then
    echo "network: reachable"
else
    echo "network: unreachable"
fi
warren containerd start
warren images status --wait 60
warren ctr run --rm {TEST_IMAGE} airgap echo "{GREETING}"
warren containerd stop
"""


def test_installed_binary_runs_a_container_without_network(
    frozen_exe: Path, root_required: None, tmp_path: Path
) -> None:
    if not have("unshare"):
        if IN_CI:
            pytest.fail("CI prerequisite missing: unshare (util-linux)")
        pytest.skip("unshare is not installed")
    base = short_dir("wa")
    paths = make_paths(base)
    bin_dir = base / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
    for var in ("CONTAINERD_ADDRESS", "PYTHONPATH"):
        env.pop(var, None)
    env.update(
        WARREN_BIN_DIR=str(bin_dir),
        WARREN_DATA_DIR=str(paths.data_dir),
        WARREN_RUN_DIR=str(paths.run_dir),
        WARREN_CONFIG_DIR=str(paths.config_dir),
        WARREN_SYSTEM_SOCKET=str(base / "no-system.sock"),
        PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    try:
        with FileServer(stage_release(tmp_path / "release", frozen_exe)) as server:
            installed = run_installer(server.url, {**env, "WARREN_BASE_URL": server.url})
            assert installed.returncode == 0, installed.stderr
            paths.images_dir.mkdir(parents=True)
            busybox_image(paths.images_dir / "busybox.tar")
            assert sorted(p.name for p in paths.data_dir.iterdir()) == ["images"]

            offline = subprocess.run(
                ["unshare", "-n", "sh", "-c", OFFLINE_SCRIPT],
                env={**env, "RELEASE_URL": server.url},
                capture_output=True,
                text=True,
                timeout=240,
                stdin=subprocess.DEVNULL,
            )

        out = offline.stdout
        assert offline.returncode == 0, (out, offline.stderr)
        assert "interfaces: lo\n" in out, "the namespace has an interface besides loopback"
        assert "network: unreachable" in out, "the release server was reachable from inside"
        assert "containerd started:" in out
        assert "imported busybox.tar into default, k8s.io" in out
        assert GREETING in out.splitlines()
        assert "stopped warren supervisor" in out
        assert (paths.bin_dir / "containerd").is_file(), "the payload was not extracted"
    finally:
        cleanup_runtime(paths, base)
        shutil.rmtree(base, ignore_errors=True)
