#!/usr/bin/env bash
# Build the parts of dist/warren-linux-arm64 on an amd64 Debian host (natively on an arm64 one).
#
# The arm64 file has the amd64 file's shape: [static launcher][runtime archive][payload][trailer].
#   launcher  launcher/launcher.c, static with musl, cross-compiled here by aarch64-linux-gnu-gcc
#             against Debian's arm64 musl-dev (a sysroot of three .debs): about a second, where
#             the same build in the emulated root takes tens of seconds.
#   runtime   PyInstaller onedir frozen by an arm64 Python in a Debian bookworm arm64 root
#             (debootstrap) run through binfmt_misc + qemu-aarch64-static, then made
#             self-contained there by scripts/onefile.py runtime (its ldd, its glibc and
#             ld-linux-aarch64.so.1).
#   payload   Debian's (or upstream's) arm64 containerd/runc/CNI, scripts/fetch_and_verify.py.
# `make release-arm64` packs them (scripts/onefile.py pack) as `make build` packs amd64's.
#
# Every slow deterministic step is cached outside the clone, in ARM64_CACHE
# (/var/cache/warren-build/arm64), under a hash of its inputs:
#   root-<suite+packages>/         the arm64 root (and its venv, keyed by the requirements)
#   runtime/<sources+root+reqs>/   the self-contained runtime tree
#   payload/<fetch inputs>/        the staged payload
#   sysroot-<packages>/, apt/, downloads/   musl-dev, zlib1g-dev arm64; apt state; .debs
# so a warm build copies three dirs and compiles the launcher. A fresh machine builds them all.
# build/cache/arm64-root links to the root: the extracted Debian containerd and runc are dynamic
# and run here with QEMU_LD_PREFIX=build/cache/arm64-root (tests/e2e/test_arm64.py).
#
#   scripts/build_arm64.sh            (what `make release-arm64` calls; root: debootstrap, chroot)
#
# Environment: PYTHON (host Python with the project's deps, default .venv/bin/python),
# SOURCE (payload source, default auto), FETCH_ARGS (more fetch_and_verify.py arguments),
# ARM64_CACHE, DEBIAN_MIRROR.
# Exit codes as warren's: 1 other, 4 not root, 5 the host cannot run arm64 binaries.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
SOURCE=${SOURCE:-auto}
FETCH_ARGS=${FETCH_ARGS:-}
CACHE=${ARM64_CACHE:-/var/cache/warren-build/arm64}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
EXE_NAME=warren-linux-arm64
PAYLOAD_DIR=build/payload/linux-arm64
LAUNCHER=build/launcher/warren-launcher-arm64
RUNTIME_TREE=build/runtime/$EXE_NAME-onedir
ROOT_LINK=build/cache/arm64-root
# Inside the root: the venv (kept) and the repo's bind mount (read-only: the freeze writes only
# to its own work dir).
VENV=/opt/warren-venv
SRC=/src
WORK=/var/tmp/warren-freeze
ROOT_PACKAGES=python3,python3-venv,python3-pip,binutils,libpython3.11,ca-certificates,patchelf
SYSROOT_PACKAGES="musl musl-dev zlib1g-dev"
BINFMT=/proc/sys/fs/binfmt_misc

say() { printf 'build-arm64: %s\n' "$*" >&2; }
die() { # die CODE MESSAGE REMEDY: warren's one-line error format
	printf 'warren: %s; %s\n' "$2" "$3" >&2
	exit "$1"
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
key_of() { sha256sum | cut -c1-16; } # stdin: a description of every input of a step
started=$(now)

[ "$(id -u)" = 0 ] || die 4 "building the arm64 file needs root (debootstrap, mount, chroot)" \
	"run 'sudo make release-arm64'"
[ -x "$PYTHON" ] || die 1 "no Python at $PYTHON" "run 'make venv' or set PYTHON"

# --- host tools and binfmt ---------------------------------------------------------------------
native=0
[ "$(uname -m)" = aarch64 ] && native=1 # an arm64 host runs the root without emulation
missing=""
command -v debootstrap >/dev/null || missing="$missing debootstrap"
command -v file >/dev/null || missing="$missing file"
if [ "$native" = 0 ]; then
	command -v qemu-aarch64-static >/dev/null || missing="$missing qemu-user-static"
	command -v update-binfmts >/dev/null || missing="$missing binfmt-support"
	# The launcher, and the local pause of the sandbox image when registry.k8s.io cannot be
	# reached (warren_bundle/fetch/sandbox.py), are compiled for arm64 here.
	command -v aarch64-linux-gnu-gcc >/dev/null ||
		missing="$missing gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
else
	command -v musl-gcc >/dev/null || missing="$missing musl-tools zlib1g-dev"
fi
if [ -n "$missing" ]; then
	command -v apt-get >/dev/null || die 5 "missing tools:$missing" "install them, then retry"
	say "installing$missing"
	# shellcheck disable=SC2086 # a list of package names
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
if [ "$native" = 0 ]; then
	if [ ! -e "$BINFMT/register" ]; then
		mount -t binfmt_misc binfmt_misc "$BINFMT" ||
			die 5 "cannot mount binfmt_misc at $BINFMT" "load the binfmt_misc module (modprobe binfmt_misc)"
	fi
	update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
	# fix_binary (flag F): the kernel holds qemu open, so it need not exist inside the root.
	if ! grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null ||
		! grep -q '^flags:.*F' "$BINFMT/qemu-aarch64"; then
		die 5 "binfmt_misc has no enabled qemu-aarch64 entry with the F flag" \
			"install qemu-user-static and run 'update-binfmts --enable qemu-aarch64'"
	fi
fi

# One build at a time: two would share the root, its mounts and the work dir.
mkdir -p "$CACHE" build/cache build/launcher build/runtime dist
exec 9>"$CACHE/.lock"
flock -n 9 || {
	say "waiting for another arm64 build"
	flock 9
}

# Copy a finished dir into the cache: renamed into place whole, so a crash leaves no half entry.
cache_put() { # cache_put SRC DEST
	rm -rf "$2.tmp"
	cp -a "$1" "$2.tmp"
	mv -T "$2.tmp" "$2"
}

# --- 1. the arm64 payload ----------------------------------------------------------------------
t=$(now)
payload_key=$(
	{
		echo "$SOURCE $FETCH_ARGS $DEBIAN_MIRROR"
		git ls-files -co --exclude-standard scripts/fetch_and_verify.py warren_bundle/fetch \
			warren_bundle/payload checksums build/pause | sort | xargs -r sha256sum
	} | key_of
)
payload_cache=$CACHE/payload/$payload_key
if [ ! -f "$payload_cache/payload.json" ]; then
	rm -rf "$PAYLOAD_DIR"
	# shellcheck disable=SC2086 # FETCH_ARGS is a list of arguments
	"$PYTHON" scripts/fetch_and_verify.py --arch arm64 --source "$SOURCE" --out "$PAYLOAD_DIR" \
		--cache "$CACHE/downloads" $FETCH_ARGS
	mkdir -p "$CACHE/payload"
	cache_put "$PAYLOAD_DIR" "$payload_cache"
	say "payload staged in $(since "$t") s (cached as payload/$payload_key)"
elif ! cmp -s "$payload_cache/payload.json" "$PAYLOAD_DIR/payload.json"; then
	rm -rf "$PAYLOAD_DIR"
	cp -a "$payload_cache" "$PAYLOAD_DIR"
	say "payload from the cache (payload/$payload_key)"
fi

# --- 2. the launcher: static, musl, aarch64 ----------------------------------------------------
t=$(now)
CFLAGS=(-static -Os -s -Wall -Wextra -Werror)
SOURCES=(launcher/launcher.c launcher/sha256.c)
if [ "$native" = 1 ]; then
	mkdir -p build/launcher/include
	ln -sf /usr/include/zlib.h /usr/include/zconf.h build/launcher/include/
	musl-gcc "${CFLAGS[@]}" -Ibuild/launcher/include -o "$LAUNCHER.tmp" "${SOURCES[@]}" \
		/usr/lib/aarch64-linux-gnu/libz.a
else
	sysroot=$CACHE/sysroot-$(echo "$SUITE $SYSROOT_PACKAGES" | key_of)
	if [ ! -f "$sysroot/musl.specs" ]; then
		# Debian's arm64 musl-dev and zlib1g-dev, unpacked (not installed): apt state of our own.
		state=$CACHE/apt/$SUITE-arm64
		mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$sysroot.tmp"
		{
			printf 'deb %s %s main\ndeb %s %s-updates main\n' "$DEBIAN_MIRROR" "$SUITE" \
				"$DEBIAN_MIRROR" "$SUITE"
			case $DEBIAN_MIRROR in # zlib's fixes come from the security archive
			*/debian | */debian/) printf 'deb %s-security %s-security main\n' \
				"${DEBIAN_MIRROR%/}" "$SUITE" ;;
			esac
		} >"$state/sources.list"
		touch "$state/status"
		apt_opts=(-q "-oDir::State::Lists=$state/lists" "-oDir::Etc::SourceList=$state/sources.list"
			-oDir::Etc::SourceParts=/dev/null "-oDir::Cache=$state/cache"
			"-oDir::State::Status=$state/status" -oAPT::Architecture=arm64
			-oAPT::Architectures=arm64 -oAPT::Sandbox::User=root)
		apt-get "${apt_opts[@]}" update >/dev/null
		debs=$(mktemp -d "$CACHE/debs.XXXXXX")
		# shellcheck disable=SC2086 # a list of package names
		(cd "$debs" && apt-get "${apt_opts[@]}" download $SYSROOT_PACKAGES >/dev/null)
		for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$sysroot.tmp"; done
		rm -rf "$debs"
		# musl-gcc's specs, pointed into the sysroot.
		sed "s|/usr/|$sysroot/usr/|g; s|/lib/ld-musl|$sysroot/lib/ld-musl|" \
			"$sysroot.tmp/usr/lib/aarch64-linux-musl/musl-gcc.specs" >"$sysroot.tmp/musl.specs"
		sed -i "s|$sysroot.tmp/|$sysroot/|g" "$sysroot.tmp/musl.specs"
		rm -rf "$sysroot"
		mv -T "$sysroot.tmp" "$sysroot"
	fi
	mkdir -p build/launcher/include-arm64
	ln -sf "$sysroot/usr/include/zlib.h" "$sysroot/usr/include/zconf.h" build/launcher/include-arm64/
	aarch64-linux-gnu-gcc -specs="$sysroot/musl.specs" "${CFLAGS[@]}" \
		-Ibuild/launcher/include-arm64 -o "$LAUNCHER.tmp" "${SOURCES[@]}" \
		"$sysroot/usr/lib/aarch64-linux-gnu/libz.a"
fi
mv -f "$LAUNCHER.tmp" "$LAUNCHER"
file -b "$LAUNCHER" | grep -q 'ARM aarch64.*statically linked' ||
	die 1 "$LAUNCHER is not a static aarch64 program: $(file -b "$LAUNCHER")" "see the compiler output"
say "launcher built in $(since "$t") s ($(stat -c %s "$LAUNCHER") bytes)"

# --- 3. the arm64 root and its venv ------------------------------------------------------------
requirements=$("$PYTHON" - <<'EOF'
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
build = [r for r in project["optional-dependencies"]["build"] if r.startswith("pyinstaller")]
print("\n".join(project["dependencies"] + build))
EOF
)
root_key=$(echo "$SUITE $ROOT_PACKAGES $DEBIAN_MIRROR" | key_of)
ROOT=$CACHE/root-$root_key
runtime_key=$(
	{
		echo "$root_key"
		echo "$requirements"
		git ls-files -co --exclude-standard warren_bundle build/spec scripts/onefile.py \
			pyproject.toml | sort | xargs -r sha256sum
	} | key_of
)
runtime_cache=$CACHE/runtime/$runtime_key

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
in_root() { # the host's PIP_* (find-links to host folders) mean nothing in the root
	chroot "$ROOT" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LC_ALL=C.UTF-8 \
		PYTHONDONTWRITEBYTECODE=1 "$@"
}

if [ ! -f "$ROOT/.warren-root-ready" ]; then
	t=$(now)
	no_mounts_under "$ROOT.tmp"
	rm -rf --one-file-system "$ROOT.tmp"
	say "debootstrap $SUITE arm64 into $ROOT (minutes)"
	debootstrap --arch=arm64 --variant=minbase --include="$ROOT_PACKAGES" \
		"$SUITE" "$ROOT.tmp" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
		die 1 "debootstrap failed: $(tail -n 1 "$CACHE/debootstrap.log")" \
			"see $CACHE/debootstrap.log"
	no_mounts_under "$ROOT"
	rm -rf --one-file-system "$ROOT"
	mv -T "$ROOT.tmp" "$ROOT" # renamed only when complete: a half-made root is never reused
	touch "$ROOT/.warren-root-ready"
	say "debootstrap took $(since "$t") s"
fi
if [ -d "$ROOT_LINK" ] && [ ! -L "$ROOT_LINK" ]; then # the old layout's root, in the clone
	no_mounts_under "$REPO/$ROOT_LINK"
	say "removing the old arm64 root in $ROOT_LINK (the root is cached in $CACHE now)"
	rm -rf --one-file-system "$ROOT_LINK"
fi
ln -sfn "$ROOT" "$ROOT_LINK"

if [ ! -f "$runtime_cache/.loader" ]; then
	cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
	# The host's CA bundle (it may hold a proxy's CA) and pip's settings that name no host paths.
	cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
	printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ndisable-pip-version-check = true\n' \
		>"$ROOT/etc/pip.conf"
	mount_into "$ROOT/proc" -t proc proc
	mount_into "$ROOT/dev" --bind /dev
	mount_into "$ROOT$SRC" --bind "$REPO"
	mount -o remount,bind,ro "$ROOT$SRC"

	# The pinned PyInstaller (the [build] extra) and the runtime dependencies (pyproject.toml).
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

	# --- 4. the runtime: onedir, then self-contained (scripts/onefile.py runtime) in the root ---
	rm -rf "$ROOT$WORK"
	say "freezing the $EXE_NAME runtime under emulation"
	t=$(now)
	epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
	in_root env PYTHONHASHSEED=0 SOURCE_DATE_EPOCH="$epoch" WARREN_ONEDIR=1 \
		WARREN_EXE_NAME="$EXE_NAME" PYINSTALLER_CONFIG_DIR="$WORK/config" \
		"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
		--workpath "$WORK/work" --distpath "$WORK/dist" "$SRC/build/spec/warren.spec"
	say "froze the runtime in $(since "$t") s"
	t=$(now)
	in_root env PYTHONHASHSEED=0 SOURCE_DATE_EPOCH="$epoch" PYTHONPATH="$SRC" \
		"$VENV/bin/python" "$SRC/scripts/onefile.py" runtime "$WORK/dist/$EXE_NAME-onedir" \
		--python "$VENV/bin/python"
	say "made it self-contained in $(since "$t") s"
	mkdir -p "$CACHE/runtime"
	cache_put "$ROOT$WORK/dist/$EXE_NAME-onedir" "$runtime_cache"
	rm -rf "$ROOT$WORK"
	cleanup
else
	say "runtime from the cache (runtime/$runtime_key)"
fi
rm -rf "$RUNTIME_TREE"
cp -a "$runtime_cache" "$RUNTIME_TREE"
# e_machine, little-endian at offset 18: 183 is EM_AARCH64 (file(1) chokes on the long PT_INTERP).
[ "$(od -An -tu2 -j18 -N2 "$RUNTIME_TREE/warren" | tr -d ' ')" = 183 ] ||
	die 1 "$RUNTIME_TREE/warren is not an aarch64 program" "see the PyInstaller output above"
say "launcher, runtime and payload ready in $(since "$started") s"
