"""`limactl`: finding it, running it, and reading what it says.

The one place warren looks for limactl (the argument, `LIMACTL`, then PATH), runs it (no stdin,
the child environment, output captured and optionally logged) and parses `limactl list --json`.
The manager and the doctor both go through here, so they agree on what "installed" and an
instance's status mean.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from warren_bundle.errors import LimaError
from warren_bundle.runtime.childenv import child_env

ENV_LIMACTL = "LIMACTL"
INSTALL_HINT = "Lima is not installed. Install with: brew install lima"

# The statuses `limactl list` reports that warren acts on, and ours for an instance it lacks.
RUNNING, STOPPED, BROKEN, ABSENT = "Running", "Stopped", "Broken", "absent"

_LOGRUS_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def find_limactl(explicit: str | os.PathLike[str] | None = None) -> str:
    """limactl from the argument, LIMACTL or PATH; LimaError (exit 9) when there is none."""
    if explicit:
        where, candidate = "the limactl argument", os.fspath(explicit)
    elif os.environ.get(ENV_LIMACTL):
        where, candidate = f"{ENV_LIMACTL}", os.environ[ENV_LIMACTL]
    else:
        found = shutil.which("limactl")
        if found is None:
            raise LimaError(INSTALL_HINT, "no limactl on PATH (check: which limactl)")
        return found
    if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
        raise LimaError(INSTALL_HINT, f"{where} names {candidate}, which is not an executable file")
    return candidate


def find_instance(list_json: str, instance: str) -> dict[str, Any] | None:
    """`instance`'s entry in `limactl list --json` output (one JSON object per line), or None."""
    for line in list_json.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("name") == instance:
            entry.setdefault("status", "Unknown")
            return entry
    return None


def last_line(text: str) -> str:
    """limactl's last line of output; just the message of a logrus `level=… msg="…"` line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "no output"
    match = _LOGRUS_MSG.search(lines[-1])
    return match.group(1).replace('\\"', '"') if match else lines[-1]


def stderr_progress(line: str) -> None:
    """The default progress sink: one `warren: …` line on stderr."""
    print(f"warren: {line}", file=sys.stderr, flush=True)


class Limactl:
    """One limactl executable, run with no stdin in warren's child environment.

    With a `log_file`, every invocation and its output is appended to it (`prepare` is called
    first: it creates the directory). Every failure is a LimaError that carries `remedy`.
    """

    def __init__(
        self,
        path: str,
        log_file: Path | None = None,
        *,
        prepare: Callable[[], None] | None = None,
        remedy: str | None = None,
    ) -> None:
        self.path = path
        self.log_file = log_file
        self._prepare = prepare
        self.remedy = remedy

    @contextmanager
    def log(self) -> Iterator[IO[str]]:
        """The log, opened for appending (os.devnull without one)."""
        if self.log_file is not None and self._prepare is not None:
            self._prepare()
        with open(self.log_file or os.devnull, "a") as log:
            yield log

    def output_since(self, offset: int) -> str:
        """What the log holds from `offset` on ("" without a log)."""
        if self.log_file is None:
            return ""
        with suppress(OSError), open(self.log_file) as log:
            log.seek(offset)
            return log.read()
        return ""

    def run(
        self, args: Sequence[str], timeout: float | None, *, check: bool = True, merge: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run limactl; its output goes to the log, and a failure names limactl's last line.

        `merge` puts stderr into stdout (what a person reads); without it stdout stays clean for
        parsing, and is logged only when limactl failed. A limactl that cannot be run, does not
        finish in `timeout` or (with `check`) exits non-zero is a LimaError.
        """
        try:
            done = subprocess.run(
                [self.path, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                text=True,
                timeout=timeout,
                env=child_env(),
            )
        except OSError as exc:
            raise LimaError(INSTALL_HINT, f"cannot run {self.path}: {exc.strerror}") from exc
        except subprocess.TimeoutExpired as exc:
            raise LimaError(
                f"limactl {' '.join(args)} did not finish in {timeout or 0:.0f}s", self.remedy
            ) from exc
        with self.log() as log:
            log.write(f"$ limactl {' '.join(args)}  # exit {done.returncode}\n")
            if merge or done.returncode != 0:
                log.write(done.stdout)
            if done.stderr:
                log.write(done.stderr)
        if check and done.returncode != 0:
            detail = last_line((done.stderr or "") + "\n" + done.stdout)
            raise LimaError(
                f"limactl {' '.join(args)} failed (exit {done.returncode}): {detail}", self.remedy
            )
        return done

    def list_instance(self, instance: str, timeout: float) -> dict[str, Any] | None:
        """`instance`'s entry of `limactl list --json`, or None; LimaError when limactl fails."""
        return find_instance(self.run(["list", "--json"], timeout, merge=False).stdout, instance)

    def spawn(self, args: Sequence[str]) -> tuple[subprocess.Popen[bytes], int]:
        """Start limactl ARGS in the background, its output appended to the log (`start`).

        Also returns where its output starts in the log, taken before the child can write to it.
        """
        with self.log() as log:
            log.write(f"$ limactl {' '.join(args)}\n")
            log.flush()
            offset = log.tell()
            proc = subprocess.Popen(
                [self.path, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=child_env(),
            )
        return proc, offset

    def reap(self, proc: subprocess.Popen[bytes], command: str) -> None:
        """End a spawned limactl (terminated, killed if it ignores that for 10s); log its exit."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with self.log() as log:
            log.write(f"# limactl {command} exited {proc.returncode}\n")
