#!/bin/sh
# Warren bundle installer: containerd + runc in one file, run as a systemd or OpenRC service.
#
#   curl -sfL https://.../install.sh | sh -
#   sh install.sh            (same, from a copy)
#   sh install.sh --help
#   curl -sfL https://.../install.sh | sh -s -- --rootless     (as a user without root)
#
# --rootless: run by the user, not root. Checks what rootless containerd needs (the list
# 'warren doctor' checks: rootlesskit, slirp4netns, newuidmap/newgidmap, /etc/subuid and
# /etc/subgid ranges, unprivileged user namespaces, /dev/net/tun; one line each with its fix, and
# nothing is written while one is missing), installs the file as ~/.local/bin/warren, writes the
# systemd user unit ~/.config/systemd/user/warren-containerd.service (started with
# 'systemctl --user' when a user systemd runs) and ~/.local/bin/warren-uninstall.sh. Lingering
# (containerd running without a login, and from boot) is explained, never enabled.
#
# It downloads warren-<os>-<arch> and SHA256SUMS from WARREN_BASE_URL, checks the SHA-256, installs
# the file as <bin-dir>/warren and, on Linux, writes warren-containerd.service (systemd) or
# /etc/init.d/warren-containerd (OpenRC); it writes <bin-dir>/warren-uninstall.sh, which removes
# exactly what was written (data only with --purge), and <bin-dir>/warren-killall.sh, which stops
# everything warren started and what its pods made, leaving the install (--purge runs it).
#
# Environment (all optional):
#   WARREN_BASE_URL          folder holding warren-<os>-<arch>, SHA256SUMS and install.sh
#                            (default: the project's latest release download URL)
#   WARREN_VERSION           a release tag instead of the latest (ignored with WARREN_BASE_URL)
#   WARREN_FLAVOR            which Linux build: unset (default) takes warren-linux-<arch> when it
#                            runs on this host and otherwise the static one (older glibc, musl),
#                            testing each before it is installed; "dynamic" or "static" forces one
#   WARREN_BIN_DIR           where warren goes (default /usr/local/bin; /opt/bin if read-only;
#                            ~/.local/bin with --rootless)
#   WARREN_INSTALL_SKIP_DOWNLOAD=true   air-gapped: <bin-dir>/warren is already there (copied
#                            by hand); only the service and the uninstaller are set up
#   WARREN_SYSTEMD_DIR       where the unit goes (default /etc/systemd/system). The unit is
#                            written when systemd is running, or whenever this is set (so it can
#                            be written for a host image, or checked, without systemd). With
#                            --rootless the user unit is always written, by default into
#                            ${XDG_CONFIG_HOME:-~/.config}/systemd/user
#   WARREN_OPENRC_DIR        where the OpenRC script goes (default /etc/init.d; its environment
#                            file goes to conf.d beside it). Written when OpenRC runs this host
#                            (and systemd does not), or whenever this is set; enabled in the
#                            default runlevel and started only in /etc/init.d on a running OpenRC
#   WARREN_SKIP_ENABLE=true  write the unit but neither enable nor start it
#   WARREN_SKIP_START=true   enable the unit but do not start it
#   WARREN_SHUTDOWN_GRACE    seconds containers get between SIGTERM and SIGKILL when the host
#                            shuts down or reboots (default 10). 'systemctl stop' of the service
#                            alone leaves containers running (KillMode=process); only a shutdown
#                            stops them, instead of waiting out systemd's 90 s final-kill timeout
#   HTTP_PROXY, HTTPS_PROXY, NO_PROXY (or their lower-case forms)   a proxy for the download and
#                            for the service: written, with NO_PROXY extended by localhost,
#                            127.0.0.1, the pod CIDR and the service CIDR, into the service's
#                            environment file (mode 0600: a proxy URL may carry a password)
#   CONTAINERD_HTTP_PROXY, CONTAINERD_HTTPS_PROXY, CONTAINERD_NO_PROXY   as above, for containerd
#                            alone (image pulls): warren gives containerd these in place of the
#                            plain ones
#   WARREN_POD_CIDR          the pod network (default 10.217.0.0/16): 'containerd run --pod-cidr'
#   WARREN_SERVICE_CIDR      a Kubernetes service CIDR, only to be kept out of the proxy
#   WARREN_DATA_DIR, WARREN_RUN_DIR, WARREN_CONFIG_DIR   non-default warren dirs: written into the
#                            unit's environment, and purged by 'warren-uninstall.sh --purge'
#   WARREN_PLATFORM, WARREN_ARCH   force the OS (linux|darwin) and arch (amd64|arm64) detected
#   WARREN_REQUIRE_SIGNATURE=1   refuse to install when SHA256SUMS.sig cannot be checked (no
#                            openssl on this host, or an install.sh that carries no release key)
#
# SHA256SUMS is signed with the release key (ECDSA P-256): SHA256SUMS.sig is base64 of the DER
# signature. This script carries the public key and checks the signature with openssl when the
# host has it, before it trusts any digest; it says so plainly when it cannot check.
#
# Exit codes (as warren's): 0 ok, 1 other error, 2 usage, 4 permission denied,
# 5 platform not supported, 8 checksum or signature mismatch.
#
# Everything runs from main() at the end, so a script piped into sh is read whole before it acts.
set -eu
umask 022

# Rewritten by 'make release' (RELEASE_REPO) to the repository that publishes the release.
WARREN_DEFAULT_REPO='warren-bundle/warren-bundle'

# The release key's public half, written in by 'make release' (scripts/sign_release.sh); empty
# in the repository's copy, which then cannot check a signature.
release_key() {
    cat <<'EOF'
# RELEASE_KEY_BEGIN
# RELEASE_KEY_END
EOF
}

SERVICE_NAME='warren-containerd.service'
OPENRC_NAME='warren-containerd'
# The settings both service files (systemd's unit, OpenRC's script) are written from.
WATCHDOG_SEC=60        # no WATCHDOG=1 for this long: systemd restarts the service
START_TIMEOUT_SEC=300  # a first start extracts the payload: minutes on a small or busy host
RESTART_SEC=5
NOFILE_LIMIT=1048576
OOM_SCORE_ADJ=-999
READY_TIMEOUT=120
OPENRC_LOG='/var/log/warren-containerd.log'  # supervise-daemon's stdout and stderr of warren
DEFAULT_POD_CIDR='10.217.0.0/16'  # warren_bundle/node/network.py's
BRIDGE='warren0'                  # its bridge
PROXY_VARS='HTTP_PROXY HTTPS_PROXY NO_PROXY CONTAINERD_HTTP_PROXY CONTAINERD_HTTPS_PROXY CONTAINERD_NO_PROXY'
EXIT_ERROR=1
EXIT_USAGE=2
EXIT_PERMISSION=4
EXIT_PLATFORM=5
EXIT_CHECKSUM=8

TMP_DIR=''
NEW_FILE=''
CREATED_DIRS=''
WROTE_FILES=false

info() {
    printf '[warren] %s\n' "$*"
}

warn() {
    printf '[warren] warning: %s\n' "$*" >&2
}

# fatal CODE "cause; remedy": one line on stderr, like warren's own errors.
fatal() {
    code=$1
    shift
    printf 'warren install: %s\n' "$*" >&2
    exit "$code"
}

cleanup() {
    if [ -n "$NEW_FILE" ]; then rm -f "$NEW_FILE"; fi
    if [ -n "$TMP_DIR" ]; then rm -rf "$TMP_DIR"; fi
    if [ "$WROTE_FILES" = false ]; then
        # Failed before anything was installed: the directories we made go too.
        # shellcheck disable=SC2086 # split on purpose: paths with spaces are refused
        for dir in $(printf '%s\n' $CREATED_DIRS | sort -r); do rmdir "$dir" 2>/dev/null || true; done
    fi
}

truthy() {
    case "${1:-}" in
        1 | true | TRUE | True | yes | YES | on | ON) return 0 ;;
        *) return 1 ;;
    esac
}

usage() {
    if [ -f "$0" ] && grep -q 'Warren bundle installer' "$0" 2>/dev/null; then
        sed -n '2,/^# Everything runs/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d'
    else
        echo "usage: sh install.sh, or curl -sfL URL/install.sh | sh -"
        echo "settings are WARREN_* environment variables; see the comment at the top of install.sh"
    fi
}

# --- what this host is ------------------------------------------------------------------------

detect_platform() {
    os=${WARREN_PLATFORM:-$(uname -s)}
    case "$os" in
        Linux | linux) OS=linux ;;
        Darwin | darwin) OS=darwin ;;
        *) fatal "$EXIT_PLATFORM" "operating system '$os' is not supported; supported: linux, darwin (Windows: use WSL2)" ;;
    esac
    arch=${WARREN_ARCH:-$(uname -m)}
    case "$arch" in
        x86_64 | amd64) ARCH=amd64 ;;
        aarch64 | arm64 | armv8l) ARCH=arm64 ;;
        *) fatal "$EXIT_PLATFORM" "architecture '$arch' is not supported; supported: amd64, arm64 (ARM v7 is not built)" ;;
    esac
    ASSET="warren-$OS-$ARCH"
    # The static build is the fallback when the default one does not run here (Linux only).
    STATIC_ASSET=''
    case "${WARREN_FLAVOR:-}" in
        '')
            if [ "$OS" = linux ]; then STATIC_ASSET="$ASSET-static"; fi ;;
        dynamic) ;;
        static)
            [ "$OS" = linux ] || fatal "$EXIT_USAGE" "WARREN_FLAVOR=static exists for Linux only; unset it"
            ASSET="$ASSET-static" ;;
        *) fatal "$EXIT_USAGE" "WARREN_FLAVOR='$WARREN_FLAVOR' is not a build flavor; use 'dynamic' or 'static', or leave it unset to pick what runs here" ;;
    esac
}

# Paths are baked into the unit and the uninstaller: keep them plain and absolute.
check_path() {
    case "$2" in
        /*) ;;
        *) fatal "$EXIT_USAGE" "$1='$2' is not an absolute path; give a path starting with /" ;;
    esac
    case "$2" in
        *[[:space:]]* | *\'* | *\"* | *\\* | *\$* | *\`*)
            fatal "$EXIT_USAGE" "$1='$2' contains spaces, quotes or shell characters; choose a plain path" ;;
    esac
    if [ "$2" = / ]; then
        fatal "$EXIT_USAGE" "$1 must not be /; choose a directory of its own"
    fi
}

writable_dir() {
    # The nearest existing ancestor decides whether the dir can be created and written.
    d=$1
    while [ ! -d "$d" ]; do d=$(dirname "$d"); done
    probe="$d/.warren-install-probe.$$"
    if (: >"$probe") 2>/dev/null; then
        rm -f "$probe"
        return 0
    fi
    return 1
}

choose_paths() {
    # Only --rootless reads HOME (checked absolute above): a service manager, cloud-init or
    # `env -i` runs this with HOME unset, and set -u would stop on it.
    XDG_CONFIG=
    if [ "$ROOTLESS" = true ]; then XDG_CONFIG=${XDG_CONFIG_HOME:-$HOME/.config}; fi
    if [ -n "${WARREN_BIN_DIR:-}" ]; then
        BIN_DIR=${WARREN_BIN_DIR%/}
    elif [ "$ROOTLESS" = true ]; then
        BIN_DIR=$HOME/.local/bin
    elif [ "$(id -u)" -ne 0 ] || writable_dir /usr/local/bin; then
        BIN_DIR=/usr/local/bin
    else
        BIN_DIR=/opt/bin
        info "/usr/local/bin is not writable (read-only /usr?): installing to $BIN_DIR"
    fi
    check_path WARREN_BIN_DIR "$BIN_DIR"
    if ! writable_dir "$BIN_DIR"; then
        fatal "$EXIT_PERMISSION" "permission denied: cannot write to $BIN_DIR; run the installer as root (curl ... | sudo sh -) or set WARREN_BIN_DIR"
    fi
    SYSTEMD_DIR=${WARREN_SYSTEMD_DIR:-/etc/systemd/system}
    if [ "$ROOTLESS" = true ]; then SYSTEMD_DIR=${WARREN_SYSTEMD_DIR:-$XDG_CONFIG/systemd/user}; fi
    SYSTEMD_DIR=${SYSTEMD_DIR%/}
    check_path WARREN_SYSTEMD_DIR "$SYSTEMD_DIR"
    OPENRC_DIR=${WARREN_OPENRC_DIR:-/etc/init.d}
    OPENRC_DIR=${OPENRC_DIR%/}
    check_path WARREN_OPENRC_DIR "$OPENRC_DIR"
    # warren's own defaults (warren_bundle/paths.py): per user on macOS, where Lima runs as the user.
    if [ "$OS" = darwin ]; then
        DATA_DIR=${WARREN_DATA_DIR:-$HOME/.warren}
        RUN_DIR=${WARREN_RUN_DIR:-$DATA_DIR/run}
        CONFIG_DIR=${WARREN_CONFIG_DIR:-$DATA_DIR/etc}
    elif [ "$ROOTLESS" = true ]; then
        # A user's containerd: XDG dirs. Without XDG_RUNTIME_DIR there is no run dir (yet):
        # 'warren containerd start' then says how to get one.
        DATA_DIR=${WARREN_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/warren}
        RUN_DIR=${WARREN_RUN_DIR:-${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/warren}}
        CONFIG_DIR=${WARREN_CONFIG_DIR:-$XDG_CONFIG/warren}
    else
        DATA_DIR=${WARREN_DATA_DIR:-/var/lib/warren}
        RUN_DIR=${WARREN_RUN_DIR:-/run/warren-containerd}
        CONFIG_DIR=${WARREN_CONFIG_DIR:-/etc/warren-containerd}
    fi
    check_path WARREN_DATA_DIR "$DATA_DIR"
    if [ -n "$RUN_DIR" ] || [ "$ROOTLESS" != true ]; then check_path WARREN_RUN_DIR "$RUN_DIR"; fi
    check_path WARREN_CONFIG_DIR "$CONFIG_DIR"
    # Where the launcher extracts the file's runtime (launcher/launcher.c): a cache of the binary,
    # removed with it.
    RUNTIME_DIR=${WARREN_RUNTIME_DIR:-/var/cache/warren/runtime}
    if [ "$ROOTLESS" = true ]; then RUNTIME_DIR=${WARREN_RUNTIME_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/warren/runtime}; fi
    check_path WARREN_RUNTIME_DIR "$RUNTIME_DIR"
    case "${WARREN_SHUTDOWN_GRACE:-10}" in
        '' | *[!0-9]*) fatal "$EXIT_USAGE" "WARREN_SHUTDOWN_GRACE='${WARREN_SHUTDOWN_GRACE:-}' is not a whole number of seconds; use e.g. 10" ;;
    esac
    POD_CIDR=${WARREN_POD_CIDR:-$DEFAULT_POD_CIDR}
    check_cidr WARREN_POD_CIDR "$POD_CIDR"
    SERVICE_CIDR=${WARREN_SERVICE_CIDR:-}
    if [ -n "$SERVICE_CIDR" ]; then check_cidr WARREN_SERVICE_CIDR "$SERVICE_CIDR"; fi
    EXEC_ARGS="containerd run --ready-timeout $READY_TIMEOUT"
    if [ -n "${WARREN_POD_CIDR:-}" ]; then EXEC_ARGS="$EXEC_ARGS --pod-cidr $POD_CIDR"; fi
    BIN="$BIN_DIR/warren"
    UNINSTALL="$BIN_DIR/warren-uninstall.sh"
    KILLALL="$BIN_DIR/warren-killall.sh"
    # The service file (UNIT) and its environment file, for the init system that runs here.
    INIT=$(init_system)
    if [ "$ROOTLESS" = true ]; then INIT=systemd-user; fi
    if [ "$INIT" = openrc ]; then
        UNIT="$OPENRC_DIR/$OPENRC_NAME"
        ENV_FILE="$(dirname "$OPENRC_DIR")/conf.d/$OPENRC_NAME"
    else
        UNIT="$SYSTEMD_DIR/$SERVICE_NAME"
        ENV_FILE="$UNIT.env"
    fi
}

check_cidr() {
    case "$2" in
        *[!0-9./]* | *[!0-9]/* | */*/* | [!0-9]*) fatal "$EXIT_USAGE" "$1='$2' is not an IPv4 network; write it like $DEFAULT_POD_CIDR" ;;
        */[0-9]*) ;;
        *) fatal "$EXIT_USAGE" "$1='$2' is not an IPv4 network; write it like $DEFAULT_POD_CIDR" ;;
    esac
}

# --- rootless: what a user's containerd needs ---------------------------------------------------

# The list 'warren doctor' checks (warren_bundle/runtime/rootless.py's requirements(), by the same
# names): one line for each missing part, with its fix.
ROOTLESS_APT='apt-get install rootlesskit slirp4netns uidmap'
ROOTLESS_MISSING=0

need_rootless() { # need_rootless NAME OK DETAIL FIX
    if [ "$2" != true ]; then
        printf 'warren install: rootless needs %s: %s; %s\n' "$1" "$3" "$4" >&2
        ROOTLESS_MISSING=$((ROOTLESS_MISSING + 1))
    fi
}

has_tool() {
    if command -v "$1" >/dev/null 2>&1; then echo true; else echo false; fi
}

# has_range FILE: it gives this user (by name or uid) a range of at least 65536 ids.
has_range() {
    if awk -F: -v u="$ROOTLESS_USER" -v id="$(id -u)" \
        '($1 == u || $1 == id) && $3 ~ /^[0-9]+$/ && $3 + 0 >= 65536 { found = 1 } END { exit !found }' \
        "$1" 2>/dev/null; then echo true; else echo false; fi
}

userns_problem() {
    if [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null)" = 0 ]; then echo "user.max_user_namespaces is 0"
    elif [ "$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null)" = 0 ]; then echo "kernel.unprivileged_userns_clone is 0"
    elif [ "$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns 2>/dev/null)" = 1 ]; then echo "AppArmor restricts unprivileged user namespaces"
    fi
}

cgroup_delegated() {
    cg=$(sed -n 's/^0:://p' /proc/self/cgroup 2>/dev/null | head -n 1)
    [ -n "$cg" ] && [ -f /sys/fs/cgroup/cgroup.controllers ] || return 1
    controllers=" $(cat "/sys/fs/cgroup$cg/cgroup.controllers" 2>/dev/null) "
    case "$controllers" in *" memory "*) ;; *) return 1 ;; esac
    case "$controllers" in *" pids "*) ;; *) return 1 ;; esac
    [ -w "/sys/fs/cgroup$cg" ]
}

check_rootless() {
    ROOTLESS_USER=$(id -un 2>/dev/null || id -u)
    ranges="usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $ROOTLESS_USER"
    ids=false
    if [ "$(has_tool newuidmap)" = true ] && [ "$(has_tool newgidmap)" = true ]; then ids=true; fi
    userns=$(userns_problem)
    tun=false
    if [ -r /dev/net/tun ] && [ -w /dev/net/tun ]; then tun=true; fi
    need_rootless rootlesskit "$(has_tool rootlesskit)" "rootlesskit is not on PATH" "install it ($ROOTLESS_APT)"
    need_rootless slirp4netns "$(has_tool slirp4netns)" "slirp4netns is not on PATH" "install it ($ROOTLESS_APT)"
    need_rootless newuidmap "$ids" "newuidmap/newgidmap are not on PATH" "install them (apt-get install uidmap)"
    need_rootless subuid "$(has_range /etc/subuid)" "/etc/subuid gives $ROOTLESS_USER no range of 65536 ids" "as root: $ranges"
    need_rootless subgid "$(has_range /etc/subgid)" "/etc/subgid gives $ROOTLESS_USER no range of 65536 ids" "as root: $ranges"
    need_rootless userns "$([ -z "$userns" ] && echo true || echo false)" "unprivileged user namespaces are off ($userns)" \
        "as root: sysctl -w user.max_user_namespaces=28633 kernel.unprivileged_userns_clone=1"
    need_rootless tun "$tun" "/dev/net/tun is not readable and writable (slirp4netns needs it)" "as root: chmod 0666 /dev/net/tun (udev's default)"
    if [ "$ROOTLESS_MISSING" -gt 0 ]; then
        fatal "$EXIT_PERMISSION" "rootless containerd cannot run for $ROOTLESS_USER ($ROOTLESS_MISSING missing, above); nothing was installed: fix them and run install.sh --rootless again"
    fi
    if ! cgroup_delegated; then
        # cgroup-delegation: a warning, as in 'warren doctor'.
        warn "no cgroup v2 controllers are delegated to $ROOTLESS_USER: containers run without resource limits (as root: give user@.service Delegate=cpu cpuset io memory pids, a systemd drop-in)"
    fi
    info "rootless prerequisites present for $ROOTLESS_USER"
}

# --- the service's proxy ------------------------------------------------------------------------

# no_proxy_with LIST: LIST (comma-separated) with what must never go through a proxy added:
# this host, the pod network and the service network.
no_proxy_with() {
    list=$1
    for entry in localhost 127.0.0.1 "$POD_CIDR" "$SERVICE_CIDR"; do
        [ -n "$entry" ] || continue
        case ",$list," in
            *",$entry,"*) ;;
            *) list="${list:+$list,}$entry" ;;
        esac
    done
    printf '%s' "$list"
}

# Sets PX_<var> for each of PROXY_VARS: the value the service gets (empty: not set).
collect_proxy() {
    any=''
    for var in $PROXY_VARS; do
        eval "value=\${$var:-}"
        if [ -z "$value" ]; then
            case "$var" in
                HTTP_PROXY) value=${http_proxy:-} ;;
                HTTPS_PROXY) value=${https_proxy:-} ;;
                NO_PROXY) value=${no_proxy:-} ;;
            esac
        fi
        case "$value" in
            *'
'*) fatal "$EXIT_USAGE" "$var contains a newline; give it on one line" ;;
        esac
        eval "PX_$var=\$value"
        case "$var" in *NO_PROXY) ;; *) any="$any$value" ;; esac
    done
    if [ -n "$any" ]; then
        PX_NO_PROXY=$(no_proxy_with "$PX_NO_PROXY")
        if [ -n "$PX_CONTAINERD_NO_PROXY" ]; then PX_CONTAINERD_NO_PROXY=$(no_proxy_with "$PX_CONTAINERD_NO_PROXY"); fi
    fi
}

# KEY="value" lines, quoted so that systemd's EnvironmentFile= and sh read the same value (\, ",
# $ and ` escaped; systemd expands no specifier there, so % stays as it is).
proxy_env_lines() { # proxy_env_lines PREFIX
    for var in $PROXY_VARS; do
        eval "value=\$PX_$var"
        [ -n "$value" ] || continue
        printf '%s%s="%s"\n' "$1" "$var" "$(printf '%s' "$value" | sed 's/[\\"$`]/\\&/g')"
    done
}

env_file_text() {
    printf '# Written by warren'"'"'s install.sh from its environment (the proxy); %s removes it.\n' "$UNINSTALL"
    printf '# CONTAINERD_* are for containerd alone: warren gives it them in place of the plain ones.\n'
    proxy_env_lines ''
}

systemd_running() {
    # sd_booted(): systemd is PID 1 exactly when this directory exists.
    [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

# The user's systemd (systemctl --user) answers: it runs for a login session, or lingering.
user_systemd_running() {
    command -v systemctl >/dev/null 2>&1 && [ -n "${XDG_RUNTIME_DIR:-}" ] &&
        [ -S "$XDG_RUNTIME_DIR/systemd/private" ] &&
        systemctl --user show-environment </dev/null >/dev/null 2>&1
}

openrc_running() {
    # OpenRC keeps its state in /run/openrc from the boot on.
    [ -d /run/openrc ] && { [ -x /sbin/openrc-run ] || command -v rc-service >/dev/null 2>&1; }
}

# Which service file to write: a dir given explicitly, else the init system that runs here.
init_system() {
    if [ -n "${WARREN_SYSTEMD_DIR:-}" ]; then echo systemd
    elif [ -n "${WARREN_OPENRC_DIR:-}" ]; then echo openrc
    elif systemd_running; then echo systemd
    elif openrc_running; then echo openrc
    else echo none
    fi
}

# --- downloading and checking -----------------------------------------------------------------

choose_tools() {
    if command -v curl >/dev/null 2>&1; then
        DOWNLOADER=curl
    elif command -v wget >/dev/null 2>&1; then
        DOWNLOADER=wget
    else
        fatal "$EXIT_ERROR" "neither curl nor wget is installed; install one, or copy warren in by hand and use WARREN_INSTALL_SKIP_DOWNLOAD=true"
    fi
    if command -v sha256sum >/dev/null 2>&1; then
        HASHER=sha256sum
    elif command -v shasum >/dev/null 2>&1; then
        HASHER=shasum
    elif command -v openssl >/dev/null 2>&1; then
        HASHER=openssl
    else
        fatal "$EXIT_ERROR" "no SHA-256 tool (sha256sum, shasum or openssl) is installed; install coreutils or perl"
    fi
}

sha256_of() {
    case "$HASHER" in
        sha256sum) sha256sum "$1" | awk '{print $1}' ;;
        shasum) shasum -a 256 "$1" | awk '{print $1}' ;;
        openssl) openssl dgst -sha256 -r "$1" | awk '{print $1}' ;;
    esac
}

base_url() {
    if [ -n "${WARREN_BASE_URL:-}" ]; then
        printf '%s' "${WARREN_BASE_URL%/}"
    elif [ -n "${WARREN_VERSION:-}" ]; then
        printf 'https://github.com/%s/releases/download/%s' "$WARREN_DEFAULT_REPO" "$WARREN_VERSION"
    else
        printf 'https://github.com/%s/releases/latest/download' "$WARREN_DEFAULT_REPO"
    fi
}

download() {
    rc=0
    case "$DOWNLOADER" in
        curl) curl -fsL --retry 3 --retry-delay 1 -o "$2" "$1" </dev/null || rc=$? ;;
        wget) wget -q --tries=3 -O "$2" "$1" </dev/null || rc=$? ;;
    esac
    if [ "$rc" -ne 0 ]; then
        rm -f "$2"
        fatal "$EXIT_ERROR" "cannot download $1 ($DOWNLOADER exit $rc); check WARREN_BASE_URL or WARREN_VERSION and the network, or copy warren in by hand and use WARREN_INSTALL_SKIP_DOWNLOAD=true"
    fi
}

# digest_of NAME: its SHA-256 in the downloaded SHA256SUMS, or nothing.
digest_of() {
    # "<hex>  <name>" or "<hex> *<name>" (binary mode)
    awk -v f="$1" '$2 == f || $2 == "*" f {print $1; exit}' "$TMP_DIR/SHA256SUMS"
}

# not_verified WHY: without WARREN_REQUIRE_SIGNATURE a warning, with it the end.
not_verified() {
    if truthy "${WARREN_REQUIRE_SIGNATURE:-}"; then
        fatal "$EXIT_CHECKSUM" "SHA256SUMS.sig could not be verified: $1; nothing was installed (WARREN_REQUIRE_SIGNATURE is set)"
    fi
    warn "SHA256SUMS.sig NOT verified: $1; the download is checked against SHA256SUMS only, which does not prove who published it (set WARREN_REQUIRE_SIGNATURE=1 to refuse this)"
}

sha256_stdin() {
    case "$HASHER" in
        sha256sum) sha256sum | awk '{print $1}' ;;
        shasum) shasum -a 256 | awk '{print $1}' ;;
        openssl) openssl dgst -sha256 -r | awk '{print $1}' ;;
    esac
}

# SHA256SUMS must be signed by the release key this script carries; a bad signature is fatal.
verify_signature() {
    sums="$TMP_DIR/SHA256SUMS"
    key="$TMP_DIR/release-key.pub"
    release_key | grep -v '^# RELEASE_KEY_' >"$key" || true
    if ! grep -q 'BEGIN PUBLIC KEY' "$key"; then
        not_verified "this install.sh carries no release key (a copy from the repository, not from a release)"
        return 0
    fi
    if ! command -v openssl >/dev/null 2>&1; then
        not_verified "openssl is not installed on this host"
        return 0
    fi
    rc=0
    case "$DOWNLOADER" in
        curl) curl -fsL --retry 3 --retry-delay 1 -o "$sums.sig" "$URL/SHA256SUMS.sig" </dev/null || rc=$? ;;
        wget) wget -q --tries=3 -O "$sums.sig" "$URL/SHA256SUMS.sig" </dev/null || rc=$? ;;
    esac
    if [ "$rc" -ne 0 ]; then
        fatal "$EXIT_CHECKSUM" "$URL/SHA256SUMS.sig cannot be downloaded ($DOWNLOADER exit $rc) and this release must be signed; nothing was installed: check WARREN_BASE_URL or the mirror"
    fi
    if ! tr -d '\n\r' <"$sums.sig" | openssl base64 -d -A -out "$sums.der" 2>/dev/null ||
        ! openssl dgst -sha256 -verify "$key" -signature "$sums.der" "$sums" >/dev/null 2>&1; then
        fatal "$EXIT_CHECKSUM" "bad signature: $URL/SHA256SUMS is not signed by this release's key; nothing was installed: the release or the mirror behind WARREN_BASE_URL was altered, or install.sh is from another release"
    fi
    info "SHA256SUMS signature verified (release key sha256:$(openssl pkey -pubin -in "$key" -outform DER 2>/dev/null | sha256_stdin | cut -c1-16))"
}

expected_digest() {
    sums="$TMP_DIR/SHA256SUMS"
    if [ ! -f "$sums" ]; then
        download "$URL/SHA256SUMS" "$sums"
        verify_signature
    fi
    EXPECTED=$(digest_of "$ASSET")
    case "$EXPECTED" in
        [0-9a-f]*) ;;
        *) fatal "$EXIT_ERROR" "$URL/SHA256SUMS has no entry for $ASSET; this release may not be built for $OS/$ARCH: check WARREN_VERSION or WARREN_BASE_URL" ;;
    esac
    if [ "${#EXPECTED}" -ne 64 ]; then
        fatal "$EXIT_ERROR" "$URL/SHA256SUMS has a malformed digest for $ASSET; the release is damaged: report it"
    fi
}

# Leaves the verified file in $TMP_DIR/$ASSET, or exits with both digests.
download_verified() {
    info "downloading $URL/$ASSET"
    download "$URL/$ASSET" "$TMP_DIR/$ASSET"
    actual=$(sha256_of "$TMP_DIR/$ASSET")
    if [ "$actual" != "$EXPECTED" ]; then
        rm -f "$TMP_DIR/$ASSET"
        fatal "$EXIT_CHECKSUM" "checksum mismatch for $ASSET: expected sha256 $EXPECTED (SHA256SUMS), got sha256 $actual; nothing was installed: download again, or check the mirror behind WARREN_BASE_URL"
    fi
    info "sha256 $actual verified against SHA256SUMS"
}

# --- writing files, remembering what we wrote --------------------------------------------------

make_dir() {
    # Record each directory we create, parents first, so the uninstaller can remove them again.
    [ -d "$1" ] && return 0
    make_dir "$(dirname "$1")"
    mkdir "$1"
    CREATED_DIRS="$CREATED_DIRS $1"
}

# Values the previous installation recorded in its uninstaller: they stay ours.
previous_value() { # previous_value NAME [FILE, default the uninstaller]
    from=${2:-$UNINSTALL}
    [ -f "$from" ] || return 0
    sed -n "s/^$1='\\(.*\\)'\$/\\1/p" "$from" | head -n 1
}

# fails_here FILE: prints why FILE or the binaries it carries cannot run on this host (wrong arch,
# too old a glibc or none for a payload that links it, no room or a noexec mount for its runtime)
# and succeeds; fails (prints nothing) when they run. Its runtime is extracted for the check into a
# scratch dir beside it (same mount as where it will run), removed again: a refused file leaves
# nothing behind.
fails_here() {
    check_runtime="$(dirname "$1")/.warren-check.$$"
    # (An "if", not "$?": under set -e, dash leaves the function at a failed assignment.)
    if out=$(WARREN_RUNTIME_DIR="$check_runtime" "$1" version --check 2>&1 </dev/null); then
        rm -rf "$check_runtime"
        return 1
    fi
    rm -rf "$check_runtime"
    printf '%s' "$out" | grep -v '^[[:space:]]*$' | tail -n 1
}

runs_here() {
    # A file that cannot start on this host is not installed.
    if why=$(fails_here "$1"); then
        hint="check that it is the $OS/$ARCH build"
        case "$why" in
            *GLIBC* | *ld-linux* | *"No such file"* | *"not found"*)
                if [ "$ASSET" != "${ASSET%-static}" ]; then hint='report it: the static build should run on any Linux host'
                elif [ "${WARREN_FLAVOR:-}" = dynamic ]; then hint='it needs a newer glibc: leave WARREN_FLAVOR unset (or set it to static) to use the static build'
                else hint="it needs a newer glibc, and this release has no $ASSET-static to fall back on"; fi ;;
        esac
        fatal "$EXIT_PLATFORM" "$2 does not run on this host: $why; $hint"
    fi
}

# The verified $ASSET, copied into the bin dir (the same filesystem as $BIN, so the final mv is
# atomic) and made executable: NEW_FILE, which the exit trap removes if it is never moved.
stage_download() {
    NEW_FILE="$BIN_DIR/.warren.new.$$"
    cp "$TMP_DIR/$ASSET" "$NEW_FILE"
    chmod 0755 "$NEW_FILE"
}

# The default build's binaries link the host's glibc; where they cannot run (older glibc, musl),
# the static build's need no libc. Each is tried here, in the bin dir (a noexec /tmp must not decide), before
# it replaces anything.
choose_flavour() {
    stage_download
    [ -n "$STATIC_ASSET" ] || return 0
    why=$(fails_here "$NEW_FILE") || return 0
    static_digest=$(digest_of "$STATIC_ASSET")
    # No static build in this release: runs_here says why the default one cannot be installed.
    [ "${#static_digest}" -eq 64 ] || return 0
    rm -f "$NEW_FILE"
    NEW_FILE=''
    info "$ASSET does not run on this host ($why): using $STATIC_ASSET, which carries its own libc"
    ASSET=$STATIC_ASSET
    STATIC_ASSET=''
    EXPECTED=$static_digest
    download_verified
    stage_download
}

install_binary() {
    make_dir "$BIN_DIR"
    choose_flavour
    runs_here "$NEW_FILE" "the downloaded $ASSET"
    # Atomic: a running warren keeps its old inode.
    mv -f "$NEW_FILE" "$BIN"
    NEW_FILE=''
    WROTE_FILES=true
    info "installed $BIN"
}

write_file() { # write_file PATH MODE < content
    NEW_FILE="$(dirname "$1")/.$(basename "$1").new.$$"
    cat >"$NEW_FILE"
    chmod "$2" "$NEW_FILE"
    mv -f "$NEW_FILE" "$1"
    NEW_FILE=''
}

# A path in the unit: systemd reads "%x" as a specifier (an unknown one drops the whole line), so a
# literal % in WARREN_DATA_DIR and the like is written %%.
unit_escape() {
    printf '%s' "$1" | sed 's/%/%%/g'
}

# The unit of both kinds from the one settings table above: the system's, and with --rootless the
# user's (no modprobe, limits or OOM score a user cannot set; containers end with containerd).
unit_text() { # unit_text [user]
    rootless=false
    if [ "${1:-}" = user ]; then rootless=true; fi
    cat <<EOF
# Written by warren's install.sh; $UNINSTALL removes it.
[Unit]
EOF
    if [ "$rootless" = true ]; then
        cat <<EOF
Description=containerd supervised by warren, rootless (RootlessKit, in a user namespace)
Documentation=https://github.com/$WARREN_DEFAULT_REPO
EOF
    else
        cat <<EOF
Description=containerd supervised by warren (embedded containerd and runc)
Documentation=https://github.com/$WARREN_DEFAULT_REPO
After=network-online.target local-fs.target
Wants=network-online.target
EOF
    fi
    cat <<EOF

[Service]
# warren says READY=1 when containerd answers, and pings the watchdog only while it does: a
# containerd its supervisor cannot repair is systemd's to restart.
Type=notify
NotifyAccess=main
WatchdogSec=$WATCHDOG_SEC
TimeoutStartSec=$START_TIMEOUT_SEC
EOF
    for var in WARREN_DATA_DIR WARREN_RUN_DIR WARREN_CONFIG_DIR WARREN_RUNTIME_DIR; do
        eval "value=\${$var:-}"
        if [ -n "$value" ]; then printf 'Environment=%s=%s\n' "$var" "$(unit_escape "$value")"; fi
    done
    cat <<EOF
# The proxy, if the installer was given one (mode 0600: a proxy URL may carry a password).
EnvironmentFile=-$ENV_FILE
EOF
    if [ "$rootless" != true ]; then echo 'ExecStartPre=-/sbin/modprobe overlay'; fi
    cat <<EOF
# A service is patient: a first start at boot on a small or busy host (extraction, then
# containerd's own start) can take minutes; a ready timeout it cannot meet only restarts it.
ExecStart=$(unit_escape "$BIN") $EXEC_ARGS
EOF
    if [ "$rootless" = true ]; then
        cat <<EOF
# Rootless containers do not outlive containerd (they live in RootlessKit's namespaces): warren
# gets SIGTERM and stops containerd, what is left gets SIGKILL.
KillMode=mixed
Delegate=yes
Restart=always
RestartSec=$RESTART_SEC
TasksMax=infinity

[Install]
WantedBy=default.target
EOF
        return 0
    fi
    cat <<EOF
# Only warren gets the stop signal: it stops containerd, and shims and containers keep running.
KillMode=process
EOF
    shutdown_kill_line
    cat <<EOF
Delegate=yes
Restart=always
RestartSec=$RESTART_SEC
LimitNOFILE=$NOFILE_LIMIT
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=$OOM_SCORE_ADJ

[Install]
WantedBy=multi-user.target
EOF
}

# The unit's own cgroup, for the two Exec lines below that look in it, in the text systemd runs
# (before the $ are doubled). cgroup v2 names it on the "0::" line, v1 on "name=systemd"; with
# Delegate=yes, ExecStopPost runs in the unit's ".control" child, which is cut. Its processes are
# read from whichever hierarchy holds it: v2, the hybrid's unified one, or v1's systemd one.
# shellcheck disable=SC2016 # the $ are for the shell systemd runs, not this one
UNIT_CGROUP='cg=$(sed -n "s|/[.]control||; s/^0:://p; s/^[0-9]*:name=systemd://p" /proc/self/cgroup | head -n 1); '
# shellcheck disable=SC2016
UNIT_PROCS='$(cat "/sys/fs/cgroup$cg/cgroup.procs" "/sys/fs/cgroup/unified$cg/cgroup.procs" "/sys/fs/cgroup/systemd$cg/cgroup.procs" 2>/dev/null | sort -u)'

# At shutdown only (the manager is "stopping"): SIGTERM to the containers (the children of warren's
# shims), the grace, SIGKILL to those left, then the shims. Written into the unit with $ as $$.
# Every fork counts on a slow host at shutdown: the shims are found in the unit's own cgroup
# (KillMode=process leaves them there; with Delegate=yes systemd runs ExecStopPost in its
# ".control" child, so that suffix is cut), not by a readlink per process in /proc, and the grace is
# timed by /proc/uptime (read by the shell itself, in centiseconds), not by counting sleeps. No
# "%" in it: systemd would read one as a specifier and drop the whole line.
shutdown_kill_line() {
    grace=${WARREN_SHUTDOWN_GRACE:-10}
    printf '# At shutdown or reboot: containers get SIGTERM, %s s, then SIGKILL (WARREN_SHUTDOWN_GRACE).\n' "$grace"
    # shellcheck disable=SC2016 # the $ are for the shell systemd runs, not this one
    printf '%s' 'ExecStopPost=/bin/sh -c '"'"'case "$(systemctl is-system-running 2>/dev/null)" in stopping) ;; *) exit 0 ;; esac; ' \
        "$UNIT_CGROUP"'shims=""; kids=""; ' \
        'for p in '"$UNIT_PROCS"'; do ' \
        'case "$(readlink "/proc/$p/exe" 2>/dev/null)" in '"$DATA_DIR"'/*containerd-shim-runc-v2*) ' \
        'shims="$shims $p"; kids="$kids $(cat "/proc/$p"/task/*/children 2>/dev/null)" ;; esac; done; ' \
        '[ -n "$shims" ] || exit 0; set -- $kids; alive=""; if [ $# -gt 0 ]; then echo "warren: shutdown: SIGTERM to containers $*"; kill -TERM "$@" 2>/dev/null; ' \
        'now() { IFS=". " read -r s cs _ </proc/uptime; t=$((s * 100 + 1$cs - 100)); }; now; end=$((t + '"$((grace * 100))"')); ' \
        'while :; do alive=""; for c; do [ -d "/proc/$c" ] && alive="$alive $c"; done; [ -z "$alive" ] && break; ' \
        'now; [ "$t" -lt "$end" ] || break; sleep 0.2; done; ' \
        'if [ -n "$alive" ]; then echo "warren: shutdown: SIGKILL to containers$alive after '"$grace"' s"; kill -KILL $alive 2>/dev/null; sleep 0.5; fi; fi; ' \
        'kill -KILL $shims 2>/dev/null; exit 0'"'" | sed 's/%/%%/g; s/\$/$$/g'
    printf '\n'
}

# The OpenRC script: the unit's settings, for supervise-daemon. A stop signals the supervisor
# alone (containerd runs in its own session and is stopped by it; shims and containers keep
# running); only at shutdown (the runlevel openrc-run is told is "shutdown" or "reboot") are
# containers stopped, with the grace.
openrc_text() {
    grace=${WARREN_SHUTDOWN_GRACE:-10}
    cat <<EOF
#!/sbin/openrc-run
# Written by warren's install.sh; $UNINSTALL removes it.
# shellcheck shell=sh disable=SC2034,SC1091 # openrc-run reads these variables

description="containerd supervised by warren (embedded containerd and runc)"
supervisor=supervise-daemon
command="$BIN"
command_args="$EXEC_ARGS"
# Respawned whenever it exits (kill -9 included), $RESTART_SEC s apart, without a limit.
respawn_delay=$RESTART_SEC
respawn_max=0
# warren stops containerd within 10 s of SIGTERM; only then SIGKILL.
retry="SIGTERM/30"
output_log="$OPENRC_LOG"
error_log="$OPENRC_LOG"
supervise_daemon_args="--oom-score-adj $OOM_SCORE_ADJ"
EOF
    for var in WARREN_DATA_DIR WARREN_RUN_DIR WARREN_CONFIG_DIR; do
        eval "value=\${$var:-}"
        if [ -n "$value" ]; then printf 'export %s=%s\n' "$var" "$value"; fi
    done
    cat <<EOF
# The proxy, if the installer was given one (mode 0600: a proxy URL may carry a password).
if [ -r "$ENV_FILE" ]; then set -a; . "$ENV_FILE"; set +a; fi

depend() {
	# Alpine's boot mounts in localmount; Debian's OpenRC has none (its LSB mountall.sh does
	# that before any runlevel): a need would fail every start there.
	use localmount
	use net
	after firewall
}

start_pre() {
	# One limit per ulimit: dash's takes no more (and then rc_ulimit fails the start).
	# shellcheck disable=SC3045 # dash and busybox sh have -n, -u and -c
	if ! { ulimit -n $NOFILE_LIMIT && ulimit -u unlimited && ulimit -c unlimited; }; then
		ewarn "cannot raise the limits (open files $NOFILE_LIMIT, processes, core)"
	fi
	modprobe overlay 2>/dev/null || true
	checkpath -f -m 0640 "$OPENRC_LOG"
}

# Started once containerd answers (up to $START_TIMEOUT_SEC s: a first start extracts the payload).
start_post() {
	ebegin "Waiting for containerd to answer"
	waited=0
	until "\$command" containerd status 2>/dev/null | grep -q '^state *RUNNING'; do
		if [ \$waited -ge $START_TIMEOUT_SEC ]; then
			eend 1 "containerd did not answer; see $OPENRC_LOG and '$BIN containerd logs'"
			return 1
		fi
		sleep 1
		waited=\$((waited + 1))
	done
	eend 0
}

# At shutdown or reboot: containers get SIGTERM, $grace s, then SIGKILL (WARREN_SHUTDOWN_GRACE).
stop_post() {
	case "\${RC_GOINGDOWN:-}:\${RC_RUNLEVEL:-}" in
		YES:* | *:shutdown | *:reboot) ;;
		*) return 0 ;;
	esac
	shims=""
	kids=""
	for p in /proc/[0-9]*; do
		case "\$(readlink "\$p/exe" 2>/dev/null)" in
			"$DATA_DIR"/*containerd-shim-runc-v2*)
				shims="\$shims \${p#/proc/}"
				kids="\$kids \$(cat "\$p"/task/*/children 2>/dev/null)" ;;
		esac
	done
	[ -n "\$shims" ] || return 0
	# shellcheck disable=SC2086 # lists of pids
	set -- \$kids
	if [ \$# -gt 0 ]; then
		ebegin "Stopping containers (SIGTERM, then SIGKILL after $grace s)"
		kill -TERM "\$@" 2>/dev/null
		waited=0
		alive=""
		while [ \$waited -lt $((grace * 5)) ]; do
			alive=""
			for c; do [ -d "/proc/\$c" ] && alive="\$alive \$c"; done
			[ -n "\$alive" ] || break
			sleep 0.2
			waited=\$((waited + 1))
		done
		# shellcheck disable=SC2086
		[ -z "\$alive" ] || kill -KILL \$alive 2>/dev/null
		eend 0
	fi
	# shellcheck disable=SC2086
	kill -KILL \$shims 2>/dev/null
	return 0
}
EOF
}

UNIT_WRITTEN=false
UNIT_CHANGED=false

setup_service() {
    if [ "$OS" != linux ]; then
        return 0
    fi
    case "$INIT" in
        none)
            info "neither systemd nor OpenRC is running: no service written; start containerd with '$BIN containerd start' (or run '$BIN containerd run' under your service manager)"
            return 0 ;;
        openrc)
            make_dir "$OPENRC_DIR"
            make_dir "$(dirname "$ENV_FILE")"
            new_unit=$(openrc_text)
            mode=0755 ;;
        systemd-user)
            make_dir "$SYSTEMD_DIR"
            new_unit=$(unit_text user)
            mode=0644 ;;
        *)
            make_dir "$SYSTEMD_DIR"
            new_unit=$(unit_text)
            mode=0644 ;;
    esac
    if [ ! -f "$UNIT" ] || [ "$(cat "$UNIT")" != "$new_unit" ]; then
        UNIT_CHANGED=true
    fi
    new_env=$(env_file_text)
    if [ ! -f "$ENV_FILE" ] || [ "$(cat "$ENV_FILE")" != "$new_env" ]; then
        UNIT_CHANGED=true
    fi
    printf '%s\n' "$new_unit" | write_file "$UNIT" "$mode"
    printf '%s\n' "$new_env" | write_file "$ENV_FILE" 0600
    UNIT_WRITTEN=true
    if [ -n "$PX_HTTP_PROXY$PX_HTTPS_PROXY$PX_CONTAINERD_HTTP_PROXY$PX_CONTAINERD_HTTPS_PROXY" ]; then
        info "the service uses the proxy it was installed with (NO_PROXY: ${PX_NO_PROXY:-unset}); see $ENV_FILE"
    fi
    WROTE_FILES=true
    info "wrote $UNIT"
}

# Before a restart onto a new binary: its payload is extracted into its own version dir while
# the running containerd still serves (bin is not switched), so the socket is down only for the
# stop and the start, not for the extraction too. A failure here is not fatal: the restart
# extracts, and says why it cannot.
prepare_new_version() {
    if out=$("$BIN" extract --prepare </dev/null 2>&1); then
        info "$out"
    else
        info "could not extract ahead of the restart (the start will): $(printf '%s' "$out" | tail -n 1)"
    fi
}

# After the uninstaller is written: a failure here leaves something it can remove.
enable_service() {
    if [ "$UNIT_WRITTEN" != true ]; then
        return 0
    fi
    if [ "$INIT" = openrc ]; then
        enable_openrc
        return 0
    fi
    if [ "$INIT" = systemd-user ]; then
        enable_user_unit
        return 0
    fi
    if ! systemd_running; then
        info "systemd is not running on this host: $SERVICE_NAME was written but not enabled; on a systemd host run: systemctl daemon-reload && systemctl enable --now $SERVICE_NAME"
        return 0
    fi
    systemctl daemon-reload </dev/null
    if truthy "${WARREN_SKIP_ENABLE:-}"; then
        info "WARREN_SKIP_ENABLE: $SERVICE_NAME not enabled or started"
        return 0
    fi
    systemctl enable "$SERVICE_NAME" </dev/null >/dev/null 2>&1 ||
        fatal "$EXIT_ERROR" "systemctl enable $SERVICE_NAME failed; see 'systemctl status $SERVICE_NAME'"
    info "enabled $SERVICE_NAME"
    if truthy "${WARREN_SKIP_START:-}"; then
        info "WARREN_SKIP_START: not started; start it with 'systemctl start $SERVICE_NAME'"
        return 0
    fi
    # A new binary or unit takes effect by a restart; containers survive it (KillMode=process).
    verb=start
    if [ "$BIN_CHANGED" = true ] || [ "$UNIT_CHANGED" = true ]; then verb=restart; fi
    if [ "$BIN_CHANGED" = true ] && systemctl is-active --quiet "$SERVICE_NAME" </dev/null; then
        prepare_new_version
    fi
    systemctl "$verb" "$SERVICE_NAME" </dev/null ||
        fatal "$EXIT_ERROR" "systemctl $verb $SERVICE_NAME failed; see 'journalctl -u $SERVICE_NAME' and '$BIN containerd logs'"
    info "${verb}ed $SERVICE_NAME; check it with '$BIN containerd status'"
}

enable_user_unit() {
    if ! user_systemd_running; then
        info "no user systemd: start it with warren containerd start ($BIN containerd start); $UNIT is written for when one runs: systemctl --user daemon-reload && systemctl --user enable --now $SERVICE_NAME"
        return 0
    fi
    systemctl --user daemon-reload </dev/null
    if truthy "${WARREN_SKIP_ENABLE:-}"; then
        info "WARREN_SKIP_ENABLE: $SERVICE_NAME not enabled or started"
        return 0
    fi
    systemctl --user enable "$SERVICE_NAME" </dev/null >/dev/null 2>&1 ||
        fatal "$EXIT_ERROR" "systemctl --user enable $SERVICE_NAME failed; see 'systemctl --user status $SERVICE_NAME'"
    info "enabled $SERVICE_NAME (user unit)"
    if truthy "${WARREN_SKIP_START:-}"; then
        info "WARREN_SKIP_START: not started; start it with 'systemctl --user start $SERVICE_NAME'"
        return 0
    fi
    verb=start
    if [ "$BIN_CHANGED" = true ] || [ "$UNIT_CHANGED" = true ]; then verb=restart; fi
    systemctl --user "$verb" "$SERVICE_NAME" </dev/null ||
        fatal "$EXIT_ERROR" "systemctl --user $verb $SERVICE_NAME failed; see 'journalctl --user -u $SERVICE_NAME' and '$BIN containerd logs'"
    info "${verb}ed $SERVICE_NAME; check it with '$BIN containerd status'"
}

# The last lines of a rootless install: what lingering is and how to turn it on (never done here).
explain_lingering() {
    user=$(id -un 2>/dev/null || id -u)
    if [ -e "/var/lib/systemd/linger/$user" ]; then
        info "lingering is on for $user: the user unit starts at boot and keeps running after you log out"
        return 0
    fi
    info "lingering is off for $user: your user systemd, and containerd with it, runs only while you are logged in"
    info "to start it at boot and keep it running after you log out: loginctl enable-linger $user (this installer does not change it)"
}

enable_openrc() {
    if ! openrc_running || [ "$OPENRC_DIR" != /etc/init.d ]; then
        info "OpenRC is not running this host (or $UNIT is not in /etc/init.d): $OPENRC_NAME was written but not enabled; on an OpenRC host run: rc-update add $OPENRC_NAME default && rc-service $OPENRC_NAME start"
        return 0
    fi
    if truthy "${WARREN_SKIP_ENABLE:-}"; then
        info "WARREN_SKIP_ENABLE: $OPENRC_NAME not enabled or started"
        return 0
    fi
    rc-update add "$OPENRC_NAME" default </dev/null >/dev/null 2>&1 ||
        fatal "$EXIT_ERROR" "rc-update add $OPENRC_NAME default failed; see 'rc-status'"
    info "enabled $OPENRC_NAME (runlevel default)"
    if truthy "${WARREN_SKIP_START:-}"; then
        info "WARREN_SKIP_START: not started; start it with 'rc-service $OPENRC_NAME start'"
        return 0
    fi
    # A new binary or script takes effect by a restart; containers survive it.
    running=false
    if rc-service "$OPENRC_NAME" status </dev/null >/dev/null 2>&1; then running=true; fi
    verb=start
    if [ "$running" = true ]; then
        if [ "$BIN_CHANGED" != true ] && [ "$UNIT_CHANGED" != true ]; then
            info "$OPENRC_NAME runs this release already"
            return 0
        fi
        verb=restart
        if [ "$BIN_CHANGED" = true ]; then prepare_new_version; fi
    fi
    rc-service "$OPENRC_NAME" "$verb" </dev/null ||
        fatal "$EXIT_ERROR" "rc-service $OPENRC_NAME $verb failed; see $OPENRC_LOG and '$BIN containerd logs'"
    info "${verb}ed $OPENRC_NAME; check it with '$BIN containerd status'"
}

uninstaller_text() {
    unit_path=''
    env_path=''
    if [ "$UNIT_WRITTEN" = true ]; then unit_path=$UNIT; env_path=$ENV_FILE; fi
    cat <<EOF
#!/bin/sh
# Written by warren's install.sh: removes what it installed, and nothing else.
#   $UNINSTALL           stop the service; remove the unit, the binary, this script
#   $UNINSTALL --purge   also delete warren's data, config and run dirs (images, containers)
#                        and, on macOS, the Lima VM
set -eu

OS='$OS'
INIT='$INIT'
ROOTLESS='$ROOTLESS'
UNIT='$unit_path'
OPENRC_NAME='$OPENRC_NAME'
OPENRC_LOG='$OPENRC_LOG'
ENV_FILE='$env_path'
SERVICE_NAME='$SERVICE_NAME'
BIN='$BIN'
BIN_OWNED='$BIN_OWNED'
CREATED_DIRS='$CREATED_DIRS'
CNI_DIRS='$CNI_DIRS'
DATA_DIR='$DATA_DIR'
RUN_DIR='$RUN_DIR'
CONFIG_DIR='$CONFIG_DIR'
RUNTIME_DIR='$RUNTIME_DIR'
SELF='$UNINSTALL'
KILLALL='$KILLALL'

purge=false
for arg in "\$@"; do
    case "\$arg" in
        --purge) purge=true ;;
        -h | --help) sed -n '2,4p' "\$SELF" | sed 's/^# \\{0,1\\}//'; exit 0 ;;
        *) echo "warren uninstall: unknown argument '\$arg'; use --purge or nothing" >&2; exit 2 ;;
    esac
done

info() {
    printf '[warren] %s\\n' "\$*"
}

systemd_running() {
    [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

user_systemd_running() {
    command -v systemctl >/dev/null 2>&1 && [ -n "\${XDG_RUNTIME_DIR:-}" ] &&
        [ -S "\$XDG_RUNTIME_DIR/systemd/private" ] &&
        systemctl --user show-environment </dev/null >/dev/null 2>&1
}

openrc_running() {
    [ -d /run/openrc ] && { [ -x /sbin/openrc-run ] || command -v rc-service >/dev/null 2>&1; }
}

if [ -n "\$UNIT" ] && [ "\$INIT" = systemd ] && systemd_running; then
    systemctl disable --now "\$SERVICE_NAME" </dev/null >/dev/null 2>&1 || true
    info "stopped and disabled \$SERVICE_NAME"
fi
if [ -n "\$UNIT" ] && [ "\$INIT" = systemd-user ] && user_systemd_running; then
    systemctl --user disable --now "\$SERVICE_NAME" </dev/null >/dev/null 2>&1 || true
    info "stopped and disabled \$SERVICE_NAME (user unit)"
fi
if [ -n "\$UNIT" ] && [ "\$INIT" = openrc ] && openrc_running && [ "\$UNIT" = "/etc/init.d/\$OPENRC_NAME" ]; then
    rc-service "\$OPENRC_NAME" stop </dev/null >/dev/null 2>&1 || true
    rc-update del "\$OPENRC_NAME" default </dev/null >/dev/null 2>&1 || true
    info "stopped \$OPENRC_NAME and removed it from the default runlevel"
fi
# A supervisor started by hand ('warren containerd start'), or the Lima VM, is stopped as well.
if [ -x "\$BIN" ]; then
    export WARREN_DATA_DIR="\$DATA_DIR" WARREN_RUN_DIR="\$RUN_DIR" WARREN_CONFIG_DIR="\$CONFIG_DIR"
    export WARREN_RUNTIME_DIR="\$RUNTIME_DIR"
    if [ "\$OS" = darwin ] && [ "\$purge" = true ]; then
        "\$BIN" lima delete --yes </dev/null >/dev/null 2>&1 || true
    elif [ "\$OS" = darwin ]; then
        "\$BIN" lima down </dev/null >/dev/null 2>&1 || true
    else
        "\$BIN" containerd stop </dev/null >/dev/null 2>&1 || true
    fi
fi
if [ -n "\$UNIT" ] && [ -f "\$UNIT" ]; then
    rm -f "\$UNIT"
    info "removed \$UNIT"
    rm -f "\$ENV_FILE"
    if [ "\$INIT" = openrc ]; then rm -f "\$OPENRC_LOG"; fi
    if [ "\$INIT" = systemd ] && systemd_running; then systemctl daemon-reload </dev/null || true; fi
    if [ "\$INIT" = systemd-user ] && user_systemd_running; then systemctl --user daemon-reload </dev/null || true; fi
fi
if [ "\$BIN_OWNED" = true ] && [ -f "\$BIN" ]; then
    rm -f "\$BIN"
    info "removed \$BIN"
elif [ -f "\$BIN" ]; then
    info "left \$BIN in place: it was put there by hand (WARREN_INSTALL_SKIP_DOWNLOAD)"
fi
# The runtime the launcher extracted from the binary: a cache of it, gone with it (a process still
# running from it keeps its files until it exits).
if [ "\$BIN_OWNED" = true ] && [ -d "\$RUNTIME_DIR" ] && [ ! -L "\$RUNTIME_DIR" ]; then
    rm -rf "\$RUNTIME_DIR"
    info "removed \$RUNTIME_DIR"
    case "\$RUNTIME_DIR" in
        /var/cache/warren/runtime | "\${HOME:-}/.cache/warren/runtime") rmdir "\${RUNTIME_DIR%/runtime}" 2>/dev/null || true ;;
    esac
fi

if [ "\$purge" = true ] && [ -x "\$KILLALL" ]; then
    # Containers, shims, mounts, pods' network namespaces, the bridge, the iptables rules.
    "\$KILLALL" || true
fi
if [ "\$purge" = true ]; then
    for dir in "\$DATA_DIR" "\$CONFIG_DIR" "\$RUN_DIR"; do
        if [ -z "\$dir" ] || [ ! -e "\$dir" ]; then continue; fi
        if [ "\$ROOTLESS" = true ] && command -v rootlesskit >/dev/null 2>&1; then
            # Containers' snapshots hold files of the user's subordinate ids: only root in a user
            # namespace that maps them (RootlessKit's, as containerd's was) can delete those.
            rootlesskit --net=host rm -rf "\$dir" </dev/null
        else
            rm -rf "\$dir"
        fi
        info "purged \$dir"
    done
fi
rm -f "\$KILLALL"
rm -f "\$SELF"
# Directories the installer created, deepest first, if nothing else was put in them since.
# shellcheck disable=SC2086 # the list is split on purpose: the installer refuses paths with spaces
for dir in \$(printf '%s\\n' \$CREATED_DIRS | sort -r); do
    rmdir "\$dir" 2>/dev/null || true
done
# containerd's CRI plugin creates its default CNI conf dir when it starts: gone again if it was
# not there before warren and nothing was put in it.
# shellcheck disable=SC2086 # as above
for dir in \$(printf '%s\\n' \$CNI_DIRS | sort -r); do
    if [ -d "\$dir" ] && ! rmdir "\$dir" 2>/dev/null; then
        info "left \$dir: it is not empty (CNI configs put there since warren was installed)"
    fi
done
info "warren uninstalled"
EOF
}

# The CNI conf dir containerd's CRI plugin creates by default, and its parent, when absent now.
note_cni_dirs() {
    CNI_DIRS=$(previous_value CNI_DIRS)
    if [ "$OS" != linux ] || [ "$ROOTLESS" = true ]; then return 0; fi
    for dir in /etc/cni /etc/cni/net.d; do
        case " $CNI_DIRS " in *" $dir "*) continue ;; esac
        if [ ! -e "$dir" ]; then CNI_DIRS="${CNI_DIRS:+$CNI_DIRS }$dir"; fi
    done
}

# What warren's pods leave that a killall removes only if warren made it: the CNI plugins' shared
# iptables chains present now, and the CNI state dirs absent now (kept from an earlier install).
note_cni_state() {
    PRE_CNI_CHAINS=$(previous_value PRE_CNI_CHAINS "$KILLALL")
    CNI_STATE_DIRS=$(previous_value CNI_STATE_DIRS "$KILLALL")
    if [ "$OS" != linux ] || [ -f "$KILLALL" ]; then return 0; fi
    if command -v iptables-save >/dev/null 2>&1; then
        PRE_CNI_CHAINS=$(iptables-save 2>/dev/null | awk '/^:CNI-(FORWARD|ADMIN|HOSTPORT-(DNAT|SETMARK|MASQ)) / {print substr($1, 2)}' | sort -u | tr '\n' ' ')
        PRE_CNI_CHAINS=${PRE_CNI_CHAINS% }
    fi
    for dir in /var/lib/cni /var/lib/cni/results; do
        if [ ! -e "$dir" ]; then CNI_STATE_DIRS="$dir${CNI_STATE_DIRS:+ $CNI_STATE_DIRS}"; fi
    done
}

killall_text() {
    cat <<EOF
#!/bin/sh
# Written by warren's install.sh: stops everything warren started and leaves the install in place.
# The service, the supervisor, containerd, the shims and the containers; their mounts; warren's
# pods' network namespaces, the $BRIDGE bridge, the iptables rules and chains warren's CNI plugins
# made, warren's CNI result cache; stale shim sockets and ctr FIFOs under /run/containerd.
# '$UNINSTALL --purge' runs it first. 'systemctl start' (or rc-service) starts warren again.
set -u

INIT='$INIT'
SERVICE_NAME='$SERVICE_NAME'
OPENRC_NAME='$OPENRC_NAME'
DATA_DIR='$DATA_DIR'
RUN_DIR='$RUN_DIR'
CONFIG_DIR='$CONFIG_DIR'
RUNTIME_DIR='$RUNTIME_DIR'
BIN='$BIN'
BRIDGE='$BRIDGE'
POD_CIDR='$POD_CIDR'
PRE_CNI_CHAINS='$PRE_CNI_CHAINS'
CNI_STATE_DIRS='$CNI_STATE_DIRS'
EOF
    cat <<'KILLALL'

info() {
    printf '[warren] %s\n' "$*"
}

for arg in "$@"; do
    case "$arg" in
        -h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "warren killall: unknown argument '$arg'; it takes none" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "warren killall: permission denied: run it as root" >&2
    exit 4
fi

# 1. The service, so that nothing starts warren again while it is taken down.
if [ "$INIT" = systemd ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl stop "$SERVICE_NAME" </dev/null >/dev/null 2>&1 || true
elif [ "$INIT" = openrc ] && [ -d /run/openrc ] && command -v rc-service >/dev/null 2>&1; then
    rc-service "$OPENRC_NAME" stop </dev/null >/dev/null 2>&1 || true
fi

# A supervisor started by hand ('warren containerd start') stops the way it should first.
if [ -x "$BIN" ]; then
    WARREN_DATA_DIR="$DATA_DIR" WARREN_RUN_DIR="$RUN_DIR" WARREN_CONFIG_DIR="$CONFIG_DIR" \
        WARREN_RUNTIME_DIR="$RUNTIME_DIR" "$BIN" containerd stop </dev/null >/dev/null 2>&1 || true
fi

# 2. Every process warren started: containerd and the shims run from the data dir, a supervisor
# from the launcher's runtime dir; the containers are the shims' descendants. Containers first.
ours=''
for proc in /proc/[0-9]*; do
    case "$(readlink "$proc/exe" 2>/dev/null)" in
        "$DATA_DIR"/* | "$RUNTIME_DIR"/*) ours="$ours ${proc#/proc/}" ;;
    esac
done
if [ -n "$ours" ]; then
    # pid ppid of every process (comm may hold spaces: cut at its last ")")
    tree=$(for stat in /proc/[0-9]*/stat; do cat "$stat" 2>/dev/null; echo; done |
        awk 'NF { pid = $1; sub(/.*\) /, ""); print pid, $2 }')
    kids=$(printf '%s\n' "$tree" | awk -v roots="$ours" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
        { parent[$1] = $2 }
        END {
            do { grew = 0
                 for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; kid[p] = 1; grew = 1 }
            } while (grew)
            for (p in kid) print p
        }')
    # shellcheck disable=SC2086 # lists of pids
    [ -z "$kids" ] || kill -KILL $kids 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -KILL $ours 2>/dev/null || true
    info "killed warren's supervisor, containerd, shims and containers"
fi

# 3. Their mounts: under the data and run dirs.
if [ -r /proc/self/mountinfo ]; then
    awk -v d="$DATA_DIR/" -v r="$RUN_DIR/" 'index($5, d) == 1 || index($5, r) == 1 {print $5}' \
        /proc/self/mountinfo | sort -r |
        while read -r mountpoint; do umount -l "$mountpoint" 2>/dev/null || true; done
fi

# 4. The pod network. warren's pods are the network namespaces on the far side of warren0's veths,
# and those named in the CNI result cache of warren's own network (its config names warren's IPAM
# dir): never another runtime's.
results=''
for file in /var/lib/cni/results/warren-*; do
    [ -f "$file" ] || continue
    config=$(sed -n 's/.*"config":"\([^"]*\)".*/\1/p' "$file" | base64 -d 2>/dev/null || true)
    case "$config" in
        *"\"$DATA_DIR/cni/networks\""*) results="$results $file" ;;
    esac
done
netns=''
if command -v ip >/dev/null 2>&1; then
    netns=$(ip -o link show master "$BRIDGE" 2>/dev/null | sed -n 's/.* link-netns \([^ ]*\).*/\1/p')
fi
# shellcheck disable=SC2086 # a list of files
[ -z "$results" ] || netns="$netns $(sed -n 's|.*"sandbox":"/var/run/netns/\(cni-[^"]*\)".*|\1|p; s|.*"sandbox":"/run/netns/\(cni-[^"]*\)".*|\1|p' $results)"
for ns in $(printf '%s\n' $netns | sort -u); do
    case "$ns" in
        cni-*) ip netns delete "$ns" 2>/dev/null && info "deleted network namespace $ns" ;;
    esac
done
if command -v ip >/dev/null 2>&1 && ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link delete "$BRIDGE" && info "deleted the bridge $BRIDGE"
fi
# With each result of warren's network goes the one of containerd's loopback for the same sandbox.
for file in $results; do
    id=$(sed -n 's/.*"containerId":"\([0-9a-f]*\)".*/\1/p' "$file")
    rm -f "$file"
    [ -z "$id" ] || rm -f "/var/lib/cni/results/cni-loopback-$id-lo"
done
for dir in $CNI_STATE_DIRS; do
    rmdir "$dir" 2>/dev/null || true
done

# 5. iptables: the rules that name the bridge, warren's network ("name: \"warren\"") or an address
# of the pod CIDR, the per-pod chains they jump to, and the CNI plugins' shared chains (CNI-FORWARD
# and CNI-ADMIN of the firewall plugin, CNI-HOSTPORT-* of portmap) when nothing but their own
# plumbing is left in them and they were not there before warren was installed.
if command -v iptables-save >/dev/null 2>&1 && command -v iptables-restore >/dev/null 2>&1; then
    for table in filter nat; do
        undo=$(iptables-save -t "$table" 2>/dev/null | awk -v bridge="$BRIDGE" -v cidr="$POD_CIDR" -v pre=" $PRE_CNI_CHAINS " -v table="$table" '
            function ip2n(ip,   o) { split(ip, o, "."); return ((o[1] * 256 + o[2]) * 256 + o[3]) * 256 + o[4] }
            function in_pod_net(spec,   n, w, i, a, bits) {
                n = split(spec, w, " ")
                for (i = 1; i < n; i++) if (w[i] == "-s" || w[i] == "-d") {
                    split(w[i + 1], a, "/"); bits = (a[2] == "" ? 32 : a[2] + 0)
                    if (bits >= cbits && int(ip2n(a[1]) / 2 ^ (32 - cbits)) == cnet) return 1
                }
                return 0
            }
            # (A lookup of a missing key would add it: awk arrays are read through "in".)
            function grp(ch) { return (ch in group) ? group[ch] : "" }
            function target(spec,   n, w, i) {
                n = split(spec, w, " "); for (i = 1; i < n; i++) if (w[i] == "-j") return w[i + 1]; return ""
            }
            BEGIN {
                split(cidr, c, "/"); cbits = c[2] + 0; cnet = int(ip2n(c[1]) / 2 ^ (32 - cbits))
                group["CNI-FORWARD"] = "fw"; group["CNI-ADMIN"] = "fw"
                group["CNI-HOSTPORT-DNAT"] = "hp"; group["CNI-HOSTPORT-SETMARK"] = "hp"; group["CNI-HOSTPORT-MASQ"] = "hp"
            }
            /^:/ { name = substr($1, 2); exists[name] = 1; next }
            /^-A / {
                nrules++; chain[nrules] = $2; rule[nrules] = substr($0, 4)
                t = target($0); tgt[nrules] = t
                if (index($0, " " bridge " ") || index($0, "name: \\\"warren\\\"") || in_pod_net($0)) {
                    mine[nrules] = 1
                    if (t ~ /^CNI-/ && !(t in group)) ourchain[t] = 1
                }
            }
            END {
                # Rules inside per-pod chains go with their chain.
                for (i = 1; i <= nrules; i++) if (chain[i] in ourchain) mine[i] = 1
                # A shared group stays when it was there before, or holds rules that are not ours
                # and not its own plumbing.
                for (g in group) if (index(pre, " " g " ")) keep[group[g]] = 1
                for (i = 1; i <= nrules; i++) {
                    g = grp(chain[i])
                    if (g == "" || (i in mine)) continue
                    if (grp(tgt[i]) == g || chain[i] == "CNI-HOSTPORT-SETMARK" || chain[i] == "CNI-HOSTPORT-MASQ") continue
                    keep[g] = 1
                }
                print "*" table
                for (i = 1; i <= nrules; i++) {
                    g = grp(tgt[i])
                    if ((i in mine) && !(chain[i] in ourchain)) print "-D " rule[i]
                    else if (g != "" && !(g in keep) && grp(chain[i]) == "") print "-D " rule[i]
                }
                for (ch in ourchain) if (ch in exists) { print "-F " ch; dead[ch] = 1 }
                for (ch in group) if ((ch in exists) && !(group[ch] in keep)) { print "-F " ch; dead[ch] = 1 }
                for (ch in dead) print "-X " ch
                print "COMMIT"
            }')
        if [ "$(printf '%s\n' "$undo" | wc -l)" -gt 2 ]; then
            if printf '%s\n' "$undo" | iptables-restore --noflush; then
                info "removed warren's pod network rules from iptables ($table)"
            else
                info "could not remove warren's iptables rules ($table); see 'iptables-save -t $table'"
            fi
        fi
    done
fi

# 6. /run/containerd: the shims of containerd 1.6 and 1.7 put their sockets in /run/containerd/s
# whatever the state dir, ctr its FIFOs in /run/containerd/fifo, and containerd 1.7 makes
# /run/containerd at every start. With warren's processes gone, a socket no process holds (none in
# /proc/net/unix) and a FIFO no process has open are stale; another containerd's are kept, and so
# are the dirs while anything is left in them.
for sock in /run/containerd/s/*; do
    if [ -S "$sock" ] && ! awk -v s="$sock" '$NF == s {found = 1} END {exit !found}' /proc/net/unix 2>/dev/null; then
        rm -f "$sock"
    fi
done
if [ -d /run/containerd/fifo ]; then
    # shellcheck disable=SC2010 # ls -l shows where each fd leads; find -printf is GNU only
    open_fifos=$(ls -l /proc/[0-9]*/fd 2>/dev/null | sed -n 's|.* -> \(/run/containerd/fifo/.*\)|\1|p' | sort -u)
    for fifo in /run/containerd/fifo/*/*; do
        [ -p "$fifo" ] || continue
        printf '%s\n' "$open_fifos" | grep -qxF "$fifo" || rm -f "$fifo"
    done
    for dir in /run/containerd/fifo/*; do
        [ -d "$dir" ] && rmdir "$dir" 2>/dev/null || true
    done
fi
for dir in /run/containerd/fifo /run/containerd/s /run/containerd; do
    if [ -d "$dir" ] && rmdir "$dir" 2>/dev/null; then info "removed $dir (left empty by warren's containerd)"; fi
done
info "warren stopped: its processes, pods, bridge and rules are gone (the install is left in place)"
KILLALL
}

write_killall() {
    # (A rootless containerd's processes, mounts and network live in its user namespace: 'warren
    # containerd stop' ends them all; the killall is root's, for the system's pod network.)
    if [ "$OS" != linux ] || [ "$ROOTLESS" = true ]; then return 0; fi
    note_cni_state
    killall_text | write_file "$KILLALL" 0755
    WROTE_FILES=true
    info "wrote $KILLALL (stops warren, its containers and its pod network; the install stays)"
}

write_uninstaller() {
    # Keep what an earlier run recorded: directories it created stay ours to remove.
    for dir in $(previous_value CREATED_DIRS); do
        case " $CREATED_DIRS " in *" $dir "*) ;; *) CREATED_DIRS="$CREATED_DIRS $dir" ;; esac
    done
    CREATED_DIRS=${CREATED_DIRS# }
    if [ "$BIN_OWNED" != true ] && [ "$(previous_value BIN_OWNED)" = true ] &&
        [ "$(previous_value BIN)" = "$BIN" ]; then
        BIN_OWNED=true
    fi
    uninstaller_text | write_file "$UNINSTALL" 0755
    WROTE_FILES=true
    info "wrote $UNINSTALL (add --purge to delete $DATA_DIR too)"
}

# --- main ---------------------------------------------------------------------------------------

ROOTLESS=false

main() {
    for arg in "$@"; do
        case "$arg" in
            -h | --help)
                usage
                exit 0
                ;;
            --rootless) ROOTLESS=true ;;
            *) fatal "$EXIT_USAGE" "unknown argument '$arg'; settings are WARREN_* environment variables (see --help)" ;;
        esac
    done
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    detect_platform
    if [ "$ROOTLESS" = true ]; then
        if [ "$(id -u)" -eq 0 ]; then
            fatal "$EXIT_USAGE" "--rootless installs for a user without root, and this runs as root; run it as that user (no sudo), or drop --rootless for the system service"
        fi
        if [ "$OS" != linux ]; then
            fatal "$EXIT_USAGE" "--rootless is for Linux; on macOS warren runs as the user already (drop --rootless)"
        fi
        case "${HOME:-}" in
            /*) ;;
            *) fatal "$EXIT_USAGE" "HOME='${HOME:-}' is not an absolute path, and --rootless installs under it; set HOME" ;;
        esac
    fi
    choose_paths
    if [ "$ROOTLESS" = true ]; then check_rootless; fi
    collect_proxy
    BIN_OWNED=false
    BIN_CHANGED=false
    if truthy "${WARREN_INSTALL_SKIP_DOWNLOAD:-}"; then
        if [ ! -f "$BIN" ]; then
            fatal "$EXIT_ERROR" "WARREN_INSTALL_SKIP_DOWNLOAD is set but $BIN does not exist; copy $ASSET there first (chmod 0755), or set WARREN_BIN_DIR to where it is"
        fi
        if [ ! -x "$BIN" ]; then
            fatal "$EXIT_PERMISSION" "$BIN is not executable; chmod 0755 $BIN"
        fi
        runs_here "$BIN" "$BIN"
        info "air-gapped install: using $BIN as it is (no download)"
    else
        choose_tools
        URL=$(base_url)
        TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/warren-install.XXXXXX")
        expected_digest
        BIN_OWNED=true
        current=''
        [ ! -f "$BIN" ] || current=$(sha256_of "$BIN")
        if [ -n "$STATIC_ASSET" ] && [ -n "$current" ] && [ "$current" = "$(digest_of "$STATIC_ASSET")" ] &&
            [ "$current" != "$EXPECTED" ]; then
            # Installed before as the static fallback: the same release, already in place.
            ASSET=$STATIC_ASSET
            EXPECTED=$current
        fi
        if [ -n "$current" ] && [ "$current" = "$EXPECTED" ]; then
            info "$BIN is already this release ($ASSET, sha256 $EXPECTED): no download"
        else
            download_verified
            install_binary
            BIN_CHANGED=true
        fi
    fi
    setup_service
    if [ "$ROOTLESS" = true ]; then
        # The launcher's cache of the runtime (the first run makes it): recorded as ours, so that
        # the uninstaller leaves no empty ~/.cache behind. 0700, as the launcher makes it.
        umask 077
        make_dir "$RUNTIME_DIR"
        umask 022
        # And the data dir's parent (~/.local/share), which the first start would make.
        make_dir "$(dirname "$DATA_DIR")"
    fi
    note_cni_dirs
    write_killall
    write_uninstaller
    enable_service
    if [ "$OS" = darwin ]; then
        info "on macOS containerd runs in a Lima VM: install Lima ('brew install lima'), then run 'warren lima up'"
    fi
    info "done: $("$BIN" -V </dev/null 2>&1 | head -n 1)"
    if [ "$ROOTLESS" = true ]; then explain_lingering; fi
}

main "$@"
