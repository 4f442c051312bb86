"""The systemd unit install.sh writes, rendered by its own functions (no download, no root)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from support import INSTALL_SH


def unit_text(tmp_path: Path, *args: str, **env: str) -> str:
    """install.sh's unit_text with the given settings: the script without its last line (main)."""
    lib = tmp_path / "install-lib.sh"
    lines = INSTALL_SH.read_text().splitlines()
    assert lines[-1] == 'main "$@"'
    lib.write_text("\n".join(lines[:-1]) + "\n")
    script = f'. "{lib}"; unit_text {" ".join(args)}'
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


def test_the_rootless_unit_comes_from_the_same_settings_table(tmp_path: Path) -> None:
    """`unit_text user` writes the user unit: the system unit's timeouts and restart
    settings, nothing a user's systemd refuses a user, and default.target."""
    common = dict(
        BIN="/home/u/.local/bin/warren",
        UNINSTALL="/home/u/.local/bin/warren-uninstall.sh",
        ENV_FILE="/home/u/.config/systemd/user/warren-containerd.service.env",
        EXEC_ARGS="containerd run --ready-timeout 120",
        DATA_DIR="/home/u/.local/share/warren",
    )
    system = unit_text(tmp_path, **common).splitlines()
    user = unit_text(tmp_path, "user", **common).splitlines()
    shared = [line for line in system if line.startswith(("Watchdog", "TimeoutStart", "Restart"))]
    assert len(shared) == 4 and all(line in user for line in shared)
    for line in ("Type=notify", "Delegate=yes", "WantedBy=default.target", "KillMode=mixed"):
        assert line in user, user
    assert "ExecStart=/home/u/.local/bin/warren containerd run --ready-timeout 120" in user
    refused = ("ExecStartPre", "ExecStopPost", "OOMScoreAdjust", "LimitNOFILE", "After=network")
    assert not [line for line in user if line.startswith(refused)], user
    assert "WantedBy=multi-user.target" in system and "KillMode=process" in system


def test_install_sh_checks_the_rootless_requirements_doctor_checks() -> None:
    """install.sh --rootless refuses by the same list as `warren doctor` (and by its names)."""
    from warren_bundle.runtime.rootless import requirements

    named = set(re.findall(r"need_rootless (\S+) ", INSTALL_SH.read_text())) - {"NAME"}
    needed = {req.name for req in requirements() if not req.warning_only}
    assert named == needed
    warned = {req.name for req in requirements() if req.warning_only}
    assert warned == {"cgroup-delegation"} and "cgroup-delegation:" in INSTALL_SH.read_text()
