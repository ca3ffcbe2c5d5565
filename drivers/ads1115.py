"""TI ADS1115: 16-bit delta-sigma ADC on I²C, read one single-shot conversion at a time.

The bus is any SMBus-compatible object passed in (``smbus2.SMBus`` on the Pi,
:class:`edge.sim.i2c.EmulatedI2CBus` in tests and the demo); :func:`open_bus`
is the one place that imports ``smbus2``.

Every 16-bit register of the chip goes over the wire most significant byte
first.  SMBus *word* transfers (``read_word_data``) are little-endian, so a
word read returns the two bytes swapped — a classic bug that still looks like a
plausible number.  This driver only uses 2-byte *block* transfers and assembles
the bytes itself.  See ``docs/protocols/ads1115.md``.

Calls block for one conversion (1/data-rate, ≈ 8 ms at the default 128 SPS, at
most ≈ 125 ms at 8 SPS): the daemon runs them in a worker thread.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from drivers.base import Driver
from drivers.errors import BusError, ProtocolError, SensorTimeout

log = logging.getLogger(__name__)

# Register pointer values.
REG_CONVERSION = 0x00
REG_CONFIG = 0x01
REG_LO_THRESH = 0x02
REG_HI_THRESH = 0x03

# Config register fields (datasheet SBAS444, table "Config Register Field Descriptions").
OS_BIT = 1 << 15
"""Write 1: start a single-shot conversion.  Read 0: converting; 1: idle (result ready)."""
MUX_SHIFT = 12
PGA_SHIFT = 9
MODE_BIT = 1 << 8
"""1: single-shot / power-down (the reset state); 0: continuous conversion."""
DR_SHIFT = 5
COMP_MODE_BIT = 1 << 4
COMP_POL_BIT = 1 << 3
COMP_LAT_BIT = 1 << 2
COMP_QUE_MASK = 0b11
COMP_QUE_DISABLE = 0b11
"""Comparator disabled, ALERT/RDY pin high-impedance (the reset state)."""

CONFIG_RESET = 0x8583
"""What the config register holds after power-on (and after a brown-out)."""

ADDRESSES = (0x48, 0x49, 0x4A, 0x4B)
"""ADDR pin to GND, VDD, SDA, SCL."""

PGA_FULL_SCALE_MV: dict[int, int] = {
    0: 6144,
    1: 4096,
    2: 2048,
    3: 1024,
    4: 512,
    5: 256,
    6: 256,
    7: 256,
}
"""PGA code → full-scale range in millivolts (codes 5, 6 and 7 are all ±0.256 V)."""

PGA_CODES: dict[float, int] = {6.144: 0, 4.096: 1, 2.048: 2, 1.024: 3, 0.512: 4, 0.256: 5}
"""Full-scale range in volts (what callers pass as ``pga``) → PGA code."""

DATA_RATES: tuple[int, ...] = (8, 16, 32, 64, 128, 250, 475, 860)
"""Samples per second, indexed by the DR code."""

FULL_SCALE_CODE = 32768
"""A conversion of +full scale would be 32768; the chip clips at 32767 and -32768."""


class Mux(enum.IntEnum):
    """Input multiplexer: which pins the ADC measures (MUX field, bits 14:12)."""

    DIFF_0_1 = 0
    DIFF_0_3 = 1
    DIFF_1_3 = 2
    DIFF_2_3 = 3
    AIN0 = 4
    AIN1 = 5
    AIN2 = 6
    AIN3 = 7

    @classmethod
    def single(cls, channel: int) -> Mux:
        """AINx against GND."""
        if channel not in (0, 1, 2, 3):
            raise ValueError(f"ADS1115 single-ended channel must be 0..3, got {channel!r}")
        return cls(4 + channel)

    @property
    def pins(self) -> tuple[int, int | None]:
        """(positive AIN, negative AIN or None for GND)."""
        return _MUX_PINS[self]


_MUX_PINS: dict[Mux, tuple[int, int | None]] = {
    Mux.DIFF_0_1: (0, 1),
    Mux.DIFF_0_3: (0, 3),
    Mux.DIFF_1_3: (1, 3),
    Mux.DIFF_2_3: (2, 3),
    Mux.AIN0: (0, None),
    Mux.AIN1: (1, None),
    Mux.AIN2: (2, None),
    Mux.AIN3: (3, None),
}


def _pga_code(pga: float) -> int:
    try:
        return PGA_CODES[pga]
    except KeyError:
        options = ", ".join(str(v) for v in PGA_CODES)
        raise ValueError(
            f"ADS1115 full-scale range must be one of {options} V, got {pga!r}"
        ) from None


def _dr_code(data_rate: int) -> int:
    try:
        return DATA_RATES.index(data_rate)
    except ValueError:
        raise ValueError(
            f"ADS1115 data rate must be one of {DATA_RATES} SPS, got {data_rate!r}"
        ) from None


def _as_mux(mux: Mux | int) -> Mux:
    """A :class:`Mux` as given; a plain int is a single-ended channel 0..3 (never a MUX code)."""
    return mux if isinstance(mux, Mux) else Mux.single(mux)


@dataclass(frozen=True, slots=True)
class Config:
    """The config register, field by field.

    ``pga`` is the full-scale range in volts (a key of :data:`PGA_CODES`),
    ``data_rate`` in samples per second.  The comparator defaults to disabled.
    """

    mux: Mux
    pga: float = 2.048
    data_rate: int = 128
    single_shot: bool = True
    start: bool = False
    """OS bit.  Encoding: start a conversion.  Decoding: the chip is idle (result ready)."""
    comp_mode_window: bool = False
    comp_active_high: bool = False
    comp_latching: bool = False
    comp_queue: int = COMP_QUE_DISABLE

    def __post_init__(self) -> None:
        _pga_code(self.pga)
        _dr_code(self.data_rate)
        if not 0 <= self.comp_queue <= 3:
            raise ValueError(f"comparator queue must be 0..3, got {self.comp_queue!r}")

    def encode(self) -> int:
        """The 16-bit register value."""
        word = (
            (OS_BIT if self.start else 0)
            | (int(self.mux) << MUX_SHIFT)
            | (_pga_code(self.pga) << PGA_SHIFT)
            | (MODE_BIT if self.single_shot else 0)
            | (_dr_code(self.data_rate) << DR_SHIFT)
            | (COMP_MODE_BIT if self.comp_mode_window else 0)
            | (COMP_POL_BIT if self.comp_active_high else 0)
            | (COMP_LAT_BIT if self.comp_latching else 0)
            | self.comp_queue
        )
        return word

    @classmethod
    def decode(cls, word: int) -> Config:
        """Parse a register value (PGA codes 6 and 7 decode to 0.256 V, as on the chip)."""
        if not 0 <= word <= 0xFFFF:
            raise ValueError(f"config register is 16 bits, got {word!r}")
        return cls(
            mux=Mux((word >> MUX_SHIFT) & 0b111),
            pga=PGA_FULL_SCALE_MV[(word >> PGA_SHIFT) & 0b111] / 1000,
            data_rate=DATA_RATES[(word >> DR_SHIFT) & 0b111],
            single_shot=bool(word & MODE_BIT),
            start=bool(word & OS_BIT),
            comp_mode_window=bool(word & COMP_MODE_BIT),
            comp_active_high=bool(word & COMP_POL_BIT),
            comp_latching=bool(word & COMP_LAT_BIT),
            comp_queue=word & COMP_QUE_MASK,
        )


def raw_to_volts(raw: int, pga: float) -> float:
    """A signed conversion result in volts.  Exact integer arithmetic up to one final rounding."""
    return raw * PGA_FULL_SCALE_MV[_pga_code(pga)] / (FULL_SCALE_CODE * 1000)


def volts_to_raw(volts: float, pga: float) -> int:
    """What the chip would report for ``volts`` (nearest code, clipped at full scale)."""
    code = round(volts * FULL_SCALE_CODE * 1000 / PGA_FULL_SCALE_MV[_pga_code(pga)])
    return max(-FULL_SCALE_CODE, min(FULL_SCALE_CODE - 1, code))


def conversion_timeout_s(data_rate: int) -> float:
    """How long one single-shot conversion may take before we call the chip hung.

    The datasheet's conversion time is 1/DR with the internal oscillator good
    to ±10 %; twice that plus 50 ms of scheduling slack on a loaded Pi still
    bounds a hung read to ≈ 0.3 s at the slowest rate.
    """
    _dr_code(data_rate)
    return 2.0 / data_rate + 0.05


_ADDRESS_LOCKS: dict[int, threading.Lock] = {a: threading.Lock() for a in ADDRESSES}


class SMBusLike(Protocol):
    """The two SMBus calls this driver uses (``smbus2.SMBus`` has them)."""

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int], /) -> None: ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, /) -> list[int]: ...


def open_bus(bus_number: int = 1) -> SMBusLike:
    """Open ``/dev/i2c-N`` with smbus2 (imported here only, so the package imports anywhere)."""
    from smbus2 import SMBus

    try:
        bus: SMBusLike = SMBus(bus_number)
    except OSError as exc:
        raise BusError(
            exc.errno,
            f"cannot open /dev/i2c-{bus_number}: {exc.strerror} (is I2C enabled in raspi-config?)",
        ) from exc
    return bus


class ADS1115(Driver):
    """One ADS1115 chip at ``address`` on ``bus``.

    A conversion (config write, ready polling, result read) holds a lock
    shared by every ``ADS1115`` object with the same address in the process,
    so probes on one chip never interleave even when each was given its own
    object and its own bus handle (chips at one address on different buses
    merely take turns, a few milliseconds each).
    """

    def __init__(
        self,
        bus: SMBusLike,
        address: int = 0x48,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if address not in ADDRESSES:
            raise ValueError(
                f"ADS1115 address must be one of {', '.join(hex(a) for a in ADDRESSES)}, "
                f"got {address!r}"
            )
        self.bus = bus
        self.address = address
        self._clock = clock
        self._sleep = sleep
        self._lock = _ADDRESS_LOCKS[address]
        self._owns_bus = False
        self.conversions = 0
        """Completed conversions (for health reports)."""

    @classmethod
    def open(cls, bus_number: int = 1, address: int = 0x48) -> ADS1115:
        """An ADS1115 on a real bus that :meth:`close` will close."""
        adc = cls(open_bus(bus_number), address)
        adc._owns_bus = True
        return adc

    def _release(self) -> None:
        """Close the bus if this object opened it (a bus passed in stays open)."""
        if self._owns_bus:
            self._owns_bus = False
            close = getattr(self.bus, "close", None)
            if close is not None:
                close()

    # -- register access ------------------------------------------------------

    def _write_register(self, register: int, value: int) -> None:
        try:
            self.bus.write_i2c_block_data(self.address, register, [value >> 8, value & 0xFF])
        except OSError as exc:
            raise self._bus_error(exc, f"writing register {register}") from exc

    def _read_register(self, register: int) -> int:
        """A 16-bit register, assembled most significant byte first (the chip's order)."""
        try:
            data = self.bus.read_i2c_block_data(self.address, register, 2)
        except OSError as exc:
            raise self._bus_error(exc, f"reading register {register}") from exc
        if len(data) != 2:
            raise ProtocolError(
                f"ADS1115 at {self.address:#04x}: register {register} returned {len(data)} bytes"
            )
        return ((data[0] & 0xFF) << 8) | (data[1] & 0xFF)

    def _bus_error(self, exc: OSError, what: str) -> BusError:
        strerror = exc.strerror or str(exc)
        return BusError(exc.errno, f"ADS1115 at {self.address:#04x}: {what}: {strerror}")

    def read_config(self) -> Config:
        """The config register as the chip reports it (also a cheap presence check)."""
        self._check_open()
        with self._lock:
            return Config.decode(self._read_register(REG_CONFIG))

    # -- conversions -----------------------------------------------------------

    def read_raw(self, mux: Mux | int, *, pga: float = 2.048, data_rate: int = 128) -> int:
        """One single-shot conversion: the signed 16-bit result (-32768…32767).

        ``mux`` is a :class:`Mux` or a single-ended channel number 0..3.

        Raises :class:`BusError` (bus transaction failed, errno kept),
        :class:`SensorTimeout` (the conversion never finished) and
        :class:`ProtocolError` (the config register read back differently
        from what was written: the chip reset, or another device answers).
        """
        self._check_open()
        mux = _as_mux(mux)
        written = Config(mux=mux, pga=pga, data_rate=data_rate, single_shot=True, start=True)
        word = written.encode()
        period = 1.0 / data_rate
        poll = max(0.0005, period / 20)
        with self._lock:
            self._write_register(REG_CONFIG, word)
            deadline = self._clock() + conversion_timeout_s(data_rate)
            self._sleep(period)
            while True:
                status = self._read_register(REG_CONFIG)
                if (status & ~OS_BIT) != (word & ~OS_BIT):
                    raise ProtocolError(
                        f"ADS1115 at {self.address:#04x}: config reads back {status:#06x} after "
                        f"writing {word:#06x} (chip reset, or not an ADS1115)"
                    )
                if status & OS_BIT:
                    break
                # Checked after a poll, so a thread descheduled past the deadline still looks once.
                if self._clock() >= deadline:
                    raise SensorTimeout(
                        f"ADS1115 at {self.address:#04x}: conversion not ready after "
                        f"{conversion_timeout_s(data_rate):.3f} s at {data_rate} SPS"
                    )
                self._sleep(poll)
            value = self._read_register(REG_CONVERSION)
            self.conversions += 1
        raw = value - 0x10000 if value & 0x8000 else value
        log.debug(
            "ADS1115 %#04x %s: raw %d (±%s V, %d SPS)", self.address, mux.name, raw, pga, data_rate
        )
        return raw

    def read_volts(self, mux: Mux | int, *, pga: float = 2.048, data_rate: int = 128) -> float:
        """One single-shot conversion in volts (positive minus negative input)."""
        return raw_to_volts(self.read_raw(mux, pga=pga, data_rate=data_rate), pga)
