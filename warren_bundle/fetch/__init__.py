"""Download, verify and stage containerd + runc for the warren payload (build time only).

Every release artifact is checked against a pin in checksums/ before anything from it is
staged; the staged directory (bin/* + manifest.json + payload.tar.zst + payload.json) replaces
the previous one only when every step passed. The entry point is scripts/fetch_and_verify.py,
run from the repo root:

    python scripts/fetch_and_verify.py [--arch amd64|arm64|all] [--source auto|...] ...

Exit codes follow warren_bundle.errors.ExitCode: 8 checksum mismatch, 2 usage, 1 anything else.

The modules, in the order a run uses them: cli (options, errors to exit codes), pipeline (the
sources in order, auto's Debian fallback, pack and swap), pins (artifact names and their
checksums/ pins), release (upstream, mirror and dir artifacts), download (HTTP with timeouts,
retries and resume), archive (the three binaries out of a release tarball), debian (apt-get
download of the suite's packages), staging (files, ELF checks, manifest, swap into --out).

Nothing outside this package imports it, and the frozen file leaves it out (build/spec/warren.spec
EXCLUDES): `requests` and the release pins are a build's business, never a launch's.
"""

from __future__ import annotations

from pathlib import Path

# The checkout this package sits in: checksums/ and build/ are found from here.
REPO = Path(__file__).resolve().parent.parent.parent
