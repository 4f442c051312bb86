"""Everything about versions on disk: one atomic version-dir primitive (atomic.py), the
payload's extraction (extract.py, checks.py, unpack.py, stamp.py), listing, pins, in-use and prune
(versions.py), the one containerd version parser and the upgrade/rollback rules (compat.py), what
a supervisor installs and records (install.py), and what `warren version` says (info.py).

Nothing here is imported at package import: `warren version` loads only info.py.
"""
