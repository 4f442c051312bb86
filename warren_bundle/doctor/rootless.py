"""What a user's rootless containerd needs (runtime/rootless.py), one check each with its fix.

Run for a user without root only; root's containerd needs none of it.
"""

from __future__ import annotations

from warren_bundle.doctor.base import Check, failed, passed, warned
from warren_bundle.errors import ExitCode
from warren_bundle.runtime.rootless import Requirement, requirements


def as_check(req: Requirement) -> Check:
    name = f"rootless {req.name}"
    if req.ok:
        return passed(name, req.passed)
    if req.warning_only:
        return warned(name, req.detail, req.fix)
    return failed(name, req.detail, req.fix, ExitCode.PERMISSION)


def rootless_checks() -> list[Check]:
    return [as_check(req) for req in requirements()]
