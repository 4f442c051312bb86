"""`warren doctor`: every reason the embedded containerd could fail on this host, one check each.

Each check reports PASS, WARN or FAIL with one line of what it found and, unless it passed, the
remedy. The seed's troubleshooting cases (binary not embedded, permission denied, Lima not
installed, VM fails to start, socket not found) are checks that report the seed's symptom and
solution. The doctor only looks: it creates, removes and starts nothing.

    base            Level, Check, Inputs and the passed/warned/failed builders
    run             which checks run on this OS, run_checks, exit_status, summary
    payload_checks  the payload (re-hashed) and the extracted binaries
    host            platform, privileges, cgroups, kernel, overlayfs
    storage         the data dir: writable, exec allowed, free space
    sockets         pidfiles, the socket, a system containerd
    lima            macOS: Lima installed, the VM and its socket

Host facts (mounts, cgroups, kernel) come from warren_bundle.hostinfo, limactl from
warren_bundle.lima.limactl: the doctor reads them, it does not re-implement them.
"""
