"""An SMBus-compatible I²C bus with emulated chips on it, and faults on demand.

:class:`EmulatedI2CBus` answers the same calls as ``smbus2.SMBus``
(``read_i2c_block_data``, ``write_i2c_block_data``, ``read_byte_data``,
``write_byte_data``, ``read_word_data``, ``write_word_data``, ``close``) with
the kernel's semantics: word transfers are little-endian, every failure is an
``OSError`` with the errno the Raspberry Pi's ``i2c-bcm2835`` adapter returns:

- ``EREMOTEIO`` (121, "Remote I/O error"): the address or a data byte was not
  acknowledged (the controller's ERR flag) — an absent, unpowered or
  unplugged chip, or one that stopped answering;
- ``ETIMEDOUT`` (110): the transfer did not complete in the adapter's timeout
  (a bus held low, a chip stretching the clock);
- ``EIO`` (5): any other controller error (e.g. its clock-stretch timeout).

Other adapters differ (``i2c-gpio`` bit-banging reports a missing address as
``ENXIO``): ``EmulatedI2CBus(missing_errno=errno.ENXIO)`` plays those.

:class:`ADS1115Model` is the ADC at register level, written from the datasheet
independently of ``drivers.ads1115`` so that the one checks the other.  A
driver cannot tell the pair from ``smbus2.SMBus`` and a real chip, byte order
included.  The bench, ``edge demo`` and the tests share these.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from errno import EBADF, EINVAL, EIO, EREMOTEIO
from types import TracebackType

log = logging.getLogger(__name__)

I2C_SMBUS_BLOCK_MAX = 32
"""The kernel's (and smbus2's) limit on one SMBus block transfer."""


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class EmulatedI2CDevice:
    """One chip on an :class:`EmulatedI2CBus`: wire-level behaviour plus fault injection.

    Subclasses implement :meth:`i2c_write` (bytes the controller sends, the
    first usually a register pointer), :meth:`i2c_read` (bytes the chip sends
    back) and :meth:`power_on_reset`.
    """

    def __init__(self) -> None:
        self.bus: EmulatedI2CBus | None = None
        self.address: int | None = None
        self.transactions = 0
        """Transactions that reached the chip (failed ones excluded)."""
        self._fail_next: list[int] = []
        self._silent_errno: int | None = None
        self._unplugged: tuple[EmulatedI2CBus, int] | None = None

    # -- faults (any thread) ----------------------------------------------------

    def fail_next(self, n: int = 1, errno: int = EIO) -> None:
        """The next ``n`` transactions fail with ``OSError(errno)`` (EIO, EREMOTEIO, ETIMEDOUT…)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        self._fail_next.extend([errno] * n)

    def stop_answering(self, errno: int = EREMOTEIO) -> None:
        """Every transaction fails until :meth:`resume`.

        ``EREMOTEIO`` (default) is what i2c-bcm2835 returns when the chip no
        longer acknowledges; ``ETIMEDOUT`` plays a chip holding the bus low.
        """
        self._silent_errno = errno

    def resume(self) -> None:
        """Answer again (after :meth:`stop_answering`); registers are kept."""
        self._silent_errno = None

    def unplug(self) -> None:
        """Take the chip off its bus: its address disappears (``EREMOTEIO``)."""
        bus, address = self.bus, self.address
        if bus is None or address is None:
            return
        bus.detach(address)
        self._unplugged = (bus, address)

    def plug(self) -> None:
        """Put an unplugged chip back; like a real one it powers up with reset registers."""
        if self._unplugged is None:
            return
        bus, address = self._unplugged
        self._unplugged = None
        self.power_on_reset()
        bus.attach(address, self)

    # -- called by the bus, under its lock ---------------------------------------

    def _check_faults(self) -> None:
        if self._silent_errno is not None:
            raise _oserror(self._silent_errno)
        if self._fail_next:
            raise _oserror(self._fail_next.pop(0))

    def i2c_write(self, data: bytes) -> None:
        raise NotImplementedError

    def i2c_read(self, length: int) -> bytes:
        raise NotImplementedError

    def power_on_reset(self) -> None:
        """Registers as after power-up."""


class EmulatedI2CBus:
    """A drop-in for ``smbus2.SMBus(bus_number)`` with :class:`EmulatedI2CDevice`s attached.

    Thread-safe: one transaction at a time, as on the wire.
    """

    def __init__(self, bus_number: int = 1, *, missing_errno: int = EREMOTEIO) -> None:
        self.bus_number = bus_number
        self.missing_errno = missing_errno
        self._devices: dict[int, EmulatedI2CDevice] = {}
        self._lock = threading.RLock()
        self._closed = False

    # -- wiring ---------------------------------------------------------------------

    def attach(self, address: int, device: EmulatedI2CDevice) -> EmulatedI2CDevice:
        """Put ``device`` at ``address`` (7-bit).  Returns the device."""
        if not 0x03 <= address <= 0x77:
            raise ValueError(f"7-bit I2C device addresses are 0x03..0x77, got {address!r}")
        with self._lock:
            other = self._devices.get(address)
            if other is not None and other is not device:
                raise ValueError(f"address {address:#04x} is already taken by {other!r}")
            self._devices[address] = device
            device.bus, device.address = self, address
        return device

    def detach(self, address: int) -> None:
        with self._lock:
            self._devices.pop(address, None)

    @property
    def addresses(self) -> list[int]:
        """Addresses that would acknowledge (what ``i2cdetect`` would show)."""
        with self._lock:
            return sorted(self._devices)

    # -- transactions ---------------------------------------------------------------

    def _transfer(self, address: int, write: bytes, read_length: int) -> bytes:
        """One combined transaction: write ``write``, then (repeated start) read ``read_length``."""
        with self._lock:
            if self._closed:
                raise _oserror(EBADF)
            if not 0 <= address <= 0x7F:
                raise _oserror(EINVAL)
            device = self._devices.get(address)
            if device is None:
                raise _oserror(self.missing_errno)
            device._check_faults()
            device.transactions += 1
            if write:
                device.i2c_write(write)
            data = device.i2c_read(read_length) if read_length else b""
            if len(data) != read_length:
                raise AssertionError(f"{device!r} returned {len(data)} of {read_length} bytes")
            return data

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        if length > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Desired block length over {I2C_SMBUS_BLOCK_MAX} bytes")
        return list(self._transfer(i2c_addr, bytes([register & 0xFF]), length))

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: Sequence[int], force: bool | None = None
    ) -> None:
        if len(data) > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {I2C_SMBUS_BLOCK_MAX} bytes")
        self._transfer(i2c_addr, bytes([register & 0xFF, *(b & 0xFF for b in data)]), 0)

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return self._transfer(i2c_addr, bytes([register & 0xFF]), 1)[0]

    def write_byte_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        self._transfer(i2c_addr, bytes([register & 0xFF, value & 0xFF]), 0)

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        """SMBus read word: the first byte on the wire is the LOW byte (little-endian)."""
        lo, hi = self._transfer(i2c_addr, bytes([register & 0xFF]), 2)
        return lo | (hi << 8)

    def write_word_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        """SMBus write word: low byte first on the wire."""
        self._transfer(i2c_addr, bytes([register & 0xFF, value & 0xFF, (value >> 8) & 0xFF]), 0)

    def close(self) -> None:
        """Later transactions fail with EBADF, as on a closed file.  Safe to call twice."""
        self._closed = True

    def __enter__(self) -> EmulatedI2CBus:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- the ADS1115 ------------------------------------------------------------------------

_MUX_PINS: tuple[tuple[int, int | None], ...] = (
    (0, 1), (0, 3), (1, 3), (2, 3), (0, None), (1, None), (2, None), (3, None),
)  # fmt: skip
_FULL_SCALE_MV = (6144, 4096, 2048, 1024, 512, 256, 256, 256)
_SPS = (8, 16, 32, 64, 128, 250, 475, 860)
_CONFIG, _CONVERSION, _LO_THRESH, _HI_THRESH = 1, 0, 2, 3


class ADS1115Model(EmulatedI2CDevice):
    """A register-level ADS1115 (TI SBAS444): pointer, config, conversion and threshold registers.

    A single-shot conversion starts when the config register is written with
    OS = 1 and completes 1/DR seconds later on ``clock`` (``instant=True``:
    at the next transaction); until then OS reads 0.  The result is the
    selected inputs (MUX) scaled by the PGA, rounded to the nearest code and
    clipped at full scale; each pin is clamped to -0.3 … VDD + 0.3 V like the
    chip's protection diodes.  Inputs are set with :meth:`set_input` or
    :meth:`set_current_ma`.  Continuous mode converts the live inputs once
    the first conversion period has passed.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        instant: bool = False,
        supply_v: float = 3.3,
    ) -> None:
        super().__init__()
        self._clock = clock
        self.instant = instant
        self.supply_v = supply_v
        self._inputs = [0.0, 0.0, 0.0, 0.0]
        self.conversions = 0
        """Conversions completed."""
        self.power_on_reset()

    def __repr__(self) -> str:
        where = "unattached" if self.address is None else f"{self.address:#04x}"
        return f"ADS1115Model({where})"

    def power_on_reset(self) -> None:
        self._pointer = _CONVERSION
        self._config = 0x8583 & 0x7FFF  # OS is not stored: it reads 1 while idle
        self._conversion = 0x0000
        self._lo_thresh = 0x8000
        self._hi_thresh = 0x7FFF
        self._busy_until: float | None = None
        self._latched: tuple[int, int] = (4, 2)  # (mux, pga) of the conversion in progress
        self._continuous_from: float | None = None

    # -- test controls (any thread) ----------------------------------------------------

    def set_input(self, channel: int, volts: float) -> None:
        """Voltage on AIN``channel`` against GND."""
        if channel not in (0, 1, 2, 3):
            raise ValueError(f"ADS1115 inputs are AIN0..AIN3, got {channel!r}")
        self._inputs[channel] = float(volts)

    def set_current_ma(self, channel: int, ma: float, shunt_ohm: float = 150.0) -> None:
        """A loop current of ``ma`` through a ``shunt_ohm`` shunt from AIN``channel`` to GND."""
        self.set_input(channel, ma / 1000 * shunt_ohm)

    def input(self, channel: int) -> float:
        return self._inputs[channel]

    @property
    def config(self) -> int:
        """The config register as stored (OS as last written is not kept)."""
        return self._config

    # -- the chip -----------------------------------------------------------------------

    def _code(self, mux: int, pga: int) -> int:
        positive, negative = _MUX_PINS[mux]
        volts = self._pin(positive) - (0.0 if negative is None else self._pin(negative))
        code = round(volts * 32768 * 1000 / _FULL_SCALE_MV[pga])
        return max(-32768, min(32767, code)) & 0xFFFF

    def _pin(self, channel: int) -> float:
        return max(-0.3, min(self.supply_v + 0.3, self._inputs[channel]))

    def _period(self, config: int) -> float:
        return 0.0 if self.instant else 1.0 / _SPS[(config >> 5) & 0b111]

    def _advance(self) -> None:
        """Finish a conversion whose time has come."""
        now = self._clock()
        if self._busy_until is not None and now >= self._busy_until:
            self._busy_until = None
            self._conversion = self._code(*self._latched)
            self.conversions += 1
        if self._continuous_from is not None and now >= self._continuous_from:
            self._conversion = self._code((self._config >> 12) & 0b111, (self._config >> 9) & 0b111)
            self.conversions += 1

    def i2c_write(self, data: bytes) -> None:
        self._advance()
        self._pointer = data[0] & 0b11
        if len(data) < 3:
            if len(data) == 2:
                log.debug("ADS1115 model: 1-byte register write ignored (registers are 16 bits)")
            return
        value = (data[1] << 8) | data[2]
        if self._pointer == _CONFIG:
            self._write_config(value)
        elif self._pointer == _LO_THRESH:
            self._lo_thresh = value
        elif self._pointer == _HI_THRESH:
            self._hi_thresh = value
        # The conversion register is read-only.

    def _write_config(self, value: int) -> None:
        self._config = value & 0x7FFF
        single_shot = bool(value & 0x0100)
        if not single_shot:
            if self._continuous_from is None:
                self._continuous_from = self._clock() + self._period(value)
            return
        self._continuous_from = None
        if value & 0x8000 and self._busy_until is None:
            self._latched = ((value >> 12) & 0b111, (value >> 9) & 0b111)
            self._busy_until = self._clock() + self._period(value)

    def i2c_read(self, length: int) -> bytes:
        self._advance()
        if self._pointer == _CONFIG:
            idle = self._busy_until is None and self._continuous_from is None
            value = self._config | (0x8000 if idle else 0)
        elif self._pointer == _CONVERSION:
            value = self._conversion
        elif self._pointer == _LO_THRESH:
            value = self._lo_thresh
        else:
            value = self._hi_thresh
        word = bytes([value >> 8, value & 0xFF])  # most significant byte first, as on the chip
        return (word * (length // 2 + 1))[:length]
