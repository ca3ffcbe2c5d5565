"""One body-motion mat under a cot, as a daemon task.

Reads frames (``drivers.motion_mat``), derives occupancy, load and body motion
(``edge.nursery.mat``) and keeps the latest :class:`MatReading` for the nap
rules.  A silent mat (unplugged, unpowered) is a ``sensor_fault`` after
``silence_s``; frames that keep failing their CRC are a ``garbage`` fault;
a grid that reads zero in every cell (unpowered, its ribbon cut) is an
``all_zero`` fault, never an empty cot; each fault's message tells the staff
to check the cot by hand; recovery is ``sensor_recovered``.  While the cot is
occupied the load goes out as telemetry (``<sensor>.load_kg``) once a minute,
the series the anomaly model watches.

The mat calibrates itself: a rough baseline at once, the empty mat per cell
after 5 s of an empty cot (never learnt from a child already lying there).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from drivers.errors import BusError, SensorTimeout
from edge.config import MatSensorConfig
from edge.devices.factory import open_mat
from edge.health.anomaly_watch import AnomalyWatch
from edge.health.sensor import SensorHealth
from edge.link.telemetry import TelemetrySink
from edge.nursery.mat import MatReading, MatSignals

if TYPE_CHECKING:
    from drivers.motion_mat import MatFrame, MotionMat

log = logging.getLogger(__name__)

LOAD_TELEMETRY_S = 60.0
ALL_ZERO_FAULT_S = 1.0
"""Every cell at zero this long is a fault (one stray frame is not)."""


class MatWatch:
    def __init__(
        self,
        name: str,
        config: MatSensorConfig,
        *,
        health: SensorHealth,
        telemetry: TelemetrySink,
        silence_s: float = 3.0,
        anomaly: AnomalyWatch | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.health = health
        self.telemetry = telemetry
        self.silence_s = silence_s
        self.signals: MatSignals | None = None
        self.last: MatReading | None = None
        self.last_frame: MatFrame | None = None
        """The latest good frame (for the posture model)."""
        self._last_load_at = float("-inf")
        self.anomaly = anomaly
        """An :class:`edge.health.anomaly_watch.AnomalyWatch` fed the load while occupied."""
        self.mat: MotionMat | None = None

    async def run(self) -> None:
        mat = self.mat = open_mat(self.config)
        crc_seen = 0
        zero_since: float | None = None
        try:
            while True:
                try:
                    frame = await mat.read(timeout=self.silence_s)
                except SensorTimeout as exc:
                    await self._fault("no_answer", str(exc))
                    continue
                except BusError as exc:
                    await self._fault("bus_error", str(exc))
                    continue
                stats = mat.parser.stats()
                crc_now = stats.get("crc_errors", 0)
                if crc_now - crc_seen > 50:
                    await self._fault("garbage", f"{crc_now - crc_seen} bad frames")
                    crc_seen = crc_now
                    continue
                crc_seen = crc_now
                if not any(frame.cells):
                    # A real grid never reads zero everywhere: an empty mattress still
                    # weighs on it and every cell has an offset.  Zeros are a dead grid
                    # (unpowered, ribbon cable cut), never an empty cot; they are kept
                    # away from the signals (whose calibration would learn them).
                    if zero_since is None:
                        zero_since = time.monotonic()
                    if time.monotonic() - zero_since >= ALL_ZERO_FAULT_S:
                        await self._fault(
                            "all_zero", "every cell reads zero (the pressure grid has no "
                            "power or its cable is cut)"
                        )
                    continue
                zero_since = None
                await self.health.ok()
                self._update(frame)
                if self.anomaly is not None and self.last is not None and self.last.occupied:
                    await self.anomaly.add(self.last.load_kg, self.last.t)
        finally:
            mat.close()

    @property
    def fault(self) -> str | None:
        """The mat's current fault (``no_answer``, ``all_zero``, ...), or None: while it is
        set the cot must be checked by hand."""
        return self.health.fault_code

    async def _fault(self, code: str, what: str) -> None:
        cot = self.config.cot
        await self.health.fault(
            code, f"mat of cot {cot}: {what}; check cot {cot} by hand (手で確認してください)"
        )

    def _update(self, frame: MatFrame) -> None:
        t = time.monotonic()
        if self.signals is None:
            # Self-calibrating: a rough baseline at once, the per-cell empty mat
            # learnt after 5 s of an empty cot (never from a child lying there).
            self.signals = MatSignals()
        self.last_frame = frame
        was = self.last.occupied if self.last else False
        reading = self.last = self.signals.update(frame, t)
        if reading.occupied != was:
            log.info(
                "cot %s: %s (%.1f kg)",
                self.config.cot,
                "occupied" if reading.occupied else "empty",
                reading.load_kg,
            )
        if reading.occupied and t - self._last_load_at >= LOAD_TELEMETRY_S:
            self._last_load_at = t
            self.telemetry.add(f"{self.name}.load_kg", round(reading.load_kg, 2), time.time())
