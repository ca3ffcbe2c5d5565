"""The virtual Pi's card (scripts/vpi/nbd.py) forgets what the guest never flushed.

No QEMU here: the server is driven by a small NBD client written from the protocol
(fixed newstyle, NBD_OPT_GO, simple replies), and the power cut is what the harness
does to it, SIGKILL.  Runs in the default suite (not marked ``vpi``).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "scripts/vpi/nbd.py"
SIZE = 1 << 20


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "the server closed the connection"
        out += chunk
    return out


class Client:
    """Just enough of an NBD client: GO, READ, WRITE (FUA), FLUSH, DISC."""

    def __init__(self, path: Path, export: str = "card") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.handle = 0
        assert recv_exact(self.sock, 8) == b"NBDMAGIC"
        magic, flags = struct.unpack(">QH", recv_exact(self.sock, 10))
        assert magic == 0x49484156454F5054 and flags & 1, "not fixed newstyle"
        self.sock.sendall(struct.pack(">I", 1 | 2))  # fixed newstyle, no zeroes
        name = export.encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self.sock.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data)) + data)
        self.size = 0
        self.tx_flags = 0
        while True:
            rmagic, option, kind, length = struct.unpack(">QIII", recv_exact(self.sock, 20))
            assert rmagic == 0x3E889045565A9 and option == 7
            body = recv_exact(self.sock, length)
            if kind == 1:  # ACK: transmission starts
                break
            assert kind == 3, f"option reply {kind:#x}"
            if struct.unpack(">H", body[:2])[0] == 0:
                _, self.size, self.tx_flags = struct.unpack(">HQH", body)

    def _request(
        self, kind: int, offset: int, length: int, flags: int = 0, data: bytes = b""
    ) -> bytes:
        self.handle += 1
        head = struct.pack(">IHHQQI", 0x25609513, flags, kind, self.handle, offset, length)
        self.sock.sendall(head + data)
        magic, error, handle = struct.unpack(">IIQ", recv_exact(self.sock, 16))
        assert magic == 0x67446698 and handle == self.handle
        assert error == 0, f"NBD error {error}"
        return recv_exact(self.sock, length) if kind == 0 else b""

    def read(self, offset: int, length: int) -> bytes:
        return self._request(0, offset, length)

    def write(self, offset: int, data: bytes, *, fua: bool = False) -> None:
        self._request(1, offset, len(data), flags=1 if fua else 0, data=data)

    def flush(self) -> None:
        self._request(3, 0, 0)

    def close(self) -> None:
        self.sock.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 0, 0, 0))
        self.sock.close()


class Card:
    """The image and the server process serving it (start, cut)."""

    def __init__(self, tmp: Path) -> None:
        self.image = tmp / "card.img"
        with self.image.open("wb") as f:
            f.truncate(SIZE)
        self.socket = tmp / "card.sock"
        self.proc: subprocess.Popen[str] | None = None

    def power_on(self) -> Client:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--socket", str(self.socket), str(self.image)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        return Client(self.socket)

    def cut_power(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def card(tmp_path: Path) -> Iterator[Card]:
    c = Card(tmp_path)
    yield c
    if c.proc is not None and c.proc.poll() is None:
        c.cut_power()


def test_a_power_cut_loses_what_was_not_flushed_and_keeps_what_was(card: Card) -> None:
    disk = card.power_on()
    assert disk.size == SIZE
    assert disk.tx_flags & (1 << 2) and disk.tx_flags & (1 << 3), "FLUSH and FUA advertised"
    disk.write(0, b"A" * 8192)
    disk.flush()
    disk.write(8192, b"B" * 4096)  # never flushed
    disk.write(100, b"ddd")  # never flushed, inside a flushed block
    disk.write(16384, b"C" * 4096, fua=True)  # durable on its own
    disk.write(65536 + 10, b"E" * 5000)  # unaligned, then flushed below
    # The guest sees its own writes, flushed or not.
    assert disk.read(96, 8) == b"AAAAdddA"
    assert disk.read(8192, 4096) == b"B" * 4096
    assert disk.read(65536, 5020) == b"\0" * 10 + b"E" * 5000 + b"\0" * 10
    disk.flush()
    disk.write(65536, b"F" * 20)  # after the last flush: lost
    card.cut_power()

    after = card.power_on()
    assert after.read(96, 8) == b"AAAAdddA", "flushed by the second flush"
    assert after.read(8192, 4096) == b"B" * 4096
    assert after.read(16384, 4096) == b"C" * 4096
    assert after.read(65536, 5020) == b"\0" * 10 + b"E" * 5000 + b"\0" * 10
    after.close()


def test_unflushed_writes_never_reach_the_image(card: Card) -> None:
    disk = card.power_on()
    disk.write(0, b"A" * 4096)
    disk.flush()
    disk.write(4096, b"B" * 4096)
    disk.write(0, b"Z" * 10)
    assert disk.read(0, 12) == b"Z" * 10 + b"AA"
    card.cut_power()
    raw = card.image.read_bytes()
    assert raw[:4096] == b"A" * 4096, "the unflushed overwrite is gone"
    assert raw[4096:8192] == b"\0" * 4096, "the unflushed write is gone"
    after = card.power_on()
    assert after.read(0, 8192) == b"A" * 4096 + b"\0" * 4096
    after.close()
