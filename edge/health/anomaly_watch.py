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

The event names the model's tests that fired (``tests``) and what the series
most likely did (``pattern``: ``stuck``, ``spike_or_step``, ``drift`` or
``unusual_shape``; a hint for people, not a diagnosis).

Every new value is scored, so windows overlap and a chance extreme of a
normal series flags several in a row: an event needs the card's
``confirm_windows`` consecutive anomalous windows (water 3: half an hour;
mat 16: eight seconds) -- a fault persists.  One episode is one event: after an
``anomaly`` the series must look normal for a whole window (consecutively)
before another can be raised.

A water window spans 10 h 40 min, so a restart (a reboot, an update) would
leave the level unscored that long: a slow series' window and episode state
are kept in a small JSON file beside the outbox and taken back at start if the
last value is at most two periods old by the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.event import Anomaly, SensorFault
from edge.files import write_atomic
from edge.link.recorder import Record

log = logging.getLogger(__name__)

PATTERNS: tuple[tuple[str, str], ...] = (
    ("quiet", "stuck"),
    ("peak", "spike_or_step"),
    ("denoised", "drift"),
    ("energy", "unusual_shape"),
)
"""What the series most likely did, from the model's tests that fired (``edge.inference.runtime``'s
``ANOMALY_TESTS``), the most specific first: a vanished noise (``quiet``) is a frozen
reading even when the freeze also leaves a step; a burst (``peak``) is a spike or a step;
the denoised residual alone is a slow drift (or, less often, a small shift)."""


def pattern_of(tests: list[str]) -> str:
    for test, pattern in PATTERNS:
        if test in tests:
            return pattern
    return "unusual_shape"


EARLY_VALUES = 8
"""Values held while the model loads (a water reading; four seconds of a mat)."""
KEEP_MIN_PERIOD_S = 60.0
"""A series at least this slow keeps its window across restarts (water: 600 s)."""


_models: dict[str, Any] = {}
_errors: dict[str, str] = {}


def _load(series: str) -> Any:
    if series in _models:
        return _models[series]
    if series in _errors:
        raise RuntimeError(_errors[series])
    try:
        from edge.inference.runtime import AnomalyModel

        _models[series] = AnomalyModel.load(series=series)
    except Exception as exc:
        _errors[series] = f"anomaly model for {series} unavailable: {exc}"
        raise RuntimeError(_errors[series]) from exc
    return _models[series]


def scored_period(interval_s: float, period_s: float) -> float | None:
    """The period a series read every ``interval_s`` is scored at, given the model's
    ``period_s`` (see :meth:`AnomalyWatch.add`): faster readings are thinned to the first
    at least 0.9 periods after the last taken; more than two periods apart: never."""
    if interval_s > 2.0 * period_s:
        return None
    if interval_s >= 0.9 * period_s:
        return interval_s
    return math.ceil(0.9 * period_s / interval_s - 1e-9) * interval_s


def cadence_warnings(config: Any) -> list[str]:
    """Water rules read at a cadence the anomaly model cannot score as trained.

    For ``edge validate`` and the daemon's start: valid configuration, but a
    level read every 30 minutes is never checked for a stuck or drifting
    sensor, and one scored every 720 s instead of 600 s is judged on shapes a
    fifth slower than the model learnt.  Reads the packaged model card (JSON
    only); no warnings when ``health.anomaly_models`` is off or the card is
    unreadable (the daemon reports that itself).
    """
    from edge.config import WaterRuleConfig
    from edge.inference.card import ModelError, packaged_model, read_card

    if not config.health.anomaly_models:
        return []
    try:
        card = read_card(packaged_model("anomaly")[1])
        period = float(card["series"]["water"]["sample_period_s"])
    except (ModelError, KeyError, TypeError, ValueError):
        return []
    out = []
    for name, rule in config.rules.items():
        if not isinstance(rule, WaterRuleConfig):
            continue
        for key in ("idle_interval_s", "active_interval_s"):
            interval = float(getattr(rule, key))
            scored = scored_period(interval, period)
            if scored is None:
                out.append(
                    f"rules.{name}.{key}: a reading every {interval:g} s is more than twice "
                    f"the anomaly model's {period:g}-s period: sensors.{rule.sensor} is not "
                    "checked for a stuck or drifting sensor while it reads at that pace"
                )
            elif abs(scored - period) > 0.1 * period:
                out.append(
                    f"rules.{name}.{key}: readings every {interval:g} s are scored every "
                    f"{scored:g} s, not at the anomaly model's {period:g}-s period: its "
                    "verdicts on sensors." + rule.sensor + " are less reliable (use a divisor "
                    f"of {period:g} s)"
                )
    return out


class AnomalyWatch:
    """Scores one sensor's series with the anomaly model; see the module's docstring.

    ``state_dir``: where a slow series' window is kept across restarts
    (``anomaly-<sensor>.json``; see :meth:`_save`), ``None`` to keep nothing.
    ``wall``: the wall clock the kept window is dated with.
    """

    def __init__(
        self,
        sensor: str,
        series: str,
        record: Record,
        *,
        state_dir: Path | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.sensor = sensor
        self.series = series
        self.record = record
        self.model: Any = None
        self.period_s = 0.0
        self.values: deque[float] = deque()
        self._last_t: float | None = None
        self._resumed_wall: float | None = None
        self._active = False
        self._calm = 0
        self._run = 0
        self.confirm = 1
        """Consecutive anomalous windows before an event (the card's ``confirm_windows``)."""
        self._too_slow_told = False
        self.scored = 0
        self.state_path = None if state_dir is None else state_dir / f"anomaly-{sensor}.json"
        self._wall = wall
        self._started = False
        self._early: deque[tuple[float, float]] = deque(maxlen=EARLY_VALUES)

    async def start(self) -> None:
        try:
            await self._start()
        finally:
            self._started = True
        early, self._early = list(self._early), deque()
        for value, t in early:  # came while the model was loading
            await self.add(value, t)

    async def _start(self) -> None:
        try:
            self.model = await asyncio.to_thread(_load, self.series)
        except RuntimeError as exc:
            log.error("%s", exc)
            await self.record(
                SensorFault(sensor=f"{self.sensor}.anomaly_model", fault="model_unavailable",
                            message=str(exc))
            )
            return
        cal = self.model.model.card["series"][self.series]
        self.period_s = float(cal["sample_period_s"])
        self.confirm = max(1, int(cal.get("confirm_windows", 1)))
        self.values = deque(maxlen=int(self.model.window))
        if self._keeps_state():
            await asyncio.to_thread(self._resume)

    def _keeps_state(self) -> bool:
        # A mat's 32-s window refills at once; a water level's takes 10 h 40 min.
        return self.state_path is not None and self.period_s >= KEEP_MIN_PERIOD_S

    async def add(self, value: float, t: float) -> None:
        """One value of the series at monotonic time ``t``.

        Values that come while the model is still loading are held (the last
        :data:`EARLY_VALUES`) and scored once it is: the first reading after a
        restart is the one that completes a kept window.  It does wait: for
        the kept window's write and the model's scoring (each in a worker
        thread, so the event loop never blocks) and for recording an anomaly.
        The callers, the water and mat loops, await it between readings.
        """
        if not self._started:
            self._early.append((value, t))
            return
        if self.model is None:
            return
        if self._last_t is not None:
            gap = t - self._last_t
        elif self._resumed_wall is not None:  # the first value after a restart
            gap = self._wall() - self._resumed_wall
        else:
            gap = None
        if gap is not None:
            if gap < 0.9 * self.period_s:
                return  # faster than the model's period: take every n-th
            if gap > 2.0 * self.period_s:
                if not self._too_slow_told and self._last_t is not None:
                    self._too_slow_told = True
                    log.info(
                        "%s: values every %.0f s, the anomaly model expects %.1f s: not scored",
                        self.sensor, gap, self.period_s,
                    )
                self.values.clear()
                self._run = 0  # a run of anomalous windows is consecutive or nothing
        self._last_t = t
        self._resumed_wall = None
        self.values.append(value)
        if len(self.values) < (self.values.maxlen or 0):
            await self._keep()
            return
        window = list(self.values)
        score, tests = await asyncio.to_thread(self.model.assess, window)
        self.scored += 1
        anomalous = score > self.model.threshold
        self._run = self._run + 1 if anomalous else 0
        if self._active:
            self._calm = 0 if anomalous else self._calm + 1
            if self._calm >= len(window):
                self._active = False  # a whole window of normal looks: the episode is over
        elif self._run >= self.confirm:
            self._active, self._calm = True, 0
            await self.record(
                Anomaly(sensor=self.sensor, series=self.series, score=round(float(score), 3),
                        threshold=round(float(self.model.threshold), 3), tests=tests,
                        pattern=pattern_of(tests))
            )
        await self._keep()

    # -- the window across restarts --------------------------------------------------

    async def _keep(self) -> None:
        if self._keeps_state():
            await asyncio.to_thread(self._save)

    def _save(self) -> None:
        """Write the window, the episode state and the wall time of its last value.

        Atomic (a temporary file renamed over the old one) but not fsynced: a
        window lost to a power cut only means scoring starts a window later.
        A failed write is logged, never raised (the SD card may be full).
        """
        assert self.state_path is not None
        state = {
            "version": 1,
            "series": self.series,
            "period_s": self.period_s,
            "wall": self._wall(),
            "values": list(self.values),
            "active": self._active,
            "calm": self._calm,
            "run": self._run,
        }
        try:
            write_atomic(self.state_path, json.dumps(state).encode("utf-8"), durable=False)
        except OSError as exc:
            log.warning("%s: cannot keep the anomaly window in %s: %s", self.sensor,
                        self.state_path, exc)

    def _resume(self) -> None:
        """Take the kept window back if it is this series' and its last value is recent.

        Recent means the next value would have been taken anyway: at most two
        periods old by the wall clock (a Pi without a real-time clock that has
        not synced yet reads an older time than the kept one, or a far later
        one: either way the window is dropped and refills).
        """
        assert self.state_path is not None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("%s: kept anomaly window %s unreadable (%s): starting afresh",
                        self.sensor, self.state_path, exc)
            return
        try:
            values = [float(v) for v in state["values"]]
            wall, active, calm = float(state["wall"]), bool(state["active"]), int(state["calm"])
            run = int(state.get("run", 0))
            same = state["series"] == self.series and float(state["period_s"]) == self.period_s
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: kept anomaly window %s malformed (%s): starting afresh",
                        self.sensor, self.state_path, exc)
            return
        age = self._wall() - wall
        if not same or not all(map(math.isfinite, values)) or not 0 <= age <= 2 * self.period_s:
            log.info("%s: kept anomaly window not resumed (%s)", self.sensor,
                     "another series or period" if not same else f"{age:.0f} s old")
            return
        self.values.extend(values[-(self.values.maxlen or 0):])
        self._resumed_wall = wall
        self._active, self._calm, self._run = active, calm, run
        log.info("%s: resumed the anomaly window (%d values, last %.0f s ago)", self.sensor,
                 len(self.values), age)
