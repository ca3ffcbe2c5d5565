"""The level-sensor seam: a 4-20 mA pressure probe and an ultrasonic ranger read alike.

Both answer :meth:`LevelSensor.read_cm` with the water level in centimetres
above the site's datum (a probe's depth plus its ``offset_cm``; a ranger's
``mount_height_cm`` less the distance), and raise a
:class:`~drivers.errors.DriverError` when they cannot: the water watch and
``edge check`` never need to know which kind is wired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from drivers.errors import BusError, SensorTimeout
from edge.config import PressureProbeConfig, UltrasonicConfig

if TYPE_CHECKING:
    from drivers.pressure_probe import PressureProbe
    from drivers.ultrasonic import UltrasonicRanger

log = logging.getLogger(__name__)

I2cBusFactory = Callable[[int], Any]
"""Bus number -> an SMBus-compatible object (the kernel's /dev/i2c-N, or an emulator)."""


class LevelSensor(Protocol):
    async def read_cm(self) -> float:
        """One level sample in cm; raises DriverError."""
        ...

    @property
    def raw(self) -> str:
        """What the sensor itself said for the latest sample ("12.00 mA", "1500 mm")."""
        ...

    async def aclose(self) -> None:
        """Release the bus or port; a later read opens it afresh.  Idempotent."""
        ...


class ProbeLevel:
    """A 4-20 mA probe through an ADS1115: each transaction in a thread (I²C blocks)."""

    def __init__(self, config: PressureProbeConfig, *, i2c_bus: I2cBusFactory | None = None):
        self.config = config
        self._i2c_bus = i2c_bus
        self._probe: PressureProbe | None = None
        self.raw = ""

    def _open(self) -> PressureProbe:
        from drivers.ads1115 import ADS1115, open_bus
        from drivers.pressure_probe import PressureProbe

        c = self.config
        bus = self._i2c_bus(c.bus) if self._i2c_bus is not None else open_bus(c.bus)
        return PressureProbe(
            ADS1115(bus, c.address), c.channel, shunt_ohm=c.shunt_ohm, range_cm=c.range_cm
        )

    async def read_cm(self) -> float:
        if self._probe is None:
            try:
                self._probe = await asyncio.to_thread(self._open)
            except OSError as exc:
                raise BusError(
                    exc.errno or 5, f"cannot open I2C bus {self.config.bus}: {exc}"
                ) from exc
        reading = await asyncio.to_thread(self._probe.read)
        self.raw = f"{reading.current_ma:.2f} mA"
        return float(reading.depth_cm + self.config.offset_cm)

    async def aclose(self) -> None:
        self._probe = None


class RangerLevel:
    """An ultrasonic ranger looking down at the water, on a UART.

    Waits in short slices for up to ``patience_s``: the ranger sends ~10 frames/s,
    so a slice shows soon whether echoes come from inside its dead zone (the water
    within ~25 cm of the sensor: a flood, not a fault; the level is then the top of
    what it can measure) or nothing comes at all (:class:`SensorTimeout`).
    """

    def __init__(self, config: UltrasonicConfig, *, patience_s: float = 1.0, name: str = ""):
        self.config = config
        self.patience_s = patience_s
        self.name = name or config.port
        self._ranger: UltrasonicRanger | None = None
        self.raw = ""

    async def read_cm(self) -> float:
        from drivers.ultrasonic import UltrasonicRanger

        c = self.config
        if self._ranger is None:
            self._ranger = UltrasonicRanger(c.port, baudrate=c.baudrate)
        ranger = self._ranger
        deadline = time.monotonic() + self.patience_s
        while True:
            too_close = ranger.parser.too_close
            try:
                mm = await ranger.read(timeout=min(0.35, max(0.05, deadline - time.monotonic())))
                break
            except SensorTimeout:
                if ranger.parser.too_close > too_close:
                    top = c.mount_height_cm - ranger.parser.min_valid_mm / 10.0
                    log.warning(
                        "water %s: surface in the ranger's dead zone, level >= %.0f cm",
                        self.name, top,
                    )
                    self.raw = f"< {ranger.parser.min_valid_mm} mm (dead zone)"
                    return float(top)
                if time.monotonic() >= deadline:
                    raise
        self.raw = f"{mm} mm"
        return float(c.mount_height_cm - mm / 10.0)

    async def aclose(self) -> None:
        ranger, self._ranger = self._ranger, None
        if ranger is not None:
            await ranger.aclose()
