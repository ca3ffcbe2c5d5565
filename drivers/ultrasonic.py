"""Ultrasonic water-level ranger of the A02YYUW / JSN-SR04T kind on a UART.

The module streams a 4-byte frame about every 100 ms at 9600 8N1::

    0xFF  high  low  checksum      distance_mm = high * 256 + low
                                   checksum    = (0xFF + high + low) & 0xFF

:class:`RangerParser` turns any byte stream into distances.  It resynchronises
after garbage and only trusts an alignment that the *next* header byte
confirms (an 8-bit checksum alone lets 1 random window in 256 through), drops
frames whose checksum fails, and filters distances inside the transducer's
dead zone (``min_valid_mm``) or beyond its reach (``max_valid_mm``), counting
each case.  It never raises on any bytes.

:class:`UltrasonicRanger` reads a port given as a pyserial URL (``/dev/ttyAMA0``,
a pseudo-terminal path, or ``spy:///dev/ttyAMA0?file=/tmp/hexdump.txt`` to
hexdump a misbehaving sensor in the field) through pyserial-asyncio-fast.
See ``docs/protocols/ultrasonic.md``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time

import serial_asyncio_fast

from drivers.base import AsyncDriver
from drivers.errors import BusError, DriverClosed, PortSettingsError, SensorTimeout

log = logging.getLogger(__name__)

HEADER = 0xFF
FRAME_LEN = 4
DEFAULT_MIN_VALID_MM = 250
"""The transducer's dead zone (20-25 cm): nearer echoes are unreliable."""
DEFAULT_MAX_VALID_MM = 10_000
"""Beyond any ranger of this kind (4.5-6 m), and far below the ≥ 65 280 mm that a
misaligned lock produces (see the protocol doc), so such a lock breaks at once."""


class RangerParser:
    """Bytes in, valid distances (mm) out.  Keeps at most 4 bytes between calls.

    Counters (all only ever grow):

    - ``frames``: checksum-valid frames decoded, in range or not;
    - ``checksum_errors``: 4-byte windows starting with 0xFF whose checksum failed;
    - ``resyncs``: bytes skipped while hunting for the frame alignment;
    - ``unconfirmed``: candidate frames dropped because no header followed them;
    - ``too_close``: frames inside the dead zone (below ``min_valid_mm``);
    - ``too_far``: frames beyond ``max_valid_mm`` (also treated as lost alignment).
    """

    def __init__(
        self,
        *,
        min_valid_mm: int = DEFAULT_MIN_VALID_MM,
        max_valid_mm: int = DEFAULT_MAX_VALID_MM,
    ) -> None:
        if not 0 <= min_valid_mm <= max_valid_mm <= 0xFFFF:
            raise ValueError(
                f"need 0 <= min_valid_mm <= max_valid_mm <= 65535, "
                f"got {min_valid_mm!r}, {max_valid_mm!r}"
            )
        self.min_valid_mm = min_valid_mm
        self.max_valid_mm = max_valid_mm
        self._buf = bytearray()
        self._locked = False
        self.frames = 0
        self.checksum_errors = 0
        self.resyncs = 0
        self.unconfirmed = 0
        self.too_close = 0
        self.too_far = 0

    @property
    def locked(self) -> bool:
        """True while the frame alignment is confirmed."""
        return self._locked

    def reset(self) -> None:
        """Forget buffered bytes and the alignment (a port reopened); counters stay."""
        self._buf.clear()
        self._locked = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Parse more bytes; return the valid distances they completed, oldest first."""
        buf = self._buf
        buf += data
        out: list[int] = []
        n = len(buf)
        i = 0
        while n - i >= FRAME_LEN:
            if buf[i] != HEADER:
                self._skip()
                i += 1
                continue
            high, low, checksum = buf[i + 1], buf[i + 2], buf[i + 3]
            if (HEADER + high + low) & 0xFF != checksum:
                self.checksum_errors += 1
                self._skip()
                i += 1
                continue
            if not self._locked:
                # An unconfirmed alignment: trust it only if the next frame's header follows.
                if n - i < FRAME_LEN + 1:
                    break
                if buf[i + FRAME_LEN] != HEADER:
                    self.unconfirmed += 1
                    self._skip()
                    i += 1
                    continue
                self._locked = True
            distance = (high << 8) | low
            self.frames += 1
            if distance > self.max_valid_mm:
                # No ranger reports this; a misaligned lock does (0xFF00 + x): look again
                # from the next byte rather than consume what may be half of a real frame.
                self.too_far += 1
                self._skip()
                i += 1
                continue
            i += FRAME_LEN
            if distance < self.min_valid_mm:
                self.too_close += 1
                continue
            out.append(distance)
        del buf[:i]
        return out

    def _skip(self) -> None:
        self.resyncs += 1
        self._locked = False


class _Link(asyncio.Protocol):
    """One open port: bytes to the ranger's parser, loss to its waiters."""

    def __init__(self, ranger: UltrasonicRanger) -> None:
        self.ranger = ranger
        self.transport: asyncio.BaseTransport | None = None
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.ranger._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self.ranger._on_lost(self, exc)


class UltrasonicRanger(AsyncDriver):
    """An A02YYUW / JSN-SR04T ranger on the serial port ``url``.

    :meth:`read` returns the next valid distance that arrives after the call
    (never a stale one), opening the port first if needed, and again after the
    port was lost (a USB adapter pulled out and put back).  Use it as
    ``async with UltrasonicRanger(url) as ranger: mm = await ranger.read(1.0)``.
    """

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 9600,
        min_valid_mm: int = DEFAULT_MIN_VALID_MM,
        max_valid_mm: int = DEFAULT_MAX_VALID_MM,
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.parser = RangerParser(min_valid_mm=min_valid_mm, max_valid_mm=max_valid_mm)
        self.bytes_received = 0
        self.last_mm: int | None = None
        """The latest valid distance, and ``last_at`` its ``time.monotonic()``."""
        self.last_at: float | None = None
        self._link: _Link | None = None
        self._last_link: _Link | None = None
        self._waiters: set[asyncio.Future[int]] = set()
        self._open_lock = asyncio.Lock()  # concurrent first reads open the port once
        self._closed = False

    @property
    def is_open(self) -> bool:
        return self._link is not None

    async def open(self) -> None:
        """Open the port (a no-op when open).  Raises :class:`BusError` with the OS's errno."""
        if self._link is not None:
            return
        async with self._open_lock:
            if self._closed:
                raise DriverClosed("UltrasonicRanger is closed")
            if self._link is not None:
                return
            loop = asyncio.get_running_loop()
            link = _Link(self)
            try:
                transport, _ = await serial_asyncio_fast.create_serial_connection(
                    loop, lambda: link, self.url, baudrate=self.baudrate
                )
            except OSError as exc:  # serial.SerialException is an OSError
                raise BusError(exc.errno or errno.EIO, f"cannot open {self.url}: {exc}") from exc
            except ValueError as exc:  # pyserial: a baud rate or URL it refuses
                raise PortSettingsError(f"cannot open {self.url}: {exc}") from exc
            if self._closed:  # closed while the port was opening
                transport.close()
                raise DriverClosed("UltrasonicRanger is closed")
            self.parser.reset()
            self._link = link
        log.info("ultrasonic ranger: opened %s at %d baud", self.url, self.baudrate)

    async def read(self, timeout: float = 1.0) -> int:  # noqa: ASYNC109 (the documented API)
        """The next valid distance in mm.

        Raises :class:`SensorTimeout` when none arrives within ``timeout``
        seconds (a silent sensor: unplugged, dead, or water inside the dead
        zone — the message says which it looks like), :class:`BusError` when
        the port cannot be opened or is lost while waiting.
        """
        await self.open()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._waiters.add(fut)
        bytes_before, close_before = self.bytes_received, self.parser.too_close
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise SensorTimeout(
                f"no valid distance from {self.url} in {timeout:g} s"
                + self._silence_hint(bytes_before, close_before)
            ) from None
        finally:
            self._waiters.discard(fut)
            fut.cancel()

    def _silence_hint(self, bytes_before: int, close_before: int) -> str:
        received = self.bytes_received - bytes_before
        too_close = self.parser.too_close - close_before
        if too_close:
            return (
                f" ({too_close} frames inside the {self.parser.min_valid_mm} mm dead zone: "
                "water or an obstacle right under the sensor)"
            )
        if received:
            return f" ({received} bytes but no valid frame: noise, or the wrong baud rate)"
        return " (no bytes at all: unplugged, unpowered, or a broken wire)"

    def _on_data(self, data: bytes) -> None:
        self.bytes_received += len(data)
        distances = self.parser.feed(data)
        if not distances:
            return
        self.last_mm = distances[-1]
        self.last_at = time.monotonic()
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(distances[-1])
        self._waiters.clear()

    def _on_lost(self, link: _Link, exc: Exception | None) -> None:
        if link is not self._link:
            return  # an old link that we closed ourselves
        self._link = None
        code = getattr(exc, "errno", None) or errno.EIO
        log.warning("ultrasonic ranger: lost %s: %s", self.url, exc)
        error = BusError(code, f"serial port {self.url} lost: {exc}")
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(error)
        self._waiters.clear()

    def close(self) -> None:
        """Close the port; pending reads fail with :class:`BusError`.  Safe to call twice."""
        self._closed = True
        link, self._link = self._link, None
        if link is not None and link.transport is not None:
            link.transport.close()
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(BusError(errno.EBADF, f"ranger on {self.url} closed"))
        self._waiters.clear()
        self._last_link = link

    async def aclose(self) -> None:
        """Close and wait (at most 2 s) until the port's file descriptor is released."""
        self.close()
        link = self._last_link
        if link is not None and link.transport is not None:
            try:
                async with asyncio.timeout(2.0):
                    await link.lost.wait()
            except TimeoutError:
                log.warning("ultrasonic ranger: %s did not close within 2 s", self.url)
