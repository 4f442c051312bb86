"""What every command gets from the root group: the paths, the payload option, --debug."""

from __future__ import annotations

from dataclasses import dataclass

import click

from warren_bundle.paths import Paths


@dataclass
class Context:
    paths: Paths
    payload: str | None
    debug: bool

    def global_args(self) -> list[str]:
        """The root options that make another warren process act on the same dirs."""
        p = self.paths
        args = ["--data-dir", str(p.data_dir), "--run-dir", str(p.run_dir)]
        args += ["--config-dir", str(p.config_dir)]
        if self.payload:
            args += ["--payload", self.payload]
        if self.debug:
            args.append("--debug")
        return args


def current() -> Context:
    obj = click.get_current_context().find_root().obj
    assert isinstance(obj, Context)
    return obj
