"""The boot partition of a Raspberry Pi OS card: a mounted folder, or the FAT inside an image.

Two implementations of one small interface (:class:`BootPartition`):

- :class:`BootFolder` - a mounted card (``/media/$USER/bootfs``, ``E:\\``);
- :class:`BootImage` - the FAT partition inside a disk image file (or an
  unmounted card's block device), written with Debian's ``mtools`` at the
  partition's byte offset, so no loop mount and no root are needed.

Raspberry Pi OS images have an MBR partition table whose first partition is
the FAT boot partition.  A bare FAT filesystem ("superfloppy", no table) is
accepted too; GPT is not (Raspberry Pi OS does not ship GPT images).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath

from deploy.errors import ProvisionError
from edge.files import write_atomic

SECTOR = 512
FAT_PARTITION_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}
MTOOLS = ("mcopy", "mdir", "mmd", "mdel", "mdeltree")


def _clean(name: str) -> str:
    """A relative path inside the partition, '/'-separated; no '..', no absolute paths."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ProvisionError(f"bad path inside the boot partition: {name!r}")
    return str(p)


class BootPartition(ABC):
    """Files on a FAT boot partition.  FAT has no permissions: never leave secrets here for long."""

    @abstractmethod
    def read(self, name: str) -> bytes | None:
        """The file's bytes, or None if it does not exist."""

    @abstractmethod
    def write(self, name: str, data: bytes) -> None:
        """Create or replace a file (parent folders are created)."""

    @abstractmethod
    def listdir(self, name: str = "") -> list[str]:
        """Names in a folder ('' is the root); [] when the folder does not exist."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Delete a file (no error if it does not exist)."""

    @abstractmethod
    def remove_tree(self, name: str) -> None:
        """Delete a folder and everything in it (no error if it does not exist)."""

    @abstractmethod
    def describe(self) -> str:
        """Where this is, for messages."""

    def exists(self, name: str) -> bool:
        return self.read(name) is not None

    def close(self) -> None:  # noqa: B027 - optional: not every medium needs flushing
        """Flush everything to the medium."""

    def __enter__(self) -> BootPartition:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BootFolder(BootPartition):
    """A mounted boot partition."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def read(self, name: str) -> bytes | None:
        p = self.path / _clean(name)
        try:
            return p.read_bytes() if p.is_file() else None
        except OSError as exc:
            raise ProvisionError(f"{p}: cannot read: {exc.strerror or exc}") from None

    def write(self, name: str, data: bytes) -> None:
        p = self.path / _clean(name)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(p, data)
        except OSError as exc:
            raise ProvisionError(f"{p}: cannot write: {exc.strerror or exc}") from None

    def listdir(self, name: str = "") -> list[str]:
        p = self.path / _clean(name) if name else self.path
        return sorted(c.name for c in p.iterdir()) if p.is_dir() else []

    def remove(self, name: str) -> None:
        (self.path / _clean(name)).unlink(missing_ok=True)

    def remove_tree(self, name: str) -> None:
        shutil.rmtree(self.path / _clean(name), ignore_errors=True)

    def close(self) -> None:
        os.sync()  # a card pulled right after the command must hold everything


def find_fat_offset(image: Path) -> int:
    """Byte offset of the FAT boot partition: MBR partition 1, or 0 for a bare FAT filesystem."""
    try:
        with open(image, "rb") as f:
            mbr = f.read(SECTOR)
    except OSError as exc:
        raise ProvisionError(f"{image}: cannot read: {exc.strerror or exc}") from None
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise ProvisionError(f"{image}: no partition table or FAT boot sector (not a disk image?)")
    if mbr[54:59] == b"FAT12" or mbr[54:59] == b"FAT16" or mbr[82:87] == b"FAT32":
        return 0  # a bare FAT filesystem
    entries = [struct.unpack_from("<B3xB3xII", mbr, 446 + 16 * i) for i in range(4)]
    if any(ptype == 0xEE for _, ptype, _, _ in entries):
        raise ProvisionError(
            f"{image}: GPT disk; Raspberry Pi OS images use an MBR partition table"
        )
    for _, ptype, start, count in entries:
        if ptype in FAT_PARTITION_TYPES and start and count:
            return int(start) * SECTOR
    raise ProvisionError(f"{image}: no FAT partition in the partition table")


class BootImage(BootPartition):
    """The FAT boot partition inside an image file or unmounted block device, through mtools."""

    def __init__(self, image: Path) -> None:
        missing = [t for t in MTOOLS if shutil.which(t) is None]
        if missing:
            raise ProvisionError(
                f"mtools is not installed (missing {', '.join(missing)}); "
                "on Debian/Raspberry Pi OS: sudo apt-get install mtools"
            )
        self.image = image
        self.offset = find_fat_offset(image)
        self._spec = f"{image}@@{self.offset}"
        self._env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}
        self._tmp = tempfile.TemporaryDirectory(prefix="satoyama-fat-")
        if self._run("mdir", "-b", "::/", check=False).returncode != 0:
            raise ProvisionError(
                f"{image}: the partition at byte {self.offset} is not a FAT filesystem"
            )

    def describe(self) -> str:
        return f"{self.image} (FAT partition at byte {self.offset})"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [tool, "-i", self._spec, *args], env=self._env, capture_output=True, text=True
        )
        if check and proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise ProvisionError(
                f"{self.image}: {tool} failed: {msg[-1] if msg else proc.returncode}"
            )
        return proc

    def read(self, name: str) -> bytes | None:
        dest = Path(self._tmp.name) / "read"
        dest.unlink(missing_ok=True)
        proc = self._run("mcopy", "-n", f"::/{_clean(name)}", str(dest), check=False)
        if proc.returncode != 0 or not dest.is_file():
            return None
        data = dest.read_bytes()
        dest.unlink()
        return data

    def _mkdirs(self, folder: PurePosixPath) -> None:
        for i in range(1, len(folder.parts) + 1):
            part = "/".join(folder.parts[:i])
            if self._run("mdir", "-b", f"::/{part}", check=False).returncode != 0:
                self._run("mmd", f"::/{part}")

    def write(self, name: str, data: bytes) -> None:
        rel = PurePosixPath(_clean(name))
        if rel.parent != PurePosixPath("."):
            self._mkdirs(rel.parent)
        src = Path(self._tmp.name) / "write"
        src.write_bytes(data)
        try:
            self._run("mcopy", "-o", "-n", str(src), f"::/{rel}")
        finally:
            src.unlink()

    def listdir(self, name: str = "") -> list[str]:
        target = f"::/{_clean(name)}" if name else "::/"
        proc = self._run("mdir", "-b", target, check=False)
        if proc.returncode != 0:
            return []
        return sorted(
            PurePosixPath(line.strip()).name for line in proc.stdout.splitlines() if line.strip()
        )

    def remove(self, name: str) -> None:
        if self.exists(name):
            self._run("mdel", f"::/{_clean(name)}")

    def remove_tree(self, name: str) -> None:
        target = f"::/{_clean(name)}"
        if self._run("mdir", "-b", target, check=False).returncode == 0:
            self._run("mdeltree", target)

    def close(self) -> None:
        self._tmp.cleanup()
        try:
            fd = os.open(self.image, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_boot(*, image: Path | None = None, folder: Path | None = None) -> BootPartition:
    """The boot partition: an image file / block device, or a mounted folder (exactly one)."""
    if (image is None) == (folder is None):
        raise ProvisionError(
            "give either an image file (--image) or a mounted boot folder (--boot-dir)"
        )
    return BootImage(image) if image is not None else BootFolder(folder)  # type: ignore[arg-type]
