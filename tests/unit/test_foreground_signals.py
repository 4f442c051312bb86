"""`containerd run`'s stop signals: handled in a thread, never inside a Python signal handler.

A Python handler runs in the main thread between two bytecodes, wherever that thread is: also
while it holds the lock of the Event the handler sets (Event.wait re-acquires it at each timeout;
a first handler's own set() holds it when a second signal comes). Each case runs in a child
interpreter with a deadline, so a deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from support import REPO

HOLD_THE_LOCK_AND_SIGNAL = """
import os, signal, threading
stopped = threading.Event()
{install}
with stopped._cond:  # the main thread holds the lock stopped.set() needs
    os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode, in this thread
    for _ in range(1000):
        pass
print("signalled", flush=True)
assert stopped.wait(5), "on_stop never ran"
print("stopped", flush=True)
"""


def run_child(install: str) -> subprocess.CompletedProcess[str] | None:
    script = HOLD_THE_LOCK_AND_SIGNAL.format(install=textwrap.dedent(install))
    try:
        return subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=5,
            cwd=REPO,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None  # deadlocked


def test_a_handler_that_sets_the_event_deadlocks_so_the_case_is_real() -> None:
    # The shape of the old handler: Event.set() inside the Python signal handler.
    got = run_child("signal.signal(signal.SIGTERM, lambda *_: stopped.set())")
    assert got is None, f"expected a deadlock, got {got}"


def test_the_stop_signal_thread_runs_on_stop_whatever_lock_the_main_thread_holds() -> None:
    got = run_child(
        "from warren_bundle.runtime.foreground import _on_stop_signal\n"
        "undo = _on_stop_signal(stopped.set)"
    )
    assert got is not None, "deadlocked: on_stop ran inside the signal handler"
    assert got.returncode == 0 and got.stdout == "signalled\nstopped\n", got.stderr
