"""Guest side of the VM test layer: runs inside a booted Debian guest, as root, from the oneshot
unit warren-vm-scenario.service (scripts/vm/build-image.sh), once per boot.

The host (tests/vm/harness.py) puts on the 9p share, mounted at /mnt/share:
  guest.json       {"guest": NAME, "flavour": "dynamic"|"static" (which build the installer must
                   pick here), "upgrade": "containerd"|"warren"|"" (what the next release
                   changes; "" skips the upgrade), "next_warren": the next release's warren
                   version, "init": "systemd"|"openrc" (what runs the service), "hardened":
                   noexec temporary dirs, umask 027 and a proxy (tinyproxy) for the install,
                   "airgap": run the air-gap import, "rollback": `warren rollback` after the
                   upgrade under systemd, "rootless": a user's install.sh --rootless with the
                   user unit and lingering, across the reboot, then its rollback and purge}
  release/         what `make release` wrote: install.sh, SHA256SUMS, warren-linux-amd64 and
                   warren-linux-amd64-static; release/next/: the next release, for the upgrade
                   scenario (containerd 1.7, or the next warren version with the same payload)
  busybox.tar      an OCI archive of busybox (tests/support busybox_image), airgap.tar another
and reads back:
  results.jsonl    one line per step: guest, phase, step, status (ok|fail|xfail|skip), seconds,
                   output (the last lines of what the step ran), detail
  journal-*.txt    `journalctl -u warren-containerd` at the end of each phase
  state.json       the phase the next boot runs (reboots keep going where they left off)
Markers on the console ("WARREN-VM-MARK <name>") let the host time shutdowns and boots.

Phases, one boot each: install (1, 3, 6 on the older guest; 7: the next release installed over
this one with a container running; then a reboot with a container running: 2) -> after-reboot (4,
with the upgraded release coming up by itself; the rollbacks; then the purge: 5) -> power off
(the shutdown of the purged host: the baseline of 2). Each boot costs 40 to 130 s under TCG, so
a phase is a boot only where the scenario needs one.
stdlib only, Python 3.9 (bullseye).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHARE = Path("/mnt/share")
RESULTS = SHARE / "results.jsonl"
STATE = SHARE / "state.json"
UPGRADED = SHARE / "upgraded-containerd.txt"
PORT = 8080
URL = f"http://127.0.0.1:{PORT}"
WARREN = "/usr/local/bin/warren"
# Checks that are not about warren's CLI use the extracted ctr directly: under TCG every launch
# of the one-file warren costs seconds.
CTR = "/var/lib/warren/bin/ctr --address /run/warren-containerd/containerd.sock"
UNINSTALL = "/usr/local/bin/warren-uninstall.sh"
SERVICE = "warren-containerd.service"
OPENRC_NAME = "warren-containerd"
OPENRC_LOG = "/var/log/warren-containerd.log"
# The hardened guest: tinyproxy (loopback only, scripts/vm/build-image.sh) in front of a registry
# in the guest, reached by a name NO_PROXY does not cover (/etc/hosts maps it to 127.0.0.1).
PROXY = "http://127.0.0.1:8888"
REGISTRY = "registry.warren.test:5000"
PROXY_IMAGE = f"{REGISTRY}/library/busybox:warren-proxy"
TINYPROXY_LOG = "/var/log/tinyproxy/tinyproxy.log"
BUILTIN_CHAINS = ("INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING")
IMAGE = "docker.io/library/busybox:warren-test"
AIRGAP_IMAGE = "docker.io/library/busybox:warren-airgap"
IMAGES_DIR = Path("/var/lib/warren/images")
# Churn of any booted Debian, not warren's: left out of the before/after file lists.
CHURN = (
    "/proc", "/sys", "/dev", "/tmp", "/var/tmp", "/mnt/share", "/var/log", "/var/cache",
    "/var/lib/systemd", "/var/lib/dpkg", "/var/lib/apt", "/run/systemd", "/run/udev", "/run/user",
    "/run/log", "/run/initramfs", "/run/mount", "/run/lock", "/run/utmp", "/run/dbus",
    "/run/credentials", "/root/.cache", "/etc/machine-id", "/etc/.pwd.lock", "/lost+found",
    "/var/lib/python", "/usr/lib/rc/cache", "/etc/adjtime",
)  # fmt: skip

CONFIG: dict[str, Any] = {}
KILL9: dict[str, str] = {}
PHASE = ""


class StepFailed(Exception):
    pass


def console(text: str) -> None:
    try:
        with open("/dev/console", "w") as tty:
            tty.write(text + "\n")
    except OSError:
        pass
    print(text, flush=True)


def mark(name: str) -> None:
    console(f"WARREN-VM-MARK {name}")


def record(step: str, status: str, seconds: float, output: str = "", detail: str = "") -> None:
    row = {
        "guest": CONFIG.get("guest", "?"),
        "phase": PHASE,
        "step": step,
        "status": status,
        "seconds": round(seconds, 2),
        "output": "\n".join(output.strip().splitlines()[-40:]),
        "detail": detail,
    }
    with open(RESULTS, "a") as fp:
        fp.write(json.dumps(row) + "\n")
        fp.flush()
        os.fsync(fp.fileno())
    console(f"WARREN-VM-STEP {PHASE}/{step} {status} {seconds:.1f}s {detail}")


def sh(cmd: str, timeout: float = 300, check: bool = True) -> str:
    """Run `cmd` with sh; its output (stdout+stderr). A non-zero exit fails the step."""
    proc = subprocess.run(
        ["sh", "-c", cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        text=True,
    )
    if check and proc.returncode != 0:
        raise StepFailed(f"`{cmd}` exited {proc.returncode}:\n{proc.stdout}")
    return proc.stdout


def poll(what: str, probe: Callable[[], str | None], timeout: float) -> str:
    """Call `probe` until it returns a string (success), up to `timeout` s."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            got = probe()
            if got is not None:
                return got
        except (StepFailed, subprocess.TimeoutExpired) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise StepFailed(f"{what}: not within {timeout:.0f} s\n{last}")
        time.sleep(0.5)


def step(name: str, fn: Callable[[], str | tuple[str, str]], soft: bool = False) -> str:
    """Run one step, record ok/fail with its time; a failure ends the phase (re-raised) unless
    `soft`: a check whose failure leaves the host as it was for the steps after it."""
    started = time.monotonic()
    try:
        got = fn()
    except Exception as exc:
        text = str(exc) if isinstance(exc, StepFailed) else traceback.format_exc()
        record(name, "fail", time.monotonic() - started, text, text.splitlines()[0] if text else "")
        if soft:
            return ""
        raise
    output, detail = got if isinstance(got, tuple) else (got, "")
    record(name, "ok", time.monotonic() - started, output, detail)
    return output


# --- pieces --------------------------------------------------------------------------------------


def serve_release() -> str:
    with open("/tmp/http.log", "w") as log:
        _serve(log)

    def probe() -> str | None:
        try:
            with urllib.request.urlopen(f"{URL}/SHA256SUMS", timeout=2) as rsp:
                return str(rsp.read().decode())
        except OSError:
            return None

    # Under TCG on a busy host, starting Python's http.server alone has taken over 30 s.
    return poll("release served on 127.0.0.1", probe, 120)


def _serve(log: Any) -> None:
    subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(PORT)],
        cwd=str(SHARE / "release"),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def curl_sh(base: str) -> str:
    """`curl | sh` of the release at `base`. The hardened guest's admin installs with umask 027
    in the shell and the proxy given through the environment (NO_PROXY: the release server)."""
    if not CONFIG.get("hardened"):
        return f"curl -sfL {base}/install.sh | WARREN_BASE_URL={base} sh -"
    proxy = f"HTTP_PROXY={PROXY} HTTPS_PROXY={PROXY} NO_PROXY=127.0.0.1,localhost"
    return f"umask 027; curl -sfL {base}/install.sh | {proxy} WARREN_BASE_URL={base} sh -"


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if item)


def hardened_host() -> tuple[str, str]:
    """The guest is hardened as built: temporary dirs noexec, umask 027 in a login shell,
    tinyproxy on loopback only; and the registry the proxy fronts is up."""
    problems = []
    for where in ("/tmp", "/var/tmp", "/dev/shm"):
        opts = sh(f"findmnt -no OPTIONS {where}", check=False).strip()
        if "noexec" not in opts.split(","):
            problems.append(f"{where} is not noexec: {opts or 'not a mount'}")
    umask = sh("sh -lc umask").strip()
    if umask != "0027":
        problems.append(f"a login shell's umask is {umask}, not 0027")
    listen = poll("tinyproxy listens", lambda: sh("ss -Hltn 'sport = :8888'") or None, 120)
    if [ln for ln in listen.splitlines() if "127.0.0.1:8888" not in ln]:
        problems.append(f"tinyproxy listens beyond loopback:\n{listen}")
    subprocess.Popen(
        [sys.executable, str(SHARE / "guest.py"), "registry"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip

    def registry_up() -> str | None:
        try:
            with urllib.request.urlopen("http://127.0.0.1:5000/v2/", timeout=2) as rsp:
                return str(rsp.status)
        except OSError:
            return None

    poll("the guest's registry answers", registry_up, 120)
    if problems:
        raise StepFailed("; ".join(problems))
    return listen, f"/tmp, /var/tmp, /dev/shm noexec; umask {umask}; tinyproxy on 127.0.0.1:8888"


def proxy_in_the_service() -> tuple[str, str]:
    """install.sh wrote the proxy it was given into the unit's environment file (0600), and the
    supervisor and containerd run with it; NO_PROXY gained localhost and the pod network."""
    env_file = Path(f"/etc/systemd/system/{SERVICE}.env")
    text = env_file.read_text() if env_file.exists() else ""
    mode = oct(env_file.stat().st_mode & 0o777) if env_file.exists() else "absent"
    problems = [] if f'HTTP_PROXY="{PROXY}"' in text and mode == "0o600" else [
        f"{env_file} ({mode}) does not carry HTTP_PROXY={PROXY}:\n{text}"]  # fmt: skip
    pids = {"supervisor": main_pid()}
    pids.update({f"containerd {p}": int(p) for p in sh("pidof containerd", check=False).split()})
    no_proxy = ""
    for who, pid in pids.items():
        env = environ(pid)
        no_proxy = env.get("NO_PROXY", "")
        if env.get("HTTP_PROXY") != PROXY or env.get("HTTPS_PROXY") != PROXY:
            problems.append(f"{who} (pid {pid}) runs without the proxy: "
                            f"HTTP_PROXY={env.get('HTTP_PROXY')!r}")  # fmt: skip
        for entry in ("127.0.0.1", "localhost", "10.217.0.0/16"):
            if entry not in no_proxy.split(","):
                problems.append(f"{who} (pid {pid}): {entry} not in NO_PROXY={no_proxy!r}")
    if problems or len(pids) < 2:
        raise StepFailed("; ".join(problems) or f"no containerd running: {pids}")
    return text, f"{len(pids)} processes with HTTP_PROXY={PROXY}, NO_PROXY={no_proxy}"


def pull_through_the_proxy() -> tuple[str, str]:
    """An image pull from the registry goes through tinyproxy (its log names each request),
    with the proxy environment containerd runs with (not the scenario's own: it has none)."""
    env = environ(int(sh("pidof containerd").split()[0]))
    proxy = " ".join(f"{k}={env[k]}" for k in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY") if k in env)
    log = Path(TINYPROXY_LOG)
    seen = log.stat().st_size if log.exists() else 0
    since = sh("date +%s").strip()
    out = sh(f"env {proxy} {CTR} images pull --plain-http {PROXY_IMAGE}", 300)
    # tinyproxy writes its LogFile, or (when it cannot) the journal: read both.
    text = sh(f"journalctl -u tinyproxy --since @{since} --no-pager -o cat", check=False)
    if log.exists():
        with log.open(errors="replace") as fp:
            fp.seek(seen)
            text += fp.read()
    lines = [ln for ln in text.splitlines() if REGISTRY in ln]
    kinds = {kind for kind in ("/manifests/", "/blobs/") for ln in lines if kind in ln}
    if kinds != {"/manifests/", "/blobs/"}:
        state = sh("systemctl status tinyproxy --no-pager; ls -la /var/log/tinyproxy", check=False)
        said = "\n".join(lines)
        raise StepFailed(f"tinyproxy's log shows {len(lines)} request(s) to {REGISTRY} "
                         f"({sorted(kinds)}):\n{said}\n{out}\n{state}")  # fmt: skip
    return "\n".join(lines[-10:]) + "\n" + out, (
        f"{len(lines)} requests to {REGISTRY} in tinyproxy's log (manifest and blobs)"
    )


def serve_registry() -> None:
    """A read-only registry on 127.0.0.1:5000 serving busybox.tar as library/busybox (the
    scenario's own process: `guest.py registry`)."""
    import http.server
    import tarfile

    with tarfile.open(SHARE / "busybox.tar") as tar:
        blobs = {}
        for member in tar.getmembers():
            fp = tar.extractfile(member) if member.isfile() else None
            if fp is not None:
                blobs[member.name] = fp.read()
    top = json.loads(blobs["index.json"])["manifests"][0]

    class Registry(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.answer(body=False)

        def do_GET(self) -> None:
            self.answer(body=True)

        def answer(self, body: bool) -> None:
            path = self.path.split("?")[0].rstrip("/")
            ref = path.rsplit("/", 1)[-1]
            data, ctype = None, "application/octet-stream"
            if path == "/v2":
                data, ctype = b"{}", "application/json"
            elif "/manifests/" in path and ref in ("warren-proxy", top["digest"]):
                data, ctype = blobs["blobs/sha256/" + top["digest"].split(":")[1]], top["mediaType"]
                ref = top["digest"]
            elif "/blobs/sha256:" in path:
                data = blobs.get("blobs/sha256/" + ref.split(":")[1])
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            if ":" in ref:
                self.send_header("Docker-Content-Digest", ref)
            self.end_headers()
            if body:
                self.wfile.write(data)

    http.server.ThreadingHTTPServer(("127.0.0.1", 5000), Registry).serve_forever()


def status_running() -> str:
    def probe() -> str | None:
        out = sh(f"{WARREN} containerd status", check=False, timeout=60)
        return out if re.search(r"\bRUNNING\b", out) else None

    # A cold start under TCG on a loaded host takes minutes (extraction, then containerd's own
    # start). The wait polls the socket (a connect); `warren containerd status` (seconds per
    # launch under TCG) is asked only once containerd answers, and must say RUNNING.
    started = time.monotonic()
    poll("containerd answers on warren's socket", lambda: "" if socket_answers() else None, 480)
    left = max(60.0, 480 - (time.monotonic() - started))
    return poll("warren containerd status RUNNING", probe, left)


def openrc() -> bool:
    return CONFIG.get("init") == "openrc"


def service(action: str, timeout: float = 180) -> str:
    """start/stop/restart the service through the host's service manager."""
    if openrc():
        return sh(f"rc-service {OPENRC_NAME} {action}", timeout)
    return sh(f"systemctl {action} {SERVICE}", timeout)


def enabled_and_active() -> str:
    if openrc():
        return sh(f"rc-update show default | grep -w {OPENRC_NAME} && "
                  f"rc-service {OPENRC_NAME} status")  # fmt: skip
    return sh(f"systemctl is-enabled {SERVICE} && systemctl is-active {SERVICE}")


def main_pid() -> int:
    """The service's main process: systemd's MainPID, or supervise-daemon's child on OpenRC."""
    if openrc():
        daemons = sh("pidof supervise-daemon", check=False).split()
        if not daemons:
            return 0
        kids = sh(f"pgrep -P {','.join(daemons)}", check=False).split()
        return int(kids[0]) if len(kids) == 1 else 0
    return int(sh(f"systemctl show -p MainPID --value {SERVICE}").strip() or 0)


def service_log(previous_boot: bool = False) -> str:
    """The service's log: its journal (this boot or the one before), or OpenRC's log file."""
    if openrc():
        return sh(f"cat {OPENRC_LOG}", check=False)
    boot = "-b -1" if previous_boot else "-b"
    return sh(f"journalctl {boot} -u {SERVICE} --no-pager -o short-monotonic", check=False,
              timeout=60)  # fmt: skip


def network() -> dict[str, list[str]]:
    """What a purge must leave as it found it: links, firewall rules (counters cut), network
    namespaces."""
    links = sh("ip -o link show", check=False)
    rules = []
    for line in sh("iptables-save", check=False).splitlines():
        # Rules and chains; not a table's empty built-in chains (listing a table can create it).
        if line.startswith(("#", "*")) or line in ("", "COMMIT"):
            continue
        if line.startswith(":"):
            chain, policy = line[1:].split()[:2]
            if chain in BUILTIN_CHAINS and policy == "ACCEPT":
                continue
            line = f":{chain} {policy}"
        rules.append(line)
    return {
        "links": sorted(ln.split(":")[1].strip().split("@")[0] for ln in links.splitlines()
                        if ln.count(":") >= 2),
        "iptables": sorted(rules),
        "netns": sorted(ln.split()[0] for ln in sh("ip netns list", check=False).splitlines()
                        if ln.strip()),
    }  # fmt: skip


def task_pid(name: str) -> int:
    out = sh(f"{CTR} tasks ls", timeout=60)
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[0] == name:
            if fields[2] != "RUNNING":
                raise StepFailed(f"task {name} is {fields[2]}:\n{out}")
            return int(fields[1])
    raise StepFailed(f"no task {name}:\n{out}")


def file_list() -> list[str]:
    out = sh("find / -xdev 2>/dev/null; find /run 2>/dev/null", timeout=300, check=False)
    keep = set()
    for path in out.splitlines():
        if any(path == c or path.startswith(c + "/") for c in CHURN):
            continue
        keep.add(path)
    return sorted(keep)


def save_journal(label: str) -> None:
    out = service_log()
    (SHARE / f"journal-{PHASE}-{label}.txt").write_text(out)


def set_phase(name: str) -> None:
    STATE.write_text(json.dumps({"phase": name}))
    os.sync()


def end_boot(how: str, label: str) -> None:
    """Power off (the host boots the disk again for the next phase: a reboot, as the guest
    sees it); the marker lets the host time the shutdown."""
    save_journal(label)
    os.sync()
    mark(f"shutdown-start {label}")
    if openrc():
        # The scenario runs in the background of its init script: sysvinit's shutdown.
        subprocess.Popen([how], start_new_session=True)
        return
    subprocess.run(["systemctl", "--no-block", how], check=False)
    # The unit is oneshot: return, so systemd's own stop ordering applies as it does for users.


# --- phases ---------------------------------------------------------------------------------------


def check_cgroup(pid: int) -> tuple[str, str]:
    text = Path(f"/proc/{pid}/cgroup").read_text()
    bad = []
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if openrc():
            # No systemd: cgroupfs, a cgroup of the container's own (never the root's) for the
            # controllers that limit it (OpenRC's hybrid mode leaves others, misc, at the root).
            limits = {"memory", "pids"} & set(controllers.split(",")) or "cpu" in controllers
            if limits and path.strip() in ("", "/"):
                bad.append(line)
            continue
        if controllers in ("", "name=systemd") or controllers.startswith("cpu"):
            ok = ".slice/" in path or f"/{SERVICE}" in path
            if not ok:
                bad.append(line)
    if bad:
        raise StepFailed(
            "container not in a systemd slice or the service's subtree (or a cgroup of its own "
            "under OpenRC):\n" + "\n".join(bad) + f"\nall of it:\n{text}"
        )
    first = text.splitlines()[0] if text else ""
    return text, first


def phase_install() -> None:
    def files_before() -> tuple[str, str]:
        paths = file_list()
        (SHARE / "files-before.txt").write_text("\n".join(paths))
        net = network()
        (SHARE / "network-before.json").write_text(json.dumps(net))
        return "", f"{len(paths)} paths, {len(net['links'])} links, {len(net['iptables'])} rules"

    # The rootless user is part of the host before the install (its home's list is kept).
    rootless(rootless_user_step)
    step("files-before", files_before)
    if not openrc():
        # A persistent journal: the next boot reads the shutdown's lines (journalctl -b -1).
        step("persistent-journal", lambda: sh("mkdir -p /var/log/journal && journalctl --flush"))
    if CONFIG.get("hardened"):
        step("hardened-host", hardened_host)
    step("serve-release", serve_release)
    step("curl-sh-install", lambda: sh(curl_sh(URL), timeout=600))

    def installed_flavour() -> tuple[str, str]:
        """(6) With no options the installer picks the build that runs here: the default one
        where the host's glibc is new enough, the static one (its own libc) where not."""
        out = sh(f"{WARREN} version")
        glibc = sh("ldd --version | head -n 1", check=False).strip()
        want = f"({CONFIG.get('flavour', 'dynamic')} build)"
        if want not in out.splitlines()[0]:
            raise StepFailed(f"expected the {want} on {glibc}:\n{out}")
        return out, f"{out.splitlines()[0]} on {glibc}"

    step("installed-flavour", installed_flavour)
    step("service-enabled-active", enabled_and_active)
    step("status-running", status_running)
    if CONFIG.get("hardened"):
        step("proxy-in-the-service", proxy_in_the_service)
        step("pull-through-the-proxy", pull_through_the_proxy, soft=True)

    def type_notify() -> tuple[str, str]:
        # Type=notify: active only after READY=1; STATUS= lines reach systemd; a watchdog is set.
        out = sh(f"systemctl show -p Type -p NotifyAccess -p WatchdogUSec -p StatusText {SERVICE}")
        found = dict(line.partition("=")[::2] for line in out.splitlines())
        want = {"Type": "notify", "NotifyAccess": "main", "WatchdogUSec": "1min"}
        if any(found.get(k) != v for k, v in want.items()) or not found.get("StatusText"):
            raise StepFailed(f"expected {want} and a StatusText:\n{out}")
        return out, f"notify, watchdog 1min, status: {found['StatusText'][:60]}"

    if not openrc():
        step("type-notify-watchdog", type_notify)

    def systemd_driver() -> tuple[str, str]:
        # systemd's cgroup driver where systemd runs the host, cgroupfs under OpenRC.
        want = "false" if openrc() else "true"
        text = Path("/etc/warren-containerd/config.toml").read_text()
        found = re.findall(r"(?im)^\s*SystemdCgroup\s*=\s*(\w+)", text)
        if found not in ([want], [] if openrc() else [want]):
            raise StepFailed(f"SystemdCgroup in config.toml: {found}, not {want}\n{text}")
        return text, f"SystemdCgroup = {found[0] if found else 'unset (false)'}"

    step("config-systemd-cgroup", systemd_driver)
    step("import-image", lambda: sh(f"{CTR} images import {SHARE}/busybox.tar", 300))

    def run_prints() -> tuple[str, str]:
        out = sh(f"{WARREN} ctr run --rm {IMAGE} hello echo hello-from-the-guest", 300)
        if "hello-from-the-guest" not in out:
            raise StepFailed(f"the container did not print its line:\n{out}")
        return out, out.strip().splitlines()[-1]

    step("ctr-run-prints", run_prints)
    step("ctr-run-detached", lambda: sh(f"{WARREN} ctr run -d {IMAGE} sleeper sleep 100000", 300))
    step("container-cgroup", lambda: check_cgroup(task_pid("sleeper")))

    # (3) kill -9 of the service's main process.
    def kill9() -> tuple[str, str]:
        before = main_pid()
        container = task_pid("sleeper")
        if before <= 1:  # never kill(0): that is this scenario's own process group
            raise StepFailed(f"no main process of the service to kill (pid {before})")
        os.kill(before, 9)
        started = time.monotonic()

        def restarted() -> str | None:
            if main_pid() in (0, before):
                return None
            out = sh(f"{WARREN} containerd status", check=False, timeout=60)
            return out if re.search(r"\bRUNNING\b", out) else None

        status = poll("systemd restarts warren after kill -9", restarted, 120)
        took = time.monotonic() - started
        if not Path(f"/proc/{container}").exists():
            raise StepFailed(f"the container (pid {container}) died with the supervisor\n{status}")
        again = task_pid("sleeper")
        shown = f"MainPID={main_pid()}" if openrc() else sh(
            f"systemctl show -p NRestarts -p MainPID {SERVICE}")  # fmt: skip
        KILL9.update(status=status, main=str(main_pid()), before=str(before))
        time.sleep(15)  # a restart loop ("already running") shows within RestartSec + a start
        KILL9["main"] = str(main_pid())
        KILL9["restarts"] = restarts()
        return status + "\n" + shown, f"back in {took:.1f} s; container pid {again} kept"

    step("kill9-restart-container-survives", kill9)

    def status_says() -> tuple[str, str]:
        """After a kill -9: the supervisor status names is the one systemd runs, and it tells
        that containerd was adopted (or restarted)."""
        status = sh(f"{WARREN} containerd status", check=False, timeout=60)
        pid = re.search(r"(?m)^supervisor pid\s+(\d+)", status)
        problems = []
        # The launcher execs the runtime in place: systemd's main PID is the supervisor itself.
        if not pid or KILL9["main"] != pid.group(1):
            problems.append(
                f"supervisor pid {pid.group(1) if pid else '?'} is not systemd's MainPID "
                f"{KILL9['main']} (the killed one was {KILL9['before']})"
            )
        now = restarts()
        if now != KILL9["restarts"]:
            problems.append(f"the service was restarted again since: {KILL9['restarts']} -> {now}")
        looped = [ln for ln in service_log().splitlines() if "already running" in ln]
        if looped:
            problems.append("restarts failed: " + looped[-1])
        if not re.search(r"(?i)adopt|last exit|killed|signal 9|SIGKILL", status):
            problems.append("nothing says the supervisor was killed and containerd adopted")
        if problems:
            raise StepFailed("; ".join(problems) + "\n" + status)
        return status, "status tells the adoption"

    step("kill9-status-says", status_says, soft=True)

    def stop_keeps_containers() -> tuple[str, str]:
        container = task_pid("sleeper")
        service("stop")
        alive = Path(f"/proc/{container}").exists()
        service("start")
        status_running()
        if not alive:
            raise StepFailed("a service stop killed the container (only the supervisor stops)")
        return sh(f"{CTR} tasks ls"), f"container pid {container} survived a service stop"

    step("stop-leaves-containers", stop_keeps_containers)

    def place_archive() -> str:
        IMAGES_DIR.mkdir(parents=True, exist_ok=True)
        sh(f"cp {SHARE}/airgap.tar {IMAGES_DIR}/airgap.tar")
        return sh(f"ls -la {IMAGES_DIR}")

    upgrade_in_install()
    rootless(rootless_install_steps)
    if CONFIG.get("airgap"):
        step("place-airgap-archive", place_archive)
    step("container-running-before-reboot", lambda: str(task_pid("sleeper")))
    set_phase("after-reboot")
    end_boot("poweroff", "with-container")


def images_report() -> dict[str, Any]:
    """`warren images status`, once the automatic import of this start is done."""
    out = sh(f"{WARREN} images status --wait 300 --json", check=False, timeout=330)
    try:
        data = json.loads(out)
    except ValueError:
        raise StepFailed(f"warren images status --json is not JSON:\n{out}") from None
    return data if isinstance(data, dict) else {}


def airgap_result(report: dict[str, Any]) -> str:
    for row in report.get("results") or []:
        if str(row.get("archive", row.get("path", ""))).endswith("airgap.tar"):
            return str(row.get("status"))
    return "absent"


def restarts() -> str:
    """systemd's NRestarts; under OpenRC (which counts none) the main pid, which a respawn
    changes."""
    if openrc():
        return f"main pid {main_pid()}"
    return sh(f"systemctl show -p NRestarts --value {SERVICE}").strip()


def previous_shutdown() -> tuple[str, str]:
    """The service's journal lines of the last shutdown (persistent journal), if kept."""
    out = service_log(previous_boot=True)
    (SHARE / f"journal-{PHASE}-previous-boot.txt").write_text(out)
    said = [ln for ln in out.splitlines() if "warren: shutdown" in ln]
    return out, "; ".join(ln.split(": ", 1)[-1] for ln in said) or "no shutdown lines"


def phase_after_reboot() -> None:
    step("journal-of-the-shutdown", previous_shutdown, soft=True)

    def up_by_itself() -> tuple[str, str]:
        status = status_running()
        active = enabled_and_active().strip().splitlines()[-1]
        version = server_version()
        # The install boot ended with the next release installed: that is what boots.
        want = UPGRADED.read_text() if UPGRADED.exists() else version
        if version != want:
            raise StepFailed(f"containerd {version} after the reboot, not the upgrade's {want}")
        return status, f"{active} without a start; containerd {version}"

    step("service-up-after-reboot", up_by_itself)

    def images_kept() -> tuple[str, str]:
        out = sh(f"{CTR} images ls -q", timeout=60)
        if IMAGE not in out.split():
            raise StepFailed(f"{IMAGE} is gone after the reboot:\n{out}")
        return out, f"{IMAGE} kept"

    step("images-kept", images_kept)

    def airgap_imported() -> tuple[str, str]:
        def probe() -> str | None:
            report = images_report()
            return json.dumps(report) if airgap_result(report) in ("imported", "failed") else None

        text = poll("airgap archive imported at start", probe, 180)
        report = json.loads(text)
        if airgap_result(report) != "imported":
            raise StepFailed(f"airgap.tar: {airgap_result(report)}\n{text}")
        for ns in ("default", "k8s.io"):
            out = sh(f"{CTR} -n {ns} images ls -q", timeout=60)
            if AIRGAP_IMAGE not in out.split():
                raise StepFailed(f"{AIRGAP_IMAGE} not in namespace {ns}:\n{out}")
        return text, "imported into default and k8s.io"

    def imported_once() -> tuple[str, str]:
        service("restart")
        status_running()

        def probe() -> str | None:
            report = images_report()
            return json.dumps(report) if airgap_result(report) not in ("absent", "") else None

        text = poll("images report after a restart", probe, 180)
        got = airgap_result(json.loads(text))
        if got == "imported":
            raise StepFailed(f"airgap.tar imported again after a restart:\n{text}")
        return text, f"after a restart: {got}"

    if CONFIG.get("airgap"):
        step("airgap-imported", airgap_imported)
        step("airgap-imported-once", imported_once)
    else:
        record("airgap", "skip", 0, "", "not asked on this guest")

    def container_gone() -> tuple[str, str]:
        out = sh(f"{CTR} tasks ls", timeout=60)
        running = [ln for ln in out.splitlines()[1:] if "RUNNING" in ln]
        return out, f"{len(running)} task(s) running after the reboot"

    step("tasks-after-reboot", container_gone)
    rootless(rootless_after_reboot_steps)
    if CONFIG.get("upgrade") == "containerd":
        rootless(rootless_rollback_steps)
    if CONFIG.get("rollback"):
        step("rollback-under-systemd", rollback_under_systemd, soft=True)
    purge_steps()


def upgrade_in_install() -> None:
    """(7) in the install boot, so that the reboot after it brings up the upgraded release."""
    if not CONFIG.get("upgrade"):
        record("upgrade", "skip", 0, "", "not asked")
        return
    try:
        upgrade_steps()
    except Exception:  # recorded as its step's failure; the reboot and purge still run
        sh(f"{CTR} tasks kill -s SIGKILL keeper; sleep 2; {CTR} tasks delete keeper; "
           f"{CTR} containers rm keeper", check=False, timeout=120)  # fmt: skip


def socket_answers() -> bool:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect("/run/warren-containerd/containerd.sock")
        except OSError:
            return False
    return True


def containerd_exes() -> set[str]:
    """The files root's running containerd processes run from (not a rootless user's)."""
    pids = sh("pgrep -u root -x containerd", check=False).split()
    return {os.path.realpath(f"/proc/{p}/exe") for p in pids}


def server_version() -> str:
    out = sh(f"{CTR} version", timeout=60)
    found = re.findall(r"(?m)^\s*Version:\s*(\S+)", out)
    if len(found) < 2:
        raise StepFailed(f"no server version:\n{out}")
    return found[1]


def upgrade_steps() -> None:
    """(7) The next release installed over this one by install.sh, as a user upgrades, with a
    container running: the service restarts on the new file and the container keeps running
    (exec'd into, then stopped and deleted under the new supervisor). Then, by what the release
    changes: containerd (1.6 -> 1.7) runs from its own version dir, the old one kept while its
    shim runs, and status says it upgraded; or warren alone (same payload): the supervisor is the
    new warren, containerd runs from the same version dir, and nothing claims an upgrade."""
    kept: dict[str, Any] = {}

    def before() -> tuple[str, str]:
        sh(f"{WARREN} ctr run -d {IMAGE} keeper sleep 100000", 300)
        kept["pid"] = task_pid("keeper")
        kept["version"] = server_version()
        kept["bin"] = os.path.realpath("/var/lib/warren/bin")
        kept["main_pid"] = main_pid()
        return "", f"containerd {kept['version']}, container pid {kept['pid']}"

    step("upgrade-container-started", before)

    def install_next() -> tuple[str, str]:
        import threading

        gaps: list[float] = []
        done = threading.Event()

        def watch() -> None:
            down_since = None
            while not done.is_set():
                up = socket_answers()
                now = time.monotonic()
                if not up and down_since is None:
                    down_since = now
                elif up and down_since is not None:
                    gaps.append(now - down_since)
                    down_since = None
                time.sleep(0.1)
            if down_since is not None:
                gaps.append(time.monotonic() - down_since)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            out = sh(curl_sh(f"{URL}/next"), 600)
            if CONFIG["upgrade"] == "containerd":
                version = poll("the new containerd answers", lambda: (
                    v if (v := server_version()) != kept["version"] else None), 300)  # fmt: skip
            else:
                poll("containerd answers again", lambda: "" if socket_answers() else None, 300)
                version = server_version()
        finally:
            done.set()
            watcher.join(5)
        kept["new"] = version
        kept["installer"] = out
        UPGRADED.write_text(version)  # what must come up by itself after the reboot
        return out, (f"containerd {kept['version']} -> {version}; socket down "
                     f"{sum(gaps):.1f} s in {len(gaps)} gap(s)")  # fmt: skip

    step("install-next-release", install_next)

    def container_kept() -> tuple[str, str]:
        pid = task_pid("keeper")
        if pid != kept["pid"] or not Path(f"/proc/{pid}").exists():
            raise StepFailed(f"container pid {kept['pid']} -> {pid} across the upgrade")
        out = sh(f"{CTR} tasks exec --exec-id probe keeper echo exec-after-upgrade", 120)
        if "exec-after-upgrade" not in out:
            raise StepFailed(f"exec into the kept container printed:\n{out}")
        return out, f"container pid {pid} kept running and exec'd into"

    step("container-kept-across-upgrade", container_kept)
    if CONFIG.get("hardened"):
        step("proxy-kept-across-upgrade", proxy_in_the_service, soft=True)
    if CONFIG["upgrade"] == "containerd":
        containerd_upgrade_checks(kept)
    else:
        warren_upgrade_checks(kept)

    def removed_under_new() -> tuple[str, str]:
        sh(f"{CTR} tasks kill -s SIGKILL keeper", 120)

        def stopped() -> str | None:
            rows = [ln for ln in sh(f"{CTR} tasks ls").splitlines() if ln.startswith("keeper ")]
            return "" if not rows or "STOPPED" in rows[0] else None

        poll("keeper stopped", stopped, 120)
        sh(f"{CTR} tasks delete keeper", 120)
        sh(f"{CTR} containers rm keeper", 120)
        out = sh(f"{WARREN} ctr run --rm {IMAGE} fresh echo new-after-upgrade", 300)
        if "new-after-upgrade" not in out:
            raise StepFailed(f"a new container after the upgrade printed:\n{out}")
        pruned = sh(f"{WARREN} versions --prune", timeout=120)
        listed = [ln for ln in pruned.splitlines() if Path(kept["bin"]).name[:12] in ln]
        if CONFIG["upgrade"] == "containerd":
            # The old dir stays as the rollback target ("previous"), in use while the container
            # started before the upgrade (sleeper) runs on its shim, no longer by the keeper.
            _, _, using = listed[0].partition("in use by") if listed else ("", "", "")
            users = re.findall(r"\d+", using)
            if not listed or "previous" not in listed[0] or str(kept["pid"]) in users:
                raise StepFailed(f"the old version after the keeper's shim exited: {listed}\n"
                                 f"{pruned}")  # fmt: skip
            said = "old dir: " + listed[0].strip()
        else:
            # One payload, one version dir, which is the current one: nothing to prune.
            if not listed or "current" not in listed[0]:
                raise StepFailed(f"the one version dir after the upgrade: {listed}\n{pruned}")
            said = "its version dir: " + listed[0].strip()
        return out + pruned, "stopped and deleted under the new supervisor; " + said

    step("removed-under-new-supervisor", removed_under_new)


def containerd_upgrade_checks(kept: dict[str, Any]) -> None:
    def status_says() -> tuple[str, str]:
        out = sh(f"{WARREN} containerd status --json", timeout=120)
        kept["status"] = json.loads(out)
        said = str(json.loads(out).get("upgrade") or "")
        # ctr shows Debian's full versions (1.6.20~ds1), warren the release's (1.6.20).
        got = re.match(r"upgraded containerd (\S+) → (\S+); (\d+) containers? kept running", said)
        if not got or not (
            kept["version"].startswith(got.group(1))
            and kept["new"].startswith(got.group(2))
            and int(got.group(3)) >= 1
        ):
            raise StepFailed(
                f"status upgrade line {said!r}, expected upgraded containerd {kept['version']} "
                f"→ {kept['new']}; N containers kept running (N >= 1):\n{out}"
            )
        return out, said

    step("status-says-upgraded", status_says, soft=True)

    def new_binary_dir() -> tuple[str, str]:
        exes = containerd_exes()
        new_bin = os.path.realpath("/var/lib/warren/bin")
        if exes != {f"{new_bin}/containerd"} or new_bin == kept["bin"]:
            raise StepFailed(f"containerd runs {exes}; bin -> {new_bin} (before: {kept['bin']})")
        listed = sh(f"{WARREN} versions", timeout=120)
        if not Path(kept["bin"]).is_dir():
            raise StepFailed(f"the old version dir {kept['bin']} is gone while its shim runs")
        return listed, f"containerd from {new_bin}; old dir kept while its shim runs"

    step("containerd-from-new-version-dir", new_binary_dir)

    def extracted_before_restart() -> tuple[str, str]:
        """The installer extracted the new payload while the old containerd served (extract
        --prepare): the restarted supervisor found it there and only switched bin."""
        said = [ln for ln in kept["installer"].splitlines() if "ready for a restart" in ln]
        report = kept.get("status") or json.loads(
            sh(f"{WARREN} containerd status --json", timeout=120))  # fmt: skip
        cached = (report.get("timings") or {}).get("extraction_cached")
        if not said or cached is not True:
            raise StepFailed(
                f"installer: {said or 'no extract --prepare line'}; the new supervisor's "
                f"extraction_cached: {cached}\n{kept['installer']}"
            )
        return kept["installer"], said[0].replace("[warren] ", "")

    step("extracted-before-the-restart", extracted_before_restart)


def warren_upgrade_checks(kept: dict[str, Any]) -> None:
    def status_names_new_warren() -> tuple[str, str]:
        out = sh(f"{WARREN} containerd status --json", timeout=120)
        report = json.loads(out)
        want = CONFIG["next_warren"]
        problems = []
        if report.get("warren_version") != want:
            problems.append(f"the supervisor is warren {report.get('warren_version')}, not {want}")
        if report.get("supervisor_pid") in (None, kept["main_pid"]):
            problems.append(f"supervisor pid {report.get('supervisor_pid')}: not restarted")
        if report.get("warren_flavour") != CONFIG["flavour"]:
            problems.append(f"a {report.get('warren_flavour')} build, not {CONFIG['flavour']}")
        if report.get("upgrade"):  # containerd did not change: no upgrade to claim
            problems.append(f"status claims {report['upgrade']!r}")
        if problems:
            raise StepFailed("; ".join(problems) + f"\n{out}")
        return out, (f"supervisor pid {report['supervisor_pid']} runs warren {want} "
                     f"({CONFIG['flavour']} build); no upgrade claimed")  # fmt: skip

    step("status-names-the-new-warren", status_names_new_warren)

    def same_binary_dir() -> tuple[str, str]:
        exes = containerd_exes()
        now_bin = os.path.realpath("/var/lib/warren/bin")
        if now_bin != kept["bin"] or exes != {f"{now_bin}/containerd"}:
            raise StepFailed(f"containerd runs {exes}; bin -> {now_bin} (before: {kept['bin']})")
        if kept["new"] != kept["version"]:
            raise StepFailed(f"containerd {kept['version']} -> {kept['new']}: the payload changed")
        return "", f"containerd {kept['new']} from the same version dir {now_bin}"

    step("containerd-from-the-same-version-dir", same_binary_dir)


def rollback_under_systemd() -> tuple[str, str]:
    """`warren rollback` with the service running under systemd (after the upgrade left the
    previous containerd as the rollback target): the unit stays active, systemd's MainPID is
    the supervisor that serves afterwards, its recorded run options are kept, and containerd
    runs the previous version."""

    def report() -> dict[str, Any]:
        out = sh(f"{WARREN} containerd status --json", check=False, timeout=120)
        try:
            got = json.loads(out)
        except ValueError:
            return {}
        return got if isinstance(got, dict) else {}

    before = report()
    version = server_version()
    out = sh(f"{WARREN} rollback", 600)

    def settled() -> str | None:
        if sh(f"systemctl is-active {SERVICE}", check=False).strip() != "active":
            return None
        now = report()
        if now.get("state") != "RUNNING" or now.get("supervisor_pid") != main_pid():
            return None
        return json.dumps(now)

    try:
        after = json.loads(poll("the unit active, MainPID the serving supervisor", settled, 180))
    except StepFailed as exc:
        now = report()
        raise StepFailed(
            f"{exc}; is-active {sh(f'systemctl is-active {SERVICE}', check=False).strip()}, "
            f"MainPID {main_pid()}, status supervisor_pid {now.get('supervisor_pid')} "
            f"state {now.get('state')}\n{out}"
        ) from None
    problems = []
    if after.get("run_options") != before.get("run_options"):
        problems.append(f"run options {before.get('run_options')} -> {after.get('run_options')}")
    back = server_version()
    if back == version:
        problems.append(f"containerd still {version} after the rollback")
    if problems:
        raise StepFailed("; ".join(problems) + "\n" + out)
    return out, (f"containerd {version} -> {back}; MainPID {after['supervisor_pid']} is the "
                 "supervisor; unit active; run options kept")  # fmt: skip


# --- rootless: a user's install.sh --rootless, the user unit, lingering ---------------------------

# The user the rootless steps create (with /etc/subuid and /etc/subgid ranges) and run as. Their
# user manager runs by lingering (`loginctl enable-linger`, as root), which is also what brings
# the user unit back after a reboot; install.sh --rootless only explains lingering.
RL_USER = "warren-rl"
RL_RANGE = "200000-265535"
# A drop-in the user wrote before the install (as `systemctl --user edit` would): the unit's own
# ExecStart (install.sh: `containerd run --ready-timeout 120`) with a published port. It is the
# user's file: the uninstaller must leave it, so it is in the home's list from before.
RL_HOST_PORT = 18080
RL_CHILD_PORT = 8081
RL_TOKEN = "published-from-a-rootless-container"
RL_TAR = "/tmp/warren-rl-busybox.tar"


def rl_home() -> tuple[int, str]:
    import pwd

    pw = pwd.getpwnam(RL_USER)
    return pw.pw_uid, pw.pw_dir


def rl_warren() -> str:
    return f"{rl_home()[1]}/.local/bin/warren"


def as_user(cmd: str, timeout: float = 300, check: bool = True) -> str:
    """`cmd` with sh as the rootless user, in their home, with the environment of their user
    manager (XDG_RUNTIME_DIR of lingering's user@UID.service, its user bus), none of root's."""
    import shlex

    uid, home = rl_home()
    env = (f"HOME={home} USER={RL_USER} LOGNAME={RL_USER} SHELL=/bin/sh "
           f"PATH={home}/.local/bin:/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR=/run/user/{uid} "
           f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus")  # fmt: skip
    return sh(f"cd {home} && runuser -u {RL_USER} -- env -i {env} sh -c {shlex.quote(cmd)}",
              timeout, check)  # fmt: skip


def home_list() -> list[str]:
    """The user's home: every path with its type, mode and owner."""
    out = sh(f"find {rl_home()[1]} -printf '%y %m %u:%g %p\\n'", timeout=120)
    return sorted(out.splitlines())


def user_manager_up() -> str:
    def probe() -> str | None:
        state = as_user("systemctl --user is-system-running", check=False, timeout=60).strip()
        return state if state in ("running", "degraded") else None

    return poll(f"{RL_USER}'s user manager (user@.service) answers", probe, 180)


def rootless_user() -> tuple[str, str]:
    """A user without root, with ranges of 65536 ids in /etc/subuid and /etc/subgid, lingering
    enabled by root (so their user manager runs with no login), and a drop-in of their own that
    publishes a port; then the list of their home, which the purge must leave as it was."""
    sh(f"id -u {RL_USER} >/dev/null 2>&1 || useradd -m -s /bin/sh {RL_USER}")
    for ids, flag in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
        if not re.search(rf"(?m)^{RL_USER}:\d+:65536$", sh(f"cat {ids}", check=False)):
            sh(f"usermod {flag} {RL_RANGE} {RL_USER}")
    sh(f"loginctl enable-linger {RL_USER}")
    state = user_manager_up()
    dropin = ".config/systemd/user/warren-containerd.service.d"
    conf = (f"[Service]\nExecStart=\nExecStart=%h/.local/bin/warren containerd run "
            f"--ready-timeout 120 --publish {RL_HOST_PORT}:{RL_CHILD_PORT}\n")  # fmt: skip
    as_user(f"mkdir -p {dropin} && printf '%s' '{conf}' >{dropin}/publish.conf")
    listed = home_list()
    (SHARE / "rootless-home-before.txt").write_text("\n".join(listed))
    ranges = sh(f"grep -h ^{RL_USER}: /etc/subuid /etc/subgid").split()
    return "\n".join(listed), f"uid {rl_home()[0]}, ranges {ranges}, user manager {state}"


def rootless_user_step() -> None:
    step("rootless-user", rootless_user)


def rootless_install_steps() -> None:
    """(rootless) As the user: curl | sh -s -- --rootless installs ~/.local/bin/warren and the
    user unit, enabled and started; a container prints its line; a port published by the unit's
    RootlessKit is reached from the guest's own network (the host side of the user namespace)."""
    w = rl_warren()

    def install() -> tuple[str, str]:
        out = as_user(f"curl -sfL {URL}/install.sh | WARREN_BASE_URL={URL} sh -s -- --rootless",
                      600)  # fmt: skip
        said = [ln for ln in out.splitlines() if "lingering" in ln]
        if not said or "lingering is on" not in said[0]:
            raise StepFailed(f"the install does not say lingering is on for {RL_USER}:\n{out}")
        return out, said[0].replace("[warren] ", "")

    step("rootless-install", install)

    def unit_active() -> tuple[str, str]:
        unit = SERVICE
        user = "systemctl --user"
        out = as_user(f"{user} is-enabled {unit} && {user} is-active {unit} && "
                      f"{user} show -p MainPID -p Type -p DropInPaths {unit}")  # fmt: skip
        if "publish.conf" not in out:
            raise StepFailed(f"the user's drop-in is not in the unit:\n{out}")
        return out, " ".join(out.split()[:2]) + ", " + out.split("MainPID=")[1].split()[0]

    step("rootless-unit-enabled-active", unit_active)

    def import_image() -> str:
        sh(f"cp {SHARE}/busybox.tar {RL_TAR} && chmod 0644 {RL_TAR}")
        return as_user(f"{w} ctr images import {RL_TAR}", 300)

    step("rootless-import-image", import_image)

    def run_prints() -> tuple[str, str]:
        out = as_user(f"{w} ctr run --rm {IMAGE} rl-hello echo hello-from-rootless", 300)
        if "hello-from-rootless" not in out:
            raise StepFailed(f"the rootless container did not print its line:\n{out}")
        return out, out.strip().splitlines()[-1]

    step("rootless-ctr-run-prints", run_prints)

    def published_port() -> tuple[str, str]:
        # The test image links a few applets only (tests/support busybox_image).
        serve = (f"busybox mkdir -p /www && echo {RL_TOKEN} >/www/index.html && "
                 f"exec busybox httpd -f -p {RL_CHILD_PORT} -h /www")  # fmt: skip
        as_user(f"{w} ctr run -d --net-host {IMAGE} rl-web sh -c '{serve}'", 300)

        def fetch() -> str | None:
            try:
                url = f"http://127.0.0.1:{RL_HOST_PORT}/"
                with urllib.request.urlopen(url, timeout=3) as rsp:
                    body = str(rsp.read().decode())
                    return body if RL_TOKEN in body else None
            except OSError:
                return None

        try:
            body = poll(f"127.0.0.1:{RL_HOST_PORT} answers from the container", fetch, 120)
        finally:
            gone = as_user(f"{w} ctr tasks delete -f rl-web; {w} ctr containers rm rl-web",
                           300, check=False)  # fmt: skip
        said = f"127.0.0.1:{RL_HOST_PORT} -> the container's :{RL_CHILD_PORT}: {body.strip()}"
        return body + gone, said

    step("rootless-published-port", published_port)


def rootless_after_reboot_steps() -> None:
    """(rootless) After the reboot: lingering starts the user manager, which starts the user unit
    by itself (no login session of the user), and a container runs again."""
    w = rl_warren()

    def unit_back() -> tuple[str, str]:
        def active() -> str | None:
            out = as_user(f"systemctl --user is-active {SERVICE}", check=False, timeout=60)
            return out if out.strip() == "active" else None

        poll(f"{RL_USER}'s unit active after the reboot", active, 480)
        # State=lingering: no login session of the user (systemd >= 256 counts the user
        # manager's own session, class "manager", in Sessions=), lingering on.
        who = sh(f"loginctl show-user {RL_USER} -p Linger -p State -p Sessions; "
                 f"loginctl list-sessions --no-legend")  # fmt: skip
        found = dict(ln.partition("=")[::2] for ln in who.splitlines())
        if found.get("Linger") != "yes" or found.get("State") != "lingering":
            raise StepFailed(f"not by lingering alone (a login, or no linger):\n{who}")
        pid = as_user(f"systemctl --user show -p MainPID --value {SERVICE}").strip()
        return who, f"active with no login (State=lingering, Linger=yes), MainPID {pid}"

    step("rootless-unit-up-after-reboot", unit_back)

    def run_again() -> tuple[str, str]:
        out = as_user(f"{w} ctr run --rm {IMAGE} rl-again echo rootless-after-reboot", 300)
        if "rootless-after-reboot" not in out:
            raise StepFailed(f"the container after the reboot printed:\n{out}")
        return out, "image kept; " + out.strip().splitlines()[-1]

    step("rootless-container-after-reboot", run_again)

    def host_loopback() -> tuple[str, str]:
        """A service of the guest on loopback only is reached from the user's container through
        slirp4netns (the host's loopback is 10.0.2.2 there)."""
        import http.server
        import threading

        token = "host-loopback-for-the-rootless-user"

        class Hello(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = f"{token}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                return

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://10.0.2.2:{server.server_address[1]}/"
            out = as_user(f"{w} ctr run --rm --net-host {IMAGE} rl-fetch busybox wget -q -O- {url}",
                          300)  # fmt: skip
        finally:
            server.shutdown()
        if token not in out:
            raise StepFailed(f"the container did not fetch the guest's loopback service:\n{out}")
        return out, f"127.0.0.1:{server.server_address[1]} of the guest, from the container"

    step("rootless-host-loopback", host_loopback)

    def kill9_containerd() -> tuple[str, str]:
        """kill -9 of the user's containerd: the supervisor under the user unit restarts it in a
        new RootlessKit, and a container runs again."""
        before = rootless_status()
        pid = before.get("containerd_pid")
        if not isinstance(pid, int):
            raise StepFailed(f"no containerd pid in the user's status: {before}\n"
                             + rootless_pid_identity())  # fmt: skip
        os.kill(pid, 9)  # SIGKILL

        def back() -> str | None:
            raw = as_user(f"{w} containerd status --json", check=False, timeout=120)
            now = parse_status(raw)
            fresh = now.get("containerd_pid") not in (None, pid)
            if now.get("state") == "RUNNING" and fresh and now.get("socket_answers"):
                return json.dumps(now)
            raise StepFailed(f"the last status said:\n{raw.strip()[-3000:]}")  # poll's last

        try:
            now = json.loads(poll("the user's containerd restarted", back, 240))
        except StepFailed as exc:
            raise StepFailed(f"{exc}\n{rootless_pid_identity()}") from None
        out = as_user(f"{w} ctr run --rm {IMAGE} rl-after-kill echo still-here", 300)
        if "still-here" not in out:
            raise StepFailed(f"no container after the kill -9:\n{out}")
        said = (f"containerd {pid} -> {now['containerd_pid']}, restarts "
                f"{before.get('restarts')} -> {now.get('restarts')}; a container ran")  # fmt: skip
        return json.dumps(now, indent=1) + "\n" + out, said

    step("rootless-kill9-containerd", kill9_containerd)


def rootless_status() -> dict[str, Any]:
    return parse_status(as_user(f"{rl_warren()} containerd status --json", check=False,
                                timeout=120))  # fmt: skip


def rootless_pid_identity() -> str:
    """What the user's containerd pidfile records against what /proc says of that pid now (as
    root and as the user): why a status may not trust the process it names."""
    uid, _home = rl_home()
    path = f"/run/user/{uid}/warren/containerd.pid"
    lines = [f"--- {path}:"]
    try:
        record = json.loads(Path(path).read_text())
        lines.append(json.dumps(record))
        pid = int(record["pid"])
        stat = Path(f"/proc/{pid}/stat").read_text()
        start = int(stat.rpartition(")")[2].split()[19]) / os.sysconf("SC_CLK_TCK")
        btime = Path("/proc/stat").read_text().split("btime ")[1].split()[0]
        lines.append(f"/proc/{pid}: starttime {start:.2f} s after boot, btime {btime}, "
                     f"exe {os.readlink(f'/proc/{pid}/exe')}, status "
                     f"{Path(f'/proc/{pid}/status').read_text().splitlines()[2]}")  # fmt: skip
        lines.append("as the user: " + as_user(f"readlink /proc/{pid}/exe; grep btime /proc/stat",
                                               check=False, timeout=60).strip())  # fmt: skip
    except (OSError, ValueError, KeyError, IndexError, StepFailed) as exc:
        lines.append(f"({exc})")
    return "\n".join(lines)


def parse_status(out: str) -> dict[str, Any]:
    """`containerd status --json`'s report, {} when the output is not one JSON object."""
    try:
        got = json.loads(out)
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def rootless_main_pid() -> int:
    return int(as_user(f"systemctl --user show -p MainPID --value {SERVICE}").strip() or 0)


def rootless_rollback_steps() -> None:
    """(rootless) The next release (containerd 1.7) installed over the user's by install.sh
    --rootless, then `warren rollback` run by the user: it restarts through `systemctl --user`
    (runtime/service.py), so the user unit stays active and its MainPID is the supervisor that
    serves the previous containerd afterwards."""
    w = rl_warren()
    kept: dict[str, Any] = {}

    def upgrade() -> tuple[str, str]:
        kept["before"] = rootless_status().get("server_version")
        if not kept["before"]:
            raise StepFailed(f"no containerd version from the user's status: {rootless_status()}")
        out = as_user(f"curl -sfL {URL}/next/install.sh | WARREN_BASE_URL={URL}/next "
                      "sh -s -- --rootless", 600)  # fmt: skip

        def upgraded() -> str | None:
            now = rootless_status()
            got = now.get("server_version")
            return str(got) if now.get("state") == "RUNNING" and got != kept["before"] else None

        kept["after"] = poll("the user's containerd upgraded", upgraded, 300)
        return out, f"containerd {kept['before']} -> {kept['after']} under the user unit"

    step("rootless-upgrade-by-installer", upgrade)

    def rollback() -> tuple[str, str]:
        out = as_user(f"{w} rollback", 600)

        def settled() -> str | None:
            active = as_user(f"systemctl --user is-active {SERVICE}", check=False).strip()
            now = rootless_status()
            if active != "active" or now.get("state") != "RUNNING":
                return None
            if now.get("supervisor_pid") != rootless_main_pid():
                return None
            return json.dumps(now)

        try:
            after = json.loads(poll("the user unit active, MainPID the supervisor", settled, 180))
        except StepFailed as exc:
            now = rootless_status()
            raise StepFailed(f"{exc}; MainPID {rootless_main_pid()}, status supervisor_pid "
                             f"{now.get('supervisor_pid')} state {now.get('state')}\n{out}"
                             ) from None  # fmt: skip
        back = after.get("server_version")
        if back != kept["before"]:
            raise StepFailed(f"containerd {kept['after']} -> {back}, not {kept['before']}\n{out}")
        return out, (f"containerd {kept['after']} -> {back}; MainPID {after['supervisor_pid']} is "
                     "the supervisor; the user unit active")  # fmt: skip

    step("rootless-rollback-under-user-unit", rollback)


def rootless_purge_steps() -> None:
    """(rootless) The user's warren-uninstall.sh --purge: none of the user's warren processes
    left, and the home as it was before the install (the user's own drop-in kept)."""
    _, home = rl_home()
    step("rootless-uninstall-purge",
         lambda: as_user(f"{home}/.local/bin/warren-uninstall.sh --purge", 300))  # fmt: skip

    def same_home() -> tuple[str, str]:
        before = set((SHARE / "rootless-home-before.txt").read_text().splitlines())
        after = set(home_list())
        left, gone = sorted(after - before), sorted(before - after)
        procs = sh(f"pgrep -a -u {RL_USER} -f 'containerd|rootlesskit|slirp4netns|warren'",
                   check=False).strip()  # fmt: skip
        if left or gone or procs:
            raise StepFailed("the home differs from before the install:\nleft over:\n"
                             + "\n".join(left) + "\nremoved:\n" + "\n".join(gone)
                             + f"\nthe user's processes:\n{procs}")  # fmt: skip
        return "\n".join(sorted(after)), f"{len(after)} paths, as before; no warren process left"

    step("rootless-home-as-before", same_home)


def rootless(steps: Callable[[], None]) -> None:
    """Rootless steps on a guest that asks for them: a failure is recorded as its step's and
    ends the rootless part of this phase only, not the rest of the scenario."""
    if not CONFIG.get("rootless"):
        return
    try:
        steps()
    except StepFailed:
        pass  # recorded as its step's failure
    except Exception:
        record("rootless-aborted", "fail", 0, traceback.format_exc(), f"phase {PHASE}")
    else:
        return
    # The user unit's journal (the persistent journal keeps the user's too) for the report.
    out = sh(f"journalctl -b _SYSTEMD_USER_UNIT={SERVICE} --no-pager -o short-monotonic",
             check=False, timeout=60)  # fmt: skip
    (SHARE / f"journal-{PHASE}-rootless.txt").write_text(out)


def purge_steps() -> None:
    """(5) The end of the after-reboot boot: the purge, then the file list and the network
    against the install's. A boot of its own (as it had) proved nothing the reboot before it
    does not, and cost 40 to 150 s per guest."""
    rootless(rootless_purge_steps)
    step("uninstall-purge", lambda: sh(f"{UNINSTALL} --purge", 300))

    def same_files() -> tuple[str, str]:
        before = set((SHARE / "files-before.txt").read_text().splitlines())
        after = set(file_list())
        (SHARE / "files-after.txt").write_text("\n".join(sorted(after)))
        left = sorted(after - before)
        gone = sorted(before - after)
        if left or gone:
            text = "left over:\n" + "\n".join(left) + "\nremoved:\n" + "\n".join(gone)
            raise StepFailed(
                f"file list differs from before the install ({len(left)} left)\n{text}"
            )
        return "", f"{len(after)} paths, as before the install"

    step("files-as-before", same_files, soft=True)

    def same_network() -> tuple[str, str]:
        before = json.loads((SHARE / "network-before.json").read_text())
        after = network()
        (SHARE / "network-after.json").write_text(json.dumps(after))
        differ = []
        for what in ("links", "iptables", "netns"):
            left = sorted(set(after[what]) - set(before[what]))
            gone = sorted(set(before[what]) - set(after[what]))
            if left or gone:
                differ.append(f"{what}: left over {left}, removed {gone}")
        if differ:
            raise StepFailed("the network differs from before the install:\n" + "\n".join(differ))
        said = f"{len(after['links'])} links, {len(after['iptables'])} iptables lines"
        return json.dumps(after), f"{said}, {len(after['netns'])} netns, as before the install"

    step("network-as-before", same_network)
    set_phase("done")


PHASES = {
    "install": phase_install,
    "after-reboot": phase_after_reboot,
}


def main() -> int:
    global PHASE
    CONFIG.update(json.loads((SHARE / "guest.json").read_text()))
    if sys.argv[1:] == ["registry"]:
        serve_registry()
        return 0
    PHASE = json.loads(STATE.read_text())["phase"] if STATE.exists() else "install"
    mark(f"boot {PHASE}")
    if PHASE == "done":
        end_boot("poweroff", "final")
        return 0
    if openrc():
        # Debian booted by sysvinit + OpenRC with no ifupdown leaves lo down at every boot
        # (systemd brings it up by itself); the host's setup, not warren's: the release server
        # listens on it, and a host's loopback is up at every boot.
        step("loopback-up", lambda: sh("ip link set lo up && ip -o addr show lo"))
    if PHASE == "after-reboot" and CONFIG.get("rootless") and CONFIG.get("upgrade"):
        # The next release, for the user's upgrade (root's is in the install boot).
        step("serve-release", serve_release)
    try:
        PHASES[PHASE]()
    except Exception:
        save_journal("failed")
        record("phase-aborted", "fail", 0, traceback.format_exc(), f"phase {PHASE} stopped")
        set_phase("done")
        end_boot("poweroff", "after-failure")
        return 1
    if json.loads(STATE.read_text())["phase"] == "done":
        set_phase("done")
        end_boot("poweroff", "final")
    return 0


if __name__ == "__main__":
    sys.exit(main())
