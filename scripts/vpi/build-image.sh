#!/usr/bin/env bash
# Build the virtual Raspberry Pi's disk image (issue 16): Debian bookworm arm64
# (python3 3.11, glibc 2.36: Raspberry Pi OS Bookworm's), shaped like a Raspberry Pi
# OS card: MBR, a FAT boot partition mounted at /boot/firmware holding config.txt and
# cmdline.txt (read by the harness at every boot, as the Pi firmware does), an ext4
# root, systemd, the satoyama user from systemd/satoyama.sysusers.conf, a serial
# console on ttyAMA0.  Debian's arm64 kernel and a small initramfs are copied out for
# `qemu-system-aarch64 -M virt -kernel ... -initrd ...`.
#
#   scripts/vpi/build-image.sh        prints the folder holding disk.img, vmlinuz,
#                                     initrd.img, id_ed25519 (the harness's ssh key)
#
# No loop mount: mmdebstrap builds the root (arm64 programs run through
# qemu-user-static and binfmt_misc), mkfs.ext4 -d and mkfs.fat + mtools make the two
# filesystems as files, sfdisk writes the partition table.  Needs root (mmdebstrap's
# root mode, chroot; CI runs as root) and Debian's package mirror.
#
# Two cached layers under $VPI_CACHE (default ~/.cache/satoyama-vpi):
#   base-KEY.tar   the Debian system (mmdebstrap: about 7 min on 2 busy cores; the
#                  kernel unpacked on the host), keyed by packages.txt and the recipe;
#   image-KEY/     the card (under a minute; the initramfs made on the host by
#                  initramfs.py), keyed by this script, initramfs.py, packages.txt,
#                  the sysusers file and scripts/vpi/guest/ (files laid over the root).
# Each is rebuilt only when its inputs change; a fresh machine builds both.  A new
# layer replaces the older ones of its kind (removed once it is complete).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${VPI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/satoyama-vpi}
say() { printf '[vpi-image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

packages=$(grep -v '^#' "$here/packages.txt" | xargs | tr ' ' ',')
# The base layer's recipe: change it (or packages.txt) and the base is rebuilt.
base_recipe="bookworm arm64 variant=apt include=$packages kernel=linux-image-arm64 nodoc host-kernel v2"
base_key=$(printf '%s' "$base_recipe" | sha256sum | cut -c1-16)
base=$cache/base-$base_key.tar
image_key=$( (cat "$here/build-image.sh" "$here/initramfs.py" "$here/packages.txt" "$repo/systemd/satoyama.sysusers.conf"
    cd "$here/guest" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
out=$cache/image-$image_key
if [[ -f $out/.complete ]]; then
    say "cached: $out"
    echo "$out"
    exit 0
fi

need=()
for tool in mmdebstrap qemu-aarch64-static mkfs.ext4 mkfs.fat mcopy sfdisk ssh-keygen qemu-system-aarch64 dtc; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
if ((${#need[@]})); then
    say "installing the image tools (missing: ${need[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        mmdebstrap qemu-user-static binfmt-support qemu-system-arm ipxe-qemu qemu-utils \
        dosfstools e2fsprogs mtools fdisk openssh-client arch-test device-tree-compiler >/dev/null
fi
# arm64 programs in the chroot run through binfmt_misc (a container may not have it mounted).
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    update-binfmts --enable qemu-aarch64
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
cleanup() {
    # Anything still mounted in the chroot (an interrupted run) first, then the folder.
    for m in $(awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
start=$SECONDS

if [[ ! -f $base ]]; then
    # Under qemu-user every arm64 program is emulated: keep it to dpkg and the
    # packages' own scripts.  The kernel is unpacked on the host (dpkg-deb; its
    # postinst would run depmod and build the initramfs twice under emulation, with
    # every storage module), and the initramfs is made on the host at the card layer
    # (initramfs.py); no documentation, manual pages or translations are unpacked;
    # openssh's host keys are not made (each card makes its own at first boot).
    say "base system: mmdebstrap bookworm arm64 ($packages); slow under qemu-user"
    cat >"$work/kernel-hook.sh" <<'HOOK'
set -eu
root=$1
stamp() { echo "[vpi-image $(date +%T)] base: $*" >&2; }
stamp "packages installed; the kernel"
pkg=$(chroot "$root" apt-cache depends linux-image-arm64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
mkdir -m 0777 "$root/tmp/vpi-kernel"
chroot "$root" sh -c "cd /tmp/vpi-kernel && apt-get download -q=2 $pkg"
x=$(mktemp -d)
dpkg-deb -x "$root"/tmp/vpi-kernel/*.deb "$x"
mkdir -p "$root/usr/lib/modules" "$root/boot"
for d in "$x/lib/modules" "$x/usr/lib/modules"; do
    if [ -d "$d" ]; then cp -a "$d/." "$root/usr/lib/modules/"; fi
done
cp -a "$x/boot/." "$root/boot/"
rm -rf "$x" "$root/tmp/vpi-kernel"
kver=${pkg#linux-image-}
stamp "depmod $kver"
chroot "$root" depmod -a "$kver"
stamp "depmod done"
echo "$pkg $kver" >"$root/boot/vpi-kernel"
stamp "kernel $kver in place"
HOOK
    nodoc=()
    for p in /usr/share/doc/'*' /usr/share/man/'*' /usr/share/info/'*' /usr/share/locale/'*' /usr/share/lintian/'*'; do
        nodoc+=(--dpkgopt="path-exclude=$p")
    done
    mmdebstrap --mode=root --arch=arm64 --variant=apt \
        --include="$packages" "${nodoc[@]}" --dpkgopt=force-unsafe-io \
        --setup-hook='mkdir -p "$1/etc/ssh"; for t in rsa ecdsa ed25519; do touch "$1/etc/ssh/ssh_host_${t}_key"; done' \
        --extract-hook='echo "[vpi-image $(date +%T)] base: essential packages unpacked" >&2' \
        --essential-hook='echo "[vpi-image $(date +%T)] base: essential packages installed" >&2' \
        --customize-hook="sh $work/kernel-hook.sh \"\$1\"" \
        --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*' \
        bookworm "$work/base.tar" http://deb.debian.org/debian
    say "base system: tar written"
    mv "$work/base.tar" "$base"
    say "base system built in $((SECONDS - start)) s: $base"
fi

# Stable identifiers, so the root= on cmdline.txt is a PARTUUID as on Raspberry Pi OS.
DISKID=5a7a0001
BOOT_MB=256
ROOT_MB=4096
root=$work/root
mkdir "$root"
tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -xpf "$base"
cp -a "$here/guest/." "$root/"
install -m 0644 "$repo/systemd/satoyama.sysusers.conf" "$root/usr/lib/sysusers.d/satoyama.conf"
ssh-keygen -q -t ed25519 -N '' -C satoyama-vpi -f "$work/id_ed25519"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$work/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
rm -f "$root"/etc/ssh/ssh_host_*
echo raspberrypi >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n' >"$root/etc/hosts"
printf 'PARTUUID=%s-01 /boot/firmware vfat defaults 0 2\nPARTUUID=%s-02 / ext4 defaults,noatime 0 1\n' \
    "$DISKID" "$DISKID" >"$root/etc/fstab"
mkdir -p "$root/boot/firmware"
# Offline in the chroot (binfmt): the user, the units, a locked root password (ssh key only).
chroot "$root" systemd-sysusers
chroot "$root" systemctl enable systemd-networkd.service ssh.service \
    vpi-ssh-hostkeys.service >/dev/null 2>&1
chroot "$root" passwd --lock root >/dev/null
# No apt timers in a test VM (its network reaches nothing anyway).
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1
read -r _ kver <"$root/boot/vpi-kernel"
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
python3 "$here/initramfs.py" "$root" "$kver" "$root/bin/busybox" "$work/initrd.img" >&2

# The boot partition: what the Pi firmware reads (config.txt, cmdline.txt).
mkfs.fat -F 32 -n bootfs -C "$work/boot.img" $((BOOT_MB * 1024)) >/dev/null
printf '# satoyama-vpi: a virtual Raspberry Pi (qemu virt); the kernel comes from the harness\narm_64bit=1\nenable_uart=1\n' >"$work/config.txt"
printf 'console=serial0,115200 console=tty1 root=PARTUUID=%s-02 rootfstype=ext4 fsck.repair=yes rootwait\n' "$DISKID" >"$work/cmdline.txt"
MTOOLS_SKIP_CHECK=1 mcopy -i "$work/boot.img" "$work/config.txt" "$work/cmdline.txt" ::/

# The root partition, from the folder (owners, modes, links kept), no mount.
mkfs.ext4 -q -L rootfs -d "$root" "$work/root.img" "${ROOT_MB}M"

# The card: MBR, FAT (0x0c) from sector 8192 as Raspberry Pi OS has it, then the root.
boot_start=8192
root_start=$((boot_start + BOOT_MB * 2048))
truncate -s $(((root_start + ROOT_MB * 2048) * 512)) "$work/disk.img"
printf 'label: dos\nlabel-id: 0x%s\nstart=%d, size=%d, type=c\nstart=%d, size=%d, type=83\n' \
    "$DISKID" "$boot_start" $((BOOT_MB * 2048)) "$root_start" $((ROOT_MB * 2048)) \
    | sfdisk -q "$work/disk.img"
dd if="$work/boot.img" of="$work/disk.img" bs=1M seek=$((boot_start / 2048)) conv=notrunc,sparse status=none
dd if="$work/root.img" of="$work/disk.img" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
mv "$work/disk.img" "$work/vmlinuz" "$work/initrd.img" "$work/id_ed25519" "$work/id_ed25519.pub" "$out.tmp/"
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package} ${Version}\n' >"$out.tmp/packages.lock"
read -r kpkg _ <"$root/boot/vpi-kernel"
echo "$kpkg (unpacked on the host)" >>"$out.tmp/packages.lock"
grep -h 'CONFIG_GPIO_SIM=' "$root"/boot/config-* >"$out.tmp/kernel-gpio-sim" || true
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out/.complete"
# The layers of older recipes are of no more use (one stage at a time per cache).
for old in "$cache"/image-* "$cache"/base-*.tar; do
    if [[ -e $old && $old != "$out" && $old != "$base" ]]; then
        say "removing an older layer: $old"
        rm -rf "$old"
    fi
done
say "image built in $((SECONDS - start)) s: $out"
echo "$out"
