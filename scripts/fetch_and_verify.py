#!/usr/bin/env python3
"""Download, verify and stage containerd + runc for the warren payload.

The build's entry point (the Makefile, scripts/build_arm64.sh, CI and the docs name this path);
the pipeline itself is the package warren_bundle.fetch, which the frozen file leaves out. Run
from the repo root:

    python scripts/fetch_and_verify.py [--arch amd64|arm64|all] [--source auto|...] ...

Exit codes follow warren_bundle.errors.ExitCode: 8 checksum mismatch, 2 usage, 1 anything else.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This checkout's package, not whichever warren_bundle the interpreter would find first.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from warren_bundle.fetch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
