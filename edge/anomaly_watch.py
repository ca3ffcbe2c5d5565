"""Does a sensor's series look wrong?  The anomaly model on the device.

A stuck sensor, a sudden drop, spikes or a slow drift make a sensor's alarms
untrustworthy; farmers, river staff and nursery staff are told (an ``anomaly``
event, severity ``warning``) before they rely on them.  The series is fed at
the model's own sample period (from its card: a water level every 600 s, the
water rule's idle cadence, of which the 300-s readings while observing are
every second one; a mat's load every 0.5 s); faster values are thinned to
that period; a series that arrives more than twice as slowly as the model was
trained for is not scored (said once in the log), because its shape would not
mean what the model learnt.

One episode is one event: after an ``anomaly`` the series must look normal for
a whole window before another can be raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Record = Callable[[str, str, dict[str, Any]], Awaitable[Any]]

_models: dict[str, Any] = {}
_errors: dict[str, str] = {}


def _load(series: str) -> Any:
    if series in _models:
        return _models[series]
    if series in _errors:
        raise RuntimeError(_errors[series])
    try:
        from edge.inference import AnomalyModel

        _models[series] = AnomalyModel.load(series=series)
    except Exception as exc:  # noqa: BLE001 - any failure: no scoring, a health event
        _errors[series] = f"anomaly model for {series} unavailable: {exc}"
        raise RuntimeError(_errors[series]) from exc
    return _models[series]


class AnomalyWatch:
    def __init__(self, sensor: str, series: str, record: Record) -> None:
        self.sensor = sensor
        self.series = series
        self.record = record
        self.model: Any = None
        self.period_s = 0.0
        self.values: deque[float] = deque()
        self._last_t: float | None = None
        self._active = False
        self._calm = 0
        self._too_slow_told = False
        self.scored = 0

    async def start(self) -> None:
        try:
            self.model = await asyncio.to_thread(_load, self.series)
        except RuntimeError as exc:
            log.error("%s", exc)
            await self.record(
                "sensor_fault",
                "warning",
                {"sensor": f"{self.sensor}.anomaly_model", "fault": "model_unavailable",
                 "message": str(exc)},
            )
            return
        self.period_s = float(self.model.model.card["series"][self.series]["sample_period_s"])
        self.values = deque(maxlen=int(self.model.window))

    async def add(self, value: float, t: float) -> None:
        """One value of the series at monotonic time ``t``."""
        if self.model is None:
            return
        if self._last_t is not None:
            gap = t - self._last_t
            if gap < 0.9 * self.period_s:
                return  # faster than the model's period: take every n-th
            if gap > 2.0 * self.period_s:
                if not self._too_slow_told:
                    self._too_slow_told = True
                    log.info(
                        "%s: values every %.0f s, the anomaly model expects %.1f s: not scored",
                        self.sensor, gap, self.period_s,
                    )
                self.values.clear()
        self._last_t = t
        self.values.append(value)
        if len(self.values) < (self.values.maxlen or 0):
            return
        window = list(self.values)
        anomalous = await asyncio.to_thread(self.model.is_anomalous, window)
        self.scored += 1
        if anomalous and not self._active:
            self._active, self._calm = True, 0
            score = await asyncio.to_thread(self.model.score, window)
            await self.record(
                "anomaly",
                "warning",
                {"sensor": self.sensor, "series": self.series, "score": round(float(score), 3),
                 "threshold": round(float(self.model.threshold), 3)},
            )
        elif not anomalous and self._active:
            self._calm += 1
            if self._calm >= len(window):
                self._active = False
