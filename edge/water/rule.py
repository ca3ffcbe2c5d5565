"""The water rule: probe samples -> averaged readings -> stage, rise and observation outcomes.

Modelled on the Japanese low-cost flood gauge (危機管理型水位計) practice:

* each reading is the mean of a window of samples (20 s at 1 s by default) with
  spikes removed, so a wave splash or a debris echo does not become a level;
* below an observation-start level the device measures every
  ``idle_interval_s`` (10 min) and reports at least once a day (proof of life);
  from that level up it measures every ``active_interval_s`` (≤ 5 min) and
  every report is urgent, until the level falls below a separate, lower stop
  level;
* stages (for rivers 水防団待機水位, 氾濫注意水位, 避難判断水位, 氾濫危険水位; for
  paddies a too-low / too-high band) alert once when crossed and re-arm only
  after the level went back past the line by ``hysteresis_cm``;
* a rate of rise (cm per 10 minutes) alerts once and re-arms below half of it.

This module is pure: no I/O, no clock, no threads.  Every method takes the
caller's timestamps (float seconds; monotonic is best, since a Raspberry Pi's
wall clock can jump by years at NTP sync).  It is not thread-safe: drive one
:class:`WaterRule` from one task.  The caller's loop is::

    while True:
        await sleep_until(rule.next_window_start(clock()))
        result = None
        while result is None:
            try:
                result = rule.add_sample(probe.read_cm(), clock())
            except SensorError:
                result = rule.add_failure(clock())
            if result is None:
                await asyncio.sleep(rule.settings.sample_s)
        outcomes = rule.evaluate(result) if isinstance(result, Reading) else [result]

Spike removal (:func:`remove_spikes`) uses the median and the median absolute
deviation (MAD), the modified z-score of Iglewicz and Hoaglin: a sample is a
spike when ``|x - median| > max(spike_k * 1.4826 * MAD, spike_floor_cm)``.
1.4826 scales the MAD to a standard deviation for normal noise, so the default
``spike_k = 3.5`` rejects what lies beyond ~3.5 sigma; the floor (2 cm, twice
the gauge's ±1 cm) keeps calm or coarsely quantised water, whose MAD is 0, from
having its honest samples thrown away.  One pass; the median and MAD resist up
to half the samples being wild, and a window with too few samples left is
rejected (:class:`WindowRejected`) rather than averaged.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias, get_args

from edge.event import Severity

Direction = Literal["above", "below"]
Crossing = Literal["rising", "falling"]

#: The rate of rise is expressed per this many seconds (10 minutes).
RATE_BASE_S: Final = 600.0
#: 1 / Φ⁻¹(3/4): scales a MAD to a standard deviation for normal noise.
MAD_TO_SIGMA: Final = 1.4826
#: Slack for float comparisons of times (s) and rates (cm per 10 min).
_EPS: Final = 1e-9


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Stage:
    """One line on the gauge that alerts when the level crosses it.

    ``direction="above"`` alerts when the level rises to ``level_cm`` or more
    (river stages, a paddy's too-high line); ``"below"`` when it falls to
    ``level_cm`` or less (a paddy's too-low line).
    """

    name: str
    """Machine code, e.g. ``flood_watch``, ``danger``, ``too_low``."""
    label: str
    """Human text for messages, e.g. ``氾濫危険水位``."""
    level_cm: float
    direction: Direction = "above"
    severity: Severity = "warning"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: must be a non-empty string, got {self.name!r}")
        if not isinstance(self.label, str):
            raise ValueError(f"label: must be a string, got {self.label!r}")
        _finite("level_cm", self.level_cm)
        if self.direction not in get_args(Direction):
            raise ValueError(f"direction: must be 'above' or 'below', got {self.direction!r}")
        if self.severity not in get_args(Severity):
            raise ValueError(
                f"severity: must be 'alarm', 'warning' or 'info', got {self.severity!r}"
            )


@dataclass(frozen=True)
class WaterRuleSettings:
    """Everything the rule needs, validated once; errors name the field (``field: ...``)."""

    sample_s: float = 1.0
    """Time between samples within a window (the practice: ≤ 1 s)."""
    window_s: float = 20.0
    """Time a reading averages over (the practice: ≥ 20 s)."""
    idle_interval_s: float = 600.0
    """Between the starts of windows while not observing (the practice: ≤ 10 min)."""
    active_interval_s: float = 300.0
    """Between the starts of windows while observing (≤ 300 s: report every 5 min or faster)."""
    observe_start_cm: float | None = None
    """Level from which observation mode starts; None: never observe."""
    observe_stop_cm: float | None = None
    """Level below which observation mode stops; must be below ``observe_start_cm``."""
    stages: tuple[Stage, ...] = ()
    hysteresis_cm: float = 2.0
    """A stage re-arms only once the level is back past its line by more than this."""
    rise_cm_per_10min: float | None = None
    """Rate of rise that alerts; None: no rise alerts."""
    rise_window_s: float = RATE_BASE_S
    """The rise is measured over the readings of this last stretch of time."""
    rise_min_span_s: float = 300.0
    """No rate from readings spanning less than this (two readings ≥ 5 min apart)."""
    spike_k: float = 3.5
    """Spike threshold in robust standard deviations (1.4826 x MAD)."""
    spike_floor_cm: float = 2.0
    """Deviations from the median up to this are never spikes (gauge accuracy ±1 cm)."""
    min_valid_fraction: float = 0.5
    """A window with fewer valid samples than this fraction gives no reading."""
    proof_of_life_s: float = 86400.0
    """Longest silence while not observing: a report is flushed at least this often."""
    min_plausible_cm: float = -50.0
    max_plausible_cm: float = 2000.0

    def __post_init__(self) -> None:
        for name in (
            "sample_s",
            "window_s",
            "idle_interval_s",
            "active_interval_s",
            "hysteresis_cm",
            "rise_window_s",
            "rise_min_span_s",
            "spike_k",
            "spike_floor_cm",
            "min_valid_fraction",
            "proof_of_life_s",
            "min_plausible_cm",
            "max_plausible_cm",
        ):
            _finite(name, getattr(self, name))
        for name in ("observe_start_cm", "observe_stop_cm", "rise_cm_per_10min"):
            if getattr(self, name) is not None:
                _finite(name, getattr(self, name))
        for name in ("idle_interval_s", "active_interval_s", "proof_of_life_s", "spike_k"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.sample_s <= 1.0:
            raise ValueError(f"sample_s: must be > 0 and ≤ 1 s, got {self.sample_s!r}")
        if self.window_s < self.sample_s:
            raise ValueError(
                f"window_s: must be ≥ sample_s ({self.sample_s}), got {self.window_s!r}"
            )
        if self.active_interval_s > 300.0:
            raise ValueError(
                "active_interval_s: must be ≤ 300 s (report every 5 minutes or faster), "
                f"got {self.active_interval_s!r}"
            )
        if self.active_interval_s > self.idle_interval_s:
            raise ValueError(
                f"active_interval_s: must not exceed idle_interval_s ({self.idle_interval_s}), "
                f"got {self.active_interval_s!r}"
            )
        if self.window_s > self.active_interval_s:
            raise ValueError(
                f"window_s: must fit in active_interval_s ({self.active_interval_s}), "
                f"got {self.window_s!r}"
            )
        if (self.observe_start_cm is None) != (self.observe_stop_cm is None):
            raise ValueError("observe_stop_cm: observe_start_cm and observe_stop_cm go together")
        if self.observe_start_cm is not None and self.observe_stop_cm is not None:
            if self.observe_stop_cm >= self.observe_start_cm:
                raise ValueError(
                    f"observe_stop_cm: must be below observe_start_cm ({self.observe_start_cm}), "
                    f"got {self.observe_stop_cm!r}"
                )
        if self.hysteresis_cm <= 0:
            raise ValueError(
                "hysteresis_cm: must be > 0 (a level hovering at a line would flap), "
                f"got {self.hysteresis_cm!r}"
            )
        if self.rise_cm_per_10min is not None and self.rise_cm_per_10min <= 0:
            raise ValueError(f"rise_cm_per_10min: must be > 0, got {self.rise_cm_per_10min!r}")
        if self.rise_window_s <= 0:
            raise ValueError(f"rise_window_s: must be > 0, got {self.rise_window_s!r}")
        if not 0 < self.rise_min_span_s <= self.rise_window_s:
            raise ValueError(
                f"rise_min_span_s: must be > 0 and ≤ rise_window_s ({self.rise_window_s}), "
                f"got {self.rise_min_span_s!r}"
            )
        if self.spike_floor_cm < 0:
            raise ValueError(f"spike_floor_cm: must be ≥ 0, got {self.spike_floor_cm!r}")
        if not 0 < self.min_valid_fraction <= 1:
            raise ValueError(
                f"min_valid_fraction: must be > 0 and ≤ 1, got {self.min_valid_fraction!r}"
            )
        if self.min_plausible_cm >= self.max_plausible_cm:
            raise ValueError(
                f"max_plausible_cm: must be above min_plausible_cm ({self.min_plausible_cm}), "
                f"got {self.max_plausible_cm!r}"
            )
        if not isinstance(self.stages, tuple):
            raise ValueError(f"stages: must be a tuple of Stage, got {type(self.stages).__name__}")
        names: set[str] = set()
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, Stage):
                raise ValueError(f"stages[{i}]: must be a Stage, got {stage!r}")
            if stage.name in names:
                raise ValueError(f"stages[{i}].name: {stage.name!r} is used twice")
            names.add(stage.name)
            if not self.min_plausible_cm <= stage.level_cm <= self.max_plausible_cm:
                raise ValueError(
                    f"stages[{i}].level_cm: outside the plausible range "
                    f"{self.min_plausible_cm}..{self.max_plausible_cm}, got {stage.level_cm!r}"
                )

    @property
    def expected_samples(self) -> int:
        """Samples a full window holds when sampled every ``sample_s``."""
        return max(1, math.floor(self.window_s / self.sample_s + 1e-6))


# --- what comes out -------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One averaged level: the mean of a window's samples after spike removal."""

    level_cm: float
    t_start: float
    """Time of the window's first sample (or failed read)."""
    t_end: float
    """Time of its last one: the reading's time everywhere in this module."""
    n_samples: int
    """Samples read (numbers), spikes included; the mean uses n_samples - n_rejected_spikes."""
    n_rejected_spikes: int
    spread_cm: float
    """Population standard deviation of the samples kept."""
    n_failures: int = 0
    """Reads that failed during the window."""


@dataclass(frozen=True)
class WindowRejected:
    """A window with too few valid samples: no reading (report it, do not alert)."""

    t_start: float
    t_end: float
    n_samples: int
    n_failures: int
    n_rejected_spikes: int
    n_required: int
    """Valid samples the window needed (``min_valid_fraction`` of the expected count)."""
    reason: str


@dataclass(frozen=True)
class StageAlert:
    """A stage crossed in its alert direction, or (``cleared``) released past its hysteresis."""

    stage: Stage
    level_cm: float
    direction: Crossing
    """Which way the level went: "rising" for an "above" alert or a "below" clear."""
    threshold_cm: float
    """The line crossed: the stage's level for an alert, the re-arm line for a clear."""
    cleared: bool = False

    @property
    def severity(self) -> Severity:
        """The stage's severity for an alert, "info" for a clear."""
        return "info" if self.cleared else self.stage.severity


@dataclass(frozen=True)
class RiseAlert:
    """The level rose at least ``threshold`` cm per 10 minutes."""

    rise_cm_per_10min: float
    level_cm: float
    threshold: float
    """The configured ``rise_cm_per_10min``."""
    severity: Severity = "warning"


@dataclass(frozen=True)
class ObservationStarted:
    """The level reached ``observe_start_cm``: measure and report every active interval."""

    level_cm: float
    threshold_cm: float


@dataclass(frozen=True)
class ObservationStopped:
    """The level fell below ``observe_stop_cm``: back to the idle cadence."""

    level_cm: float
    threshold_cm: float


@dataclass(frozen=True)
class Report:
    """Every plausible reading is telemetry.

    ``urgent``: observing (or just stopped): flush at once.  ``proof_of_life``:
    nothing was flushed for ``proof_of_life_s``: flush this one at once too.
    The rule counts both as flushed; for others the caller says when they left
    the device with :meth:`WaterRule.report_flushed`.
    """

    reading: Reading
    urgent: bool
    proof_of_life: bool = False
    rise_cm_per_10min: float | None = None
    """The current rate of rise, when enough history exists."""


@dataclass(frozen=True)
class ImplausibleReading:
    """A reading outside ``min_plausible_cm..max_plausible_cm``: no alerts, state unchanged."""

    reading: Reading


Outcome: TypeAlias = (
    StageAlert
    | RiseAlert
    | ObservationStarted
    | ObservationStopped
    | Report
    | ImplausibleReading
    | WindowRejected
)


# --- spike removal --------------------------------------------------------


def remove_spikes(values: Sequence[float], *, k: float, floor_cm: float) -> list[float]:
    """The samples that are not spikes (modified z-score; see the module docstring)."""
    if not values:
        return []
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    limit = max(k * MAD_TO_SIGMA * mad, floor_cm)
    return [v for v in values if abs(v - median) <= limit]


# --- the rule -------------------------------------------------------------


@dataclass
class _Window:
    t_start: float
    t_last: float
    values: list[float] = field(default_factory=list)
    failures: int = 0


@dataclass
class _StageState:
    stage: Stage
    armed: bool = True


class WaterRule:
    """State machine over one water-level probe: windows, readings, outcomes."""

    def __init__(self, settings: WaterRuleSettings) -> None:
        self.settings = settings
        self.last_reading: Reading | None = None
        self.rise_cm_per_10min: float | None = None
        """The latest rate of rise, or None while the history is too short."""
        self.windows_abandoned = 0
        """Windows dropped because sampling stopped for a whole window or time went back."""
        self.implausible_readings = 0
        self._observing = False
        self._stages = [_StageState(s) for s in settings.stages]
        self._rise_armed = True
        self._window: _Window | None = None
        self._last_window_start: float | None = None
        self._last_flush: float | None = None
        self._history: deque[tuple[float, float]] = deque()

    # -- state -------------------------------------------------------------

    @property
    def observing(self) -> bool:
        """True from ``observe_start_cm`` until the level falls below ``observe_stop_cm``."""
        return self._observing

    @property
    def current_stage(self) -> Stage | None:
        """The highest "above" stage reached and not yet released, or None."""
        reached = [s.stage for s in self._stages if not s.armed and s.stage.direction == "above"]
        return max(reached, key=lambda st: st.level_cm, default=None)

    @property
    def active_stages(self) -> tuple[Stage, ...]:
        """Every stage (either direction) alerted and not yet released, in settings order."""
        return tuple(s.stage for s in self._stages if not s.armed)

    @property
    def window_open(self) -> bool:
        """A window has samples and is not complete yet."""
        return self._window is not None

    # -- scheduling --------------------------------------------------------

    def next_window_start(self, now: float) -> float:
        """When the next window should begin: ``now`` if it is due, open, first, or time went back.

        Windows start every ``active_interval_s`` while observing, else every
        ``idle_interval_s``, counted from the previous window's first sample.
        """
        last = self._last_window_start
        if self._window is not None or last is None or now < last:
            return now
        s = self.settings
        interval = s.active_interval_s if self._observing else s.idle_interval_s
        return max(now, last + interval)

    # -- sampling ----------------------------------------------------------

    def add_sample(self, value_cm: float, t: float) -> Reading | WindowRejected | None:
        """Feed one sample taken at ``t``; a Reading or WindowRejected when the window is full.

        A non-finite value counts as a failed read.
        """
        if not math.isfinite(value_cm):
            return self.add_failure(t)
        window = self._window_for(t)
        window.values.append(float(value_cm))
        return self._maybe_close(window, t)

    def add_failure(self, t: float) -> Reading | WindowRejected | None:
        """A sample that could not be read at ``t``: it counts against ``min_valid_fraction``."""
        window = self._window_for(t)
        window.failures += 1
        return self._maybe_close(window, t)

    def _window_for(self, t: float) -> _Window:
        window = self._window
        if window is not None and (t < window.t_last or t - window.t_last > self.settings.window_s):
            # Sampling stopped for a whole window, or the clock went back:
            # what was collected no longer describes one moment of the water.
            self.windows_abandoned += 1
            window = None
        if window is None:
            window = _Window(t_start=t, t_last=t)
            self._window = window
            self._last_window_start = t
        window.t_last = t
        return window

    def _maybe_close(self, window: _Window, t: float) -> Reading | WindowRejected | None:
        # Each sample stands for sample_s of time: 20 samples at 1 s cover 20 s.
        s = self.settings
        if t - window.t_start + s.sample_s < s.window_s - 1e-6:
            return None
        self._window = None
        kept = remove_spikes(window.values, k=s.spike_k, floor_cm=s.spike_floor_cm)
        n_spikes = len(window.values) - len(kept)
        attempts = len(window.values) + window.failures
        denominator = max(attempts, s.expected_samples)
        required = max(1, math.ceil(s.min_valid_fraction * denominator - 1e-9))
        if len(kept) < required:
            return WindowRejected(
                t_start=window.t_start,
                t_end=t,
                n_samples=len(window.values),
                n_failures=window.failures,
                n_rejected_spikes=n_spikes,
                n_required=required,
                reason=(
                    f"{len(kept)} valid samples of {attempts} "
                    f"({window.failures} failed reads, {n_spikes} spikes); {required} required"
                ),
            )
        return Reading(
            level_cm=math.fsum(kept) / len(kept),
            t_start=window.t_start,
            t_end=t,
            n_samples=len(window.values),
            n_rejected_spikes=n_spikes,
            spread_cm=statistics.pstdev(kept) if len(kept) > 1 else 0.0,
            n_failures=window.failures,
        )

    # -- evaluation --------------------------------------------------------

    def evaluate(self, reading: Reading) -> list[Outcome]:
        """Update the state with a reading; return what to do, most urgent first.

        Order: observation change, stage alerts and clears (in the order the
        level passed their lines), rise alert, and last the Report.
        """
        s = self.settings
        level = reading.level_cm
        if not (math.isfinite(level) and s.min_plausible_cm <= level <= s.max_plausible_cm):
            self.implausible_readings += 1
            return [ImplausibleReading(reading)]
        out: list[Outcome] = []
        was_observing = self._observing
        if s.observe_start_cm is not None and s.observe_stop_cm is not None:
            if not self._observing and level >= s.observe_start_cm:
                self._observing = True
                out.append(ObservationStarted(level, s.observe_start_cm))
            elif self._observing and level < s.observe_stop_cm:
                self._observing = False
                out.append(ObservationStopped(level, s.observe_stop_cm))
        out.extend(self._stage_outcomes(level))
        rate = self._update_rise(reading)
        if rate is not None and s.rise_cm_per_10min is not None:
            if self._rise_armed and rate >= s.rise_cm_per_10min - _EPS:
                self._rise_armed = False
                out.append(RiseAlert(rate, level, s.rise_cm_per_10min))
            elif not self._rise_armed and rate < s.rise_cm_per_10min / 2:
                self._rise_armed = True
        urgent = was_observing or self._observing
        proof = self.due_proof_of_life(reading.t_end)
        if urgent or proof:
            self._last_flush = reading.t_end
        out.append(Report(reading, urgent=urgent, proof_of_life=proof, rise_cm_per_10min=rate))
        self.last_reading = reading
        return out

    def _stage_outcomes(self, level: float) -> list[StageAlert]:
        h = self.settings.hysteresis_cm
        rising: list[StageAlert] = []
        falling: list[StageAlert] = []
        for st in self._stages:
            line = st.stage.level_cm
            if st.stage.direction == "above":
                if st.armed and level >= line:
                    st.armed = False
                    rising.append(StageAlert(st.stage, level, "rising", line))
                elif not st.armed and level < line - h:
                    st.armed = True
                    falling.append(StageAlert(st.stage, level, "falling", line - h, cleared=True))
            else:
                if st.armed and level <= line:
                    st.armed = False
                    falling.append(StageAlert(st.stage, level, "falling", line))
                elif not st.armed and level > line + h:
                    st.armed = True
                    rising.append(StageAlert(st.stage, level, "rising", line + h, cleared=True))
        # In the order the level passed the lines (stable: ties keep settings order).
        rising.sort(key=lambda a: a.threshold_cm)
        falling.sort(key=lambda a: -a.threshold_cm)
        return rising + falling

    def _update_rise(self, reading: Reading) -> float | None:
        """Record the reading; return the rise in cm per 10 min over the last ``rise_window_s``.

        The level ``rise_window_s`` ago is interpolated between the two readings
        around that moment when they are at most twice ``rise_window_s`` apart;
        otherwise the oldest reading inside the stretch is used if it is at
        least ``rise_min_span_s`` old.  Otherwise there is no rate (None).
        """
        s = self.settings
        t, level = reading.t_end, reading.level_cm
        history = self._history
        if history and t < history[-1][0]:
            history.clear()  # the clock went back: old times mean nothing now
        history.append((t, level))
        t0 = t - s.rise_window_s
        while len(history) >= 2 and history[1][0] <= t0 + _EPS:
            history.popleft()
        rate: float | None = None
        if len(history) < 2:
            pass
        elif history[0][0] <= t0 + _EPS and history[1][0] - history[0][0] <= 2 * s.rise_window_s:
            (ta, la), (tb, lb) = history[0], history[1]
            then = la + (lb - la) * (t0 - ta) / (tb - ta)
            rate = (level - then) * (RATE_BASE_S / s.rise_window_s)
        else:
            # No trustworthy level at t0: the oldest reading inside the stretch.
            ta, la = history[1] if history[0][0] <= t0 + _EPS else history[0]
            if t - ta >= s.rise_min_span_s - _EPS:
                rate = (level - la) * (RATE_BASE_S / (t - ta))
        self.rise_cm_per_10min = rate
        return rate

    # -- proof of life -----------------------------------------------------

    def due_proof_of_life(self, now: float) -> bool:
        """No report flushed for ``proof_of_life_s`` (or none yet, or time went back)."""
        last = self._last_flush
        if last is None or now < last:
            return True
        return now - last >= self.settings.proof_of_life_s

    def report_flushed(self, t: float) -> None:
        """The caller's periodic telemetry left the device at ``t``: restart the wait."""
        self._last_flush = t
