"""Serial devices emulated on a real pseudo-terminal, so pyserial opens a real tty.

The device holds the master side of ``os.openpty()``; :attr:`port` is the
slave's path (``/dev/pts/N``), which the driver under test opens exactly like
``/dev/ttyAMA0``.  (pyserial-asyncio-fast cannot use pyserial's ``loop://``; a
pty also behaves more like a UART: kernel buffering, raw mode, EIO when the
far end goes away.)  A thread of its own produces the device's output every
``period_s`` and hands what the host writes to :meth:`on_receive`.

Baud rate and framing mean nothing on a pty: bytes arrive as fast as they are
written.  With nobody reading, the kernel buffers about 20 KB and then further
bytes are dropped (counted in ``bytes_dropped``), as a UART's FIFO would.
"""

from __future__ import annotations

import logging
import os
import random
import select
import threading
import time
import tty
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)


class EmulatedSerialDevice:
    """Base of every pty-backed device: lifecycle, writes from any thread, plug/unplug.

    Subclasses override :meth:`tick` (called every ``period_s`` while
    plugged) and :meth:`on_receive` (bytes from the host).  Start with
    :meth:`start` or ``with``; :meth:`close` is idempotent.
    """

    def __init__(self, *, period_s: float | None = None, name: str = "serial") -> None:
        if period_s is not None and not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s!r}")
        self.period_s = period_s
        self.name = name
        self._master, self._slave = os.openpty()
        # The device keeps its own slave descriptor open, so the pty never hangs
        # up while the driver closes and reopens the port.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        """Path of the tty the driver opens (a pyserial URL as it is)."""
        self.bytes_written = 0
        self.bytes_dropped = 0
        self.bytes_received = 0
        self._plugged = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"sim-{name}", daemon=True)
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Self:
        """Start producing output.  Idempotent; returns self."""
        if self._closed:
            raise RuntimeError(f"{self.name} emulator is closed")
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and close the pty: a driver still reading sees EIO.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            for fd in (self._master, self._slave, self._wake_r, self._wake_w):
                os.close(fd)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- faults -----------------------------------------------------------------

    @property
    def plugged(self) -> bool:
        return self._plugged

    def unplug(self) -> None:
        """The cable comes out: nothing more is sent, and what the host sends is lost."""
        self._plugged = False

    def plug(self) -> None:
        """The cable goes back in: output resumes."""
        self._plugged = True

    # -- I/O ----------------------------------------------------------------------

    def write(self, data: bytes) -> int:
        """Send bytes to the host now (any thread).  Returns how many the tty took."""
        with self._lock:
            if self._closed or not self._plugged:
                self.bytes_dropped += len(data)
                return 0
            try:
                n = os.write(self._master, data)
            except BlockingIOError:
                n = 0
            self.bytes_written += n
            self.bytes_dropped += len(data) - n
            return n

    def tick(self) -> None:
        """Periodic output (while plugged).  Runs on the device's thread."""

    def on_receive(self, data: bytes) -> None:
        """Bytes the host wrote (while plugged).  Runs on the device's thread."""

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            timeout = None
            if self.period_s is not None:
                timeout = max(0.0, next_tick - time.monotonic())
            readable, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
            if self._stop.is_set():
                return
            if self._master in readable:
                self._receive()
            if self._wake_r in readable:
                os.read(self._wake_r, 64)
            if self.period_s is not None and time.monotonic() >= next_tick:
                if self._plugged:
                    try:
                        self.tick()
                    except Exception:
                        log.exception("%s emulator: tick failed", self.name)
                next_tick += self.period_s
                if next_tick < time.monotonic():  # fell behind (a paused test): no burst
                    next_tick = time.monotonic() + self.period_s

    def _receive(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        self.bytes_received += len(data)
        if self._plugged and data:
            self.on_receive(data)


def ranger_frame(distance_mm: int) -> bytes:
    """The A02YYUW / JSN-SR04T frame for a distance: 0xFF, high, low, checksum."""
    if not 0 <= distance_mm <= 0xFFFF:
        raise ValueError(f"distance must be 0..65535 mm, got {distance_mm!r}")
    high, low = distance_mm >> 8, distance_mm & 0xFF
    return bytes([0xFF, high, low, (0xFF + high + low) & 0xFF])


class UltrasonicModel(EmulatedSerialDevice):
    """An A02YYUW / JSN-SR04T ranger streaming its distance every ``period_s`` (UART mode).

    Faults: :meth:`inject_garbage`, :meth:`send_truncated_frame`,
    :meth:`send_bad_checksum`, :meth:`unplug` / :meth:`plug`.  Garbage comes
    from a ``random.Random(seed)``, so a test replays the same bytes.
    """

    def __init__(self, distance_mm: int = 1500, *, period_s: float = 0.1, seed: int = 0) -> None:
        super().__init__(period_s=period_s, name="ultrasonic")
        ranger_frame(distance_mm)  # validates
        self._distance_mm = distance_mm
        self._rng = random.Random(seed)
        self.frames_sent = 0

    @property
    def distance_mm(self) -> int:
        return self._distance_mm

    def set_distance_mm(self, distance_mm: int) -> None:
        """What the next frames report (water surface, or whatever the beam hits)."""
        ranger_frame(distance_mm)
        self._distance_mm = distance_mm

    def tick(self) -> None:
        if self.write(ranger_frame(self._distance_mm)) == 4:
            self.frames_sent += 1

    def inject_garbage(self, n_bytes: int = 16) -> bytes:
        """Send ``n_bytes`` of line noise now (may contain 0xFF); returns them."""
        data = bytes(self._rng.randrange(256) for _ in range(n_bytes))
        self.write(data)
        return data

    def send_truncated_frame(self) -> bytes:
        """Send the first two bytes of a frame (a glitch, a brown-out mid-frame)."""
        data = ranger_frame(self._distance_mm)[:2]
        self.write(data)
        return data

    def send_bad_checksum(self) -> bytes:
        """Send one whole frame with a wrong checksum."""
        frame = bytearray(ranger_frame(self._distance_mm))
        frame[3] ^= 0xA5
        self.write(bytes(frame))
        return bytes(frame)
