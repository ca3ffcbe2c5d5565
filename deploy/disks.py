"""Never write to the disk the installer's own system runs from.

An installer's laptop has its own disk, and a Raspberry Pi used as the
installer has its own SD card whose boot partition is mounted at
``/boot/firmware``: one wrong path and the tool would overwrite the machine it
runs on.  :class:`SystemDisks` records which filesystems and which whole disks
hold the running system (``/``, ``/boot``, ``/boot/firmware``, ``/usr``,
``/var``, ``/etc``, the Python running this tool) and refuses any target on
them, whether a mounted folder or a block device.  A block device with any
partition mounted is refused too: mtools writing under a mounted FAT
corrupts it.

Disks are found through ``/proc/self/mountinfo`` and ``/sys/dev/block``;
partitions map to their whole disk, device-mapper and md devices to the disks
beneath them.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deploy.errors import UnsafeTargetError

DEFAULT_SYSTEM_PATHS = ("/", "/boot", "/boot/firmware", "/usr", "/var", "/etc")


@dataclass(frozen=True)
class Mount:
    mount_point: str
    dev: int
    source: str


def read_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Mount]:
    """Mounts of this process's namespace (mount point, st_dev, source)."""
    mounts: list[Mount] = []
    try:
        text = mountinfo.read_text()
    except OSError:
        return mounts
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        major, _, minor = fields[2].partition(":")
        after = line.split(" - ", 1)[1].split()
        source = after[1] if len(after) > 1 else ""
        point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
        mounts.append(Mount(point, os.makedev(int(major), int(minor)), source))
    return mounts


def _disks_of_sysfs(node: Path, seen: set[Path] | None = None) -> set[str]:
    """Whole-disk names under a /sys block node: a partition's parent, a dm/md device's slaves."""
    seen = set() if seen is None else seen
    try:
        real = node.resolve(strict=True)
    except OSError:
        return set()
    if real in seen:
        return set()
    seen.add(real)
    if (real / "partition").exists():
        real = real.parent
    slaves = real / "slaves"
    names: set[str] = set()
    if slaves.is_dir() and any(slaves.iterdir()):
        for s in slaves.iterdir():
            names |= _disks_of_sysfs(s, seen)
        return names
    return {real.name}


def disks_of_dev(dev: int, sysfs: Path = Path("/sys")) -> set[str]:
    """Whole disks behind a device number (empty for virtual filesystems)."""
    if os.major(dev) == 0:
        return set()
    return _disks_of_sysfs(sysfs / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}")


def _mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    real = os.path.realpath(path)
    best: Mount | None = None
    for m in mounts:
        mp = m.mount_point.rstrip("/") or "/"
        if (real == mp or real.startswith(mp.rstrip("/") + "/") or mp == "/") and (
            best is None or len(mp) >= len(best.mount_point)
        ):
            best = m
    return best


def _disks_of_path(path: Path, mounts: list[Mount], sysfs: Path) -> set[str]:
    disks: set[str] = set()
    try:
        disks |= disks_of_dev(path.stat().st_dev, sysfs)
    except OSError:
        pass
    m = _mount_of(path, mounts)
    if m is not None and m.source.startswith("/dev/"):
        try:
            st = os.stat(m.source)
        except OSError:
            return disks
        if stat.S_ISBLK(st.st_mode):
            disks |= disks_of_dev(st.st_rdev, sysfs)
    return disks


@dataclass(frozen=True)
class SystemDisks:
    """What the running system lives on: filesystem device numbers and whole-disk names."""

    devices: frozenset[int]
    disks: frozenset[str]
    paths: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    sysfs: Path = Path("/sys")

    @classmethod
    def of_paths(
        cls,
        paths: Iterable[str | Path],
        *,
        mountinfo: Path = Path("/proc/self/mountinfo"),
        sysfs: Path = Path("/sys"),
    ) -> SystemDisks:
        mounts = read_mounts(mountinfo)
        devices: set[int] = set()
        disks: set[str] = set()
        existing: list[str] = []
        for p in paths:
            path = Path(p)
            try:
                devices.add(path.stat().st_dev)
            except OSError:
                continue
            existing.append(str(path))
            disks |= _disks_of_path(path, mounts, sysfs)
        return cls(frozenset(devices), frozenset(disks), tuple(existing), tuple(mounts), sysfs)

    @classmethod
    def of_running_system(cls) -> SystemDisks:
        """The installer's own system: the usual system mount points and this Python."""
        return cls.of_paths([*DEFAULT_SYSTEM_PATHS, sys.prefix, sys.base_prefix, sys.executable])

    def check_folder(self, folder: Path) -> None:
        """Refuse a mounted-card folder that is on the running system's filesystems or disks."""
        try:
            st = folder.stat()
        except OSError as exc:
            raise UnsafeTargetError(f"{folder}: cannot use: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeTargetError(f"{folder}: not a folder")
        if st.st_dev in self.devices:
            raise UnsafeTargetError(
                f"{folder}: is on this computer's own system disk (same filesystem as "
                f"{', '.join(self.paths)}), not on a card; refusing to write there"
            )
        hit = _disks_of_path(folder, list(self.mounts), self.sysfs) & self.disks
        if hit:
            raise UnsafeTargetError(
                f"{folder}: is on disk {', '.join(sorted(hit))}, which this computer runs from; "
                "refusing to write there"
            )

    def check_image(self, path: Path) -> None:
        """Refuse a block device of the running system or with a mounted partition."""
        try:
            st = path.stat()
        except OSError as exc:
            raise UnsafeTargetError(f"{path}: cannot use: {exc.strerror or exc}") from None
        if stat.S_ISREG(st.st_mode):
            return
        if not stat.S_ISBLK(st.st_mode):
            raise UnsafeTargetError(f"{path}: neither an image file nor a block device")
        disks = disks_of_dev(st.st_rdev, self.sysfs)
        if not disks:
            raise UnsafeTargetError(f"{path}: cannot tell which disk this block device is")
        hit = disks & self.disks
        if hit:
            raise UnsafeTargetError(
                f"{path}: is disk {', '.join(sorted(hit))}, which this computer runs from; "
                "refusing to write there"
            )
        for m in self.mounts:
            if not m.source.startswith("/dev/"):
                continue
            try:
                mst = os.stat(m.source)
            except OSError:
                continue
            if stat.S_ISBLK(mst.st_mode) and disks_of_dev(mst.st_rdev, self.sysfs) & disks:
                raise UnsafeTargetError(
                    f"{path}: {m.source} is mounted at {m.mount_point}; unmount the card first "
                    "or give the mounted boot folder with --boot-dir"
                )
