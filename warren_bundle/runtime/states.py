"""The supervisor's states and the named sets of them; imports nothing, so anyone can ask.

STOPPED → STARTING → RUNNING → (unexpected exit or failed liveness) BACKOFF → STARTING …;
too many restarts in the window → FATAL; STOPPING → STOPPED.

Two more names exist only as seen from another process (`warren containerd status`):
ORPHANED, containerd runs and answers but no supervisor watches it (the supervisor was killed);
UNRESPONSIVE, containerd's process is alive but its socket does not answer (hung, or still
starting past its deadline).
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    FATAL = "FATAL"
    # Observed from outside the supervisor (see the module docstring).
    ORPHANED = "ORPHANED"
    UNRESPONSIVE = "UNRESPONSIVE"


# A supervisor is on the job: containerd runs or will be (re)started without anyone's help.
SUPERVISED = frozenset({State.STARTING, State.RUNNING, State.BACKOFF})
# containerd answers clients (or did at the last look) in these states.
SERVING = frozenset({State.RUNNING, State.ORPHANED})
# `warren containerd status` exits 0 in these: something runs that the user can act on.
UP = SUPERVISED | {State.ORPHANED, State.UNRESPONSIVE}
# Nothing more will happen without a new start: background work (image import) stops here.
ENDED = frozenset({State.STOPPING, State.STOPPED, State.FATAL})

ALL = tuple(State)


def parse(value: object) -> State:
    """A state read from a file; anything unknown counts as STOPPED."""
    try:
        return State(str(value))
    except ValueError:
        return State.STOPPED
