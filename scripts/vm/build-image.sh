#!/bin/sh
# Build (or reuse) a cached Debian guest for the VM test layer:
#   scripts/vm/build-image.sh SUITE [KIND]  ->  prints the cache dir holding base.qcow2, vmlinuz,
#                                               initrd.img
# KIND: systemd (default: systemd as init), openrc (sysvinit-core + OpenRC as init, no systemd),
# hardened (systemd; /tmp, /var/tmp, /dev/shm noexec in fstab, umask 027, tinyproxy on loopback).
# The cache lives outside the clone (WARREN_VM_CACHE, default /var/cache/warren-vm), keyed by the
# suite, the package list, the kind and ROOT_FORMAT: bump ROOT_FORMAT when the root's setup below
# changes.
# Needs root, debootstrap, mkfs.ext4 (e2fsprogs >= 1.43 for -d) and qemu-img.
set -eu

SUITE=${1:?usage: build-image.sh SUITE [systemd|openrc|hardened]}
KIND=${2:-systemd}
CACHE=${WARREN_VM_CACHE:-/var/cache/warren-vm}
MIRROR=${WARREN_VM_MIRROR:-http://deb.debian.org/debian}
SIZE=${WARREN_VM_DISK_SIZE:-4G}
COMMON=udev,kmod,linux-image-amd64,initramfs-tools,curl,iptables,ca-certificates,python3,procps,iproute2
case "$KIND" in
    systemd) PACKAGES=systemd,systemd-sysv,$COMMON ;;
    hardened) PACKAGES=systemd,systemd-sysv,$COMMON,tinyproxy ;;
    # debootstrap would pick sysv-rc for sysvinit-core (which conflicts with openrc): the init
    # is installed by apt in the root, after debootstrap.
    openrc) PACKAGES=$COMMON ;;
    *) echo "build-image: unknown kind '$KIND'; use systemd, openrc or hardened" >&2; exit 2 ;;
esac
# trixie also runs the rootless install (install.sh --rootless as a user, the user unit, lingering):
# RootlessKit and slirp4netns, newuidmap/newgidmap, and logind with a system bus (loginctl
# enable-linger) plus the user bus of a user manager, as a desktop or server install has them.
# The list is part of the image's key, so changing it rebuilds the image.
case "$SUITE-$KIND" in
    trixie-systemd) PACKAGES=$PACKAGES,uidmap,slirp4netns,rootlesskit,dbus,libpam-systemd,dbus-user-session ;;
esac

ROOT_FORMAT=2
# The systemd kind's key is the one it had before kinds existed (its cached images stay valid).
case "$KIND" in
    systemd) key=$(printf '%s %s %s\n' "$SUITE" "$PACKAGES" "$ROOT_FORMAT" | sha256sum | cut -c1-16) ;;
    *) key=$(printf '%s %s %s %s\n' "$SUITE" "$PACKAGES" "$ROOT_FORMAT" "$KIND" | sha256sum | cut -c1-16) ;;
esac
DIR="$CACHE/$SUITE-$KIND-$key"
[ "$KIND" = systemd ] && DIR="$CACHE/$SUITE-$key"
if [ -f "$DIR/base.qcow2" ] && [ -f "$DIR/vmlinuz" ] && [ -f "$DIR/initrd.img" ]; then
    echo "$DIR"
    exit 0
fi

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/.build-$SUITE-$KIND.XXXXXX")
cleanup() {
    for m in proc sys dev; do umount "$WORK/root/$m" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
ROOT="$WORK/root"

started=$(date +%s)
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 30 "$WORK/debootstrap.log" >&2
    echo "build-image: debootstrap $SUITE failed (log above)" >&2
    exit 1
}

# The 9p share must be mountable early; virtio disk for root=/dev/vda.
printf '%s\n' 9p 9pnet 9pnet_virtio virtio_pci virtio_blk crc32c_generic ext4 overlay >>"$ROOT/etc/initramfs-tools/modules"
# Only those in the initramfs: MODULES=most made a 131 MB one (36 MB gzip) that every boot
# unpacked and probed under TCG (3 s to unpack, 7 s from /init to the switch to the root).
sed -i 's/^MODULES=.*/MODULES=list/' "$ROOT/etc/initramfs-tools/initramfs.conf"
printf 'warren-vm-%s\n' "$SUITE" >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost warren-vm-%s\n' "$SUITE" >"$ROOT/etc/hosts"
cat >"$ROOT/etc/fstab" <<FSTAB
/dev/vda / ext4 rw,errors=remount-ro 0 1
share /mnt/share 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0
FSTAB
mkdir -p "$ROOT/mnt/share"
# No password for root on the console (throw-away guests with no network).
sed -i 's/^root:[^:]*:/root::/' "$ROOT/etc/shadow"

systemd_setup() {
# The scenario driver: runs the script the host put on the share, then powers off (the script
# decides: poweroff, reboot, or nothing when it reboots by itself).
cat >"$ROOT/etc/systemd/system/warren-vm-scenario.service" <<'UNIT'
[Unit]
Description=warren VM test scenario (from the 9p share)
After=multi-user.target mnt-share.mount
Requires=mnt-share.mount
ConditionPathExists=/mnt/share/guest-run.sh

[Service]
Type=oneshot
ExecStart=/bin/sh /mnt/share/guest-run.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
ln -s /etc/systemd/system/warren-vm-scenario.service \
    "$ROOT/etc/systemd/system/multi-user.target.wants/warren-vm-scenario.service"
# Quieter, faster boots: no timers during the test, and no logins (nobody logs in: the
# scenario unit runs by itself), which were 5 s of each boot: getty on tty1-6 and the console.
rm -f "$ROOT/etc/systemd/system/timers.target.wants/"* 2>/dev/null || true
for unit in getty@tty1.service getty-static.service serial-getty@ttyS0.service e2scrub_reap.service; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done
: >"$ROOT/etc/machine-id"
}

# OpenRC as init (sysvinit-core runs /etc/inittab, which runs openrc): the scenario driver is an
# init script in the default runlevel (no need of localmount: Debian's OpenRC has none; its LSB
# mountall.sh mounts before any runlevel). It mounts the share itself (a 9p fstab line is a
# network mount to OpenRC) and runs the script in the background, so the runlevel finishes.
openrc_setup() {
    cat >"$ROOT/etc/init.d/warren-vm-scenario" <<'RC'
#!/sbin/openrc-run
description="warren VM test scenario (from the 9p share)"
depend() {
	after *
}
start() {
	mountpoint -q /mnt/share || mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /mnt/share
	[ -f /mnt/share/guest-run.sh ] || return 0
	start-stop-daemon --start --background --make-pidfile --pidfile /run/warren-vm-scenario.pid \
		--exec /bin/sh -- -c 'exec /bin/sh /mnt/share/guest-run.sh >/var/log/warren-vm-scenario.log 2>&1'
}
RC
    chmod 0755 "$ROOT/etc/init.d/warren-vm-scenario"
    mkdir -p "$ROOT/etc/runlevels/default"
    ln -s /etc/init.d/warren-vm-scenario "$ROOT/etc/runlevels/default/warren-vm-scenario"
    # No logins (nobody logs in) and no getty on a console the scenario writes to.
    sed -i 's/^\([0-9]*:[0-9]*:respawn:.*getty.*\)$/#\1/' "$ROOT/etc/inittab"
    printf 'rc_parallel="NO"\nrc_logger="NO"\n' >>"$ROOT/etc/rc.conf"
    # Faster boots and shutdowns: under TCG each LSB script costs seconds (105 s from init to the
    # default runlevel with all of them, alone with 2 vCPUs), and these do nothing a throw-away
    # guest with root mounted rw by the kernel needs: fsck, clocks, seeds, NFS, boot cleaning.
    for lsb in brightness checkfs.sh checkroot.sh checkroot-bootclean.sh hwclock.sh \
        mountall-bootclean.sh mountnfs.sh mountnfs-bootclean.sh procps urandom bootmisc.sh \
        bootlogs rmnologin rc.local; do
        rm -f "$ROOT/etc/runlevels/sysinit/$lsb" "$ROOT/etc/runlevels/default/$lsb"
    done
}

# A hardened host: temporary dirs noexec, umask 027 for logins and for the shells the install
# runs in, and tinyproxy on loopback only (the guest starts it against its own registry).
hardened_setup() {
    cat >>"$ROOT/etc/fstab" <<'FSTAB'
tmpfs /tmp tmpfs rw,nosuid,nodev,noexec,mode=1777 0 0
tmpfs /var/tmp tmpfs rw,nosuid,nodev,noexec,mode=1777 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev,noexec,mode=1777 0 0
FSTAB
    sed -i 's/^UMASK.*/UMASK\t\t027/' "$ROOT/etc/login.defs"
    printf 'umask 027\n' >>"$ROOT/etc/profile"
    sed -i 's/^#\?Listen .*/Listen 127.0.0.1/; s/^Port .*/Port 8888/; s/^#\?LogLevel .*/LogLevel Info/' \
        "$ROOT/etc/tinyproxy/tinyproxy.conf"
    printf '127.0.0.1 registry.warren.test\n' >>"$ROOT/etc/hosts"
    grep -q '^Listen 127.0.0.1' "$ROOT/etc/tinyproxy/tinyproxy.conf" ||
        printf 'Listen 127.0.0.1\n' >>"$ROOT/etc/tinyproxy/tinyproxy.conf"
}

for m in proc sys dev; do mount --bind "/$m" "$ROOT/$m"; done
if [ "$KIND" = openrc ]; then
    DEBIAN_FRONTEND=noninteractive chroot "$ROOT" apt-get install -y --no-install-recommends \
        sysvinit-core openrc >"$WORK/init.log" 2>&1 || {
        tail -n 30 "$WORK/init.log" >&2
        exit 1
    }
    openrc_setup
else
    systemd_setup
fi
if [ "$KIND" = hardened ]; then hardened_setup; fi
chroot "$ROOT" update-initramfs -u -k all >"$WORK/initramfs.log" 2>&1 || {
    tail -n 30 "$WORK/initramfs.log" >&2
    exit 1
}
chroot "$ROOT" apt-get clean
for m in proc sys dev; do umount "$ROOT/$m"; done

mkdir -p "$WORK/out"
cp "$(readlink -f "$ROOT/vmlinuz")" "$WORK/out/vmlinuz"
cp "$(readlink -f "$ROOT/initrd.img")" "$WORK/out/initrd.img"
mkfs.ext4 -q -F -L root -d "$ROOT" "$WORK/base.raw" "$SIZE" >&2
qemu-img convert -O qcow2 "$WORK/base.raw" "$WORK/out/base.qcow2"
printf 'suite=%s\npackages=%s\nbuilt=%s\nseconds=%s\n' "$SUITE" "$PACKAGES" "$(date -u +%FT%TZ)" \
    "$(($(date +%s) - started))" >"$WORK/out/info"
rm -rf "$DIR"
mv "$WORK/out" "$DIR"
echo "$DIR"
