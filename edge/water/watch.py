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

Which sensor it is does not matter here: both answer
:meth:`edge.devices.level.LevelSensor.read_cm` (the probe's blocking I²C
transactions run in a thread; the serial ranger is asynchronous).
"""

from __future__ import annotations

import asyncio
import logging
import time

from drivers.errors import BusError, DriverError, LoopFault, ProtocolError, SensorTimeout
from edge.config import WaterRuleConfig, water_settings
from edge.devices.level import LevelSensor
from edge.event import WaterLevelAlert, WaterRiseAlert, WaterStage
from edge.health.anomaly_watch import AnomalyWatch
from edge.health.sensor import SensorHealth
from edge.link.recorder import Record
from edge.link.telemetry import TelemetrySink
from edge.water.pair_watch import PairWatch
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



def settings_of(rule: WaterRuleConfig) -> WaterRuleSettings:
    """The pure rule's settings: built by the one function that validation also uses."""
    return water_settings("water rule", rule)


def patience_s(rule: WaterRuleConfig) -> float:
    """How long a ranger may stay silent before a sample counts as failed: three samples'
    worth, at least a second."""
    return max(1.0, 3 * rule.sample_s)


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
        level: LevelSensor,
        rule_config: WaterRuleConfig,
        *,
        record: Record,
        health: SensorHealth,
        telemetry: TelemetrySink,
        anomaly: AnomalyWatch | None = None,
    ) -> None:
        """``level``: the probe or ranger (:func:`edge.devices.factory.build_level_sensor`);
        ``telemetry``: where each reading goes; ``anomaly``: fed every reading."""
        self.name = name
        self.anomaly = anomaly
        self.level = level
        self.rule = WaterRule(settings_of(rule_config))
        self.stages = [
            WaterStage(name=s.name, label=s.label, level_cm=s.level_cm)
            for s in rule_config.stages
        ]
        """Every stage, sent with each alert: the e-mail's chart draws all their lines."""
        self.record = record
        self.health = health
        self.telemetry = telemetry
        self.failures_in_row = 0
        self.last_level_cm: float | None = None
        self.pairs: list[PairWatch] = []
        """Gauge pairs this sensor is in (``same_water_as``): each reading goes to them too."""

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
                    await self.telemetry.flush()
                    self.rule.report_flushed(time.monotonic())
        finally:
            await self.level.aclose()  # a restarted run opens the bus or port afresh

    async def _measure_window(self) -> Reading | WindowRejected | None:
        period = self.rule.settings.sample_s
        while True:
            t = time.monotonic()
            try:
                value = await self.level.read_cm()
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
                self.telemetry.add(
                    f"{self.name}.level_cm", round(outcome.reading.level_cm, 1), now_wall
                )
                if outcome.urgent or outcome.proof_of_life:
                    await self.telemetry.flush()
                    self.rule.report_flushed(time.monotonic())
            elif isinstance(outcome, StageAlert):
                if outcome.cleared:
                    log.info("water %s: below %s again", self.name, outcome.stage.name)
                    continue
                stage = outcome.stage
                await self.record(
                    WaterLevelAlert(
                        sensor=self.name,
                        level_cm=round(outcome.level_cm, 1),
                        stage=stage.name,
                        stage_label=stage.label,
                        threshold_cm=stage.level_cm,
                        direction=outcome.direction,
                        stages=self.stages,
                    ),
                    severity=stage.severity,
                )
            elif isinstance(outcome, RiseAlert):
                await self.record(
                    WaterRiseAlert(
                        sensor=self.name,
                        level_cm=round(outcome.level_cm, 1),
                        rise_cm_per_10min=round(outcome.rise_cm_per_10min, 1),
                        threshold_cm_per_10min=outcome.threshold,
                        stages=self.stages,
                    ),
                    severity=outcome.severity,
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
        if reported is None:
            return
        # after the alerts: the fault checks (and their file writes) never delay them
        if self.anomaly is not None:
            await self.anomaly.add(reported.level_cm, reported.t_end)
        for pair in self.pairs:
            await pair.add(self.name, reported.level_cm, reported.t_end)
