#!/usr/bin/env bash
# Build dist/warren-linux-arm64 on an amd64 Debian host, under qemu-user emulation.
#
# PyInstaller cannot cross-build: the arm64 one file is frozen by an arm64 Python in a Debian
# bookworm arm64 root (debootstrap), which runs here through binfmt_misc + qemu-aarch64-static.
# Steps: stage the arm64 payload (fetch_and_verify.py --arch arm64), make or reuse the root and
# its venv (cached under build/cache/arm64-root), freeze with build/spec/warren.spec inside it,
# then check the result here. Needs root (debootstrap, mount, chroot). Run from anywhere:
#
#   scripts/build_arm64.sh            (what `make release-arm64` calls)
#
# Environment: PYTHON (host Python with the project's deps, default .venv/bin/python),
# SOURCE (payload source, default auto), FETCH_ARGS (more fetch_and_verify.py arguments),
# ARM64_ROOT (default build/cache/arm64-root), DEBIAN_MIRROR, SKIP_PAYLOAD=1 (use the staged one).
# Exit codes as warren's: 1 other, 4 not root, 5 the host cannot run arm64 binaries.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
SOURCE=${SOURCE:-auto}
FETCH_ARGS=${FETCH_ARGS:-}
ROOT=${ARM64_ROOT:-$REPO/build/cache/arm64-root}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PAYLOAD_DIR=build/payload/linux-arm64
EXE_NAME=warren-linux-arm64
EXE=dist/$EXE_NAME
# Inside the root: the venv (kept) and the repo's bind mount (read-only: the freeze writes only
# to its own work dirs, so nothing in the repo but dist/warren-linux-arm64 changes).
VENV=/opt/warren-venv
SRC=/src
WORK=/var/tmp/warren-freeze
ROOT_PACKAGES=python3,python3-venv,python3-pip,binutils,libpython3.11,ca-certificates
BINFMT=/proc/sys/fs/binfmt_misc

say() { printf 'build-arm64: %s\n' "$*" >&2; }
die() { # die CODE MESSAGE REMEDY: warren's one-line error format
	printf 'warren: %s; %s\n' "$2" "$3" >&2
	exit "$1"
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || die 4 "building the arm64 file needs root (debootstrap, mount, chroot)" \
	"run 'sudo make release-arm64'"
[ -x "$PYTHON" ] || die 1 "no Python at $PYTHON" "run 'make venv' or set PYTHON"

# --- host tools and binfmt ---------------------------------------------------------------------
missing=""
command -v debootstrap >/dev/null || missing="$missing debootstrap"
command -v qemu-aarch64-static >/dev/null || missing="$missing qemu-user-static"
command -v update-binfmts >/dev/null || missing="$missing binfmt-support"
command -v file >/dev/null || missing="$missing file"
# The local pause of the sandbox image (when registry.k8s.io cannot be reached) is built static
# for arm64 on this host: warren_bundle/fetch/sandbox.py.
if [ "$(uname -m)" != aarch64 ] && ! command -v aarch64-linux-gnu-gcc >/dev/null; then
	missing="$missing gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
fi
if [ -n "$missing" ]; then
	command -v apt-get >/dev/null || die 5 "missing tools:$missing" "install them, then retry"
	say "installing$missing"
	# shellcheck disable=SC2086 # a list of package names
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null
fi
native=0
[ "$(uname -m)" = aarch64 ] && native=1 # an arm64 host runs the root without emulation
if [ "$native" = 0 ] && [ ! -e "$BINFMT/register" ]; then
	mount -t binfmt_misc binfmt_misc "$BINFMT" ||
		die 5 "cannot mount binfmt_misc at $BINFMT" "load the binfmt_misc module (modprobe binfmt_misc)"
fi
[ "$native" = 1 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
# fix_binary (flag F): the kernel holds qemu open, so it need not exist inside the root.
if [ "$native" = 0 ] && ! grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null ||
	! grep -q '^flags:.*F' "$BINFMT/qemu-aarch64"; then
	die 5 "binfmt_misc has no enabled qemu-aarch64 entry with the F flag" \
		"install qemu-user-static and run 'update-binfmts --enable qemu-aarch64'"
fi

# One build at a time: two would share the root, its mounts and the work dir.
mkdir -p build/cache dist
exec 9>build/cache/arm64-root.lock
flock -n 9 || {
	say "waiting for another arm64 build"
	flock 9
}

# --- 1. the arm64 payload ----------------------------------------------------------------------
if [ "${SKIP_PAYLOAD:-0}" = 1 ] && [ -f "$PAYLOAD_DIR/payload.json" ]; then
	say "using the staged $PAYLOAD_DIR"
else
	t=$(now)
	# shellcheck disable=SC2086 # FETCH_ARGS is a list of arguments
	"$PYTHON" scripts/fetch_and_verify.py --arch arm64 --source "$SOURCE" --out "$PAYLOAD_DIR" \
		$FETCH_ARGS
	say "payload staged in $(since "$t") s"
fi

# --- 2. the arm64 root and its venv ------------------------------------------------------------
mounts=()
cleanup() {
	local i
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" || true
	done
	mounts=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mount_into() { # mount_into TARGET MOUNT-ARGS...: mounted now, unmounted by the trap
	local target=$1
	shift
	mkdir -p "$target"
	mountpoint -q "$target" && die 1 "$target is already a mount point" \
		"another build may be running or crashed; unmount it ('umount $target') and retry"
	mount "$@" "$target"
	mounts+=("$target")
}

no_mounts_under() { # a crashed debootstrap or build may have left /proc or /dev mounted there
	if awk -v p="$1/" '{ if (index($2 "/", p) == 1) found = 1 } END { exit !found }' /proc/mounts; then
		die 1 "something is still mounted under $1" \
			"unmount it (see 'grep $1 /proc/mounts') and retry"
	fi
}

if [ ! -f "$ROOT/.warren-root-ready" ]; then
	no_mounts_under "$ROOT.tmp"
	rm -rf --one-file-system "$ROOT.tmp"
	say "debootstrap $SUITE arm64 into $ROOT (a few minutes)"
	t=$(now)
	debootstrap --arch=arm64 --variant=minbase --include="$ROOT_PACKAGES" \
		"$SUITE" "$ROOT.tmp" "$DEBIAN_MIRROR" >build/cache/arm64-debootstrap.log 2>&1 ||
		die 1 "debootstrap failed: $(tail -n 1 build/cache/arm64-debootstrap.log)" \
			"see build/cache/arm64-debootstrap.log"
	say "debootstrap took $(since "$t") s"
	no_mounts_under "$ROOT"
	rm -rf --one-file-system "$ROOT"
	# Renamed only when complete: a half-made root is never reused.
	mv "$ROOT.tmp" "$ROOT"
	touch "$ROOT/.warren-root-ready"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's CA bundle (it may hold a proxy's CA) and pip's settings that do not name host paths.
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ndisable-pip-version-check = true\n' \
	>"$ROOT/etc/pip.conf"

mount_into "$ROOT/proc" -t proc proc
mount_into "$ROOT/dev" --bind /dev
mount_into "$ROOT$SRC" --bind "$REPO"
mount -o remount,bind,ro "$ROOT$SRC"

in_root() { # the host's PIP_* (find-links to host folders) mean nothing in the root
	chroot "$ROOT" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LC_ALL=C.UTF-8 \
		PYTHONDONTWRITEBYTECODE=1 "$@"
}

# The pinned PyInstaller (the [build] extra) and the runtime dependencies, from pyproject.toml.
requirements=$("$PYTHON" - <<'EOF'
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
build = [r for r in project["optional-dependencies"]["build"] if r.startswith("pyinstaller")]
print("\n".join(project["dependencies"] + build))
EOF
)
if [ ! -x "$ROOT$VENV/bin/pyinstaller" ] ||
	[ "$(cat "$ROOT$VENV/.requirements" 2>/dev/null)" != "$requirements" ]; then
	say "venv in the root: $(echo "$requirements" | tr '\n' ' ')"
	t=$(now)
	rm -rf "$ROOT$VENV"
	in_root python3 -m venv "$VENV"
	printf '%s\n' "$requirements" >"$ROOT/tmp/warren-requirements.txt"
	in_root "$VENV/bin/pip" install -q --only-binary=:all: -r /tmp/warren-requirements.txt
	printf '%s\n' "$requirements" >"$ROOT$VENV/.requirements"
	say "venv took $(since "$t") s"
fi

# --- 3. freeze with the same spec --------------------------------------------------------------
rm -rf "$ROOT$WORK"
say "freezing $EXE_NAME under emulation"
t=$(now)
in_root env WARREN_PAYLOAD_DIR="$SRC/$PAYLOAD_DIR" WARREN_EXE_NAME="$EXE_NAME" \
	"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
	--workpath "$WORK/work" --distpath "$WORK/dist" "$SRC/build/spec/warren.spec"
freeze_s=$(since "$t")
cp "$ROOT$WORK/dist/$EXE_NAME" "dist/.$EXE_NAME.tmp"
mv -f "dist/.$EXE_NAME.tmp" "$EXE"
rm -rf "$ROOT$WORK"
say "froze $EXE in $freeze_s s ($(stat -c %s "$EXE") bytes)"

# --- 4. check it here --------------------------------------------------------------------------
file -b "$EXE" | grep -q 'ARM aarch64' || die 1 "$EXE is not an aarch64 ELF: $(file -b "$EXE")" \
	"see the PyInstaller output above"
# The file is dynamic (this root's glibc, like the amd64 one is the host's): qemu finds the arm64
# loader and libraries under QEMU_LD_PREFIX, falling back to host paths for everything else.
export QEMU_LD_PREFIX="$ROOT"
t=$(now)
version=$("$EXE" version --json)
say "'$EXE_NAME version' took $(since "$t") s under emulation"
want_digest=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["digest"])' \
	"$PAYLOAD_DIR/payload.json")
printf '%s' "$version" | "$PYTHON" -c '
import json, sys
p = json.load(sys.stdin)["payload"]
want = sys.argv[1]
arch, digest = p["arch"], p["digest"]
if arch != "arm64" or digest != want:
    sys.exit(f"warren: {sys.argv[2]} carries the {arch} payload {digest}, not arm64 {want}")
' "$want_digest" "$EXE"

# Extract into a data dir inside the root, where the dynamic Debian arm64 binaries find their libs.
check=/var/tmp/warren-check
rm -rf "$ROOT$check"
WARREN_DATA_DIR="$ROOT$check/data" WARREN_RUN_DIR="$ROOT$check/run" \
	WARREN_CONFIG_DIR="$ROOT$check/config" "$EXE" extract --json >/dev/null
for name in containerd containerd-shim-runc-v2 ctr runc; do
	file -b "$ROOT$check/data/bin/$name" | grep -q 'ARM aarch64' ||
		die 1 "extracted $name is not aarch64" "the payload in $PAYLOAD_DIR is not arm64"
done
# containerd logs a cpuinfo complaint on stderr: qemu shows it the host's /proc/cpuinfo.
say "in the root: $(in_root "$check/data/bin/containerd" --version 2>/dev/null)"
say "in the root: $(in_root "$check/data/bin/runc" --version | head -n 1)"
rm -rf "$ROOT$check"
say "ok: $EXE ($(file -b "$EXE" | cut -d, -f1-2)), payload sha256:$want_digest"
