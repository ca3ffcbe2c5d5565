"""A 4-20 mA submersible pressure transducer read through an ADS1115 across a shunt resistor.

The loop current drops ``I * R`` across the shunt; the ADC measures it, and the
current maps linearly to the water column above the transducer: 4 mA is 0 cm,
20 mA is ``range_cm``.  Currents outside the NAMUR NE 43 band are faults, never
levels: below 3.6 mA the loop is open (a cut cable, a dead transducer), above
21 mA it is shorted.  Between those limits and the 4-20 mA span (3.6-4 mA and
20-21 mA) the transducer is slightly outside its calibrated range (offset,
water below the sensor, over-range): the depth is clamped to 0 or ``range_cm``
and the reading says ``clamped``.

The current is computed from the raw conversion with integer arithmetic up to
one final division, so a threshold such as 3.6 mA compares exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from drivers.ads1115 import (
    ADS1115,
    FULL_SCALE_CODE,
    PGA_CODES,
    PGA_FULL_SCALE_MV,
    Mux,
    conversion_timeout_s,
    raw_to_volts,
)
from drivers.errors import LoopFault

log = logging.getLogger(__name__)

LOOP_MIN_MA = 4.0
LOOP_MAX_MA = 20.0
NAMUR_WIRE_BREAK_MA = 3.6
"""Below this the loop is open (NAMUR NE 43)."""
NAMUR_SHORT_MA = 21.0
"""Above this the loop is shorted (NAMUR NE 43)."""
HEADROOM_MA = 22.05
"""The ADC must resolve currents up to here, so a short reads as a short, not as a clipped level."""


@dataclass(frozen=True, slots=True)
class ProbeReading:
    """One conversion: the loop current, the depth it means, and the shunt voltage."""

    current_ma: float
    depth_cm: float
    """Water column above the transducer, 0…``range_cm``."""
    volts: float
    clamped: bool = False
    """The current was in 3.6-4 mA or 20-21 mA and the depth was clamped to 0 or the range."""


def choose_pga(shunt_ohm: float) -> float:
    """The smallest ADS1115 full-scale range that still resolves ``HEADROOM_MA`` across the shunt.

    150 Ω → 3.3 V at 22 mA → ±4.096 V.
    """
    needed = shunt_ohm * HEADROOM_MA / 1000
    fits = [fs for fs in PGA_CODES if fs >= needed]
    if not fits:
        raise ValueError(
            f"a {shunt_ohm} Ω shunt drops {needed:.2f} V at {HEADROOM_MA} mA: "
            "more than the ADS1115's largest range (6.144 V)"
        )
    return min(fits)


class PressureProbe:
    """A 4-20 mA level transducer on one ADS1115 input.

    ``channel`` is 0-3 (AINx against GND, a low-side shunt) or a
    :class:`~drivers.ads1115.Mux` for a differential measurement across a
    high-side shunt.  ``pga`` (full-scale volts) defaults to
    :func:`choose_pga`; ``supply_v`` is the ADC's VDD, because no input can be
    measured above VDD + 0.3 V whatever the range says.
    """

    def __init__(
        self,
        adc: ADS1115,
        channel: int | Mux,
        *,
        shunt_ohm: float = 150.0,
        range_cm: float = 500.0,
        pga: float | None = None,
        data_rate: int = 128,
        supply_v: float = 3.3,
    ) -> None:
        if not shunt_ohm > 0:
            raise ValueError(f"shunt_ohm must be > 0, got {shunt_ohm!r}")
        if not range_cm > 0:
            raise ValueError(f"range_cm must be > 0, got {range_cm!r}")
        self.mux = channel if isinstance(channel, Mux) else Mux.single(channel)
        self.pga = choose_pga(shunt_ohm) if pga is None else pga
        if self.pga not in PGA_CODES:
            raise ValueError(f"pga must be one of {tuple(PGA_CODES)} V, got {self.pga!r}")
        top_ma = self.pga * 1000 / shunt_ohm
        if top_ma <= NAMUR_SHORT_MA:
            raise ValueError(
                f"±{self.pga} V across {shunt_ohm} Ω clips at {top_ma:.2f} mA: a short "
                f"(> {NAMUR_SHORT_MA} mA) could not be told from a full reading; use a larger pga"
            )
        if shunt_ohm * NAMUR_SHORT_MA / 1000 > supply_v:
            raise ValueError(
                f"{NAMUR_SHORT_MA} mA across {shunt_ohm} Ω is "
                f"{shunt_ohm * NAMUR_SHORT_MA / 1000:.2f} V, above the ADC's {supply_v} V supply: "
                "use a smaller shunt"
            )
        self.adc = adc
        self.shunt_ohm = shunt_ohm
        self.range_cm = range_cm
        self.data_rate = data_rate
        self._fs_mv = PGA_FULL_SCALE_MV[PGA_CODES[self.pga]]
        conversion_timeout_s(data_rate)  # validates data_rate now rather than at the first read

    def current_from_raw(self, raw: int) -> float:
        """Loop current in mA for a raw conversion (exact up to the final division)."""
        return raw * self._fs_mv / (FULL_SCALE_CODE * self.shunt_ohm)

    def reading_from_raw(self, raw: int) -> ProbeReading:
        """Classify one conversion; raise :class:`LoopFault` outside the NAMUR band."""
        current = self.current_from_raw(raw)
        volts = raw_to_volts(raw, self.pga)
        if current < NAMUR_WIRE_BREAK_MA:
            raise LoopFault("wire_break", current)
        if current > NAMUR_SHORT_MA:
            raise LoopFault("short", current)
        span = (current - LOOP_MIN_MA) / (LOOP_MAX_MA - LOOP_MIN_MA)
        clamped = not 0.0 <= span <= 1.0
        depth = min(1.0, max(0.0, span)) * self.range_cm
        return ProbeReading(current_ma=current, depth_cm=depth, volts=volts, clamped=clamped)

    def read(self) -> ProbeReading:
        """One conversion as a depth.

        Raises :class:`~drivers.errors.LoopFault` for a broken or shorted loop,
        and whatever the ADC raises (``BusError``, ``SensorTimeout``,
        ``ProtocolError``).
        """
        raw = self.adc.read_raw(self.mux, pga=self.pga, data_rate=self.data_rate)
        try:
            return self.reading_from_raw(raw)
        except LoopFault as fault:
            log.debug("probe on %s: %s", self.mux.name, fault)
            raise
