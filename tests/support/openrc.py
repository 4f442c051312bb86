"""install.sh's OpenRC service under the real openrc-run and supervise-daemon (Debian's openrc).

tests/e2e/test_install_openrc.py and tests/e2e/test_upgrade_frozen.py install warren into a
scratch root with its OpenRC script and run that script by path. OpenRC did not boot this host,
so openrc-run wants /run/openrc/softlevel and the state dirs its boot leaves: `openrc_state`
makes them, and removes what was not there before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from warren_bundle.paths import Paths

OPENRC_RUN = Path("/sbin/openrc-run")
SERVICE = "warren-containerd"
STATE_DIRS = (
    *("daemons", "exclusive", "failed", "hotplugged", "inactive", "options", "scheduled"),
    *("started", "starting", "stopping", "tmp", "wasinactive"),
)


def have_openrc() -> bool:
    return OPENRC_RUN.is_file() and shutil.which("supervise-daemon") is not None


@contextlib.contextmanager
def openrc_state() -> Iterator[None]:
    """/run/openrc as OpenRC's boot leaves it (openrc-run makes it only with no /run/openrc)."""
    had_openrc = Path("/run/openrc").exists()
    softlevel = Path("/run/openrc/softlevel")
    had_softlevel = softlevel.exists()
    for state in STATE_DIRS:
        (softlevel.parent / state).mkdir(parents=True, exist_ok=True)
    softlevel.touch()
    try:
        yield
    finally:
        if not had_softlevel:
            softlevel.unlink(missing_ok=True)
        if not had_openrc:
            shutil.rmtree("/run/openrc", ignore_errors=True)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without WARREN_* or proxy variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if "WARREN_" not in k and "PROXY" not in k}
    env.update(extra)
    return env


def install_env(bin_dir: Path, openrc_dir: Path, paths: Paths, **extra: str) -> dict[str, str]:
    """install.sh's environment for an install into bin_dir with its script in openrc_dir (the
    file already there: WARREN_INSTALL_SKIP_DOWNLOAD)."""
    return clean_env(
        WARREN_INSTALL_SKIP_DOWNLOAD="true",
        WARREN_BIN_DIR=str(bin_dir),
        WARREN_OPENRC_DIR=str(openrc_dir),
        WARREN_DATA_DIR=str(paths.data_dir),
        WARREN_RUN_DIR=str(paths.run_dir),
        WARREN_CONFIG_DIR=str(paths.config_dir),
        **extra,
    )


def openrc_run(
    script: Path, action: str, timeout: float = 360, **extra: str
) -> subprocess.CompletedProcess[str]:
    """`openrc-run SCRIPT ACTION`, as the init system runs it (no WARREN_* variables)."""
    return subprocess.run(
        [str(OPENRC_RUN), str(script), action],
        capture_output=True, text=True, timeout=timeout, env=clean_env(**extra),
    )  # fmt: skip
