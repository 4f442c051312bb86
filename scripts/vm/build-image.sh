#!/bin/sh
# Build (or reuse) a cached Debian guest for the VM test layer:
#   scripts/vm/build-image.sh SUITE     ->  prints the cache dir holding base.qcow2, vmlinuz, initrd.img
# The cache lives outside the clone (WARREN_VM_CACHE, default /var/cache/warren-vm), keyed by the
# suite, the package list and ROOT_FORMAT: bump ROOT_FORMAT when the root's setup below changes.
# Needs root, debootstrap, mkfs.ext4 (e2fsprogs >= 1.43 for -d) and qemu-img.
set -eu

SUITE=${1:?usage: build-image.sh SUITE}
CACHE=${WARREN_VM_CACHE:-/var/cache/warren-vm}
MIRROR=${WARREN_VM_MIRROR:-http://deb.debian.org/debian}
SIZE=${WARREN_VM_DISK_SIZE:-4G}
PACKAGES=systemd,systemd-sysv,udev,kmod,linux-image-amd64,initramfs-tools,curl,iptables,ca-certificates,python3,procps,iproute2

ROOT_FORMAT=2
key=$(printf '%s %s %s\n' "$SUITE" "$PACKAGES" "$ROOT_FORMAT" | sha256sum | cut -c1-16)
DIR="$CACHE/$SUITE-$key"
if [ -f "$DIR/base.qcow2" ] && [ -f "$DIR/vmlinuz" ] && [ -f "$DIR/initrd.img" ]; then
    echo "$DIR"
    exit 0
fi

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/.build-$SUITE.XXXXXX")
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

for m in proc sys dev; do mount --bind "/$m" "$ROOT/$m"; done
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
