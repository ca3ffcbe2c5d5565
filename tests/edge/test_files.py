"""edge.files: a replaced file holds its old bytes or its new ones, never part (also when the
writer is killed mid-write); secrets are told by their mode; edge.boot: the kernel's boot id."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge.boot import boot_id
from edge.files import loose_mode, write_atomic
from tests.support.waiting import until_sync

SIZE = 4 << 20
OLD, NEW = b"o" * SIZE, b"n" * (SIZE - 1) + b"\n"

WRITER = """
import sys
from edge.files import write_atomic
path, size = sys.argv[1], int(sys.argv[2])
old, new = b"o" * size, b"n" * (size - 1) + b"\\n"
while True:
    write_atomic(path, new, mode=0o600)
    write_atomic(path, old, mode=0o600)
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_or_the_new(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    tmp = tmp_path / ".state.bin.tmp"
    write_atomic(target, OLD, mode=0o600)
    for _ in range(12):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target), str(SIZE)], cwd=Path(__file__).parents[2]
        )
        try:
            # The crash moment: the temporary file exists, so a write is under way.
            until_sync(tmp.exists, 20, "the writer to start a replacement")
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait(10)
        data = target.read_bytes()
        assert data in (OLD, NEW), f"a torn file: {len(data)} bytes"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # The next write after a crash takes over the stale temporary file and completes.
    write_atomic(target, b"after the crash\n")
    assert target.read_bytes() == b"after the crash\n"
    assert not tmp.exists()


def test_the_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "release.txt", b"x", mode=0o644)
        write_atomic(tmp_path / "stat.json", b"{}")  # no mode: as open() makes it
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "release.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "stat.json").stat().st_mode) == 0o600


def test_a_link_planted_as_the_temporary_file_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / ".key.pem.tmp").symlink_to(victim)
    write_atomic(tmp_path / "key.pem", b"secret", mode=0o600)
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "key.pem").read_bytes() == b"secret"
    assert not (tmp_path / "key.pem").is_symlink()


def test_relative_to_a_folder_fd(tmp_path: Path) -> None:
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_atomic("events.jsonl", b"one\n", mode=0o644, dir_fd=dir_fd)
        write_atomic("events.jsonl", b"one\ntwo\n", mode=0o644, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    assert (tmp_path / "events.jsonl").read_bytes() == b"one\ntwo\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "usage.json"
    write_atomic(target, b"old", durable=False)
    (tmp_path / "usage.json.d").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "usage.json.d", b"new")  # a folder cannot be replaced by a file
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["usage.json", "usage.json.d"]


def test_loose_mode_tells_a_secret_others_can_read(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(b"k")
    key.chmod(0o600)
    assert loose_mode(key) is None
    for mode in (0o640, 0o604, 0o620, 0o601):
        key.chmod(mode)
        assert loose_mode(key) == mode
    with pytest.raises(FileNotFoundError):
        loose_mode(tmp_path / "missing.pem")


def test_boot_id(tmp_path: Path) -> None:
    here = boot_id()
    assert here is not None and len(here) == 36  # this machine's kernel has one
    assert boot_id() == here, "stable for the life of the boot"
    assert boot_id(tmp_path / "absent") is None
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert boot_id(empty) is None
