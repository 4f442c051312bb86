"""The forked supervisor tells `containerd start` it is ready through a pipe (runtime/detach.py)."""

from __future__ import annotations

import os
import threading

from warren_bundle.runtime.detach import ReadyPipe, wait_readable


def test_ready_is_one_byte_then_eof_and_a_second_tell_writes_nowhere() -> None:
    r, w = os.pipe()
    pipe = ReadyPipe(w)
    assert wait_readable(r, 0.0) is None  # nothing yet: the parent keeps waiting
    pipe.tell()
    # The fd number the pipe had is reused by the next file opened; a second tell must not
    # write into it.
    reused_r, reused_w = os.pipe()
    try:
        pipe.tell()
        assert wait_readable(reused_r, 0.0) is None
        assert wait_readable(r, 1.0) == b"1"
        assert wait_readable(r, 1.0) == b""  # closed after the byte: EOF
    finally:
        for fd in (r, reused_r, reused_w):
            os.close(fd)


def test_an_exit_before_readiness_is_eof_at_once() -> None:
    r, w = os.pipe()
    closer = threading.Thread(target=os.close, args=(w,))
    closer.start()
    try:
        assert wait_readable(r, 30.0) == b""
    finally:
        closer.join()
        os.close(r)
