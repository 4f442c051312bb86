"""The systemd unit install.sh writes, rendered by its own functions (no download, no root)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from support import INSTALL_SH


def unit_text(tmp_path: Path, **env: str) -> str:
    """install.sh's unit_text with the given settings: the script without its last line (main)."""
    lib = tmp_path / "install-lib.sh"
    lines = INSTALL_SH.read_text().splitlines()
    assert lines[-1] == 'main "$@"'
    lib.write_text("\n".join(lines[:-1]) + "\n")
    script = f'. "{lib}"; unit_text'
    out = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_a_percent_in_a_dir_is_escaped_for_systemd(tmp_path: Path) -> None:
    """systemd expands "%x" specifiers in Environment= and Exec lines: WARREN_DATA_DIR=/srv/a%b
    went in as is, and systemd made it /srv/a<something>b (or dropped the line)."""
    text = unit_text(
        tmp_path,
        WARREN_DATA_DIR="/srv/w%bx",
        WARREN_RUN_DIR="/run/w%i",
        DATA_DIR="/srv/w%bx",
        BIN="/opt/100%/warren",
        UNINSTALL="/opt/100%/warren-uninstall.sh",
        ENV_FILE="/etc/systemd/system/warren-containerd.service.env",
        EXEC_ARGS="containerd run --ready-timeout 120",
    )
    assert "Environment=WARREN_DATA_DIR=/srv/w%%bx" in text, text
    assert "Environment=WARREN_RUN_DIR=/run/w%%i" in text, text
    for line in text.splitlines():
        if line.startswith(("Exec", "Environment")):
            assert not re.search(r"%[^%]", line.replace("%%", "")), line
    assert "ExecStart=/opt/100%%/warren containerd run" in text
    assert "/srv/w%%bx/*containerd-shim-runc-v2*" in text
