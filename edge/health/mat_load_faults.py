"""Is a cot's mat misbehaving?  Pure rules on the total load, judged by physics.

The mat gives the child's total load (kg) about twice a second.  What a child,
a blanket or a member of staff can do to that number, and what only a broken
sensor does:

- A child lying still weighs the same all the time: breathing moves load
  between cells, it does not change the total.  So the **level may change only
  across a disturbance** -- motion, a hand, a blanket, the child lifted -- and
  people move at human speed: their changes take several readings and wobble.
  A level that moves while nothing disturbs it (``drift``), or jumps within one
  reading from a calm level to another calm one and stays there (``step``, or
  ``dropout`` when it lands on an empty mat), is the sensor.
- A live sensor always has noise: the same value repeated exactly for so long
  that this mat's own repeat rate makes it a one-in-a-hundred-million chance is
  ``stuck``.
- Patting a child (tonton) and restless sleep add load that comes and goes and
  is rhythmic or smooth; a sensor's noise is white.  The ``noise`` scale is the
  smallest half mean square difference over lags of 1-8 readings (the
  variogram's floor): a rhythm returns to itself at some lag and a smooth
  movement is small at short lags, so only white noise lifts every lag.
- ``spike``: readings far off with calm, agreeing neighbours on both sides
  (a body's twitch is smaller, a pat is one of many), ``spike_repeats`` (3) of
  them within ``spike_window_s`` (5 min): one glitch hides no child and raises no
  false alarm, so it is not worth a staff member's attention; a connector that
  keeps glitching is.

Every threshold is in units of this mat's own noise floor (the 20th percentile
of 20-s noise blocks over the last 2 h, kept across restarts) with a floor in
kg.  Tests each have their own episode: one test's episode never masks another
test's new finding; an episode ends when its test has looked normal for its
own recovery period.

Thresholds and why (tuned on ``models.anomaly.mat_scenes``; figures there):

- a **jump** is a difference between readings over 6 noise sigmas of a
  difference (at least 0.12 kg), or one over 4 readings (2 s: a hand's or a
  blanket's smooth ramp, not a sensor's drift over minutes); a **disturbance**
  is a run of jumps that ends
  after 5 s without one.  A disturbance of one jump between calm levels whose
  readings either side sit on their levels (within 5 sigma: no reading half
  way) is abrupt; a short one that ends where it began (a twitch) changes
  nothing; anything else is handled (explained).
- after a handled disturbance the level settles for 120 s (foam and sensor
  creep, a child settling) before a new reference is taken; changes while
  settling are excused.
- ``step``: an abrupt change of at least max(0.35 kg, 10 sigma) that holds
  20 s without the load returning; ``dropout`` the same onto < 0.75 kg (the
  occupancy's off threshold).  A child taken out of a cot is lifted: hands
  under it first, then a fall over a second or two -- handled, not abrupt.
- ``drift``: the level's unexplained change (in calm, summed over the calm
  stretches of the last 30 min) beyond max(0.4 kg, 10 sigma) for 30 s.
- ``noise``: 80 % of the last fifteen 20-s noise blocks (5 min) over 4.5x the
  floor (patting lifts some blocks for minutes; a noisy sensor lifts them all).
- ``spike``: readings over max(1.5 kg, 25 sigma, 12 % of the level) off, three of
  them within 5 min (a lone spike was the main source of false events on restless
  sleep in the independent series -- see docs/series-faults.md; this rule was
  changed after seeing that figure, so the mat's spike figures there are not blind).

Pure: no I/O, no clock; ``t`` comes in as an argument (seconds, monotonic).
Readings faster than :attr:`MatLoadParams.period_s` are thinned to it; a gap
over :attr:`MatLoadParams.gap_s` starts the level tests afresh (the noise floor
and repeat rate are kept).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

import numpy as np

from edge import order_statistics as order
from edge.health.water_faults import PATTERN, Finding

STATE_VERSION = 1
TESTS: tuple[str, ...] = ("stuck", "spike", "step", "dropout", "drift", "noise")
"""The tests; what each tells people is the water rules' ``PATTERN`` (the same tests)."""
_MED_CHI2_1 = 0.4549
"""Median of a chi-square with one degree of freedom: median(d^2) = 0.455 var(d)."""


@dataclass(frozen=True)
class MatLoadParams:
    """The detector's thresholds; sigma is this mat's noise floor (kg per reading)."""

    period_s: float = 0.5
    gap_s: float = 5.0
    empty_kg: float = 0.75
    default_sigma_kg: float = 0.03
    min_sigma_kg: float = 0.003
    jump_sigmas: float = 6.0
    jump_min_kg: float = 0.12
    slow_lag: int = 4
    edge_sigmas: float = 5.0
    calm_end_readings: int = 10
    level_readings: int = 20
    settle_s: float = 120.0
    step_sigmas: float = 10.0
    step_min_kg: float = 0.35
    step_hold_s: float = 20.0
    put_on_max_kg: float = 1.2
    drift_sigmas: float = 10.0
    drift_min_kg: float = 0.4
    drift_hold_s: float = 30.0
    drift_horizon_s: float = 1800.0
    spike_sigmas: float = 25.0
    spike_min_kg: float = 1.5
    spike_fraction: float = 0.12
    spike_recover_s: float = 300.0
    spike_repeats: int = 3
    spike_window_s: float = 300.0
    block_readings: int = 40
    max_lag: int = 8
    recent_blocks: int = 15
    recent_quantile: float = 0.2
    history_blocks: int = 360
    floor_quantile: float = 0.2
    min_history_blocks: int = 3
    noise_ratio: float = 4.5
    noise_recover_ratio: float = 2.0
    stuck_min_readings: int = 20
    stuck_max_readings: int = 1200
    stuck_chance: float = 1e-8
    stuck_recover_readings: int = 10


def block_noise(values: list[float], max_lag: int) -> float:
    """Noise of a block (kg, per reading): the smallest of three robust estimates that
    white noise of sigma all put at about sigma, and that what people do lifts only some of:

    - the variogram's floor: sqrt of the smallest robust half mean square difference
      over lags 1..max_lag (a rhythm returns to itself at some lag, a smooth movement
      is small at short lags);
    - the narrower side of the distribution about its median (10 % and 90 % points):
      pats and hands only ever press down, so they widen one side;
    - the spread of the minima of three readings in a row: pats ride on a flat floor.
    """
    x = np.asarray(values, dtype=float)
    if len(x) < 4:
        return 0.0
    best = math.inf
    for k in range(1, min(max_lag, len(x) - 1) + 1):
        d = x[k:] - x[:-k]
        best = min(best, order.median(d * d) / (2.0 * _MED_CHI2_1))
    vario = math.sqrt(best)
    mid = order.median(x)
    q10, q90 = order.quantile(x, [0.1, 0.9])
    side = min(mid - q10, q90 - mid) / 1.2816
    lows = np.minimum(np.minimum(x[:-2], x[1:-1]), x[2:])
    floor = 1.4826 * order.median(np.abs(lows - order.median(lows))) / 0.75
    return max(0.0, min(vario, side, floor))


class MatLoadDetector:
    """The mat fault rules for one cot; see the module's docstring."""

    def __init__(self, params: MatLoadParams | None = None) -> None:
        self.p = params or MatLoadParams()
        self.last_t: float | None = None
        self.prev: float | None = None
        self.episodes: dict[str, bool] = {name: False for name in TESTS}
        # stuck
        self.run = 0
        self.pairs = 0
        self.repeats = 0
        self.stuck_live = 0
        # noise
        self.block: list[float] = []
        self.history: deque[float] = deque(maxlen=self.p.history_blocks)
        self.recent: deque[float] = deque(maxlen=self.p.recent_blocks)
        self.noise_calm = 0
        # spike
        self.spike_last_t = -math.inf
        self.spikes: list[float] = []
        """When the recent spikes were (the last ``spike_window_s``)."""
        # level
        self._reset_level()

    # -- public ---------------------------------------------------------------------

    @property
    def active(self) -> list[str]:
        """Tests currently in an episode."""
        return [name for name in TESTS if self.episodes[name]]

    @property
    def sigma(self) -> float:
        """This mat's noise floor (kg per reading): the 20th percentile of past blocks."""
        pool = list(self.history) or list(self.recent)
        if not pool:
            return self.p.default_sigma_kg
        q = order.quantile(pool, self.p.floor_quantile) if self.history else min(pool)
        return max(self.p.min_sigma_kg, q)

    def add(self, t: float, value: float) -> list[Finding]:
        """One load reading (kg) at time ``t`` (s); returns the episodes it starts."""
        p = self.p
        if not math.isfinite(value):
            return []
        if self.last_t is not None:
            gap = t - self.last_t
            if gap < 0.9 * p.period_s:
                return []
            if gap > p.gap_s:
                self._reset_level()
                self.prev, self.run, self.block = None, 0, []
        self.last_t = t
        out: list[Finding] = []
        out += self._stuck(value)
        out += self._noise(value)
        out += self._level(t, value)
        self.prev = value
        return out

    # -- stuck ----------------------------------------------------------------------

    def stuck_readings(self) -> int:
        """Exact repeats in a row that make this mat stuck: its repeat rate to that power
        is below :attr:`MatLoadParams.stuck_chance`."""
        p = self.p
        rate = (self.repeats + 1.0) / (self.pairs + 20.0)
        if rate >= 0.999:
            return p.stuck_max_readings
        need = math.ceil(math.log(p.stuck_chance) / math.log(rate))
        return max(p.stuck_min_readings, min(p.stuck_max_readings, need))

    def _stuck(self, x: float) -> list[Finding]:
        if self.prev is None:
            return []
        same = x == self.prev
        self.run = self.run + 1 if same else 0
        if not self.episodes["stuck"]:
            self.pairs += 1
            if same and self.run <= 3:
                self.repeats += 1
        if self.episodes["stuck"]:
            self.stuck_live = 0 if same else self.stuck_live + 1
            if self.stuck_live >= self.p.stuck_recover_readings:
                self.episodes["stuck"] = False
            return []
        need = self.stuck_readings()
        if self.run >= need:
            self.episodes["stuck"], self.stuck_live = True, 0
            seconds = (self.run + 1) * self.p.period_s
            return [self._finding(
                "stuck", self.run, need,
                f"load reads exactly {x:.3f} kg for {seconds:.0f} s ({self.run + 1} readings); "
                f"a live mat repeats a reading {100 * self.repeats / max(1, self.pairs):.1f} % "
                "of the time",
            )]
        return []

    # -- noise ----------------------------------------------------------------------

    def _noise(self, x: float) -> list[Finding]:
        p = self.p
        self.block.append(x)
        if len(self.block) < p.block_readings:
            return []
        sigma_b = block_noise(self.block, p.max_lag)
        self.block = []
        if sigma_b <= 0.0:  # a frozen block says nothing of the noise (stuck does)
            return []
        if len(self.recent) == self.recent.maxlen and not self.episodes["noise"]:
            self.history.append(self.recent[0])
        self.recent.append(sigma_b)
        if len(self.history) < p.min_history_blocks or len(self.recent) < p.recent_blocks:
            return []
        floor = self.sigma
        now = order.quantile(list(self.recent), p.recent_quantile)
        score = now / floor
        if self.episodes["noise"]:
            self.noise_calm = self.noise_calm + 1 if score < p.noise_recover_ratio else 0
            if self.noise_calm >= 3:
                self.episodes["noise"] = False
            return []
        if score > p.noise_ratio:
            self.episodes["noise"], self.noise_calm = True, 0
            return [self._finding(
                "noise", score, p.noise_ratio,
                f"load noise {now:.3f} kg per reading or more for 80 % of the last "
                f"{p.recent_blocks * p.block_readings * p.period_s / 60:.0f} min, "
                f"{score:.1f}x this mat's floor of {floor:.3f} kg",
            )]
        return []

    # -- level: step, dropout, drift, spike -------------------------------------------

    def _reset_level(self) -> None:
        n = self.p.level_readings
        self.quiet: deque[float] = deque(maxlen=n)
        self.quiet_run = 0
        """Readings since the last jump."""
        self.lately: deque[float] = deque(maxlen=self.p.slow_lag + 1)
        self.last_jump_i = -(10**9)
        self.in_dist = False
        self.dist: list[tuple[int, float]] = []
        self.dist_pre: float | None = None
        self.dist_pre_calm = 0
        self.dist_edge = [0.0, 0.0, 0.0]
        """The readings either side of a disturbance's first jump, the calm's spread before."""
        self.i = 0
        self.ref: float | None = None
        self.settle_until = -math.inf
        self.steps_since_ref = 0.0
        self.carry: deque[tuple[float, float]] = deque()
        self.pending: tuple[float, float, float] | None = None
        """An abrupt change waiting to hold: (t, level before, change)."""
        self.drift_since: float | None = None
        self.drift_calm_since: float | None = None
        self.step_calm_since: float | None = None
        self.first = True

    def _level(self, t: float, x: float) -> list[Finding]:
        p = self.p
        self.i += 1
        out: list[Finding] = []
        if self.first:
            self.first = False
            self.settle_until = t + p.settle_s
        if self.prev is None:
            self.quiet.append(x)
            return out
        sigma = self.sigma
        jump = max(p.jump_min_kg, p.jump_sigmas * math.sqrt(2.0) * sigma)
        d = x - self.prev
        lag = self.p.slow_lag
        self.lately.append(x)
        sudden = abs(d) > jump
        slow = (len(self.lately) > lag and abs(x - self.lately[0]) > jump
                and self.i - self.last_jump_i > lag)
        if sudden:
            self.last_jump_i = self.i
        if sudden or slow:
            if not self.in_dist:
                self.in_dist = True
                self.dist = []
                calm = list(self.quiet)[-min(len(self.quiet), max(1, self.quiet_run)):]
                self.dist_pre = median(calm[-p.calm_end_readings:]) if calm else self.prev
                self.dist_pre_calm = self.quiet_run
                lo = calm[-p.level_readings:] if calm else [self.prev]
                mid = median(lo)
                spread = 1.4826 * median(abs(v - mid) for v in lo)
                self.dist_edge = [self.prev, x, spread]
            self.dist.append((self.i, d if sudden else math.nan))
            self.quiet_run = 0
            self.quiet.clear()
            self.quiet.append(x)
            return out
        self.quiet_run += 1
        self.quiet.append(x)
        if self.in_dist:
            if self.quiet_run < p.calm_end_readings:
                return out
            self.in_dist = False
            out += self._close(t, sigma)
        if len(self.quiet) < p.calm_end_readings:
            return out
        now = median(list(self.quiet)[-p.calm_end_readings:])
        out += self._step_check(t, now, sigma)
        if now < p.empty_kg and self.pending is None:
            self._forget()
            self.settle_until = t + p.settle_s
            return out
        if self.ref is None:
            if t >= self.settle_until and len(self.quiet) == self.quiet.maxlen:
                self.ref, self.steps_since_ref = median(self.quiet), 0.0
            return out
        out += self._drift_check(t, now, sigma)
        return out

    def _forget(self) -> None:
        self.ref, self.steps_since_ref = None, 0.0
        self.carry.clear()

    def _close(self, t: float, sigma: float) -> list[Finding]:
        """A disturbance ended (calm for ``calm_end_readings``): abrupt, spike or handled."""
        p = self.p
        post = median(list(self.quiet)[-p.calm_end_readings:])
        pre = self.dist_pre if self.dist_pre is not None else post
        change = post - pre
        idx = [i for i, _ in self.dist]
        ds = [d for _, d in self.dist]
        span = idx[-1] - idx[0]
        calm_before = self.dist_pre_calm >= p.calm_end_readings
        jump = max(p.jump_min_kg, p.jump_sigmas * math.sqrt(2.0) * sigma)
        one_way = all(d > 0 for d in ds) or all(d < 0 for d in ds)  # NaN (a slow change): no
        put_on = 0 < change <= p.put_on_max_kg  # a blanket, a toy: dropped on, it stays
        edge = p.edge_sigmas * max(sigma, self.dist_edge[2])  # the calm's own spread
        clean = (abs(self.dist_edge[0] - pre) <= edge and abs(self.dist_edge[1] - post) <= edge)
        if calm_before and len(ds) == 1 and one_way and clean and abs(change) > jump and (
            not put_on
        ):
            if abs(change) >= 0.6 * abs(sum(ds)):
                if self.pending is None:
                    self.pending = (t, pre, change)
                else:  # a second abrupt change: judge the sum from the first level
                    t0, pre0, c0 = self.pending
                    self.pending = (t0, pre0, c0 + change)
                self.steps_since_ref += change
                return []
        if calm_before and len(ds) == 2 and span == 1 and ds[0] * ds[1] < 0 and abs(change) < jump:
            # (NaN * anything is not < 0: a slow change is never a spike)
            size = abs(ds[0])
            threshold = max(p.spike_min_kg, p.spike_sigmas * sigma, p.spike_fraction * abs(pre))
            spiking = self.episodes["spike"]
            if spiking and t - self.spike_last_t >= p.spike_recover_s:
                spiking = self.episodes["spike"] = False
            if size > threshold:
                self.spike_last_t = t
                self.spikes = [s for s in self.spikes if t - s < p.spike_window_s] + [t]
                if not spiking and len(self.spikes) >= p.spike_repeats:
                    self.episodes["spike"] = True
                    return [self._finding(
                        "spike", size, threshold,
                        f"{len(self.spikes)} readings within {p.spike_window_s / 60:.0f} min "
                        f"off a calm level and straight back (latest {ds[0]:+.2f} kg off "
                        f"{pre:.2f} kg)",
                    )]
            return []
        if abs(change) < jump and span <= p.calm_end_readings:
            return []  # a twitch, a knock: back where it was, nothing to re-base
        # Handled: motion, hands, a blanket, the child lifted.  Bank the calm change
        # so far and take a new reference once the level has settled.
        if self.ref is not None:
            seg = pre - self.ref - self.steps_since_ref
            self.carry.append((t, seg))
        self.ref, self.steps_since_ref = None, 0.0
        self.settle_until = t + p.settle_s
        if post < p.empty_kg and self.pending is None:
            self._forget()
        return []

    def _step_check(self, t: float, now: float, sigma: float) -> list[Finding]:
        p = self.p
        threshold = max(p.step_min_kg, p.step_sigmas * sigma)
        for name in ("step", "dropout"):
            if self.episodes[name]:
                if self.pending is None and self.step_calm_since is not None and (
                    t - self.step_calm_since >= p.step_hold_s
                ):
                    self.episodes[name] = False
        if self.pending is None:
            if self.step_calm_since is None:
                self.step_calm_since = t
            return []
        t0, pre, change = self.pending
        moved = now - pre
        if abs(change) < threshold or abs(moved) < 0.5 * abs(change) or moved * change < 0:
            self.pending = None  # small, or the load came back: a lift and return, a knock
            self.step_calm_since = t
            return []
        if t - t0 < p.step_hold_s:
            return []
        self.pending = None
        self.step_calm_since = None
        name = "dropout" if now < p.empty_kg <= pre else "step"
        if self.episodes[name]:
            return []
        self.episodes[name] = True
        if now < p.empty_kg:
            self._forget()
        what = "fell" if change < 0 else "rose"
        return [self._finding(
            name, abs(change), threshold,
            f"load {what} from {pre:.2f} to {now:.2f} kg within one reading with nothing "
            f"moving before or after, and has stayed there {t - t0:.0f} s",
        )]

    def _drift_check(self, t: float, now: float, sigma: float) -> list[Finding]:
        p = self.p
        assert self.ref is not None
        while self.carry and t - self.carry[0][0] > p.drift_horizon_s:
            self.carry.popleft()
        seg = median(self.quiet) - self.ref - self.steps_since_ref
        total = sum(c for _, c in self.carry) + seg
        threshold = max(p.drift_min_kg, p.drift_sigmas * sigma)
        if self.episodes["drift"]:
            if abs(total) < 0.5 * threshold:
                if self.drift_calm_since is None:
                    self.drift_calm_since = t
                elif t - self.drift_calm_since >= 2 * p.drift_hold_s:
                    self.episodes["drift"] = False
            else:
                self.drift_calm_since = None
            return []
        if abs(total) <= threshold:
            self.drift_since = None
            return []
        if self.drift_since is None:
            self.drift_since = t
        if t - self.drift_since < p.drift_hold_s:
            return []
        self.episodes["drift"], self.drift_since, self.drift_calm_since = True, None, None
        way = "risen" if total > 0 else "fallen"
        return [self._finding(
            "drift", abs(total), threshold,
            f"load has {way} {abs(total):.2f} kg while nothing moved on the mat "
            f"(now {now:.2f} kg); a child lying still weighs the same",
        )]

    # -- findings and state ------------------------------------------------------------

    def _finding(self, test: str, score: float, threshold: float, detail: str) -> Finding:
        return Finding(test, PATTERN[test], round(float(score), 3), round(float(threshold), 3),
                       detail)

    _LEVEL_KEYS = (
        "quiet_run", "last_jump_i", "dist_edge", "in_dist", "dist_pre", "dist_pre_calm", "i",
        "ref", "settle_until",
        "steps_since_ref", "drift_since", "drift_calm_since", "step_calm_since", "first",
    )

    def state(self) -> dict[str, Any]:
        """JSON-serialisable: what a restart needs (the floor, repeat rate, episodes, level)."""

        def num(v: float | None) -> float | str | None:
            return v if v is None or math.isfinite(v) else str(v)

        return {
            "version": STATE_VERSION,
            "params": asdict(self.p),
            "last_t": self.last_t,
            "prev": self.prev,
            "episodes": dict(self.episodes),
            "run": self.run, "pairs": self.pairs, "repeats": self.repeats,
            "stuck_live": self.stuck_live,
            "block": list(self.block), "history": list(self.history),
            "recent": list(self.recent), "noise_calm": self.noise_calm,
            "spike_last_t": num(self.spike_last_t),
            "spikes": list(self.spikes),
            "quiet": list(self.quiet), "lately": list(self.lately),
            "dist": [list(x) for x in self.dist],
            "carry": [list(x) for x in self.carry],
            "held_step": None if self.pending is None else list(self.pending),
            **{k: num(getattr(self, k)) if isinstance(getattr(self, k), float)
               else getattr(self, k) for k in self._LEVEL_KEYS},
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], params: MatLoadParams | None = None
    ) -> MatLoadDetector:
        """A detector that goes on from :meth:`state`; another version starts afresh but
        keeps nothing it cannot read (``ValueError`` on a malformed state)."""
        det = cls(params or MatLoadParams(**state.get("params", {})))
        if state.get("version") != STATE_VERSION:
            return det
        try:
            det.last_t = None if state["last_t"] is None else float(state["last_t"])
            det.prev = None if state["prev"] is None else float(state["prev"])
            det.episodes.update({k: bool(v) for k, v in state["episodes"].items() if k in TESTS})
            det.run, det.pairs = int(state["run"]), int(state["pairs"])
            det.repeats, det.stuck_live = int(state["repeats"]), int(state["stuck_live"])
            det.block = [float(v) for v in state["block"]]
            det.history.extend(float(v) for v in state["history"])
            det.recent.extend(float(v) for v in state["recent"])
            det.noise_calm = int(state["noise_calm"])
            det.spike_last_t = float(state["spike_last_t"])
            det.spikes = [float(v) for v in state.get("spikes", [])]
            det.quiet.extend(float(v) for v in state["quiet"])
            det.lately.extend(float(v) for v in state["lately"])
            det.dist = [(int(i), float(d)) for i, d in state["dist"]]
            det.carry.extend((float(a), float(b)) for a, b in state["carry"])
            pend = state["held_step"]
            det.pending = None if pend is None else (float(pend[0]), float(pend[1]),
                                                     float(pend[2]))
            for k in cls._LEVEL_KEYS:
                v = state[k]
                setattr(det, k, float(v) if isinstance(v, str) else v)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"malformed mat detector state: {exc}") from exc
        return det
