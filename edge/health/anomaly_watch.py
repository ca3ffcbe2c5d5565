"""Does a sensor's series look wrong?  Fault rules and the anomaly model on the device.

A stuck sensor, a sudden drop, spikes or a slow drift make a sensor's alarms
untrustworthy; farmers, river staff and nursery staff are told (an ``anomaly``
event, severity ``warning``) before they rely on them.

**Water levels** are judged by :class:`edge.health.water_faults.WaterFaultDetector`
(issue 15): pure rules against the sensor's own noise floor, learnt on the device,
with one episode per test (``spike``, ``step``, ``dropout``, ``stuck``, ``noise``,
``drift``).  The TFLite autoencoder is no longer loaded for water: side by side on
the tuning and the independent evaluation series it added nothing the rules miss
and cried wolf on calm water (docs/series-faults.md).  A level is fed every
:data:`WATER_PERIOD_S` (the water rule's idle cadence; while observing every
second 300-s reading); a level that arrives more than twice as slowly is not
judged (said once in the log).  The detector's state (the learnt floor, three
days of history, each test's episode) is kept in ``anomaly-<sensor>.json`` beside
the outbox, and taken back at start whatever its age (the floor is still this
sensor's; the short tests start afresh after a gap).  ``steps_expected`` (the water
rule's ``level_steps = "expected"``: a gate or pump moves the level) switches the
``step`` test off.  The finding's one-line explanation goes out as the event's ``detail``.

**A mat's load** is judged by :class:`edge.health.mat_load_faults.MatLoadDetector`
(the same shape: per-test episodes against the mat's own noise), fed every 0.5 s
and keeping no state on the card.  A series not in :data:`RULES` is still scored
by the anomaly model: at the model's own period from its card, an event after the
card's ``confirm_windows`` anomalous windows in a row, one episode blocking new
events until the series has looked normal for a whole window.

The event names the tests that fired (``tests``) and what the series most
likely did (``pattern``: ``stuck``, ``spike_or_step``, ``dropout``, ``drift`` or
``unusual_shape``; a hint for people, not a diagnosis).
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
from typing import TYPE_CHECKING, Any

from edge.event import Anomaly, SensorFault
from edge.files import write_atomic
from edge.link.recorder import Record

if TYPE_CHECKING:
    from edge.health.mat_load_faults import MatLoadDetector
    from edge.health.water_faults import WaterFaultDetector, WaterFaultParams

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


WATER_PERIOD_S = 600.0
"""A water level is judged every 10 minutes (the water rule's idle cadence)."""


# The detectors (and numpy with them) are imported when a series' rule is built, not
# with this module: a daemon whose configuration has no fault checks loads neither.


def _water_params(steps_expected: bool) -> WaterFaultParams:
    from edge.health.water_faults import WaterFaultParams

    return WaterFaultParams(steps_expected=steps_expected)


def _new_water(steps_expected: bool) -> WaterFaultDetector:
    from edge.health.water_faults import WaterFaultDetector

    return WaterFaultDetector(_water_params(steps_expected))


def _kept_water(state: dict[str, Any], shift_s: float, steps_expected: bool) -> WaterFaultDetector:
    from edge.health.water_faults import WaterFaultDetector

    return WaterFaultDetector.from_state(state, _water_params(steps_expected), shift_s=shift_s)


def _new_mat_load(steps_expected: bool) -> MatLoadDetector:
    from edge.health.mat_load_faults import MatLoadDetector

    return MatLoadDetector()


def _kept_mat_load(state: dict[str, Any], shift_s: float, steps_expected: bool) -> MatLoadDetector:
    from edge.health.mat_load_faults import MatLoadDetector

    return MatLoadDetector.from_state(state)  # never kept: see below


RULES: dict[
    str, tuple[Callable[[bool], Any], Callable[[dict[str, Any], float, bool], Any], float]
] = {
    "water": (_new_water, _kept_water, WATER_PERIOD_S),
    "mat_load": (_new_mat_load, _kept_mat_load, 0.5),
}
"""Series judged by a pure rule instead of the model: ``(new(steps_expected),
from_state(state, shift_s, steps_expected), period_s)``.  A series faster than
:data:`KEEP_MIN_PERIOD_S` (the mat's 0.5 s) keeps no state on the card.  A series not
named here is scored by the anomaly model."""
RESUME_MAX_GAP_S = 30 * 86400.0
"""A kept rule state whose last reading is older than this by the wall clock (or dated in
the future: a clock not synced yet) is taken back as if the gap were a few periods."""

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
    """Water rules read at a cadence the water fault rules cannot judge as tuned.

    For ``edge validate`` and the daemon's start: valid configuration, but a
    level read every 30 minutes is never checked for a stuck or drifting
    sensor, and one judged every 720 s instead of 600 s has windows a fifth
    longer than tuned.  No warnings when ``health.anomaly_models`` is off.
    """
    from edge.config import WaterRuleConfig

    if not config.health.anomaly_models:
        return []
    period = RULES["water"][2]
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
                    f"the sensor fault checks' {period:g}-s period: sensors.{rule.sensor} is not "
                    "checked for a stuck or drifting sensor while it reads at that pace"
                )
            elif abs(scored - period) > 0.1 * period:
                out.append(
                    f"rules.{name}.{key}: readings every {interval:g} s are scored every "
                    f"{scored:g} s, not at the sensor fault checks' {period:g}-s period: their "
                    "verdicts on sensors." + rule.sensor + " are less reliable (use a divisor "
                    f"of {period:g} s)"
                )
    return out


GATE_MEMORY_S = 6 * 3600.0
"""Gate operations older than this are no longer handed to the rule (it keeps 6 h itself)."""


class AnomalyWatch:
    """Judges one sensor's series with its rule (:data:`RULES`) or the anomaly model; see the
    module's docstring.

    ``state_dir``: where a slow series' state is kept across restarts
    (``anomaly-<sensor>.json``), ``None`` to keep nothing.  ``wall``: the wall clock the
    kept state is dated with.  ``steps_expected``: the level is moved by a gate, sluice or
    pump (the water rule's ``level_steps = "expected"``): sudden steps are not a fault
    (:attr:`WaterFaultParams.steps_expected`); the mat's rule ignores it.
    """

    def __init__(
        self,
        sensor: str,
        series: str,
        record: Record,
        *,
        state_dir: Path | None = None,
        wall: Callable[[], float] = time.time,
        steps_expected: bool = False,
    ) -> None:
        self.sensor = sensor
        self.steps_expected = steps_expected
        self.series = series
        self.record = record
        self.model: Any = None
        self.rule: Any = None
        """The series' fault detector when :data:`RULES` names one (else the model is used)."""
        self.period_s = 0.0
        self.values: deque[float] = deque()
        self._last_t: float | None = None
        self._resumed_wall: float | None = None
        self._kept_rule: dict[str, Any] | None = None
        self._active = False
        self._calm = 0
        self._run = 0
        self.confirm = 1
        """Consecutive anomalous windows before an event (the model's ``confirm_windows``)."""
        self._too_slow_told = False
        self._gate_input = False
        self._gate_moves: list[float] = []
        """Gate operations (monotonic, added on the loop) not yet handed to the rule: taken
        on the loop before its next value and given to it on the thread it runs on, so the
        rule never changes while it judges."""
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
        if self.series in RULES:
            make, _, self.period_s = RULES[self.series]
            self.rule = make(self.steps_expected)
            if self._keeps_state():
                await asyncio.to_thread(self._resume)
            return
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

    def _keeps_state(self) -> bool:
        # A mat's 32-s window refills at once; a water level's history is days.
        return self.state_path is not None and self.period_s >= KEEP_MIN_PERIOD_S

    def gate_input(self) -> None:
        """The level has a gate input (the water rule's ``gate_pin``): steps are judged by it,
        from the start, even before the gate is first operated."""
        self._gate_input = True

    def gate_moved(self, t: float) -> None:
        """The gate or pump that moves this level was operated at monotonic time ``t``
        (:meth:`WaterFaultDetector.gate_moved`); the mat's rule has no gate and ignores it."""
        self._gate_input = True
        # Only the last hours matter to the rule: a sensor silent for days while its gate
        # keeps working must not pile them up.
        self._gate_moves = [g for g in self._gate_moves if g > t - GATE_MEMORY_S] + [t]
        log.info("%s: the gate or pump was operated", self.sensor)

    def _with_gate(self, value: float, t: float, moves: list[float]) -> Any:
        """The rule's findings for ``value``, after the gate operations ``moves`` before it."""
        rule = self.rule
        if hasattr(rule, "gate_moved"):
            if self._gate_input and not rule.gate_input:
                rule.gate_input = True
            for g in moves:
                rule.gate_moved(g)
        return rule.add(t, value)

    async def add(self, value: float, t: float) -> None:
        """One value of the series at monotonic time ``t``.

        Values that come while the watch is still starting are held (the last
        :data:`EARLY_VALUES`) and judged once it has.  It does wait: for the
        kept state's write and the scoring (each in a worker thread, so the
        event loop never blocks) and for recording an anomaly.  The callers,
        the water and mat loops, await it between readings.
        """
        if not self._started:
            self._early.append((value, t))
            return
        if self.rule is not None:
            await self._add_rule(value, t)
            return
        if self.model is None:
            return
        if self._last_t is not None:
            gap = t - self._last_t
            if gap < 0.9 * self.period_s:
                return  # faster than the model's period: take every n-th
            if gap > 2.0 * self.period_s:
                self._slow(gap)
                self.values.clear()
                self._run = 0  # a run of anomalous windows is consecutive or nothing
        self._last_t = t
        self.values.append(value)
        if len(self.values) < (self.values.maxlen or 0):
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

    def _slow(self, gap: float) -> None:
        if not self._too_slow_told:
            self._too_slow_told = True
            log.info("%s: values every %.0f s, the %s checks expect %.1f s: not judged",
                     self.sensor, gap, self.series, self.period_s)  # fmt: skip

    async def _add_rule(self, value: float, t: float) -> None:
        if self._last_t is not None:
            gap = t - self._last_t
            if gap < 0.9 * self.period_s:
                return  # faster than the rule's period: take every n-th
            if gap > 2.0 * self.period_s:
                self._slow(gap)
        elif self._kept_rule is not None:  # the first value after a restart
            self.rule = self._rule_from_kept(t)
        self._last_t = t
        moves, self._gate_moves = self._gate_moves, []
        findings = await asyncio.to_thread(self._with_gate, value, t, moves)
        self.scored += 1
        for f in findings:
            await self.record(
                Anomaly(sensor=self.sensor, series=self.series, score=round(float(f.score), 3),
                        threshold=round(float(f.threshold), 3), tests=[f.test],
                        pattern=f.pattern, detail=f.detail)
            )
            log.warning("%s: %s (%s)", self.sensor, f.test, f.detail)
        if self._keeps_state():
            await asyncio.to_thread(self._save)

    def _rule_from_kept(self, t: float) -> Any:
        """The kept detector, its times moved onto this process's monotonic clock."""
        kept, self._kept_rule = self._kept_rule, None
        assert kept is not None and self._resumed_wall is not None
        gap = self._wall() - self._resumed_wall
        if not 0 <= gap <= RESUME_MAX_GAP_S:
            log.info("%s: kept %s state dated %.0f s away: taken as a short gap", self.sensor,
                     self.series, gap)  # fmt: skip
            gap = 3 * self.period_s
        shift = (t - gap) - float(kept["t_last"])
        try:
            return RULES[self.series][1](kept["rule"], shift, self.steps_expected)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: kept %s state not usable (%s): starting afresh", self.sensor,
                        self.series, exc)  # fmt: skip
            return RULES[self.series][0](self.steps_expected)

    # -- the state across restarts --------------------------------------------------

    def _save(self) -> None:
        """Write the detector's state and the wall time of its last value.

        Atomic (a temporary file renamed over the old one) but not fsynced: a
        state lost to a power cut only means the floor is learnt again.  A
        failed write is logged, never raised (the SD card may be full).
        """
        assert self.state_path is not None and self._last_t is not None
        state = {
            "version": 2,
            "series": self.series,
            "period_s": self.period_s,
            "wall": self._wall(),
            "t_last": self._last_t,
            "rule": self.rule.state(),
        }
        try:
            write_atomic(self.state_path, json.dumps(state).encode("utf-8"), durable=False)
        except OSError as exc:
            log.warning("%s: cannot keep the anomaly state in %s: %s", self.sensor,
                        self.state_path, exc)

    def _resume(self) -> None:
        """Take the kept state back if it is this series' (at any age: see the module)."""
        assert self.state_path is not None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("%s: kept anomaly state %s unreadable (%s): starting afresh",
                        self.sensor, self.state_path, exc)
            return
        try:
            same = (state["version"] == 2 and state["series"] == self.series
                    and float(state["period_s"]) == self.period_s)  # fmt: skip
            wall, t_last = float(state["wall"]), float(state["t_last"])
            rule = dict(state["rule"])
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: kept anomaly state %s malformed or old (%s): starting afresh",
                        self.sensor, self.state_path, exc)
            return
        if not same or not (math.isfinite(wall) and math.isfinite(t_last)):
            log.info("%s: kept anomaly state not resumed (another series or period)",
                     self.sensor)
            return
        self._kept_rule = {"rule": rule, "t_last": t_last}
        self._resumed_wall = wall
        log.info("%s: resumed the %s state (last reading %.0f s ago)", self.sensor,
                 self.series, self._wall() - wall)  # fmt: skip
