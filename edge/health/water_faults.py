"""Is a water-level sensor misbehaving?  Pure rules judged against the sensor's own noise.

A reading is the water rule's mean of about 20 one-second samples, so a good
sensor on calm water can be as quiet as 0.1 cm: nothing here uses a fixed noise
level.  The detector learns the sensor's **noise floor** from its first
:attr:`WaterFaultParams.learn_s` (12 h) of readings -- a robust scale (MAD) of
third differences, which a tide's or a recession's smooth curve hardly moves --
together with how often a reading repeats the previous one exactly (readings are
rounded, to 1 mm on our probes) and the rounding step itself.  The floor is
learnt again after a ``stuck``, ``noise`` or ``dropout`` episode ends (a sensor
cleaned or replaced).

Tests, each with its own episode (one test's episode never masks another's new
finding; a test's episode ends after it has looked normal for its own recovery
period), on readings about :attr:`WaterFaultParams.period_s` apart:

``spike``    1-3 readings off the line through their neighbours and back again
             (hydrology does not go up and come back within half an hour);
``step``     a jump between the line of the 2 h before and the line of the hour
             after, with no joint between them: a legitimate rise (rain, a gate,
             a tide) bends the line, it does not break it; where the level curves
             too much for two lines (a tide turning), one cubic through the 3 h
             plus a jump between two readings, the jump carried by those two;
``dropout``  a jump to 0 / below, or to a value that then repeats exactly (a rail);
``stuck``    the reading repeats exactly for so long that this sensor's own
             repeat rate makes it a one-in-a-million chance, or varies far less
             than its floor for 6 h;
``noise``    the 3-h noise scale is far above the floor, with and without the window's
             sudden changes (a gate's moves, a storm's front) undone; where a gate works,
             the 3 h after an operation (or, without a gate input, a shift of the level) are
             excused and then the water's roughness at the gate's new setting is allowed for
             (an open outlet stirs the water at the probe);
``drift``    the 24.84-h interquartile mean (two tide cycles: a tide's mean
             without a flood's few hours) moved the same way on each of the last
             two days, the last by more than :attr:`WaterFaultParams.drift_cm_day`
             and the one before by more than half that, at a
             steady or growing rate (not a recession slowing down -- a fall must
             keep 0.8 of its rate, a rise 0.6 --, not a flood's rise speeding up),
             and the window's low water (10 % quantile) moved
             with it (a fouled or sinking sensor moves every level alike).

What a drift test on one gauge cannot tell apart: a real slow rise or fall of a few
centimetres a day, steady for days and moving the low water too (a pond filling, a
paddy left without top-up, the weather's surge on a tide, a long baseflow recession)
looks exactly like a fouled or sinking sensor.  It is told as ``drift`` with the rate,
for a person to compare with a staff gauge; the thresholds (3 cm/day on the last day,
1.5 on the day before) and the shape conditions trade such events against catching
5 cm/day within 3 days (docs/series-faults.md).

Where a gate, sluice or pump moves the level (:attr:`WaterFaultParams.steps_expected`,
the water rule's ``level_steps = "expected"``), sudden steps are real: there is no
``step`` test, the drift test takes every sudden change out of the level first, and a
jump onto a repeated value is a ``dropout`` only after a repeat run as unlikely as
:attr:`WaterFaultParams.gate_flat_chance` (a quiet level after a gate repeats too), and a
spike must come back to the line before it (two moves a reading apart leave the level
elsewhere).  A slipped probe is then not told.  Where the device knows when the gate or
pump is operated (:meth:`WaterFaultDetector.gate_moved`: a gate-position input, a pump's
run signal), only the steps around an operation are excused and a slipped probe is told
(docs/series-faults.md).

Pure: no I/O, no clock; ``t`` comes in as an argument (seconds, monotonic).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge.order_statistics import median, median_rows, quantile

STATE_VERSION = 1
TESTS: tuple[str, ...] = ("spike", "step", "dropout", "stuck", "noise", "drift")
PATTERN: dict[str, str] = {
    "spike": "spike_or_step",
    "step": "spike_or_step",
    "dropout": "dropout",
    "stuck": "stuck",
    "noise": "unusual_shape",
    "drift": "drift",
}
"""What each test tells people (the ``anomaly`` event's ``pattern``)."""
DAY_S = 86400.0
OUTLIER_K = 5.0
"""Third differences this many robust scales off are a step's or a spike's, not noise."""
TIDE_DAY_S = 2 * 44_712.0
"""Two M2 tide cycles (24 h 50 min): the drift test's median window."""


@dataclass(frozen=True)
class Finding:
    """The start of one test's episode."""

    test: str
    pattern: str
    score: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class WaterFaultParams:
    """The detector's thresholds (scores in units of the sensor's noise floor unless said)."""

    period_s: float = 600.0
    """Nominal time between readings; windows below are counted in these."""
    learn_s: float = 12 * 3600.0
    """Readings the noise floor is learnt from (first hours, and after a fault clears)."""
    spike_k: float = 7.0
    """A spike's smallest excursion off its neighbours' line, in floors."""
    step_k: float = 9.0
    """A step between the lines before and after, in floors (or the fits' residual scale)."""
    step_before: int = 12
    step_after: int = 6
    dropout_k: float = 8.0
    stuck_chance: float = 1e-6
    """An exact repeat run as unlikely as this, by the sensor's own repeat rate, is stuck."""
    stuck_min: int = 6
    stuck_max: int = 144
    quiet_ratio: float = 0.125
    """Noise scale below floor times this for :attr:`quiet_n` readings is stuck too."""
    quiet_n: int = 36
    noise_ratio: float = 3.5
    noise_n: int = 18
    flow_rough_max: float = 4.0
    """Where a gate or pump works: the water's own roughness that the noise test allows for (the
    flow through an open outlet stirs the water at the probe), at most this many floors."""
    drift_cm_day: float = 3.0
    drift_first_share: float = 0.5
    """The first of the two days need only move this share of :attr:`drift_cm_day` (a ramp
    that began during it moved it only partly; :attr:`drift_ratio` still bounds the pair)."""
    drift_ratio: tuple[float, float] = (0.6, 3.0)
    """The second day's change over the first's, for a drift: a fouled sensor's ramp keeps
    its rate (the first day's window may hold only part of it: up to 3 x); a level that
    rises slower each day (a filling that levels off), or a flood's rise speeding up more
    than 3 x, is the water."""
    drift_fall_min: float = 0.8
    """For a fall, the second day's over the first's must be at least this: water falls by
    recession, which always slows down (0.8 is a time constant of 4.5 days; a fall that
    slows faster is the water draining, not the sensor)."""
    drift_low_share: float = 0.25
    """The window's low water (its 10 % quantile) must move the same way as the mean, by at
    least this share of the mean's move, on both days: a fouled or sinking sensor shifts
    every level alike, while a tide whose range grows or shrinks (spring to neap) over a
    river's bed, a flood or a storm rise lifts the mean and the highs but barely the lows."""
    steps_expected: bool = False
    """The level is moved by a gate, sluice or pump (the water rule's ``level_steps =
    "expected"``): no ``step`` test; the drift test takes every sudden change out of the
    level; a rail must repeat for as long as ``stuck_chance`` says (not 3 readings)."""
    drift_raw_share: float = 0.25
    """With :attr:`steps_expected`: the level with its steps left in must move at least this
    share of the de-stepped level's two-day move (a sump that fills and is pumped down, a
    channel topped up and let out, has a ramp between steps that the steps undo; a fouled
    sensor moves the reading itself)."""
    gate_flat_chance: float = 1e-3
    """With :attr:`steps_expected`: a jump to a value repeated exactly this unlikely run, by
    the sensor's repeat rate, is a ``dropout`` (a quiet level after a gate also repeats)."""
    gate_window_s: tuple[float, float] = (600.0, 3600.0)
    """With a gate input (:meth:`WaterFaultDetector.gate_moved`): a step whose joint lies from
    this long before a move to this long after it (the gate's travel, the level settling) is
    the gate's, not the probe's."""
    recovery_s: dict[str, float] | None = None
    """Per test: how long it must look normal before its episode ends (defaults below)."""

    def recovery(self, test: str) -> float:
        table = self.recovery_s or {}
        return table.get(test, RECOVERY_S[test])


RECOVERY_S: dict[str, float] = {
    "spike": 6 * 3600.0,
    "step": 6 * 3600.0,
    "dropout": 3600.0,
    "stuck": 3600.0,
    "noise": 6 * 3600.0,
    "drift": DAY_S,
}


def _median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def d3_scale(x: Any) -> float:
    """Robust noise scale (cm per reading) of a series: MAD of third differences / sqrt(20).

    A level change within a reading or two (a gate, a slipped probe) or a spike leaves a
    short run of large third differences (``J, -2J, J`` for a step ``J``) which would lift
    the MAD of a short block by a third or more (two steps in 3 h: twice): such runs --
    differences over :data:`OUTLIER_K` scales off, with the one either side -- are taken
    out and the scale is taken again from the rest.  White noise, however large, is not:
    it lifts the first scale with it."""
    x = [float(v) for v in x]
    if len(x) < 6:
        return float("nan")
    d = [x[i + 3] - 3 * x[i + 2] + 3 * x[i + 1] - x[i] for i in range(len(x) - 3)]
    m = _median(d)
    mad = _median([abs(v - m) for v in d])
    out = [i for i, v in enumerate(d) if abs(v - m) > OUTLIER_K * 1.4826 * mad]
    if out and mad > 0.0:
        drop = {j for i in out for j in range(i - 1, i + 2)}
        kept = [v for i, v in enumerate(d) if i not in drop]
        if len(kept) >= max(5, len(d) // 3):
            m = _median(kept)
            mad = _median([abs(v - m) for v in kept])
    return 1.4826 * mad / math.sqrt(20.0)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60.0)
    if minutes < 60:
        return f"{minutes} min"
    h, m = divmod(minutes, 60)
    if h >= 48 and m == 0:
        return f"{h // 24} days" if h % 24 == 0 else f"{h} h"
    return f"{h} h {m} min" if m else f"{h} h"


def _line(y: Any) -> tuple[float, float, float]:
    """Least-squares line through ``y`` at 0..n-1: (intercept, slope, robust residual scale)."""
    y = [float(v) for v in y]
    n = len(y)
    mi = (n - 1) / 2.0
    my = sum(y) / n
    sxx = sum((i - mi) ** 2 for i in range(n))
    slope = sum((i - mi) * (v - my) for i, v in enumerate(y)) / sxx
    icept = my - slope * mi
    resid = [abs(v - (icept + slope * i)) for i, v in enumerate(y)]
    return icept, slope, 1.4826 * _median(resid)


def _quad_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares parabola ``c0 + c1 x + c2 x^2`` through the points."""
    a = np.vander(np.asarray(xs, float), 3, increasing=True)
    c = np.linalg.lstsq(a, np.asarray(ys, float), rcond=None)[0]
    return float(c[0]), float(c[1]), float(c[2])


class WaterFaultDetector:
    """Faults of one water-level sensor's readings; see the module's docstring."""

    def __init__(self, params: WaterFaultParams | None = None) -> None:
        self.p = params or WaterFaultParams()
        n_hist = math.ceil((2 * DAY_S + TIDE_DAY_S) / self.p.period_s) + 8
        self.t_hist: deque[float] = deque(maxlen=n_hist)
        self.x_hist: deque[float] = deque(maxlen=n_hist)
        self.seg_start: float | None = None
        """Start of the current run of readings without a gap (short tests look only here)."""
        self.floor: float | None = None
        self.repeat_p: float | None = None
        self.quantum: float = 0.0
        self.learn_from: float | None = None
        self.repeats = 0
        self.episodes: dict[str, dict[str, Any]] = {}
        self._drift_last: tuple[float, tuple[float, float, str] | None] | None = None
        self.dropped_to: float | None = None
        """The value a dropout went to, while the reading stays there."""
        self.steps: list[tuple[float, float]] = []
        """``(t, jump)`` of steps told: the drift test takes them out of the level."""
        self.gate_input = False
        """Whether a gate input has ever been given (:meth:`gate_moved`)."""
        self.gate_times: list[float] = []
        """When the gate, sluice or pump was last operated (the last few hours)."""
        self.flow_scale: float | None = None
        """The water's roughness since the gate's last setting (the noise scale of the first 3 h
        after the last operation); the noise test allows for it."""
        self.flow_op: float | None = None
        """The operation :attr:`flow_scale` was taken after."""

    # -- the contract --------------------------------------------------------------------

    @property
    def active(self) -> list[str]:
        return [k for k in TESTS if self.episodes.get(k, {}).get("active")]

    def add(self, t: float, value: float) -> list[Finding]:
        """One reading (cm) at ``t`` (s); the findings that start an episode now."""
        value = float(value)
        if not math.isfinite(value):
            return []
        last_t = self.t_hist[-1] if self.t_hist else None
        if last_t is not None and t <= last_t:
            return []  # not monotonic: ignored
        if last_t is None or t - last_t > 2.5 * self.p.period_s:
            self.seg_start = t
            self.repeats = 0
        elif value == self.x_hist[-1]:
            self.repeats += 1
        else:
            self.repeats = 0
        self.t_hist.append(t)
        self.x_hist.append(value)
        if self.floor is None and self.learn_from is None:
            self.learn_from = t
        self._learn(t)
        fired: dict[str, tuple[float, float, str] | None] = {k: None for k in TESTS}
        seg = self._segment()
        fired["stuck"] = self._stuck(seg)
        fired["dropout"] = self._dropout(seg)
        if self.floor is not None:
            if self.p.steps_expected:
                self._level_shift(seg)
            fired["spike"] = self._spike(seg)
            if not self.p.steps_expected:
                fired["step"] = self._step(seg)
            fired["noise"] = self._noise(seg)
        fired["drift"] = self._drift(t)
        if self.episodes.get("dropout", {}).get("active") or fired["dropout"]:
            fired["stuck"] = None  # the dropout already says the reading sits still
            fired["step"] = None
        out = []
        for test in TESTS:
            f = self._episode(test, fired[test], t)
            if f is not None:
                out.append(f)
        return out

    def gate_moved(self, t: float) -> None:
        """The gate, sluice or pump that moves this level was operated at ``t`` (a gate-position
        input, a pump's run signal).  From the first call on, a step whose joint lies within
        :attr:`WaterFaultParams.gate_window_s` of such a time is the water's, not told (and
        taken out before the drift test, as every sudden change is where steps are expected);
        any other step is still a ``step``: a slipped or re-mounted probe is told even where
        a gate works.  Near a move, a jump onto a repeated value and a spike are judged as
        where steps are expected."""
        self.gate_input = True
        self._note_operation(float(t))

    def _note_operation(self, t: float) -> None:
        """An operation at ``t`` (the gate input's, or a shift of the level taken for one
        by :meth:`_level_shift`; the configuration never has both), keeping the last 6 h."""
        self.gate_times = [g for g in self.gate_times if g > t - 6 * 3600.0] + [t]

    def _near_gate(self, t: float) -> bool:
        lo, hi = self.p.gate_window_s
        return any(g - lo <= t <= g + hi for g in self.gate_times)

    def _gated_now(self) -> bool:
        """Judge as where steps are expected: configured so, or a gate moved in the last 3 h."""
        if self.p.steps_expected:
            return True
        if not self.t_hist:
            return False
        t = self.t_hist[-1]
        return any(t - 3 * 3600.0 <= g <= t + self.p.gate_window_s[0] for g in self.gate_times)

    def state(self) -> dict[str, Any]:
        """JSON-serialisable: the learnt floor, the history and each test's episode."""
        return {
            "version": STATE_VERSION,
            "params": {k: v for k, v in asdict(self.p).items() if k != "recovery_s"},
            "t": list(self.t_hist),
            "x": list(self.x_hist),
            "seg_start": self.seg_start,
            "floor": self.floor,
            "repeat_p": self.repeat_p,
            "quantum": self.quantum,
            "learn_from": self.learn_from,
            "repeats": self.repeats,
            "episodes": self.episodes,
            "dropped_to": self.dropped_to,
            "steps": [list(v) for v in self.steps],
            "gate_input": self.gate_input,
            "gate_times": list(self.gate_times),
            "flow_scale": self.flow_scale,
            "flow_op": self.flow_op,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], params: WaterFaultParams | None = None, *, shift_s: float = 0.0
    ) -> WaterFaultDetector:
        """A detector that goes on from ``state``; ``shift_s`` is added to every kept time
        (a restarted process's monotonic clock starts elsewhere).  Raises ``ValueError``
        on a state this version cannot read."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"water fault state version {state.get('version')!r}")
        det = cls(params)
        try:
            ts = [float(v) + shift_s for v in state["t"]]
            xs = [float(v) for v in state["x"]]
            if len(ts) != len(xs) or not all(map(math.isfinite, ts + xs)):
                raise ValueError("history malformed")
            det.t_hist.extend(ts)
            det.x_hist.extend(xs)

            def shifted(v: Any) -> float | None:
                return None if v is None else float(v) + shift_s

            det.seg_start = shifted(state["seg_start"])
            det.floor = None if state["floor"] is None else float(state["floor"])
            det.repeat_p = None if state["repeat_p"] is None else float(state["repeat_p"])
            det.quantum = float(state["quantum"])
            det.learn_from = shifted(state["learn_from"])
            det.repeats = int(state["repeats"])
            det.dropped_to = None if state["dropped_to"] is None else float(state["dropped_to"])
            det.steps = [(float(a) + shift_s, float(b)) for a, b in state["steps"]]
            det.gate_input = bool(state.get("gate_input", False))  # absent before gate inputs
            det.gate_times = [float(g) + shift_s for g in state.get("gate_times", [])]
            # absent before the water's roughness was allowed for: learnt again
            fs = state.get("flow_scale")
            det.flow_scale = None if fs is None else float(fs)
            det.flow_op = shifted(state.get("flow_op"))
            for test, ep in dict(state["episodes"]).items():
                if test in TESTS:
                    det.episodes[test] = {
                        "active": bool(ep.get("active")),
                        "normal_since": shifted(ep.get("normal_since")),
                    }
        except (KeyError, TypeError) as exc:
            raise ValueError(f"water fault state malformed: {exc}") from exc
        return det

    # -- learning ------------------------------------------------------------------------

    def _learn(self, t: float) -> None:
        if self.learn_from is None or t - self.learn_from < self.p.learn_s:
            return
        if any(self.episodes.get(k, {}).get("active") for k in ("stuck", "noise", "dropout")):
            self.learn_from = t  # not from a faulty sensor: after the episode
            return
        ts = np.fromiter(self.t_hist, float)
        xs = np.fromiter(self.x_hist, float)
        x = xs[ts >= self.learn_from]
        if len(x) < 0.6 * self.p.learn_s / self.p.period_s:
            self.learn_from = t  # too many gaps: try again
            return
        d = np.diff(x)
        nz = np.abs(d[np.abs(d) > 1e-9])
        self.quantum = float(nz.min()) if len(nz) else 0.0
        est = d3_scale(x)
        self.floor = max(est, 0.3 * self.quantum, 0.01)
        self.repeat_p = float((np.sum(np.abs(d) <= 1e-9) + 1) / (len(d) + 2))
        self.learn_from = None

    def _relearn(self, t: float) -> None:
        self.learn_from = t

    # -- the tests -----------------------------------------------------------------------

    def _segment(self) -> np.ndarray:
        n = 0
        for tt in reversed(self.t_hist):
            if self.seg_start is None or tt < self.seg_start or n >= 48:
                break
            n += 1
        k = len(self.x_hist)
        return np.array([self.x_hist[i] for i in range(k - n, k)], dtype=np.float64)

    def _local_scale(self, seg: np.ndarray) -> float:
        assert self.floor is not None
        if len(seg) >= 12:
            return max(self.floor, d3_scale(seg[-24:]))
        return self.floor

    def _stuck_needed(self) -> int:
        if self.repeat_p is None:
            return 18
        p = min(self.repeat_p, 0.999)
        need = math.ceil(math.log(self.p.stuck_chance) / math.log(p)) if p > 0 else 1
        return int(min(max(need, self.p.stuck_min), self.p.stuck_max))

    def _stuck(self, seg: np.ndarray) -> tuple[float, float, str] | None:
        need = self._stuck_needed()
        if self.repeats >= need:
            span = self.repeats * self.p.period_s
            floor = "not learnt yet" if self.floor is None else f"{self.floor:.2f} cm"
            return (float(self.repeats), float(need - 1),
                    f"level repeats {seg[-1]:.2f} cm exactly for {_duration(span)} "
                    f"(this sensor's noise floor {floor})")  # fmt: skip
        if self.floor is None or self.floor < 2.0 * self.quantum or len(seg) < self.p.quiet_n:
            return None
        scale = d3_scale(seg[-self.p.quiet_n :])
        limit = self.floor * self.p.quiet_ratio
        if scale < limit:
            span = self.p.quiet_n * self.p.period_s
            return (self.floor / max(scale, 1e-6), 1.0 / self.p.quiet_ratio,
                    f"level varies by {scale:.3f} cm for {_duration(span)} while this "
                    f"sensor's noise floor is {self.floor:.2f} cm")  # fmt: skip
        return None

    def _flat_needed(self) -> int:
        """Readings at one value after a jump that make a rail: 3, or where steps are
        expected as many as make a repeat run this unlikely by the sensor's repeat rate."""
        if not self._gated_now():
            return 3
        p = min(self.repeat_p if self.repeat_p is not None else 0.5, 0.99)
        need = math.ceil(math.log(self.p.gate_flat_chance) / math.log(p)) + 1 if p > 0 else 3
        return int(min(max(need, 3), self.p.stuck_min + 1))

    def _dropout(self, seg: np.ndarray) -> tuple[float, float, str] | None:
        if self.dropped_to is not None and len(seg):
            if seg[-1] == self.dropped_to or (self.dropped_to <= 0.0 and seg[-1] <= 0.0):
                return (0.0, self.p.dropout_k, "still there")  # the episode goes on
            self.dropped_to = None
        if len(seg) < 3 + 6:
            return None
        low = bool(np.all(seg[-3:] <= 0.0))
        k = 3 if low else self._flat_needed()
        if len(seg) < k + 6:
            return None
        post = seg[-k:]
        flat = bool(np.all(post == post[0]))
        if not (flat or low):
            return None
        before = seg[-k - 12 : -k]
        icept, slope, resid = _line(before)
        expect = icept + slope * len(before)
        scale = max(self.floor or 0.0, resid, 0.3 * self.quantum, 0.05)
        jump = abs(float(post[0]) - expect)
        score = jump / scale
        if score > self.p.dropout_k and (low or jump > 1.0):
            self.dropped_to = float(post[0])
            what = "to 0 or below" if low else f"to {post[0]:.1f} cm and stays exactly there"
            return (score, self.p.dropout_k,
                    f"level jumped {jump:.1f} cm {what} (expected about {expect:.1f} cm; "
                    f"noise {scale:.2f} cm)")  # fmt: skip
        return None

    def _spike(self, seg: np.ndarray) -> tuple[float, float, str] | None:
        """1-3 readings off a parabola through the 4 before and the 2 after them, and outside
        the range of their two neighbours: the level after is back where the level before
        was heading (a flood's peak leaves a tail; a rise's onset lies between)."""
        scale = self._local_scale(seg)
        gated = self._gated_now()
        best: tuple[float, int, float] | None = None
        for w in (1, 2, 3):
            if len(seg) < w + 6 + 4:
                continue
            y = [float(v) for v in seg[-(w + 6) :]]
            xs = [-4.0, -3.0, -2.0, -1.0, float(w), float(w + 1)]
            ys = y[:4] + y[-2:]
            c0, c1, c2 = _quad_fit(xs, ys)
            fit = max(abs(v - (c0 + c1 * x + c2 * x * x)) for x, v in zip(xs, ys, strict=True))
            dev = [y[4 + j] - (c0 + c1 * j + c2 * j * j) for j in range(w)]
            if not (all(d > 0 for d in dev) or all(d < 0 for d in dev)):
                continue
            m = min(abs(d) for d in dev)
            if fit > 3.0 * scale + 0.1 * m:
                continue  # the neighbours do not lie on one smooth curve
            lo, hi = min(y[3], y[4 + w]), max(y[3], y[4 + w])
            outside = min(max(v - hi, lo - v) for v in y[4 : 4 + w])
            if outside < 0.5 * m:
                continue  # between its neighbours: a rise or fall bending, not a spike
            if gated and not self._back(y, w, scale, m):
                continue  # a gate moved the level twice: down and up to somewhere else
            score = m / scale
            if best is None or score > best[0]:
                best = (score, w, max(dev, key=abs))
        if best is None or best[0] <= self.p.spike_k:
            return None
        score, w, worst = best
        return (score, self.p.spike_k,
                f"{w} reading(s) {worst:+.1f} cm off the level and back ({score:.0f} x the local "
                f"noise {scale:.2f} cm)")  # fmt: skip

    @staticmethod
    def _back(y: list[float], w: int, scale: float, m: float) -> bool:
        """Where gates move the level: are the 2 readings after ``w`` off-line ones back on
        the line of the 4 before (within 3 x ``scale`` + 20 % of the excursion ``m``)?  Two
        gate moves a reading or two apart leave the level elsewhere; a sensor's spike comes
        back."""
        i0, s0, _ = _line(y[:4])
        pred = (i0 + s0 * (4 + w + k) for k in range(2))
        return max(abs(v - p) for v, p in zip(y[-2:], pred, strict=True)) <= 3.0 * scale + 0.2 * m

    def _step(self, seg: np.ndarray) -> tuple[float, float, str] | None:
        nb, na = self.p.step_before, self.p.step_after
        if len(seg) < nb + na:
            return None
        post = seg[-na:]
        pre = seg[-na - nb : -na]
        i0, s0, r0 = _line(pre)
        i1, s1, r1 = _line(post)
        # joint between c-1 and c (c: the first reading after): left line at nb-1+u,
        # right line at u-1 for u in [0, 1]
        j_prev = (i1 - s1) - (i0 + s0 * (nb - 1))
        j_at = i1 - (i0 + s0 * nb)
        assert self.floor is not None
        score = 0.0
        if j_prev * j_at > 0:
            jump = min(abs(j_prev), abs(j_at)) * (1 if j_at > 0 else -1)
            scale = max(self.floor, r0, r1, 0.3 * self.quantum)
            score = abs(jump) / scale
        if score <= self.p.step_k:
            curved = self._curved_step(seg[-na - nb :], nb)
            if curved is None:
                return None
            score, jump, scale = curved
        if self.gate_input and self._near_gate(self.t_hist[-na]):
            return None  # the gate's step (the drift test takes every sudden change out)
        if not self.episodes.get("step", {}).get("active"):
            self.steps.append((self.t_hist[-na], jump))
        return (score, self.p.step_k,
                f"level stepped {jump:+.1f} cm between two readings with no rise between "
                f"({score:.0f} x the noise {scale:.2f} cm)")  # fmt: skip

    def _curved_step(self, y: np.ndarray, c: int) -> tuple[float, float, float] | None:
        """A step at reading ``c`` of ``y`` on a curving level (a tide turning within the
        3 h: two lines do not fit it): one cubic through all the readings plus a jump at
        ``c`` (least squares).  The jump counts when it is over :attr:`WaterFaultParams.step_k`
        x max(floor, the fit's robust residual scale) and the change between the two
        readings at the joint carries most of it (a bend spreads over several)."""
        assert self.floor is not None
        n = len(y)
        u = (np.arange(n, dtype=np.float64) - (c - 0.5)) / n
        a = np.column_stack((np.ones(n), u, u * u, u**3, (np.arange(n) >= c).astype(float)))
        coef = np.linalg.lstsq(a, y, rcond=None)[0]
        jump = float(coef[4])
        resid = y - a @ coef
        scale = max(self.floor, 1.4826 * median(np.abs(resid)) * 1.5, 0.3 * self.quantum)
        score = abs(jump) / scale
        if score <= self.p.step_k:
            return None
        smooth = a[:, :4] @ coef[:4]
        d_joint = float(y[c] - y[c - 1]) - float(smooth[c] - smooth[c - 1])
        if d_joint * jump <= 0 or abs(d_joint) < 0.7 * abs(jump):
            return None
        return score, jump, scale

    def _jumps_out(self, y: np.ndarray) -> np.ndarray:
        """``y`` with its sudden changes undone: a change between two readings over 6 sigmas
        of a difference by the floor, over 3 rounding steps and over 13 by the window's own
        median difference (a noisy sensor's own differences stay in).  The noise test takes
        the smaller of the scales with and without them: a gate's moves (several in 3 h, or
        one over two readings, lift the MAD of third differences past the outlier cut of
        :func:`d3_scale`) are then not read as noise, nor is a rise over several readings
        (undoing only its largest changes leaves a zigzag, but the plain scale is low); a
        sensor that has turned noisy lifts both."""
        assert self.floor is not None
        d = np.diff(y)
        if not len(d):
            return y
        a = np.abs(d)
        least = max(6.0 * math.sqrt(2.0) * self.floor, 3.0 * self.quantum)
        big = a > max(least, 9.0 * median(a))
        if big.any() and not big.all():  # again without them: several moves lift the median
            big = a > max(least, 9.0 * median(a[~big]))
        jumps = np.where(big, d, 0.0)
        if not jumps.any():
            return y
        out: np.ndarray = y - np.concatenate(([0.0], np.cumsum(jumps)))
        return out

    def _noise(self, seg: np.ndarray) -> tuple[float, float, str] | None:
        assert self.floor is not None
        if len(seg) < self.p.noise_n:
            return None
        window = seg[-self.p.noise_n :]
        scale = d3_scale(window)
        self._learn_flow(scale)
        ref, excuse = self._flow_ref()
        if scale / ref > self.p.noise_ratio:  # a gate's moves, not the sensor?
            scale = min(scale, d3_scale(self._jumps_out(window)))
        ratio = scale / ref
        if excuse and ratio <= 2.0 * self.p.noise_ratio:
            return None  # the gate was operated within the window: the water is settling
        if ratio > self.p.noise_ratio and scale - ref > self.quantum:
            span = self.p.noise_n * self.p.period_s
            of = (f"this sensor's floor of {ref:.2f} cm" if ref <= self.floor else
                  f"the water's own {ref:.2f} cm at this gate's setting (this sensor's floor "
                  f"{self.floor:.2f} cm)")  # fmt: skip
            return (ratio, self.p.noise_ratio,
                    f"reading-to-reading noise {scale:.2f} cm over {_duration(span)}, "
                    f"{ratio:.1f} x {of}")  # fmt: skip
        return None

    def _last_operation(self) -> float | None:
        """The last gate operation up to the latest reading, where a gate works (a gate input,
        or steps expected: :meth:`_level_shift`); ``None`` elsewhere or before the first."""
        if not (self.gate_input or self.p.steps_expected):
            return None
        t = self.t_hist[-1]
        return max((g for g in self.gate_times if g <= t), default=None)

    def _learn_flow(self, scale: float) -> None:
        """The roughness of the gate's new setting: the noise scale of the first window
        wholly after an operation (``scale``), kept until the next operation."""
        last = self._last_operation()
        span = self.p.noise_n * self.p.period_s
        if last is not None and self.t_hist[-1] - last >= span and last != self.flow_op:
            self.flow_op, self.flow_scale = last, scale

    def _flow_ref(self) -> tuple[float, bool]:
        """What the noise test compares with, and whether to excuse it now.  Where no gate
        works: the floor.  Where one does: for the 3 h after an operation the water settles
        (excused unless twice as noisy as the test's threshold); then the roughness of the
        gate's new setting (:meth:`_learn_flow`) is allowed for, at most
        :attr:`WaterFaultParams.flow_rough_max` floors, until the next operation."""
        assert self.floor is not None
        last = self._last_operation()
        if last is not None and self.t_hist[-1] - last < self.p.noise_n * self.p.period_s:
            return self.floor, True
        if not (self.gate_input or self.p.steps_expected) or self.flow_scale is None:
            return self.floor, False  # (kept past the 6 h of operation times it remembers)
        return max(self.floor, min(self.flow_scale, self.p.flow_rough_max * self.floor)), False

    def _level_shift(self, seg: np.ndarray) -> None:
        """Where steps are expected and no input says when the gate moves: a shift of the level
        between the hour before a reading and the hour from it (medians: over 2 cm and 10
        floors, and over 4 x the spread of the hour after, so that a noisy sensor's own swings
        are not one) is taken as an operation, for the noise test only."""
        assert self.floor is not None
        least = max(2.0, 10.0 * self.floor)
        if len(seg) < 12 or float(seg[-12:].max() - seg[-12:].min()) <= least:
            return  # no shift that large fits in the range: the usual case, cheaply
        t = self.t_hist[-6]
        if any(t - 3600.0 < g <= t for g in self.gate_times):
            return
        after = seg[-6:]
        shift = abs(median(after) - median(seg[-12:-6]))
        spread = 1.4826 * median(np.abs(after - median(after)))
        if shift > max(least, 4.0 * spread):
            self._note_operation(t)

    def _median_at(
        self, ts: np.ndarray, xs: np.ndarray, end: float
    ) -> tuple[float, float, float] | None:
        """The window's (10 % quantile, interquartile mean, 90 % quantile)."""
        sel = (ts > end - TIDE_DAY_S) & (ts <= end)
        if np.sum(sel) < 0.7 * TIDE_DAY_S / self.p.period_s:
            return None
        v = xs[sel]
        q10, lo, hi, q90 = quantile(v, (0.1, 0.25, 0.75, 0.9))
        iqm = float(v[(v >= lo) & (v <= hi)].mean())  # interquartile mean: see the module
        return float(q10), iqm, float(q90)

    def _destepped(self, ts: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """The level with every sudden change taken out (a gate's steps are not a drift): a
        change between consecutive readings over 6 noise sigmas of a difference -- by the
        floor and by the differences of the 4 h around it (a noisy sensor's own differences
        are not taken out: they would add up to a walk) -- and over 3 rounding steps is
        undone from there on.  A spike's way out and back cancel."""
        floor = self.floor if self.floor is not None else d3_scale(xs[-144:])
        if not math.isfinite(floor) or len(xs) < 32:
            return xs
        d = np.diff(xs)
        around = median_rows(
            np.lib.stride_tricks.sliding_window_view(np.pad(np.abs(d), 12, mode="edge"), 25)
        )  # 0.674 sigma of a difference
        cut = np.maximum(max(6.0 * math.sqrt(2.0) * floor, 3.0 * self.quantum, 0.3), 9.0 * around)
        jumps = np.where(np.abs(d) > cut, d, 0.0)
        out: np.ndarray = xs - np.concatenate(([0.0], np.cumsum(jumps)))
        return out

    def _drift(self, t: float) -> tuple[float, float, str] | None:
        if self._drift_last is not None and t - self._drift_last[0] < 3600.0 - 1.0:
            return self._drift_last[1]  # judged hourly: the medians move slowly
        fired = self._drift_now(t)
        self._drift_last = (t, fired)
        return fired

    def _drift_now(self, t: float) -> tuple[float, float, str] | None:
        if not self.t_hist or t - self.t_hist[0] < 2 * DAY_S + TIDE_DAY_S - 2 * self.p.period_s:
            return None
        ts = np.fromiter(self.t_hist, float)
        xs = np.fromiter(self.x_hist, float)
        self.steps = [(tc, j) for tc, j in self.steps if tc >= ts[0]]
        for tc, j in self.steps:
            xs[ts >= tc] -= j  # a step told is not a drift
        raw = xs
        destep = self.p.steps_expected or self.gate_input
        if destep:
            xs = self._destepped(ts, xs)
        m0 = self._median_at(ts, xs, t - 2 * DAY_S)
        m1 = self._median_at(ts, xs, t - DAY_S)
        m2 = self._median_at(ts, xs, t)
        if m0 is None or m1 is None or m2 is None:
            return None
        a, b = m1[1] - m0[1], m2[1] - m1[1]
        if a * b <= 0:
            return None
        rate = abs(b)
        if rate <= self.p.drift_cm_day or abs(a) <= self.p.drift_first_share * self.p.drift_cm_day:
            return None
        lo, hi = self.p.drift_ratio
        if b < 0:
            lo = max(lo, self.p.drift_fall_min)
        if not lo <= b / a <= hi:
            return None  # slowing down (a recession) or speeding up (a flood's rise)
        low_a, low_b = m1[0] - m0[0], m2[0] - m1[0]
        if low_a / a < self.p.drift_low_share or low_b / b < self.p.drift_low_share:
            return None  # the low water stayed: the water moved, not the sensor
        if destep:
            r0, r2 = self._median_at(ts, raw, t - 2 * DAY_S), self._median_at(ts, raw, t)
            if r0 is None or r2 is None or (r2[1] - r0[1]) / (a + b) < self.p.drift_raw_share:
                return None  # the gate's or pump's steps undo the ramp: a fill-and-pump cycle
        sign = 1 if b > 0 else -1
        return (rate, self.p.drift_cm_day,
                f"daily level (interquartile mean) moved {sign * abs(a):+.1f} then "
                f"{sign * abs(b):+.1f} cm on two days running (a fouled or sinking sensor, "
                f"or a real slow {'rise' if sign > 0 else 'fall'}: compare with a staff "
                "gauge)")  # fmt: skip

    # -- episodes ------------------------------------------------------------------------

    def _episode(
        self, test: str, fired: tuple[float, float, str] | None, t: float
    ) -> Finding | None:
        ep = self.episodes.setdefault(test, {"active": False, "normal_since": None})
        if ep["active"]:
            if fired is not None:
                ep["normal_since"] = None
            elif ep["normal_since"] is None:
                ep["normal_since"] = t
            elif t - ep["normal_since"] >= self.p.recovery(test):
                ep["active"], ep["normal_since"] = False, None
                if test in ("stuck", "noise", "dropout"):
                    self._relearn(t)
            return None
        if fired is None:
            return None
        ep["active"], ep["normal_since"] = True, None
        score, threshold, detail = fired
        return Finding(test=test, pattern=PATTERN[test], score=round(score, 3),
                       threshold=threshold, detail=detail)  # fmt: skip
