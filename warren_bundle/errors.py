"""Errors a user sees: each carries one line of cause, one remedy and a distinct exit code."""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    PAYLOAD = 3
    PERMISSION = 4
    PLATFORM = 5
    TIMEOUT = 6
    NOT_RUNNING = 7
    CHECKSUM = 8
    LIMA = 9
    SETTINGS = 10
    # The launcher's own (launcher/launcher.c): no room for the runtime; the runtime would not run.
    NOSPACE = 11
    LAUNCH = 12


class WarrenError(Exception):
    """Base of every error warren reports without a traceback."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def one_line(self) -> str:
        text = self.message if not self.remedy else f"{self.message}; {self.remedy}"
        return " ".join(text.splitlines())

    def __str__(self) -> str:
        return self.one_line()


class PayloadError(WarrenError):
    """The embedded payload is missing, unreadable or fails its digest."""

    exit_code = ExitCode.PAYLOAD

    def __init__(self, detail: str, remedy: str | None = None) -> None:
        super().__init__(
            f"failed to read embedded binary: {detail}",
            remedy or "run 'make build' to download and embed containerd",
        )


class PermissionDeniedError(WarrenError):
    exit_code = ExitCode.PERMISSION


class PlatformError(WarrenError):
    exit_code = ExitCode.PLATFORM


class ReadinessTimeout(WarrenError):
    exit_code = ExitCode.TIMEOUT


class NotRunningError(WarrenError):
    exit_code = ExitCode.NOT_RUNNING


class SettingsDiffer(WarrenError):
    """`containerd start` with settings the running containerd does not run with."""

    exit_code = ExitCode.SETTINGS


class SocketNotFoundError(WarrenError):
    """No containerd answers on the socket a client asked for."""

    exit_code = ExitCode.NOT_RUNNING


class ContainerdNotAnswering(WarrenError):
    """Our containerd's process lives but its socket does not answer (hung, or still starting)."""

    exit_code = ExitCode.NOT_RUNNING


def path_error(exc: OSError, path: object, option: str, action: str = "write") -> WarrenError:
    """One line for an OSError on one of warren's own paths: the path, why, and what to do.

    `option` is the one that moves that path elsewhere (--run-dir, --data-dir, --config-dir).
    EACCES, EPERM and EROFS are permission errors (exit 4); the rest exit 1.
    """
    cause = f"cannot {action} {path}: {exc.strerror or exc}"
    if exc.errno == errno.EROFS:
        return PermissionDeniedError(
            cause, f"remount it read-write, or pass {option} to a writable directory"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDeniedError(
            cause, f"run warren with sudo, or pass {option} to a directory you own"
        )
    if exc.errno == errno.ENOSPC:
        return WarrenError(cause, f"free some space, or pass {option} on a larger filesystem")
    return WarrenError(cause, f"check {path} and its directory, or pass {option}")


class ChecksumMismatch(WarrenError):
    exit_code = ExitCode.CHECKSUM


class LimaError(WarrenError):
    exit_code = ExitCode.LIMA


class UnsafePathError(WarrenError):
    """A data or bin dir that another user could tamper with: refused."""

    exit_code = ExitCode.PERMISSION


class ExtractionError(WarrenError):
    """Writing the binaries failed for a reason on the host (disk full, noexec, lock)."""

    exit_code = ExitCode.ERROR


# --- build time: warren_bundle.fetch (scripts/fetch_and_verify.py) --------------------------


class FetchError(WarrenError):
    """A build-time failure with one line of cause and remedy (exit 1)."""


class PinError(FetchError):
    """An artifact has no usable pin in checksums/."""


class UnsafeArchive(FetchError):
    """A tarball member that could write outside the staging dir, or is not a plain file."""


class Unreachable(FetchError):
    """The host could not be reached at all (DNS, refused, connect timeout): auto falls back."""


class NotFound(FetchError):
    """HTTP 404: a real error (wrong version or mirror layout), never a reason to fall back."""


# --- runtime ----------------------------------------------------------------------------------


class AlreadyRunning(WarrenError):
    """Another supervisor holds this run dir's lock."""


class DirsInUse(WarrenError):
    """Another warren uses this run dir with another data dir, or this data dir with another
    run dir: two containerds would share a root or a socket."""


class ContainerdExited(WarrenError):
    """containerd died (or a stop was asked) while we waited for it to become ready."""


class ConfigError(WarrenError):
    """A value for containerd's config (a mirror, a group) that cannot be used."""


class UsageError(WarrenError):
    """A bad option value found before anything starts (click's usage errors exit 2 too)."""

    exit_code = ExitCode.USAGE


class UpgradeRefused(WarrenError):
    """A containerd version change (upgrade, downgrade, rollback) containerd does not support."""


class NotCarried(WarrenError):
    """This build's payload lacks a part (crictl in a Debian-fallback build): exit 1."""


class ImageImportError(WarrenError):
    """One or more air-gap image archives could not be imported."""


# --- lima -------------------------------------------------------------------------------------


class LimaOptionError(WarrenError):
    """A VM resource or mount option that Lima would reject: nothing is written or started."""

    exit_code = ExitCode.USAGE


class RegistriesError(UsageError):
    """registries.yaml (or --registries FILE) cannot be used: parse error, unknown key, missing
    CA/cert/key file, credentials in a URL. Exit 2, before anything starts."""
