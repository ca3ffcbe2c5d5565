"""Two gauges on the same water: their difference stays put unless one of them moves.

A drift test on one gauge cannot tell a fouled or sinking sensor from the water's own slow
rise or fall (:mod:`edge.health.water_faults`), and where a tide, a gate or a flood moves
the level, a slipped probe hides among the water's own steps.  Where two gauges read the
same water (a pressure probe and an ultrasonic ranger at one bridge, a spare probe beside
the main one: the water rule's ``same_water_as``), the water's movements cancel in the
difference of their readings; what is left is the sensors'.

- **Pairs**: each reading of one gauge with the other's level at the same moment, taken
  on the straight line between the other's readings just before and just after it (at
  most :attr:`PairParams.max_gap_s` apart): the two gauges need not read at the same
  times, and a tide or a flood moving the level between their readings does not open a
  gap between them.
- **Learning**: the first :attr:`PairParams.learn_s` (12 h) of pairs give the difference's
  usual value (their median: the gauges' datums may differ by any constant) and its noise
  (1.4826 x their median absolute deviation).  Learnt once and kept across restarts: a
  drift must not be learnt as the new normal.
- **Judging**: the median difference of the last :attr:`PairParams.window_s` (6 h, at least
  :attr:`PairParams.min_pairs` pairs, so that a flood's few hours of pairs a reading apart do
  not count) moving from the usual value by more than the tolerance -- the water rule's
  ``disagree_cm`` (3 cm), or 4 x the difference's own noise if that is more -- is one
  finding; it ends once the median has stayed within half the tolerance for
  :attr:`PairParams.recovery_s`.  A drift of 5 cm/day passes 3 cm within about 18 h; a
  slipped probe within about 3 h.
- **Which gauge moved** is not told: two gauges cannot say that (a third, or a staff gauge,
  can); the finding names both.

Pure: no I/O, no clock, no threads; the caller's timestamps (monotonic is best).  The watch
(:mod:`edge.water.pair_watch`) feeds it and records what it finds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from statistics import median
from typing import Any

HOUR_S = 3600.0
TEST = "disagree"
"""The ``anomaly`` event's test (and ``pattern``: what it tells people) for a disagreement."""


@dataclass(frozen=True)
class PairParams:
    learn_s: float = 12 * HOUR_S
    """Pairs from this long after the first give the difference's usual value."""
    window_s: float = 6 * HOUR_S
    """The median of this long's pairs is compared with it."""
    min_pairs: int = 12
    """Fewer pairs in the window (or in the learning) are not judged."""
    max_gap_s: float = 1800.0
    """The other gauge's readings around a reading are at most this far apart (else no
    pair: the level between them is not known well enough)."""
    noise_k: float = 4.0
    """The tolerance is at least this many times the difference's own noise."""
    recovery_s: float = 6 * HOUR_S
    """Within half the tolerance this long: the disagreement is over."""


@dataclass(frozen=True)
class Disagreement:
    """The two gauges' difference moved: one of them drifted, slipped or was moved."""

    first: str
    second: str
    difference_cm: float
    """The last :attr:`PairParams.window_s`' median of (first - second)."""
    usual_cm: float
    tolerance_cm: float

    @property
    def shift_cm(self) -> float:
        return self.difference_cm - self.usual_cm

    @property
    def detail(self) -> str:
        return (f"{self.first} - {self.second} reads {self.difference_cm:+.1f} cm (median of "
                f"the last {PairParams.window_s / HOUR_S:.0f} h), usually {self.usual_cm:+.1f} "
                f"cm: moved {self.shift_cm:+.1f} cm, more than {self.tolerance_cm:.1f} cm "
                "(one of the two gauges drifted, slipped or was moved: compare both with a "
                "staff gauge)")  # fmt: skip


@dataclass(frozen=True)
class Agreement:
    """The difference has been back near its usual value for :attr:`PairParams.recovery_s`."""

    first: str
    second: str
    difference_cm: float


class GaugePair:
    """Two gauges' readings -> :class:`Disagreement` when their difference moves (once per
    episode) and :class:`Agreement` when it has settled back."""

    def __init__(
        self, first: str, second: str, tolerance_cm: float, params: PairParams | None = None
    ) -> None:
        if not tolerance_cm > 0:
            raise ValueError("tolerance_cm must be positive")
        self.first, self.second = first, second
        self.tolerance_cm = tolerance_cm
        self.p = params or PairParams()
        self.usual_cm: float | None = None
        self.noise_cm: float | None = None
        self.active = False
        self._last: dict[str, tuple[float, float]] = {}
        self._pending: dict[str, deque[tuple[float, float]]] = {first: deque(), second: deque()}
        """Readings waiting for the other gauge's next one (to pair them on its line)."""
        self._learning: list[tuple[float, float]] = []
        self._window: deque[tuple[float, float]] = deque()
        self._normal_since: float | None = None

    @property
    def learnt(self) -> bool:
        return self.usual_cm is not None

    @property
    def tolerance(self) -> float:
        """The tolerance in use: ``tolerance_cm``, or the difference's noise if that is more."""
        return max(self.tolerance_cm, self.p.noise_k * (self.noise_cm or 0.0))

    def add(
        self, t: float, sensor: str, level_cm: float
    ) -> list[Disagreement | Agreement]:
        """One reading of ``sensor`` (one of the pair) at ``t``, in time order per gauge;
        what the pairs it completes show."""
        if sensor not in (self.first, self.second):
            raise ValueError(f"{sensor!r} is not one of {self.first!r}, {self.second!r}")
        other = self.second if sensor == self.first else self.first
        prev = self._last.get(sensor)
        self._last[sensor] = (t, level_cm)
        waiting = self._pending[other]
        found: list[Disagreement | Agreement] = []
        if prev is not None and 0 < t - prev[0] <= self.p.max_gap_s:
            while waiting and waiting[0][0] <= t:
                ty, vy = waiting.popleft()
                if ty < prev[0]:
                    continue  # this gauge did not read around it
                here = prev[1] + (level_cm - prev[1]) * (ty - prev[0]) / (t - prev[0])
                d = here - vy if sensor == self.first else vy - here
                outcome = self._pair(ty, d)
                if outcome is not None:
                    found.append(outcome)
        while waiting and waiting[0][0] < t - self.p.max_gap_s:
            waiting.popleft()  # the other's readings this gauge can no longer bracket
        mine = self._pending[sensor]
        mine.append((t, level_cm))
        while len(mine) > 1 and mine[0][0] < t - self.p.max_gap_s:
            mine.popleft()
        return found

    def _pair(self, t: float, d: float) -> Disagreement | Agreement | None:
        if self.usual_cm is None:
            self._learning.append((t, d))
            if (t - self._learning[0][0] >= self.p.learn_s
                    and len(self._learning) >= 2 * self.p.min_pairs):  # fmt: skip
                ds = [v for _, v in self._learning]
                self.usual_cm = median(ds)
                self.noise_cm = 1.4826 * median(abs(v - self.usual_cm) for v in ds)
                self._learning = []
            return None
        self._window.append((t, d))
        while self._window and self._window[0][0] <= t - self.p.window_s:
            self._window.popleft()
        if len(self._window) < self.p.min_pairs:
            return None
        now = median(v for _, v in self._window)
        off = abs(now - self.usual_cm)
        if not self.active:
            if off > self.tolerance:
                self.active, self._normal_since = True, None
                return Disagreement(self.first, self.second, now, self.usual_cm, self.tolerance)
            return None
        if off > self.tolerance / 2:
            self._normal_since = None
            return None
        if self._normal_since is None:
            self._normal_since = t
        if t - self._normal_since >= self.p.recovery_s:
            self.active, self._normal_since = False, None
            return Agreement(self.first, self.second, now)
        return None

    # -- kept across restarts: what was learnt, and whether a disagreement is open ----------

    def state(self) -> dict[str, Any]:
        return {"first": self.first, "second": self.second, "usual_cm": self.usual_cm,
                "noise_cm": self.noise_cm, "active": self.active}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> bool:
        """Take back :meth:`state`'s learning if it is this pair's; False (nothing taken) if
        not.  Pairs are not kept: the window fills again from the next readings."""
        if (state.get("first"), state.get("second")) != (self.first, self.second):
            return False
        usual, noise = state.get("usual_cm"), state.get("noise_cm")
        if usual is None:
            return True  # still learning when kept: learning starts again
        usual_cm, noise_cm = float(usual), float(noise or 0.0)  # may raise: nothing taken yet
        self.usual_cm, self.noise_cm = usual_cm, noise_cm
        self.active = bool(state.get("active", False))
        return True
