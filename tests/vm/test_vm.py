"""Booted Debian guests (systemd as PID 1) install and run the release as its users do:
`curl -sfL …/install.sh | sh -` against the release `make release` wrote, served in the guest.

One QEMU run per guest walks every scenario in two boots (scripts/vm/guest.py: install, service,
container in a slice, kill -9, the upgrade, a reboot with a container running, air-gap import,
rollback, purge); the tests below read that run's per-step results. Timings are printed at the
end (and written to run.json beside each guest's console log under /var/cache/warren-vm/runs/).
"""

from __future__ import annotations

import os
import re
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.vm

_RUNS: dict[str, harness.Run] = {}
# Shutdown with a container running may take this much longer than without one: the unit's
# ExecStopPost gives containers WARREN_SHUTDOWN_GRACE (10 s) between SIGTERM and SIGKILL, and
# the journal must show that interval to within GRACE_PRECISION_S. The slack is what else a
# container's stop costs under TCG with three guests on 2 cores, measured: 3 s from containerd's
# stop to the SIGTERM (the stop line's own commands), 2 s from the SIGKILL to the unit stopped,
# 3 to 6 s unmounting the container's rootfs: 7 to 12 s beyond the grace. The 90 s of systemd's
# final-kill timeout, what a shutdown waited before the stop existed, stays far outside.
GRACE_S = 10
GRACE_PRECISION_S = 2.0
SHUTDOWN_SLACK_S = 15


_STARTED: dict[str, Future[harness.Run]] = {}
# Guests boot concurrently (WARREN_VM_PARALLEL, default up to harness.MAX_AT_ONCE): TCG guests
# wait on their own I/O and timers much of the time, and on 2 cores three at once finish well
# before three in a row; four at once did not (harness.DEFAULT_GUESTS).
ENABLED = harness.enabled_guests()
PARALLEL = int(os.environ.get("WARREN_VM_PARALLEL", str(min(harness.MAX_AT_ONCE, len(ENABLED)))))


def _one(name: str) -> harness.Run:
    # WARREN_VM_RESULTS=DIR: check the runs already in DIR (warren-vm-<guest>.*) again.
    done = sorted(Path(os.environ.get("WARREN_VM_RESULTS", "/nonexistent")).glob(
        f"warren-vm-{name}.*/run.json"))  # fmt: skip
    if done:
        return harness.load_run(harness.GUESTS[name], done[-1].parent)
    return harness.run_guest(harness.GUESTS[name])


def guest_run(name: str) -> harness.Run:
    if name not in ENABLED:
        pytest.skip(f"{name} is not booted by default (WARREN_VM_GUESTS=all boots it: docs/vm.md)")
    if not _STARTED:
        for tool in ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4"):
            if not shutil.which(tool):
                pytest.fail(f"{tool} is not installed (apt-get install qemu-system-x86 qemu-utils "
                            "debootstrap e2fsprogs)")  # fmt: skip
        if not (harness.RELEASE / "install.sh").is_file():
            pytest.fail(f"no release in {harness.RELEASE}: run make release")
        (harness.CACHE / "runs").mkdir(parents=True, exist_ok=True)
        # Images first, one at a time (debootstrap on a cold cache), then every selected guest.
        wanted = [harness.GUESTS[g] for g in _SELECTED or [name]]
        for suite, kind in sorted({(g.suite, g.kind) for g in wanted}):
            harness.build_image(suite, kind)
        # The next releases too (a freeze, on a cold cache), before guests compete for the cores.
        for guest in _SELECTED or [name]:
            harness.next_release(harness.GUESTS[guest])
        pool = ThreadPoolExecutor(max_workers=max(1, PARALLEL))
        if min(PARALLEL, len(_SELECTED)) > 1 and "WARREN_VM_SMP" not in os.environ:
            harness.SMP = "1"  # several guests share the host's cores (harness.SMP says why)
        for guest in sorted(_SELECTED or [name], key=harness.BOOT_ORDER.index):
            _STARTED[guest] = pool.submit(_one, guest)
        pool.shutdown(wait=False)
    if name not in _STARTED:
        _STARTED[name] = ThreadPoolExecutor(max_workers=1).submit(_one, name)
    if name not in _RUNS:
        _RUNS[name] = _STARTED[name].result()
    return _RUNS[name]


_SELECTED: list[str] = []
_NAMED = {
    "bullseye": "bullseye",
    "openrc": "bookworm-openrc",
    "hardened": "bookworm-cgroup2-hardened",
    "rollback": "trixie",
    "rootless": "trixie",
}


@pytest.fixture(scope="session", autouse=True)
def _selected_guests(request: pytest.FixtureRequest) -> None:
    """The guests the selected tests need: only those boot."""
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("guest") if callspec else None
        if name is None:  # the one-guest tests say which guest in their name
            name = next((g for word, g in _NAMED.items() if word in item.name), None)
        if name and name in ENABLED and name not in _SELECTED:
            _SELECTED.append(name)


def steps(run: harness.Run, phase: str | None = None) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in run.steps if phase is None or s["phase"] == phase}


def require_ok(run: harness.Run, *names: str) -> None:
    got = steps(run)
    for name in names:
        s = got.get(name)
        if s is None or s["status"] != "ok":
            pytest.fail(f"{run.guest.name}: {name} {'not run' if s is None else s['status']}\n"
                        + run.explain())  # fmt: skip


# The systemd guests with the default build (bullseye, the static one, has a test of its own).
SYSTEMD = ["bookworm-cgroup2-hardened", "bookworm-cgroup1", "trixie"]
OPENRC = "bookworm-openrc"
ALL = [*SYSTEMD, "bullseye", OPENRC]
UPGRADED = [name for name in ALL if harness.GUESTS[name].upgrade]


@pytest.mark.parametrize("guest", SYSTEMD)
def test_curl_sh_install_service_and_container_in_a_slice(guest: str) -> None:
    """(1) install, service enabled+active, RUNNING, systemd cgroup driver, a container prints
    its line and sits in a systemd slice (never the cgroup root)."""
    run = guest_run(guest)
    require_ok(run, "curl-sh-install", "service-enabled-active", "status-running",
               "config-systemd-cgroup", "import-image", "ctr-run-prints",
               "container-cgroup")  # fmt: skip


@pytest.mark.parametrize("guest", [*SYSTEMD, OPENRC])
def test_kill9_restarts_and_containers_survive(guest: str) -> None:
    """(3) kill -9 of the main process: systemd (or OpenRC's supervise-daemon) restarts it,
    containerd is adopted, the container survives; a stop of the service alone leaves containers
    running."""
    run = guest_run(guest)
    require_ok(run, "kill9-restart-container-survives", "stop-leaves-containers")


@pytest.mark.parametrize("guest", ALL)
def test_host_programs_warren_starts_load_the_hosts_libraries(guest: str) -> None:
    """The frozen runtime carries its own libc; modprobe (and systemctl, rc-service) started by
    warren once inherited its LD_LIBRARY_PATH and failed on bullseye ("GLIBC_2.35 not found")."""
    run = guest_run(guest)
    leaked = [
        line
        for text in run.journals.values()
        for line in text.splitlines()
        if "/runtime/" in line and "required by" in line
    ]
    assert leaked == [], f"{guest}: " + "\n".join(leaked[:3])


@pytest.mark.parametrize("guest", [*SYSTEMD, OPENRC])
def test_kill9_status_says_what_happened(guest: str) -> None:
    """(3) After the kill -9, `warren containerd status` names the supervisor systemd runs and
    says containerd was adopted."""
    run = guest_run(guest)
    require_ok(run, "kill9-status-says")


@pytest.mark.parametrize("guest", ALL)
def test_shutdown_with_a_container_is_bounded(guest: str) -> None:
    """(2) A reboot with a container running takes at most the grace (+ slack) longer than the
    same host's shutdown without one (the last, after the purge: no container, no warren);
    systemd's 90 s final-kill timeout is not waited out; the journal shows the grace."""
    run = guest_run(guest)
    require_ok(run, "container-running-before-reboot", "tasks-after-reboot")
    shut = run.shutdowns()
    with_c, without = shut.get("with-container"), shut.get("final")
    assert with_c is not None and without is not None, f"shutdowns not measured: {shut}\n" + (
        run.explain()
    )
    assert with_c <= without + GRACE_S + SHUTDOWN_SLACK_S, (
        f"reboot with a container {with_c} s vs {without} s without\n{run.explain()}"
    )
    if run.guest.init == "systemd":  # OpenRC's shutdown lines reach no log the guest keeps
        assert_grace_kept(run)


def assert_grace_kept(run: harness.Run) -> None:
    """The journal of the shutdown with a container: SIGKILL came GRACE_S after the SIGTERM."""
    seen = {}
    for line in run.journals.get("after-reboot-previous-boot", "").splitlines():
        stamp = re.match(r"\[\s*(\d+\.\d+)\]", line)
        for what in ("SIGTERM", "SIGKILL"):
            if stamp and f"warren: shutdown: {what} to containers" in line:
                seen[what] = float(stamp.group(1))
    assert set(seen) == {"SIGTERM", "SIGKILL"}, f"shutdown lines: {seen}\n{run.explain()}"
    took = seen["SIGKILL"] - seen["SIGTERM"]
    assert GRACE_S <= took <= GRACE_S + GRACE_PRECISION_S, (
        f"SIGKILL {took:.1f} s after SIGTERM, the grace is {GRACE_S} s\n{run.explain()}"
    )


@pytest.mark.parametrize("guest", [*SYSTEMD, OPENRC])
def test_reboot_service_up_images_kept_airgap_once(guest: str) -> None:
    """(4) after a reboot: service up by itself (the upgraded release, where the install boot
    installed the next one), images kept; archives imported exactly once (on the guest that runs
    the air-gap import)."""
    run = guest_run(guest)
    airgap = ("airgap-imported", "airgap-imported-once") if run.guest.airgap else ()
    require_ok(run, "service-up-after-reboot", "images-kept", *airgap)


@pytest.mark.parametrize("guest", [*SYSTEMD, OPENRC])
def test_uninstall_purge_leaves_the_file_list_and_network_as_before(guest: str) -> None:
    """(5) warren-uninstall.sh --purge: every path, link, iptables rule and network namespace is
    as before the install (leftovers named)."""
    run = guest_run(guest)
    require_ok(run, "uninstall-purge", "files-as-before", "network-as-before")


# (7) What each guest's next release changes (tests/vm/harness.py), and the steps that prove it.
UPGRADE_CHECKS = {
    "containerd": (
        "status-says-upgraded",
        "containerd-from-new-version-dir",
        "extracted-before-the-restart",
    ),
    "warren": ("status-names-the-new-warren", "containerd-from-the-same-version-dir"),
}


@pytest.mark.parametrize("guest", UPGRADED)
def test_upgrade_by_the_installer_keeps_a_container_running(guest: str) -> None:
    """(7) install.sh of the next release over this one with a container running: the service
    restarts on the new file, the container keeps running, is exec'd into, stopped and deleted
    under the new supervisor. On bookworm the next release carries containerd 1.7 (over 1.6):
    the installer extracts it before the restart, it runs from its own version dir, the old one
    is kept while its shim runs, and status says it upgraded. On bullseye it is the next warren
    (static) with the same payload: status names it as the supervisor, containerd runs from the
    same version dir, and no upgrade is claimed."""
    run = guest_run(guest)
    require_ok(run, "upgrade-container-started", "install-next-release",
               "container-kept-across-upgrade", *UPGRADE_CHECKS[run.guest.upgrade],
               "removed-under-new-supervisor")  # fmt: skip


def test_bullseye_curl_sh_with_no_options_runs_the_service_and_a_container() -> None:
    """(6) The older host (glibc 2.31, systemd 247): curl | sh with no options picks the static
    build (its own libc, and a payload with no libc needs), which runs the service and a
    container; the rest of the walk (kill -9, reboots, purge) as on bookworm."""
    run = guest_run("bullseye")
    require_ok(run, "curl-sh-install", "installed-flavour", "service-enabled-active",
               "status-running", "config-systemd-cgroup", "ctr-run-prints", "container-cgroup",
               "kill9-restart-container-survives", "stop-leaves-containers",
               "service-up-after-reboot", "images-kept", "uninstall-purge", "files-as-before",
               "network-as-before")  # fmt: skip


@pytest.mark.parametrize("guest", [*SYSTEMD, OPENRC])
def test_the_installer_picks_the_default_build_where_it_runs(guest: str) -> None:
    """(6) The other side of the choice: on bookworm and trixie the default (dynamic) build."""
    require_ok(guest_run(guest), "installed-flavour")


def test_openrc_host_gets_an_openrc_service() -> None:
    """A host booted with sysvinit + OpenRC (no systemd): curl | sh writes, enables and starts
    an OpenRC service (supervise-daemon), containerd uses cgroupfs, a container runs in a cgroup
    of its own, supervise-daemon respawns warren after a kill -9, the service comes back after a
    reboot, and the purge removes it all."""
    run = guest_run(OPENRC)
    require_ok(run, "curl-sh-install", "service-enabled-active", "status-running",
               "config-systemd-cgroup", "ctr-run-prints", "container-cgroup",
               "kill9-restart-container-survives", "stop-leaves-containers",
               "service-up-after-reboot", "uninstall-purge", "files-as-before")  # fmt: skip


def test_hardened_host_installs_through_the_proxy() -> None:
    """The hardened bookworm (/tmp, /var/tmp, /dev/shm noexec; umask 027; tinyproxy on loopback
    in front of the guest's registry): curl | sh with HTTP_PROXY/HTTPS_PROXY/NO_PROXY in its
    environment installs; the unit's environment file, the supervisor and containerd carry the
    proxy (NO_PROXY with localhost and the pod network); an image pull with that environment
    shows in tinyproxy's log; the upgrade keeps the proxy."""
    run = guest_run("bookworm-cgroup2-hardened")
    require_ok(run, "hardened-host", "curl-sh-install", "status-running", "proxy-in-the-service",
               "pull-through-the-proxy", "install-next-release",
               "proxy-kept-across-upgrade")  # fmt: skip


def test_rollback_under_systemd_keeps_mainpid_and_options() -> None:
    """`warren rollback` with the unit running (trixie, after the upgrade): the unit stays active,
    systemd's MainPID is the supervisor serving afterwards, its run options are kept, and
    containerd runs the previous version again."""
    require_ok(guest_run("trixie"), "rollback-under-systemd")


def rootless_run() -> harness.Run:
    """trixie's run, which carries the rootless part unless WARREN_VM_ROOTLESS=0."""
    if not harness.GUESTS["trixie"].rootless:
        pytest.skip("WARREN_VM_ROOTLESS=0: trixie runs without the rootless part")
    return guest_run("trixie")


def test_rootless_install_by_a_user_runs_the_user_unit_a_container_and_a_published_port() -> None:
    """trixie, as a user with /etc/subuid and /etc/subgid ranges whose user manager runs by
    lingering (enabled by root): curl | sh -s -- --rootless installs ~/.local/bin/warren and the
    user unit, enabled and active (with the user's own drop-in: --publish); `warren ctr` as the
    user runs a container that prints its line, and one serving on the published port is
    reached from the guest's side of RootlessKit."""
    require_ok(rootless_run(), "rootless-user", "rootless-install",
               "rootless-unit-enabled-active", "rootless-import-image",
               "rootless-ctr-run-prints", "rootless-published-port")  # fmt: skip


def test_rootless_user_unit_comes_back_after_a_reboot_by_lingering() -> None:
    """trixie: after the reboot, with no login of the user, lingering starts the user manager and
    it the user unit; the image is kept and a container runs again."""
    require_ok(rootless_run(), "rootless-unit-up-after-reboot",
               "rootless-container-after-reboot")  # fmt: skip


def test_rootless_container_reaches_guest_loopback_and_survives_kill9_of_containerd() -> None:
    """trixie, under the user unit: a container fetches a loopback-only service of the guest
    through slirp4netns (10.0.2.2), and after a kill -9 of the user's containerd the supervisor
    restarts it (RUNNING, a new pid, the socket answers) and a container runs again."""
    require_ok(rootless_run(), "rootless-host-loopback", "rootless-kill9-containerd")


def test_rootless_rollback_by_the_user_restarts_through_the_user_unit() -> None:
    """trixie: the next release (containerd 1.7) installed by install.sh --rootless over the
    user's, then `warren rollback` as the user: the user unit stays active and its MainPID is
    the supervisor serving the previous containerd (runtime/service.py detects the user unit)."""
    require_ok(rootless_run(), "rootless-upgrade-by-installer",
               "rootless-rollback-under-user-unit")  # fmt: skip


def test_rootless_uninstall_purge_leaves_the_users_home_as_before() -> None:
    """trixie: the user's warren-uninstall.sh --purge leaves every path of the home (type, mode,
    owner) as before the install, their own drop-in kept, and no warren process of theirs."""
    require_ok(rootless_run(), "rootless-uninstall-purge", "rootless-home-as-before")


@pytest.fixture(scope="session", autouse=True)
def _print_timings(request: pytest.FixtureRequest) -> Any:
    yield
    if _RUNS:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        text = harness.report(list(_RUNS.values()))
        if reporter is not None:
            reporter.write_sep("=", "VM guests: wall time, boots, shutdowns, steps")
            reporter.write_line(text)
        Path(harness.CACHE / "runs" / "last-report.txt").write_text(text + "\n")


def test_boot_order_names_every_guest_once() -> None:
    """The pool starts guests in BOOT_ORDER; a guest missing from it would fail the whole run."""
    assert sorted(harness.BOOT_ORDER) == sorted(harness.GUESTS)
    assert set(harness.DEFAULT_GUESTS) <= set(harness.GUESTS)
