"""Body-motion mat: a pressure grid under a cot's mattress, streaming frames on a UART.

The wire format is documented byte by byte in ``docs/protocols/motion-mat.md``:

    A5 5A | ver | seq (u16 LE) | rows | cols | len (u16 LE) | cells ... | CRC-16 (u16 LE)

with CRC-16/CCITT-FALSE over ``ver`` .. the last cell.  :class:`MatParser` is
the pure, synchronous receiver (resynchronises on garbage, never raises, bounded
memory); :class:`MotionMat` reads it from a serial port URL with
pyserial-asyncio-fast.  numpy is optional: only :meth:`MatFrame.as_array`
imports it.
"""

from __future__ import annotations

import asyncio
import binascii
import errno
import importlib
import logging
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

from drivers.base import AsyncDriver
from drivers.errors import BusError, PortSettingsError, SensorTimeout

log = logging.getLogger(__name__)

SYNC = b"\xa5\x5a"
"""Start of every frame.  ``A5 5A``: alternating bits, not self-overlapping."""
VERSION = 1
HEADER = struct.Struct("<2sBHBBH")
"""sync, version, seq, rows, cols, payload length."""
HEADER_LEN = HEADER.size  # 9
CRC_LEN = 2
MAX_SIDE = 64
"""Rows and columns are each 1..64 in protocol version 1."""
MAX_PAYLOAD = MAX_SIDE * MAX_SIDE
MAX_FRAME_LEN = HEADER_LEN + MAX_PAYLOAD + CRC_LEN  # 4107
DEFAULT_ROWS = 16
DEFAULT_COLS = 32
SEQ_MOD = 0x10000
_FEED_CHUNK = 4096


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(seq: int, rows: int, cols: int, cells: bytes | bytearray) -> bytes:
    """One frame on the wire; ``cells`` are ``rows * cols`` pressures, row-major."""
    if not 0 <= seq < SEQ_MOD:
        raise ValueError(f"seq must be 0..65535, got {seq}")
    if not (1 <= rows <= MAX_SIDE and 1 <= cols <= MAX_SIDE):
        raise ValueError(f"geometry must be 1..{MAX_SIDE} x 1..{MAX_SIDE}, got {rows} x {cols}")
    if len(cells) != rows * cols:
        raise ValueError(f"{rows} x {cols} needs {rows * cols} cells, got {len(cells)}")
    head = HEADER.pack(SYNC, VERSION, seq, rows, cols, len(cells))
    body = head[2:] + bytes(cells)
    return SYNC + body + struct.pack("<H", crc16(body))


@dataclass(frozen=True, slots=True)
class MatFrame:
    """One pressure image: ``cells[r * cols + c]`` is row ``r``, column ``c`` (0..255).

    Rows run across the mattress, columns along it (16 x 32 on the default mat).
    """

    seq: int
    rows: int
    cols: int
    cells: bytes

    def __post_init__(self) -> None:
        if len(self.cells) != self.rows * self.cols:
            raise ValueError(
                f"{self.rows} x {self.cols} frame needs {self.rows * self.cols} cells, "
                f"got {len(self.cells)}"
            )

    def cell(self, row: int, col: int) -> int:
        """Pressure of one cell (raw counts 0..255)."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise IndexError(f"cell ({row}, {col}) outside {self.rows} x {self.cols}")
        return self.cells[row * self.cols + col]

    def grid(self) -> list[bytes]:
        """The frame as a list of rows (each ``bytes``; index it for ints), no numpy needed."""
        c = self.cols
        return [self.cells[r * c : (r + 1) * c] for r in range(self.rows)]

    @property
    def total(self) -> int:
        """Sum of raw counts (mattress and sensor offsets included)."""
        return sum(self.cells)

    def as_array(self) -> Any:
        """A ``(rows, cols)`` uint8 numpy array (imports numpy: not for the device path)."""
        np = importlib.import_module("numpy")  # optional: not a device dependency
        return np.frombuffer(self.cells, dtype=np.uint8).reshape(self.rows, self.cols)

    def encode(self) -> bytes:
        return encode_frame(self.seq, self.rows, self.cols, self.cells)


class MatParser:
    """Turns a byte stream into :class:`MatFrame` s.

    Never raises on any input and never holds more than :data:`MAX_FRAME_LEN`
    bytes between calls.  On a bad header or CRC it drops one byte and hunts
    for the next sync word, so a real frame hiding behind a false sync is not
    lost.  Counters (all cumulative, never reset):

    - ``frames``: good frames returned;
    - ``crc_errors``: candidate frames with a plausible header whose CRC failed;
    - ``bad_headers``: sync words followed by an impossible header (wrong
      version, geometry out of range, length != rows * cols);
    - ``dropped``: sequence numbers skipped between good frames (u16 wrap aware);
    - ``seq_restarts``: a good frame whose sequence number went backwards
      (or repeated): the mat restarted, so no drop is counted;
    - ``geometry_changes``: a good frame whose rows x cols differ from the last;
    - ``resyncs``: runs of discarded bytes (joining mid-stream, noise, a bad frame);
    - ``skipped_bytes``: bytes discarded while hunting for a sync word.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._last_seq: int | None = None
        self._geometry: tuple[int, int] | None = None
        self._discarding = False
        self._warned_version = False
        self.frames = 0
        self.crc_errors = 0
        self.bad_headers = 0
        self.dropped = 0
        self.seq_restarts = 0
        self.geometry_changes = 0
        self.resyncs = 0
        self.skipped_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (at most :data:`MAX_FRAME_LEN`)."""
        return len(self._buf)

    @property
    def geometry(self) -> tuple[int, int] | None:
        """(rows, cols) of the last good frame."""
        return self._geometry

    def stats(self) -> dict[str, int]:
        """Counters for telemetry and ``edge check``."""
        return {
            "frames": self.frames,
            "crc_errors": self.crc_errors,
            "bad_headers": self.bad_headers,
            "dropped": self.dropped,
            "seq_restarts": self.seq_restarts,
            "geometry_changes": self.geometry_changes,
            "resyncs": self.resyncs,
            "skipped_bytes": self.skipped_bytes,
        }

    def reset(self) -> None:
        """Forget a partial frame and the last sequence number (after a reconnect)."""
        if self._buf:
            self._skip(len(self._buf))
        self._last_seq = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[MatFrame]:
        """Take received bytes; return the frames they completed, oldest first."""
        out: list[MatFrame] = []
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _FEED_CHUNK):
            self._buf += view[start : start + _FEED_CHUNK]
            self._parse(out)
        return out

    def _skip(self, n: int) -> None:
        del self._buf[:n]
        self.skipped_bytes += n
        if not self._discarding:
            self._discarding = True
            self.resyncs += 1

    def _parse(self, out: list[MatFrame]) -> None:
        buf = self._buf
        while True:
            at = buf.find(SYNC)
            if at < 0:
                # Keep a trailing A5: it may be the first half of the next sync word.
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                if len(buf) > keep:
                    self._skip(len(buf) - keep)
                return
            if at:
                self._skip(at)
            if len(buf) < HEADER_LEN:
                return
            _, version, seq, rows, cols, length = HEADER.unpack_from(buf)
            if (
                version != VERSION
                or not 1 <= rows <= MAX_SIDE
                or not 1 <= cols <= MAX_SIDE
                or length != rows * cols
            ):
                self.bad_headers += 1
                if version != VERSION and not self._warned_version and length == rows * cols:
                    self._warned_version = True
                    log.warning(
                        "motion mat speaks protocol version %d; this driver knows 1", version
                    )
                self._skip(1)
                continue
            end = HEADER_LEN + length
            if len(buf) < end + CRC_LEN:
                return
            (sent,) = struct.unpack_from("<H", buf, end)
            if crc16(memoryview(buf)[2:end]) != sent:
                self.crc_errors += 1
                log.debug("motion mat frame seq %d: CRC mismatch", seq)
                self._skip(1)
                continue
            cells = bytes(buf[HEADER_LEN:end])
            del buf[: end + CRC_LEN]
            self._discarding = False
            self._account(seq, rows, cols)
            out.append(MatFrame(seq, rows, cols, cells))

    def _account(self, seq: int, rows: int, cols: int) -> None:
        self.frames += 1
        if self._last_seq is not None:
            gap = (seq - self._last_seq - 1) % SEQ_MOD
            if gap < SEQ_MOD // 2:
                self.dropped += gap
                if gap:
                    log.debug("motion mat: %d frame(s) missing before seq %d", gap, seq)
            else:
                self.seq_restarts += 1
                log.info(
                    "motion mat sequence went from %d back to %d: restarted", self._last_seq, seq
                )
        self._last_seq = seq
        if self._geometry is not None and self._geometry != (rows, cols):
            self.geometry_changes += 1
            log.warning(
                "motion mat geometry changed from %d x %d to %d x %d",
                self._geometry[0],
                self._geometry[1],
                rows,
                cols,
            )
        self._geometry = (rows, cols)


class MotionMat(AsyncDriver):
    """The mat on a serial port (a URL: ``/dev/ttyAMA0``, a pty, ``spy:///dev/ttyAMA0``).

    ``await read(timeout)`` returns the next good frame, or raises
    :class:`SensorTimeout` when none arrived in time (a silent or unplugged
    mat) and :class:`BusError` when the port cannot be opened or fails; the
    next ``read`` reopens it.  One reader at a time.
    """

    def __init__(self, url: str, *, baudrate: int = 115200, max_pending: int = 64) -> None:
        self.url = url
        self.baudrate = baudrate
        self.parser = MatParser()
        self._pending: deque[MatFrame] = deque()
        self._max_pending = max_pending
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self.overruns = 0
        """Frames discarded because more than ``max_pending`` were waiting unread."""
        self.opens = 0
        """Times the port was opened (more than one: it failed and was reopened)."""

    @property
    def is_open(self) -> bool:
        return self._reader is not None

    def stats(self) -> dict[str, int]:
        return {**self.parser.stats(), "overruns": self.overruns, "opens": self.opens}

    async def open(self) -> None:
        """Open the port now (``read`` also opens it lazily)."""
        if self._reader is not None:
            return
        import serial_asyncio_fast  # the vendor import stays out of module import time

        try:
            self._reader, self._writer = await serial_asyncio_fast.open_serial_connection(
                url=self.url, baudrate=self.baudrate
            )
        except ValueError as exc:  # pyserial: a baud rate or URL it refuses
            raise PortSettingsError(f"motion mat on {self.url}: {exc}") from exc
        except OSError as exc:  # serial.SerialException is an OSError
            raise BusError(
                getattr(exc, "errno", None) or errno.EIO, f"motion mat on {self.url}: {exc}"
            ) from exc
        self.opens += 1
        self.parser.reset()
        log.debug("motion mat port %s open at %d baud", self.url, self.baudrate)

    async def read(self, timeout: float = 1.0) -> MatFrame:  # noqa: ASYNC109 (the documented API)
        """The next good frame; :class:`SensorTimeout` after ``timeout`` s of no frame."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._lock:
            while not self._pending:
                if self._reader is None:
                    await self.open()
                reader = self._reader
                assert reader is not None
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await reader.read(4096)
                except TimeoutError:
                    raise SensorTimeout(
                        f"no frame from the motion mat on {self.url} within {timeout:g} s"
                    ) from None
                except OSError as exc:
                    self.close()
                    raise BusError(
                        exc.errno or errno.EIO, f"motion mat on {self.url}: {exc}"
                    ) from exc
                if not data:
                    self.close()
                    raise BusError(errno.EIO, f"motion mat on {self.url}: port closed")
                for frame in self.parser.feed(data):
                    if len(self._pending) >= self._max_pending:
                        self._pending.popleft()
                        self.overruns += 1
                    self._pending.append(frame)
            return self._pending.popleft()

    def close(self) -> None:
        """Close the port (safe to call twice; a later ``read`` reopens it)."""
        writer, self._writer, self._reader = self._writer, None, None
        self._pending.clear()
        if writer is not None:
            writer.close()
