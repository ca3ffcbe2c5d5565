"""A disk that forgets what was never flushed: the virtual Pi's card, served over NBD.

QEMU's own disk backends hand every write to the host's page cache, so a write the
guest never flushed still reaches the image when QEMU is killed: a power cut that
loses less than a card does.  This server is the card's volatile write cache made
explicit: written blocks stay in this process's memory, and only the guest's FLUSH
(or a write with FUA) writes them to the image.  Kill the process (the harness
kills it with QEMU at a power cut) and every write that was not flushed is gone,
as from a card whose cache lost power; what was flushed is in the image.

QEMU connects over a unix socket (``-blockdev driver=nbd,server.type=unix,...``);
the export advertises FLUSH and FUA, so the guest sees a disk with a write cache
and flushes as on a card.  The protocol is the NBD fixed newstyle handshake
(``NBD_OPT_GO``/``NBD_OPT_EXPORT_NAME``, simple replies) and the commands READ,
WRITE (with FUA), FLUSH and DISC; anything else is answered EINVAL.

    python3 nbd.py --socket PATH [--export NAME] IMAGE

The served size is the image's size.  Prints ``ready`` on stdout once it listens.
A flush writes to the image file (``pwrite``) without ``fsync``: what the model
needs is that it outlives this process, not the host.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import threading
from pathlib import Path

BLOCK = 4096  # the cache's granularity (the guest's ext4 block)

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_INFO = 6
OPT_GO = 7

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_ERR_UNSUP = (1 << 31) + 1
REP_ERR_UNKNOWN = (1 << 31) + 6

INFO_EXPORT = 0
INFO_BLOCK_SIZE = 3

TX_HAS_FLAGS = 1 << 0
TX_SEND_FLUSH = 1 << 2
TX_SEND_FUA = 1 << 3

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_FLAG_FUA = 1 << 0

EINVAL = 22
EIO = 5


class VolatileDisk:
    """An image file with a write cache in memory: writes land in the cache, reads
    see the cache over the file, ``flush`` moves the cache to the file."""

    def __init__(self, image: Path) -> None:
        self.fd = os.open(image, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.dirty: dict[int, bytes] = {}
        self.lock = threading.Lock()
        self.flushes = 0
        self.flushed_blocks = 0

    def close(self) -> None:
        os.close(self.fd)

    def _block(self, index: int) -> bytes:
        cached = self.dirty.get(index)
        if cached is not None:
            return cached
        data = os.pread(self.fd, BLOCK, index * BLOCK)
        return data + b"\0" * (BLOCK - len(data))

    def read(self, offset: int, length: int) -> bytes:
        with self.lock:
            if not self.dirty:
                return os.pread(self.fd, length, offset)
            first, last = offset // BLOCK, (offset + length - 1) // BLOCK
            if not any(i in self.dirty for i in range(first, last + 1)):
                return os.pread(self.fd, length, offset)
            data = b"".join(self._block(i) for i in range(first, last + 1))
            start = offset - first * BLOCK
            return data[start : start + length]

    def write(self, offset: int, data: bytes | memoryview, *, fua: bool = False) -> None:
        with self.lock:
            view = memoryview(data)
            first, last = offset // BLOCK, (offset + len(view) - 1) // BLOCK
            for i in range(first, last + 1):
                lo = max(offset, i * BLOCK)
                hi = min(offset + len(view), (i + 1) * BLOCK)
                part = view[lo - offset : hi - offset]
                if hi - lo == BLOCK:
                    self.dirty[i] = bytes(part)
                else:
                    block = bytearray(self._block(i))
                    block[lo - i * BLOCK : hi - i * BLOCK] = part
                    self.dirty[i] = bytes(block)
            if fua:
                self._write_back(range(first, last + 1))

    def flush(self) -> None:
        with self.lock:
            self._write_back(sorted(self.dirty))
            self.flushes += 1

    def _write_back(self, blocks: range | list[int]) -> None:
        run: list[bytes] = []
        start = -1
        for i in blocks:
            data = self.dirty.pop(i, None)
            if data is None:
                continue
            if run and i != start + len(run):
                self._pwrite(start, run)
                run = []
            if not run:
                start = i
            run.append(data)
        if run:
            self._pwrite(start, run)

    def _pwrite(self, start: int, run: list[bytes]) -> None:
        data = b"".join(run)
        end = min(len(data), self.size - start * BLOCK)
        os.pwrite(self.fd, data[:end], start * BLOCK)
        self.flushed_blocks += len(run)


def _recv(conn: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = conn.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("the client went away")
        got += k
    return bytes(buf)


class Server:
    """One export over a unix socket; each connection on its own thread."""

    def __init__(self, disk: VolatileDisk, socket_path: Path, export: str) -> None:
        self.disk = disk
        self.export = export
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if socket_path.exists():
            socket_path.unlink()
        self.sock.bind(str(socket_path))
        self.sock.listen(4)

    def serve_forever(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                if self._handshake(conn):
                    self._transmission(conn)
        except (ConnectionError, OSError):
            pass

    # -- handshake --------------------------------------------------------------------------

    def _tx_flags(self) -> int:
        return TX_HAS_FLAGS | TX_SEND_FLUSH | TX_SEND_FUA

    def _reply(self, conn: socket.socket, option: int, kind: int, data: bytes = b"") -> None:
        conn.sendall(struct.pack(">QIII", REPLY_MAGIC, option, kind, len(data)) + data)

    def _handshake(self, conn: socket.socket) -> bool:
        conn.sendall(NBDMAGIC + struct.pack(">QH", IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        (client_flags,) = struct.unpack(">I", _recv(conn, 4))
        no_zeroes = bool(client_flags & FLAG_NO_ZEROES)
        while True:
            magic, option, length = struct.unpack(">QII", _recv(conn, 16))
            if magic != IHAVEOPT:
                return False
            data = _recv(conn, length) if length else b""
            if option == OPT_EXPORT_NAME:
                conn.sendall(
                    struct.pack(">QH", self.disk.size, self._tx_flags())
                    + (b"" if no_zeroes else b"\0" * 124)
                )
                return True
            if option == OPT_ABORT:
                self._reply(conn, option, REP_ACK)
                return False
            if option == OPT_LIST:
                export = self.export.encode()
                self._reply(conn, option, REP_SERVER, struct.pack(">I", len(export)) + export)
                self._reply(conn, option, REP_ACK)
            elif option in (OPT_INFO, OPT_GO):
                (name_len,) = struct.unpack(">I", data[:4])
                name = data[4 : 4 + name_len].decode()
                if name not in ("", self.export):
                    self._reply(conn, option, REP_ERR_UNKNOWN)
                    continue
                info = struct.pack(">HQH", INFO_EXPORT, self.disk.size, self._tx_flags())
                self._reply(conn, option, REP_INFO, info)
                sizes = struct.pack(">HIII", INFO_BLOCK_SIZE, 1, BLOCK, 32 * 1024 * 1024)
                self._reply(conn, option, REP_INFO, sizes)
                self._reply(conn, option, REP_ACK)
                if option == OPT_GO:
                    return True
            else:
                self._reply(conn, option, REP_ERR_UNSUP)

    # -- transmission -----------------------------------------------------------------------

    def _transmission(self, conn: socket.socket) -> None:
        disk = self.disk
        while True:
            magic, flags, kind, handle, offset, length = struct.unpack(">IHHQQI", _recv(conn, 28))
            if magic != REQUEST_MAGIC:
                return
            if kind == CMD_DISC:
                return
            payload = _recv(conn, length) if kind == CMD_WRITE else b""
            error = 0
            data = b""
            if kind in (CMD_READ, CMD_WRITE) and offset + length > disk.size:
                error = EINVAL
            elif kind == CMD_READ:
                data = disk.read(offset, length)
            elif kind == CMD_WRITE:
                disk.write(offset, payload, fua=bool(flags & CMD_FLAG_FUA))
            elif kind == CMD_FLUSH:
                disk.flush()
            else:
                error = EINVAL
            head = struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, error, handle)
            if data:
                conn.sendall(head + data)
            else:
                conn.sendall(head)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--socket", type=Path, required=True)
    ap.add_argument("--export", default="card")
    ap.add_argument("image", type=Path)
    args = ap.parse_args(argv)
    disk = VolatileDisk(args.image)
    server = Server(disk, args.socket, args.export)
    print("ready", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
