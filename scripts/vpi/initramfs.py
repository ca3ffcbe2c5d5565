"""The virtual Pi's initramfs, made on the host: no mkinitramfs under emulation.

Debian's initramfs-tools built the initramfs twice under qemu-user (kernel postinst,
then its trigger) and with every storage module (30 MB): the slowest part of the
cold image build.  The virt machine needs four things before its root is there
(virtio-pci, virtio-blk, ext4 and their dependencies, as ``modules.dep`` lists
them), so this writes a small newc cpio itself: Debian's static arm64 busybox, those
modules and an ``/init`` that loads them, finds ``root=PARTUUID=SIGNATURE-NN`` (the
MBR disk signature, as Raspberry Pi OS's ``cmdline.txt`` names it), mounts it
read-only (systemd checks and remounts it, as without an initramfs) and hands over
to ``/sbin/init``.

    python3 initramfs.py ROOT KERNEL_VERSION BUSYBOX OUT
"""

from __future__ import annotations

import gzip
import io
import stat
import sys
from pathlib import Path

# What the virt machine needs to reach its root; the rest loads from the root (udev).
BOOT_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")

INIT = r"""#!/bin/busybox sh
# satoyama-vpi initramfs (scripts/vpi/initramfs.py): the modules, the root, /sbin/init.
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys /dev /root
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
fail() { echo "vpi-initramfs: $*" >/dev/console; exec sh </dev/console >/dev/console 2>&1; }
for m in $(cat /modules.order); do insmod "/$m" || echo "vpi-initramfs: insmod $m failed"; done
root=; fstype=ext4
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root=${arg#root=} ;;
        rootfstype=*) fstype=${arg#rootfstype=} ;;
    esac
done
find_root() {
    case "$root" in
        PARTUUID=*)
            id=${root#PARTUUID=}; sig=${id%-*}; part=$(expr "${id##*-}" + 0)
            for disk in /sys/block/*; do
                name=${disk##*/}
                [ -b "/dev/$name" ] || continue
                got=$(dd if="/dev/$name" bs=1 skip=440 count=4 2>/dev/null \
                    | hexdump -e '1/4 "%08x"')
                if [ "$got" = "$sig" ]; then
                    case "$name" in
                        *[0-9]) echo "/dev/${name}p$part" ;;
                        *) echo "/dev/$name$part" ;;
                    esac
                    return
                fi
            done ;;
        /dev/*) [ -b "$root" ] && echo "$root" ;;
    esac
}
dev=
i=0
while [ $i -lt 60 ]; do
    dev=$(find_root)
    [ -n "$dev" ] && [ -b "$dev" ] && break
    sleep 1; i=$((i + 1))
done
[ -n "$dev" ] && [ -b "$dev" ] || fail "no root device for root=$root"
mount -t "$fstype" -o ro "$dev" /root || fail "cannot mount $dev"
for d in dev proc sys; do mount --move "/$d" "/root/$d"; done
exec switch_root /root /sbin/init
"""


def module_paths(modules_dir: Path, wanted: tuple[str, ...]) -> list[str]:
    """The modules to load, dependencies first, as paths under ``modules_dir``."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        by_name[name] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            continue  # built into the kernel
        visit(by_name[name])
    return order


class Cpio:
    """A newc archive (what the kernel unpacks), written in memory."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes) -> None:
        header = "070701" + "".join(
            f"{v:08x}"
            for v in (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        )
        self.ino += 1
        self.out.write(header.encode() + name.encode() + b"\0")
        self.out.write(b"\0" * (-self.out.tell() % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-self.out.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, b"")

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def close(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        return self.out.getvalue()


def build(root: Path, kver: str, busybox: Path, out: Path) -> list[str]:
    modules_dir = root / "usr/lib/modules" / kver
    if not modules_dir.is_dir():
        modules_dir = root / "lib/modules" / kver
    order = module_paths(modules_dir, BOOT_MODULES)
    archive = Cpio()
    done: set[str] = set()
    for d in ("bin", "dev", "proc", "sys", "root"):
        archive.directory(d)
        done.add(d)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.file("init", INIT.encode(), 0o755)
    for path in order:
        parts = Path(path).parts
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in done:
                archive.directory(d)
                done.add(d)
        archive.file(path, (modules_dir / path).read_bytes())
    archive.file("modules.order", "".join(p + "\n" for p in order).encode())
    out.write_bytes(gzip.compress(archive.close(), compresslevel=6))
    return order


def main(argv: list[str]) -> int:
    root, kver, busybox, out = Path(argv[0]), argv[1], Path(argv[2]), Path(argv[3])
    order = build(root, kver, busybox, out)
    print(f"initramfs {out}: {out.stat().st_size // 1024} KiB, modules: {' '.join(order)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
