"""Host side of the VM test layer: cached Debian guests booted under QEMU (TCG), the release
carried in over 9p, results and timings carried out.

  python -m tests.vm.harness [GUEST...]    boot the guests, print the report (make test-vm runs
                                           the pytest layer tests/vm/, which uses this)

Guest roots are debootstrapped once by scripts/vm/build-image.sh into WARREN_VM_CACHE
(/var/cache/warren-vm, keyed by suite + package list); every run boots a throw-away qcow2 overlay
of the cached image. Nested KVM hangs at boot on the machines this was written on ("Probing
EDD"), so the accelerator is TCG (WARREN_VM_ACCEL to change it) and the kernel gets edd=off.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("WARREN_VM_CACHE", "/var/cache/warren-vm"))
RELEASE = Path(os.environ.get("WARREN_VM_RELEASE", REPO / "dist"))
ACCEL = os.environ.get("WARREN_VM_ACCEL", "tcg,thread=multi")
MEMORY = os.environ.get("WARREN_VM_MEMORY", "2048")
# vCPUs per guest. Two when one guest runs alone; tests/vm/test_vm.py sets one when several boot
# at once: on 2 host cores, three 2-vCPU TCG guests ran a fixed workload in 220 s each, three
# 1-vCPU guests in 180 s (a guest kernel waiting on a descheduled vCPU thread).
SMP = os.environ.get("WARREN_VM_SMP", "2")
# The CPU model TCG emulates. Not "max": with its AVX2 and SHA extensions emulated, guests ran
# slower (alone, 2 vCPUs: sha256 of 50 MB in 8.0 s vs 2.9 s, a `warren version` 6.0 s vs 5.6 s,
# boot plus those checks 101 s vs 82 s). x86-64 baseline code is what Debian ships anyway.
CPU = os.environ.get("WARREN_VM_CPU", "qemu64")
MAX_BOOTS = 5
RELEASE_FILES = (
    "install.sh",
    "SHA256SUMS",
    "SHA256SUMS.sig",
    "warren-linux-amd64",
    "warren-linux-amd64-static",
)
# (7) The next release for the upgrade scenario, published as release/next/: on the bookworm
# guests the frozen warren with containerd 1.7 that `make test-payloads` builds
# (scripts/test_payloads.py); on bullseye, where that dynamic build cannot run, the static file
# of the next warren version with the same payload (scripts/next_release.py).
NEXT_EXE = os.environ.get("WARREN_VM_NEXT_EXE", "")
NEXT_STATIC = os.environ.get("WARREN_VM_NEXT_STATIC", "")
RUNTIME_VENV = Path(os.environ.get("WARREN_VM_RUNTIME_VENV", REPO / "build/cache/runtime-venv"))
LAUNCHER = Path(os.environ.get("WARREN_VM_LAUNCHER", REPO / "build/launcher/warren-launcher-amd64"))
STATIC_PAYLOAD = Path(
    os.environ.get("WARREN_VM_STATIC_PAYLOAD", REPO / "build/payload-static/linux-amd64")
)


@dataclass(frozen=True)
class Guest:
    name: str
    suite: str
    cmdline: str = ""
    # The build the installer must pick with no options: the static one where glibc is older.
    flavour: str = "dynamic"
    # (7) What the next release changes: "containerd" (1.6 -> 1.7, a dynamic build for bookworm's
    # glibc) or "warren" (the next warren version, static, with the same payload); "" skips the
    # upgrade on a guest where it would prove nothing the others do not.
    upgrade: str = "containerd"
    # The image (scripts/vm/build-image.sh KIND): "systemd", "openrc" (sysvinit + OpenRC as
    # init, no systemd) or "hardened" (systemd; noexec temporary dirs, umask 027, tinyproxy).
    kind: str = "systemd"
    # (4) The air-gap import at start, and its once-only check (a restart): one guest is enough.
    airgap: bool = False
    # `warren rollback` under systemd after the upgrade (MainPID, unit active, options kept).
    rollback: bool = False
    # A user's install.sh --rootless: the user unit, a container, a published port, lingering
    # across the reboot, the next release and `warren rollback` under the user unit, the purge.
    rootless: bool = False
    # Seconds for the whole run (all boots) before the host kills QEMU.
    # 1500 s was too short with five guests at once on 2 shared cores: the upgrade guests
    # reached their last phase after about 1300 s.
    timeout: float = float(os.environ.get("WARREN_VM_TIMEOUT", "2700"))

    @property
    def init(self) -> str:
        return "openrc" if self.kind == "openrc" else "systemd"


ROOTLESS = os.environ.get("WARREN_VM_ROOTLESS", "1") != "0"


# Six hosts would not fit the layer's 15 minutes on 2 cores, so the hardened host is the cgroup v2
# bookworm guest (hardening changes nothing cgroup v2 proves, and the cgroup v1 guest keeps a
# plain bookworm), and each scenario that proves nothing new on a guest is left out there: the
# containerd upgrade runs on the hardened guest (through the proxy and a noexec /tmp) and on
# trixie (with the rollback after it), the warren-only one on bullseye; the air-gap import on
# the hardened guest only.
GUESTS = {
    g.name: g
    for g in (
        Guest("bookworm-cgroup2-hardened", "bookworm", kind="hardened", airgap=True),
        Guest("bookworm-cgroup1", "bookworm", "systemd.unified_cgroup_hierarchy=0", upgrade=""),
        # (6) The older host: glibc 2.31, systemd 247, and cgroup v1 as such hosts often run
        # (bullseye itself defaults to v2): the installer must pick the static build. With v1
        # here, the default layer covers what bookworm-cgroup1 does without a boot of its own.
        Guest(
            "bullseye",
            "bullseye",
            "systemd.unified_cgroup_hierarchy=0",
            flavour="static",
            upgrade="warren",
        ),
        # The newest Debian: systemd 257, cgroup v2 only, glibc 2.41.
        # It also runs the rootless install (the image carries uidmap, slirp4netns, RootlessKit,
        # logind with dbus): the one systemd guest new enough for a user manager with cgroup
        # delegation by default, and a seventh guest would not fit the layer's budget.
        # WARREN_VM_ROOTLESS=0 leaves it out (what it costs: docs/vm.md).
        Guest("trixie", "trixie", rollback=True, rootless=ROOTLESS),
        # No systemd: sysvinit-core + OpenRC as init; install.sh writes an OpenRC service.
        # The upgrade too: install.sh restarts the OpenRC service onto the next release (1.6 -> 1.7)
        # with a container running, which no systemd guest proves.
        Guest("bookworm-openrc", "bookworm", kind="openrc"),
    )
}


# What `make test-vm` (and so .ci/run) boots: the hardened host, trixie (the rollback under
# systemd and the rootless user), bullseye (the old host: glibc 2.31 and cgroup v1) and the
# OpenRC host. At most three boot at once (test_vm.PARALLEL): four at once failed here on load
# alone (OpenRC's reboot with a container took 66 s against 30 s without), so the fourth starts
# when the first one is done, and they start longest first (BOOT_ORDER).
# WARREN_VM_GUESTS=all, or a comma list of names, boots bookworm-cgroup1 too: all five took
# 16:05 here against 11:29 for these four (docs/vm.md), over the layer's 15 minutes, and bullseye
# runs cgroup v1 for it.
DEFAULT_GUESTS = ("bookworm-cgroup2-hardened", "trixie", "bullseye", "bookworm-openrc")
# Longest first (measured wall times in docs/vm.md): trixie runs the rootless install as well.
BOOT_ORDER = ("trixie", "bookworm-cgroup2-hardened", "bookworm-openrc", "bullseye",
              "bookworm-cgroup1")  # fmt: skip
MAX_AT_ONCE = 3


def enabled_guests() -> list[str]:
    """The guests this run may boot (WARREN_VM_GUESTS), in GUESTS' order; unknown names fail."""
    wanted = os.environ.get("WARREN_VM_GUESTS", "").strip()
    if wanted == "all":
        return list(GUESTS)
    names = [n.strip() for n in wanted.split(",") if n.strip()] if wanted else DEFAULT_GUESTS
    unknown = sorted(set(names) - set(GUESTS))
    if unknown:
        raise ValueError(f"WARREN_VM_GUESTS names no guest {unknown}; the guests: {list(GUESTS)}")
    return [n for n in GUESTS if n in names]


@dataclass
class Run:
    guest: Guest
    rc: int | None = None
    timed_out: bool = False
    wall: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    console: list[tuple[float, str]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    journals: dict[str, str] = field(default_factory=dict)
    out_dir: Path | None = None

    def failed_steps(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["status"] == "fail"]

    def shutdowns(self) -> dict[str, float]:
        """Seconds from each 'shutdown-start LABEL' mark to the kernel's last line of that boot."""
        found: dict[str, float] = {}
        for i, (t, line) in enumerate(self.console):
            if "WARREN-VM-MARK shutdown-start" in line and "]: WARREN-VM" not in line:
                label = line.split("shutdown-start", 1)[1].strip()
                for t2, later in self.console[i + 1 :]:
                    if "reboot: Restarting system" in later or "reboot: Power down" in later:
                        found[label] = round(t2 - t, 1)
                        break
        return found

    def boots(self) -> list[float]:
        """Seconds from each QEMU start to the scenario unit's first mark of that boot."""
        out = []
        since = 0.0
        for t, line in self.console:
            if line.startswith("WARREN-VM-HOST boot"):
                since = t
            elif "WARREN-VM-MARK boot" in line and "]: WARREN-VM" not in line:
                out.append(round(t - since, 1))
        return out

    def console_tail(self, n: int = 60) -> str:
        return "\n".join(line for _, line in self.console[-n:])

    def explain(self) -> str:
        """The first failed step, the service's journal and the console tail."""
        parts = []
        for s in self.failed_steps()[:1]:
            parts.append(
                f"step {s['phase']}/{s['step']} failed after {s['seconds']} s: {s['detail']}"
            )
            parts.append(s["output"])
        if self.timed_out:
            parts.append(f"QEMU killed after {self.guest.timeout:.0f} s (no power-off)")
        elif self.rc not in (0, None):
            parts.append(f"QEMU exited {self.rc}")
        for name, text in self.journals.items():
            lines = [ln for ln in text.splitlines() if ln.strip()][-40:]
            parts.append(f"--- the service's log ({name}), last lines:")
            parts.extend(lines)
        parts.append("--- console tail:")
        parts.append(self.console_tail())
        return "\n".join(parts)


def build_image(suite: str, kind: str = "systemd") -> Path:
    out = subprocess.run(
        ["sh", str(REPO / "scripts/vm/build-image.sh"), suite, kind],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "WARREN_VM_CACHE": str(CACHE)},
    )
    return Path(out.stdout.strip().splitlines()[-1])


def busybox_archives(dest: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from support import TEST_IMAGE, busybox_image

    busybox_image(dest / "busybox.tar", TEST_IMAGE)
    busybox_image(dest / "airgap.tar", "docker.io/library/busybox:warren-airgap")


def containerd_next() -> Path:
    """The frozen containerd-1.7 warren of `make test-payloads` (built if missing)."""
    if NEXT_EXE:
        return Path(NEXT_EXE)
    out = subprocess.run(
        [str(REPO / ".venv/bin/python"), str(REPO / "scripts/test_payloads.py")],
        check=True, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    built = json.loads(out.stdout[out.stdout.index("{") :])
    found = [exe for version, exe in built.items() if version.startswith("1.7.")]
    if not found:
        raise FileNotFoundError("no containerd-1.7 warren for the upgrade: make test-payloads")
    return Path(found[0])


def warren_next() -> Path:
    """The next warren version's static file, same payload (scripts/next_release.py)."""
    if NEXT_STATIC:
        return Path(NEXT_STATIC)
    out = subprocess.run(
        [str(REPO / ".venv/bin/python"), str(REPO / "scripts/next_release.py"),
         "--runtime-venv", str(RUNTIME_VENV), "--launcher", str(LAUNCHER),
         "--payload-dir", str(STATIC_PAYLOAD)],
        check=True, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


def next_release(guest: Guest) -> dict[str, Path]:
    """release/next/'s files (besides install.sh and SHA256SUMS) for `guest`'s upgrade. The
    warren-only one carries this release's dynamic file, which cannot run on bullseye: the
    installer tries it and takes the static one, as on the first install."""
    if not guest.upgrade:
        return {}
    if guest.upgrade == "containerd":
        return {"warren-linux-amd64": containerd_next()}
    return {
        "warren-linux-amd64": RELEASE / "warren-linux-amd64",
        "warren-linux-amd64-static": warren_next(),
    }


def warren_version(exe: Path) -> str:
    """What `exe version --json` calls itself (the static next runs on this host too)."""
    out = subprocess.run([str(exe), "version", "--json"], check=True, stdout=subprocess.PIPE)
    return str(json.loads(out.stdout)["warren"])


def prepare_share(share: Path, guest: Guest) -> None:
    release = share / "release"
    release.mkdir(parents=True)
    for name in RELEASE_FILES:
        src = RELEASE / name
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing: run make release first")
        shutil.copy2(src, release / name)
    nxt = release / "next"
    nxt.mkdir()
    files = next_release(guest)
    for name, src in files.items():
        shutil.copy2(src, nxt / name)
    shutil.copy2(release / "install.sh", nxt / "install.sh")
    # Signed with the key `make release` signed release/ with (the installer checks it).
    key = os.environ.get("RELEASE_SIGNING_KEY")
    if files and not key:
        raise RuntimeError("RELEASE_SIGNING_KEY is not set: the next release must be signed")
    if files:
        subprocess.run([str(REPO / "scripts/sign_release.sh"), str(nxt), str(key), *files],
                       check=True)  # fmt: skip
    busybox_archives(share)
    shutil.copy2(REPO / "scripts/vm/guest.py", share / "guest.py")
    (share / "guest-run.sh").write_text(
        "#!/bin/sh\nPYTHONDONTWRITEBYTECODE=1 exec python3 /mnt/share/guest.py\n"
    )
    config = {
        "guest": guest.name,
        "flavour": guest.flavour,
        "upgrade": guest.upgrade,
        # The next release's warren: the upgrade's status must name it as the supervisor's.
        "next_warren": warren_version(files.get("warren-linux-amd64-static") or files[
            "warren-linux-amd64"]) if files else "",
        "init": guest.init,
        "hardened": guest.kind == "hardened",
        "airgap": guest.airgap,
        "rollback": guest.rollback,
        "rootless": guest.rootless,
    }  # fmt: skip
    (share / "guest.json").write_text(json.dumps(config))


# Run dirs kept per guest (console, results, journals; a failed run's overlay too): each holds
# copies of the release (100 MB or more), and CI reruns on the same machine.
KEEP_RUNS = int(os.environ.get("WARREN_VM_KEEP_RUNS", "3"))


def prune_runs(guest: Guest, runs: Path) -> None:
    """Remove all but the newest KEEP_RUNS - 1 earlier runs of `guest` (the new one makes KEEP)."""
    old = sorted(runs.glob(f"warren-vm-{guest.name}.*"), key=lambda p: p.stat().st_mtime)
    for stale in old[: max(0, len(old) - (KEEP_RUNS - 1))]:
        shutil.rmtree(stale, ignore_errors=True)


def run_guest(guest: Guest, keep: Path | None = None) -> Run:
    """Boot `guest` on a fresh overlay until it powers off (every phase), within its timeout."""
    image = build_image(guest.suite, guest.kind)
    if keep is None:
        prune_runs(guest, CACHE / "runs")
    work = Path(tempfile.mkdtemp(prefix=f"warren-vm-{guest.name}.", dir=keep or CACHE / "runs"))
    share = work / "share"
    prepare_share(share, guest)
    overlay = work / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image / "base.qcow2"),
         str(overlay)],
        check=True,
    )  # fmt: skip
    append = f"root=/dev/vda rw console=ttyS0 edd=off panic=-1 {guest.cmdline}".strip()
    cmd = [
        "qemu-system-x86_64", "-accel", ACCEL, "-cpu", CPU, "-m", MEMORY, "-smp", SMP,
        # -nodefaults: no floppy, CD-ROM, parallel port or VGA for udev to probe at every boot
        # (29.9 s against 34.2 s to graphical.target, trixie alone). The kernel's entropy from
        # the host (virtio-rng) as real hosts have it from their CPU: without it the crng was
        # ready only ~90 s into an OpenRC boot.
        "-nodefaults", "-display", "none", "-serial", "stdio", "-monitor", "none", "-nic", "none",
        "-device", "virtio-rng-pci",
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
        "-append", append,
        # cache=unsafe: the overlay is thrown away, so the guest's flushes (journald, containerd's
        # bolt database, every os.sync) need not wait for the host's disk. What the guest wrote
        # is in the file when QEMU exits, for the next boot of the same disk.
        "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe",
        "-virtfs", f"local,path={share},mount_tag=share,security_model=none,id=share",
    ]  # fmt: skip
    run = Run(guest, out_dir=work)
    started = time.monotonic()
    deadline = started + guest.timeout
    # One QEMU per guest boot: the guest powers off where a user's host would reboot (the same
    # systemd shutdown), and the next QEMU boots the same disk. A reboot inside one TCG QEMU
    # booted several times slower here than a fresh one.
    with (work / "console.log").open("w") as log:
        for boot in range(MAX_BOOTS):
            phase = guest_phase(share)
            if phase == "done":
                break
            run.console.append((time.monotonic() - started, f"WARREN-VM-HOST boot {boot} {phase}"))
            if not boot_once(run, cmd, log, started, deadline) or guest_phase(share) == phase:
                break  # killed, failed, or the scenario did not run: explain() tells
    run.wall = round(time.monotonic() - started, 1)
    collect(run, share)
    (work / "run.json").write_text(json.dumps(summary(run), indent=2))
    if not keep and not run.failed_steps() and not run.timed_out:
        overlay.unlink(missing_ok=True)
    return run


def load_run(guest: Guest, work: Path) -> Run:
    """A finished run read back from its directory (WARREN_VM_RESULTS: re-check without booting)."""
    run = Run(guest, out_dir=work)
    for raw in (work / "console.log").read_text(errors="replace").splitlines():
        t, _, line = raw.strip().partition(" ")
        try:
            run.console.append((float(t), line))
        except ValueError:
            continue
    saved = json.loads((work / "run.json").read_text())
    run.rc, run.timed_out, run.wall = saved["qemu_rc"], saved["timed_out"], saved["wall_s"]
    collect(run, work / "share")
    return run


def collect(run: Run, share: Path) -> None:
    results = share / "results.jsonl"
    if results.exists():
        run.steps = [json.loads(ln) for ln in results.read_text().splitlines() if ln.strip()]
    for journal in sorted(share.glob("journal-*.txt")):
        run.journals[journal.stem.removeprefix("journal-")] = journal.read_text()


def guest_phase(share: Path) -> str:
    state = share / "state.json"
    return str(json.loads(state.read_text())["phase"]) if state.exists() else "install"


def boot_once(run: Run, cmd: list[str], log: IO[str], started: float, deadline: float) -> bool:
    """One QEMU until the guest powers off; False when it had to be killed at the deadline."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            t = time.monotonic() - started
            run.console.append((t, line))
            log.write(f"{t:8.2f} {line}\n")
            log.flush()
            if "WARREN-VM-MARK" in line and "]: WARREN-VM" not in line:
                run.marks.append((t, line))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        run.rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        run.timed_out = True
        proc.kill()
        proc.wait()
    thread.join(timeout=10)
    return not run.timed_out and run.rc == 0


def summary(run: Run) -> dict[str, Any]:
    return {
        "guest": run.guest.name,
        "wall_s": run.wall,
        "qemu_rc": run.rc,
        "timed_out": run.timed_out,
        "boots_s": run.boots(),
        "shutdowns_s": run.shutdowns(),
        "steps": [
            {k: s[k] for k in ("phase", "step", "status", "seconds", "detail")} for s in run.steps
        ],
        "dir": str(run.out_dir),
    }


def report(runs: list[Run]) -> str:
    lines = []
    for run in runs:
        lines.append(
            f"== {run.guest.name}: {run.wall:.0f} s wall, boots {run.boots()} s, "
            f"shutdowns {run.shutdowns()} s, qemu rc {run.rc}{' TIMEOUT' if run.timed_out else ''}"
        )
        for s in run.steps:
            lines.append(
                f"   {s['status']:5} {s['seconds']:7.1f}s  {s['phase']}/{s['step']}  {s['detail']}"
            )
            if s["status"] == "fail" and s["step"] != "phase-aborted":
                # The step's own last lines: its detail is one line, the cause is often below it.
                tail = [ln for ln in str(s.get("output", "")).splitlines() if ln.strip()][-5:]
                lines.extend(f"          | {ln}" for ln in tail)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    names = argv or list(GUESTS)
    (CACHE / "runs").mkdir(parents=True, exist_ok=True)
    runs = [run_guest(GUESTS[n]) for n in names]
    print(report(runs))
    bad = [r for r in runs if r.failed_steps() or r.timed_out]
    for r in bad:
        print(f"\n##### {r.guest.name} failed\n{r.explain()}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
