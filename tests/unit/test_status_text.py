"""`warren containerd status`'s supervisor row: which warren runs the supervisor."""

from __future__ import annotations

from warren_bundle import __version__
from warren_bundle.cli.containerd import supervisor_cell


def test_the_row_names_the_supervisors_warren_and_build() -> None:
    report = {"supervisor_pid": 42, "warren_version": __version__, "warren_flavour": "static"}
    assert supervisor_cell(report) == f"42 (warren {__version__}, static build)"


def test_a_supervisor_on_another_warren_says_a_restart_runs_this_one() -> None:
    # A new file installed over a running service: the supervisor is still the old warren.
    report = {"supervisor_pid": 42, "warren_version": "0.0.9", "warren_flavour": "dynamic"}
    assert supervisor_cell(report) == (
        f"42 (warren 0.0.9, dynamic build); this warren is {__version__}: "
        "restart the service to run it"
    )


def test_no_live_supervisor_or_an_older_report_shows_the_pid_alone() -> None:
    assert supervisor_cell({"supervisor_pid": None}) == "-"
    assert supervisor_cell({"supervisor_pid": 42}) == "42"  # written before the field existed
    dead = {"supervisor_pid": 42, "warren_version": "0.0.9", "supervisor_alive": False}
    assert supervisor_cell(dead) == "42"
