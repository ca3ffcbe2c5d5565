"""One water-level sensor and its rule, as a daemon task.

Samples the probe (4-20 mA through an ADS1115, or an ultrasonic ranger) every
``sample_s`` during each measurement window, hands the samples to
:class:`edge.water.rule.WaterRule` and turns its outcomes into telemetry and events:

* every reading is telemetry (``<sensor>.level_cm``); while observing (above
  the observation-start level) each is flushed at once, so the cloud hears at
  least every ``active_interval_s``; otherwise the telemetry batch goes at
  ``[telemetry] batch_s`` or as the daily proof of life, whichever is first;
* a stage crossed in its alert direction is ``water_level_alert``; a rise
  faster than the configured rate is ``water_rise_alert``;
* a sample that fails (bus error, silence, garbage) counts against the window;
  a broken or shorted 4-20 mA loop (NAMUR NE 43) is a ``sensor_fault`` at once
  and never a level; recovery is ``sensor_recovered``.

Blocking I²C transactions run in a thread; the serial ranger is asynchronous.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from drivers.errors import BusError, DriverError, LoopFault, ProtocolError, SensorTimeout
from edge.config import (
    PressureProbeConfig,
    UltrasonicConfig,
    WaterRuleConfig,
    water_settings,
)
from edge.health.sensor import SensorHealth
from edge.water.rule import (
    ImplausibleReading,
    ObservationStarted,
    ObservationStopped,
    Reading,
    Report,
    RiseAlert,
    StageAlert,
    WaterRule,
    WaterRuleSettings,
    WindowRejected,
)

log = logging.getLogger(__name__)

Record = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


def settings_of(rule: WaterRuleConfig) -> WaterRuleSettings:
    """The pure rule's settings: built by the one function that validation also uses."""
    return water_settings("water rule", rule)


def _fault_code(exc: DriverError) -> str:
    if isinstance(exc, LoopFault):
        return exc.kind
    if isinstance(exc, SensorTimeout):
        return "no_answer"
    if isinstance(exc, BusError):
        return "bus_error"
    if isinstance(exc, ProtocolError):
        return "garbage"
    return "error"


class WaterWatch:
    def __init__(
        self,
        name: str,
        sensor: PressureProbeConfig | UltrasonicConfig,
        rule_config: WaterRuleConfig,
        *,
        record: Record,
        health: SensorHealth,
        add_reading: Callable[[str, float, float], None],
        flush_telemetry: Callable[[], Awaitable[None]],
        i2c_bus: Callable[[int], Any] | None = None,
        anomaly: Any = None,
    ) -> None:
        self.name = name
        self.anomaly = anomaly
        """An :class:`edge.health.anomaly_watch.AnomalyWatch` fed every reading."""
        self.sensor = sensor
        self.rule = WaterRule(settings_of(rule_config))
        self.stages = [
            {"name": s.name, "label": s.label, "level_cm": s.level_cm} for s in rule_config.stages
        ]
        """Every stage, sent with each alert: the e-mail's chart draws all their lines."""
        self.record = record
        self.health = health
        self.add_reading = add_reading
        self.flush_telemetry = flush_telemetry
        self._i2c_bus = i2c_bus
        self._probe: Any = None
        self._ranger: Any = None
        self.failures_in_row = 0
        self.last_level_cm: float | None = None

    # -- reading one sample --------------------------------------------------------

    def _open_probe(self) -> Any:
        from drivers.ads1115 import ADS1115, open_bus
        from drivers.pressure_probe import PressureProbe

        s = self.sensor
        assert isinstance(s, PressureProbeConfig)
        bus = self._i2c_bus(s.bus) if self._i2c_bus is not None else open_bus(s.bus)
        return PressureProbe(
            ADS1115(bus, s.address), s.channel, shunt_ohm=s.shunt_ohm, range_cm=s.range_cm
        )

    async def sample(self) -> float:
        """One level sample in cm; raises DriverError (or OSError opening the bus)."""
        s = self.sensor
        if isinstance(s, PressureProbeConfig):
            if self._probe is None:
                try:
                    self._probe = await asyncio.to_thread(self._open_probe)
                except OSError as exc:
                    raise BusError(exc.errno or 5, f"cannot open I2C bus {s.bus}: {exc}") from exc
            reading = await asyncio.to_thread(self._probe.read)
            return float(reading.depth_cm + s.offset_cm)
        from drivers.ultrasonic import UltrasonicRanger

        if self._ranger is None:
            self._ranger = UltrasonicRanger(s.port, baudrate=s.baudrate)
        ranger = self._ranger
        # Wait in short slices: the ranger sends ~10 frames/s, so a slice shows
        # soon whether echoes come from inside its dead zone (the water within
        # ~25 cm of the sensor: a flood, not a fault) or nothing comes at all.
        deadline = time.monotonic() + max(1.0, 3 * self.rule.settings.sample_s)
        while True:
            too_close = ranger.parser.too_close
            try:
                mm = await ranger.read(timeout=min(0.35, max(0.05, deadline - time.monotonic())))
                break
            except SensorTimeout:
                if ranger.parser.too_close > too_close:
                    top = s.mount_height_cm - ranger.parser.min_valid_mm / 10.0
                    log.warning(
                        "water %s: surface in the ranger's dead zone, level >= %.0f cm",
                        self.name, top,
                    )
                    return float(top)
                if time.monotonic() >= deadline:
                    raise
        return float(s.mount_height_cm - mm / 10.0)

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                start = self.rule.next_window_start(time.monotonic())
                delay = start - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                result = await self._measure_window()
                if isinstance(result, Reading):
                    await self._handle(result)
                elif isinstance(result, WindowRejected):
                    log.warning("water %s: window rejected (%s)", self.name, result.reason)
                if self.rule.due_proof_of_life(time.monotonic()):
                    await self.flush_telemetry()
                    self.rule.report_flushed(time.monotonic())
        finally:
            if self._ranger is not None:
                await self._ranger.aclose()
                self._ranger = None  # a restarted run opens the port afresh

    async def _measure_window(self) -> Reading | WindowRejected | None:
        period = self.rule.settings.sample_s
        while True:
            t = time.monotonic()
            try:
                value = await self.sample()
            except DriverError as exc:
                self.failures_in_row += 1
                result = self.rule.add_failure(time.monotonic())
                # A loop fault is never a level: report it at once.  Other errors
                # are retried; three in a row are a fault worth reporting.
                if isinstance(exc, LoopFault) or self.failures_in_row >= 3:
                    await self.health.fault(_fault_code(exc), str(exc))
            else:
                self.failures_in_row = 0
                await self.health.ok()
                result = self.rule.add_sample(value, time.monotonic())
            if result is not None:
                return result
            await asyncio.sleep(max(0.0, t + period - time.monotonic()))

    async def _handle(self, reading: Reading) -> None:
        now_wall = time.time()
        reported: Reading | None = None
        for outcome in self.rule.evaluate(reading):
            if isinstance(outcome, Report):
                self.last_level_cm = outcome.reading.level_cm
                reported = outcome.reading
                self.add_reading(
                    f"{self.name}.level_cm", round(outcome.reading.level_cm, 1), now_wall
                )
                if outcome.urgent or outcome.proof_of_life:
                    await self.flush_telemetry()
                    self.rule.report_flushed(time.monotonic())
            elif isinstance(outcome, StageAlert):
                if outcome.cleared:
                    log.info("water %s: below %s again", self.name, outcome.stage.name)
                    continue
                stage = outcome.stage
                await self.record(
                    "water_level_alert",
                    stage.severity,
                    {
                        "sensor": self.name,
                        "level_cm": round(outcome.level_cm, 1),
                        "stage": stage.name,
                        "stage_label": stage.label,
                        "threshold_cm": stage.level_cm,
                        "direction": outcome.direction,
                        "stages": self.stages,
                    },
                )
            elif isinstance(outcome, RiseAlert):
                await self.record(
                    "water_rise_alert",
                    outcome.severity,
                    {
                        "sensor": self.name,
                        "level_cm": round(outcome.level_cm, 1),
                        "rise_cm_per_10min": round(outcome.rise_cm_per_10min, 1),
                        "threshold_cm_per_10min": outcome.threshold,
                        "stages": self.stages,
                    },
                )
            elif isinstance(outcome, ObservationStarted | ObservationStopped):
                log.info(
                    "water %s: observation %s at %.1f cm",
                    self.name,
                    "started" if isinstance(outcome, ObservationStarted) else "stopped",
                    outcome.level_cm,
                )
            elif isinstance(outcome, ImplausibleReading):
                await self.health.fault(
                    "implausible", f"reading {outcome.reading.level_cm:.1f} cm is implausible"
                )
        if reported is not None and self.anomaly is not None:
            # after the alerts: the model's verdict (and its file write) never delays them
            await self.anomaly.add(reported.level_cm, reported.t_end)
