"""A start rewrites containerd's config and hosts.toml with fsync; when they already hold exactly
those bytes (and mode, and owner) nothing is written (safewrite.holds_already)."""

from __future__ import annotations

import os
from pathlib import Path

from warren_bundle.fsutil import atomic_write
from warren_bundle.safewrite import write_file


def test_the_same_bytes_are_not_written_again(tmp_path: Path) -> None:
    target = write_file(tmp_path, "certs.d/docker.io/hosts.toml", "server = 'x'\n", 0o644)
    inode = target.stat().st_ino
    assert write_file(tmp_path, "certs.d/docker.io/hosts.toml", "server = 'x'\n", 0o644) == target
    assert target.stat().st_ino == inode  # not replaced
    config = tmp_path / "config.toml"
    atomic_write(config, "version = 2\n", 0o600, durable=True)
    inode = config.stat().st_ino
    atomic_write(config, "version = 2\n", 0o600, durable=True)
    assert config.stat().st_ino == inode


def test_other_bytes_a_widened_mode_or_a_symlink_are_replaced(tmp_path: Path) -> None:
    target = write_file(tmp_path, "hosts.toml", "a\n", 0o600)
    first = target.stat().st_ino
    assert write_file(tmp_path, "hosts.toml", "b\n", 0o600).read_text() == "b\n"
    second = target.stat().st_ino
    assert second != first
    os.chmod(target, 0o644)  # someone widened it: the write puts the mode back
    write_file(tmp_path, "hosts.toml", "b\n", 0o600)
    assert target.stat().st_mode & 0o777 == 0o600
    config = tmp_path / "config.toml"
    decoy = tmp_path / "decoy"
    decoy.write_text("version = 2\n")
    os.chmod(decoy, 0o600)
    config.symlink_to(decoy)  # same bytes behind a symlink: replaced by a file of ours
    atomic_write(config, "version = 2\n", 0o600, durable=True)
    assert not config.is_symlink()
