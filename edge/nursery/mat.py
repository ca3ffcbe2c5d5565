"""What the daemon derives from body-motion mat frames: occupancy, load, body motion, breathing.

Pure Python (no numpy) and cheap: one frame costs one pass over its cells
plus a few dozen operations, well inside 10 frames/s on a Pi Zero 2 W.

The pieces, each usable alone:

- :class:`MatCalibration`: the empty mat, per cell (mattress weight, sensor
  offset, noise), learnt by :class:`MatSignals` itself the first time it sees
  the cot empty (until then a rough, flat stop-gap that works with a child
  already in the cot) and slowly re-learned while the cot stays empty; or
  built from frames of an empty cot with :meth:`MatCalibration.from_empty`
  and passed in (the tests do).  It is not kept across
  restarts: a restarted daemon learns it again.
  :meth:`MatCalibration.measure` turns a frame into a :class:`FrameLoad`.
- :class:`Occupancy`: occupied or empty, with hysteresis in load and time.
- :class:`MotionTracker`: a per-frame body-motion value from the centre of
  pressure, ``seconds_since_motion`` and an estimated breathing rate.
- :class:`MatSignals`: the three wired together, one :class:`MatReading` per
  frame.

Thresholds and why
------------------

Load and occupancy (``COUNTS_PER_KG`` is the scale, that of the emulated mat;
no configuration key or ``edge check`` step sets another one yet, so a real mat
must read the same counts per kilogram, or be given ``counts_per_kg``):

- ``total load`` = sum over live cells of (reading - empty level), *not*
  clamped at zero: clamping would turn each empty cell's noise into a positive
  bias (0.4 sigma per cell, about 0.25 kg over 512 cells), while the unclamped
  sum's noise is only sqrt(512) x 0.7 counts = 0.03 kg.
- occupied when the load stays >= ``OCCUPIED_ON_KG`` (1.5 kg, half the
  lightest infant in our range, and above a blanket or a soft toy) for
  ``OCCUPIED_ON_S`` (2 s, so a hand pressing on the mattress while tucking a
  blanket does not count); empty again only when it stays below
  ``OCCUPIED_OFF_KG`` (0.75 kg) for ``OCCUPIED_OFF_S`` (5 s).  A restless,
  kneeling or standing child keeps its whole weight on the mat, so it never
  comes near the off threshold; the gap and the delay keep a bouncing toddler
  from flapping.  Erring towards "occupied" is the safe side: an empty cot
  that reads occupied shows no motion and alarms; an occupied one that reads
  empty would silence the apnea alarm.
- the centre of pressure weights each cell by how far it reads above its
  deadband, ``DEADBAND_SIGMAS`` (4) times its own noise above its empty level
  (at least ``MIN_DEADBAND_COUNTS``): far-away empty cells have the longest
  lever arms and would otherwise add most of the position noise, and weighting
  by the excess (not the whole reading) keeps a cell that flickers across the
  deadband from making the CoP jump.

Body motion and breathing:

- Breathing moves load between chest and abdomen, so the centre of pressure
  (CoP) swings by a few millimetres at the breathing rate (0.3-1 Hz for
  infants, 20-60 breaths/min), while the total load stays put.  The CoP is a
  weighted average over many cells, so its noise is far below a single cell's.
- per frame, the CoP is averaged over ``SMOOTH_FRAMES`` (4 frames, 0.4 s:
  halves the noise, keeps 77 % of a 1 Hz breath); the **motion value** is how
  far that smoothed CoP moved over the last 0.5 s or the last 1 s, whichever
  is larger (mm).  Two lags because one lag is blind to breaths whose period
  equals it; with both, any rate from 10 to 90 breaths/min moves the CoP by
  at least the breath's amplitude.  It returns to noise level 1.4 s after
  the body stops, so ``seconds_since_motion`` starts counting at once.
- **motion threshold** = ``MOTION_SIGMAS`` (6) x the expected noise of that
  difference, computed per frame from the calibrated noise of every cell
  under the child (sigma of the CoP = sqrt(sum (x_i - X)^2 sigma_i^2) / W),
  with a floor of ``MOTION_FLOOR_MM``.  Noise alone exceeds 6 sigma of a
  2-D difference with probability exp(-18) = 1.5e-8 per frame, so a still
  (apnoeic) child is not "seen breathing" by chance within the 20 s alarm
  window (each false sighting would restart the count); a light newborn's
  noisier CoP raises the bar by itself.  At 5 sigma, noise alone was taken
  for motion in one of 50 simulated newborn apnoeas; at 6 sigma in none of
  120 (all ages), while breathing, even a newborn's shallowest, was seen at
  least every 4 s.
- the **breathing rate** is counted over the last ``RATE_WINDOW_S`` (20 s)
  of smoothed CoP: each axis minus its centred ``DETREND_S`` (4 s) moving
  *median* (passes 10-90 breaths/min; removes drift and, unlike a moving
  mean, the step of a small shift of the body), projected on the main axis of
  what is left; then crossings of a +-h band are counted (h = the larger of
  2 noise sigmas and 30 % of the signal's robust amplitude, 1.48 x median
  |p|), and rate = 30 / median time between successive crossings (a
  half-breath each; the median ignores the odd interval a twitch adds).
  Below 2 noise sigmas of amplitude the rate is 0.0 (a still child); with
  fewer than 4 crossings it is counted over the whole window (slow
  breathing).  A movement over ``GROSS_MOTION_MM`` (25 mm: rolling over,
  sitting up; breathing moves the CoP by a few mm) restarts the window, and
  with less than ``RATE_MIN_SPAN_S`` (8 s) of data since, the rate is unknown
  (``None``).  On the emulated mat this lands within 10 % of the true rate
  for 20-60 breaths/min at every age and posture.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from drivers.motion_mat import MatFrame

log = logging.getLogger(__name__)

COUNTS_PER_KG = 600.0
"""Emulated mat: sum of (reading - empty level) over all cells per kg on the mattress."""
CELL_CM = 3.75
"""Cell pitch of the default 16 x 32 mat (60 x 120 cm)."""
DEADBAND_SIGMAS = 4.0
MIN_DEADBAND_COUNTS = 2.0
MIN_CELL_NOISE = 0.3
"""Counts: quantisation alone leaves 0.29 counts of noise on an 8-bit reading."""
OCCUPIED_ON_KG = 1.5
OCCUPIED_OFF_KG = 0.75
OCCUPIED_ON_S = 2.0
OCCUPIED_OFF_S = 5.0
SMOOTH_FRAMES = 4
MOTION_LAGS_S = (0.5, 1.0)
MOTION_SIGMAS = 6.0
MOTION_FLOOR_MM = 0.2
GROSS_MOTION_MM = 25.0
RATE_WINDOW_S = 20.0
RATE_MIN_SPAN_S = 8.0
DETREND_S = 4.0
AUTO_ROUGH_FRAMES = 10
"""A second of frames refines the stop-gap calibration's noise estimate."""
AUTO_CALIBRATION_FRAMES = 50
"""Five seconds of an empty cot (at 10 frames/s) make the per-cell calibration."""
DRIFT_ALPHA = 0.002
"""Per frame while empty and below the on threshold: the empty level follows slow
drift (temperature, a mattress settling) with a ~50 s time constant.  A child
crosses the on threshold at once and is never learned; a jump of the whole mat
by more than that reads as occupied (the safe side) until someone recalibrates."""


@dataclass(frozen=True, slots=True)
class FrameLoad:
    """What one frame says about the load on the mat, empty mat removed."""

    counts: float
    """Sum of (reading - empty level) over live cells."""
    kg: float
    cop_x_cm: float | None
    """Centre of pressure along the mat (columns), cm from cell (0, 0)'s edge; None if no load."""
    cop_y_cm: float | None
    """Centre of pressure across the mat (rows)."""
    cop_noise_cm: float
    """Expected 1-sigma noise of the noisier CoP coordinate, from the cells' calibrated noise."""
    active_cells: int
    """Cells above their deadband (the footprint's size in cells)."""


class MatCalibration:
    """The empty mat, per cell: level (counts), noise (counts), dead cells; and the scale."""

    __slots__ = (
        "_live",
        "_noise2",
        "_threshold",
        "_xs",
        "_ys",
        "cell_cm",
        "cols",
        "counts_per_kg",
        "dead",
        "level",
        "noise",
        "rows",
    )

    def __init__(
        self,
        rows: int,
        cols: int,
        level: Sequence[float],
        noise: Sequence[float],
        *,
        dead: Iterable[int] = (),
        counts_per_kg: float = COUNTS_PER_KG,
        cell_cm: float = CELL_CM,
    ) -> None:
        n = rows * cols
        if len(level) != n or len(noise) != n:
            raise ValueError(f"a {rows} x {cols} calibration needs {n} levels and noise values")
        if counts_per_kg <= 0 or cell_cm <= 0:
            raise ValueError("counts_per_kg and cell_cm must be positive")
        self.rows = rows
        self.cols = cols
        self.level = [float(v) for v in level]
        self.noise = [max(float(s), MIN_CELL_NOISE) for s in noise]
        self.dead = frozenset(dead)
        self.counts_per_kg = counts_per_kg
        self.cell_cm = cell_cm
        self._live = [i for i in range(n) if i not in self.dead]
        self._noise2 = [s * s for s in self.noise]
        self._threshold = [0.0] * n
        self._refresh_thresholds()
        self._xs = [((i % cols) + 0.5) * cell_cm for i in range(n)]
        self._ys = [((i // cols) + 0.5) * cell_cm for i in range(n)]

    @classmethod
    def from_empty(
        cls,
        frames: Iterable[MatFrame],
        *,
        counts_per_kg: float = COUNTS_PER_KG,
        cell_cm: float = CELL_CM,
    ) -> MatCalibration:
        """Learn the empty mat from frames taken with the cot empty (10 or more; 5 s is plenty).

        A cell that never changed is *dead* (stuck at a rail or disconnected):
        it is left out of load and centre of pressure.
        """
        frames = list(frames)
        if len(frames) < 10:
            raise ValueError(f"calibration needs at least 10 empty frames, got {len(frames)}")
        rows, cols = frames[0].rows, frames[0].cols
        if any((f.rows, f.cols) != (rows, cols) for f in frames):
            raise ValueError("calibration frames must all have the same geometry")
        n = rows * cols
        count = len(frames)
        sums = [0] * n
        squares = [0] * n
        lows = list(frames[0].cells)
        highs = list(frames[0].cells)
        for f in frames:
            for i, v in enumerate(f.cells):
                sums[i] += v
                squares[i] += v * v
                if v < lows[i]:
                    lows[i] = v
                elif v > highs[i]:
                    highs[i] = v
        level = [s / count for s in sums]
        noise = [
            math.sqrt(max(q / count - m * m, 0.0)) for q, m in zip(squares, level, strict=True)
        ]
        dead = [i for i in range(n) if lows[i] == highs[i] and lows[i] in (0, 255)]
        if dead:
            log.info("motion mat calibration: %d dead cell(s) ignored", len(dead))
        return cls(
            rows, cols, level, noise, dead=dead, counts_per_kg=counts_per_kg, cell_cm=cell_cm
        )

    @classmethod
    def flat(
        cls, rows: int, cols: int, *, level: float = 0.0, noise: float = 1.0, **scale: Any
    ) -> MatCalibration:
        """A uniform calibration (tests, or a mat whose offsets are zeroed at the factory).

        Beware: a real mat reads a few counts per cell when empty, and 512 cells of
        that add up to kilograms; with ``level=0`` such a mat reads as occupied.
        """
        n = rows * cols
        return cls(rows, cols, [level] * n, [noise] * n, **scale)

    @classmethod
    def rough(cls, frames: Sequence[MatFrame], **scale: Any) -> MatCalibration:
        """A stop-gap from whatever lies on the mat now, child or not: flat at the median cell.

        A child covers well under half the cells, so the median cell is an empty
        one: its level is the mat's typical offset plus the mattress.  Noise is
        the spread of frame-to-frame differences (static offsets cancel), or 1
        count from a single frame.  Per-cell offsets stay in, so the load is
        good to a few hundred grams and the CoP a little biased, which motion
        detection does not mind.
        """
        if not frames:
            raise ValueError("a rough calibration needs at least one frame")
        rows, cols = frames[0].rows, frames[0].cols
        if any((f.rows, f.cols) != (rows, cols) for f in frames):
            raise ValueError("calibration frames must all have the same geometry")
        means = [sum(col) / len(frames) for col in zip(*(f.cells for f in frames), strict=True)]
        level = _median(means)
        noise = 1.0
        if len(frames) >= 2:
            diffs = [
                abs(a - b)
                for f, g in itertools.pairwise(frames)
                for a, b in zip(f.cells, g.cells, strict=True)
            ]
            # MAD of a difference of two readings: 0.6745 sigma x sqrt(2).
            noise = max(_median(diffs) / (0.6745 * math.sqrt(2.0)), MIN_CELL_NOISE)
        n = rows * cols
        return cls(rows, cols, [level] * n, [noise] * n, **scale)

    def _refresh_thresholds(self) -> None:
        self._threshold = [
            lv + max(DEADBAND_SIGMAS * s, MIN_DEADBAND_COUNTS)
            for lv, s in zip(self.level, self.noise, strict=True)
        ]

    def matches(self, frame: MatFrame) -> bool:
        return (frame.rows, frame.cols) == (self.rows, self.cols)

    def measure(self, frame: MatFrame) -> FrameLoad:
        """Load and centre of pressure of one frame (ValueError if its geometry differs)."""
        if not self.matches(frame):
            raise ValueError(
                f"frame is {frame.rows} x {frame.cols}, calibration {self.rows} x {self.cols}: "
                "recalibrate the mat"
            )
        cells = frame.cells
        level = self.level
        threshold = self._threshold
        xs, ys, n2 = self._xs, self._ys, self._noise2
        total = 0.0
        w = sx = sy = 0.0
        q0 = qx = qy = qxx = qyy = 0.0
        active = 0
        for i in self._live:
            v = cells[i]
            d = v - level[i]
            total += d
            if v > threshold[i]:
                # Weighted by the excess over the deadband, not by d: a cell that
                # flickers across the deadband then adds ~0, not a jump.
                e = v - threshold[i]
                x, y, s2 = xs[i], ys[i], n2[i]
                active += 1
                w += e
                sx += e * x
                sy += e * y
                q0 += s2
                qx += s2 * x
                qy += s2 * y
                qxx += s2 * x * x
                qyy += s2 * y * y
        if active == 0 or w <= 0:
            return FrameLoad(total, total / self.counts_per_kg, None, None, 0.0, active)
        cx, cy = sx / w, sy / w
        # sum s2 (x - cx)^2 = qxx - 2 cx qx + cx^2 q0, then divided by W^2.
        var_x = max(qxx - 2 * cx * qx + cx * cx * q0, 0.0)
        var_y = max(qyy - 2 * cy * qy + cy * cy * q0, 0.0)
        noise = math.sqrt(max(var_x, var_y)) / w
        return FrameLoad(total, total / self.counts_per_kg, cx, cy, noise, active)

    def adapt(self, frame: MatFrame, alpha: float = DRIFT_ALPHA) -> None:
        """Move the empty level a step towards this (empty-cot) frame: slow drift tracking."""
        if not self.matches(frame) or alpha <= 0:
            return
        cells = frame.cells
        level = self.level
        for i in self._live:
            level[i] += alpha * (cells[i] - level[i])
        self._refresh_thresholds()


class Occupancy:
    """Occupied or empty from the load, with hysteresis in kg and in time."""

    def __init__(
        self,
        *,
        on_kg: float = OCCUPIED_ON_KG,
        off_kg: float = OCCUPIED_OFF_KG,
        on_s: float = OCCUPIED_ON_S,
        off_s: float = OCCUPIED_OFF_S,
    ) -> None:
        if not 0 < off_kg < on_kg:
            raise ValueError(f"need 0 < off_kg < on_kg, got off {off_kg} and on {on_kg}")
        if on_s < 0 or off_s < 0:
            raise ValueError("on_s and off_s must not be negative")
        self.on_kg, self.off_kg, self.on_s, self.off_s = on_kg, off_kg, on_s, off_s
        self.occupied = False
        self.changed_at: float | None = None
        """When ``occupied`` last changed."""
        self._pending_since: float | None = None

    def update(self, t: float, kg: float) -> bool:
        """Feed one load (kg) at time ``t`` (s); returns whether the cot is occupied."""
        crossing = kg < self.off_kg if self.occupied else kg >= self.on_kg
        if not crossing:
            self._pending_since = None
            return self.occupied
        if self._pending_since is None:
            self._pending_since = t
        if t - self._pending_since >= (self.off_s if self.occupied else self.on_s):
            self.occupied = not self.occupied
            self.changed_at = t
            self._pending_since = None
        return self.occupied


class MotionTracker:
    """Body motion from the centre of pressure: motion per frame, time since motion, breath rate.

    Feed it :meth:`update` with explicit timestamps (s, any monotonic origin);
    nothing here reads a clock.
    """

    def __init__(
        self,
        *,
        window_s: float = RATE_WINDOW_S,
        smooth_frames: int = SMOOTH_FRAMES,
        lags_s: Sequence[float] = MOTION_LAGS_S,
        sigmas: float = MOTION_SIGMAS,
        floor_mm: float = MOTION_FLOOR_MM,
        gross_mm: float = GROSS_MOTION_MM,
        detrend_s: float = DETREND_S,
        min_span_s: float = RATE_MIN_SPAN_S,
    ) -> None:
        self.window_s = window_s
        self.smooth_frames = max(int(smooth_frames), 1)
        self.lags_s = tuple(sorted(lags_s))
        self.sigmas = sigmas
        self.floor_mm = floor_mm
        self.gross_mm = gross_mm
        self.detrend_s = detrend_s
        self.min_span_s = min_span_s
        self._raw: deque[tuple[float, float, float]] = deque(maxlen=self.smooth_frames)
        # Smoothed CoP: (t, x cm, y cm, noise cm of the smoothed value).
        self._hist: deque[tuple[float, float, float, float]] = deque()
        self._quiet_since: float | None = None
        self.started_at: float | None = None
        self.last_t: float | None = None
        self.last_motion_t: float | None = None
        self.motion_mm = 0.0
        """The latest frame's motion value."""
        self.threshold_mm = floor_mm
        """The latest frame's noise threshold for ``motion_mm``."""
        self.moving = False

    def reset(self, t: float | None = None) -> None:
        """Forget history (the cot was emptied or the mat reconnected); counting restarts at t."""
        self._raw.clear()
        self._hist.clear()
        self._quiet_since = None
        self.started_at = t
        self.last_t = t
        self.last_motion_t = None
        self.motion_mm = 0.0
        self.moving = False

    @property
    def seconds_since_motion(self) -> float:
        """Seconds from the last motion (or from the start) to the latest frame."""
        return self.since_motion(self.last_t) if self.last_t is not None else 0.0

    def since_motion(self, now: float) -> float:
        """Seconds from the last motion (or from the start) to ``now``."""
        ref = self.last_motion_t if self.last_motion_t is not None else self.started_at
        return max(now - ref, 0.0) if ref is not None else 0.0

    def update(self, t: float, load: FrameLoad) -> float:
        """Take one frame's load at time ``t``; returns its motion value (mm)."""
        if self.started_at is None:
            self.started_at = t
        self.last_t = t
        if load.cop_x_cm is None or load.cop_y_cm is None:
            self._raw.clear()
            self._hist.clear()
            self.motion_mm, self.moving = 0.0, False
            return 0.0
        self._raw.append((load.cop_x_cm, load.cop_y_cm, load.cop_noise_cm))
        n = len(self._raw)
        sx = sum(r[0] for r in self._raw) / n
        sy = sum(r[1] for r in self._raw) / n
        noise = math.sqrt(sum(r[2] * r[2] for r in self._raw)) / n
        hist = self._hist
        hist.append((t, sx, sy, noise))
        while hist and hist[0][0] < t - self.window_s - self.lags_s[-1]:
            hist.popleft()
        if self._quiet_since is None:
            self._quiet_since = t
        motion = 0.0
        ref_noise = noise
        for lag in self.lags_s:
            past = self._at(t - lag)
            if past is None:
                continue
            d = math.hypot(sx - past[1], sy - past[2]) * 10.0  # mm
            if d > motion:
                motion, ref_noise = d, past[3]
        # Per axis, the difference of two smoothed values has sigma sqrt(n1^2 + n2^2).
        self.threshold_mm = max(
            self.sigmas * math.sqrt(noise * noise + ref_noise * ref_noise) * 10.0, self.floor_mm
        )
        self.motion_mm = motion
        self.moving = motion > self.threshold_mm
        if self.moving:
            self.last_motion_t = t
        if motion > max(self.gross_mm, self.threshold_mm):
            self._quiet_since = t
        return motion

    def _at(self, when: float) -> tuple[float, float, float, float] | None:
        """The smoothed sample closest to time ``when`` (None if history is shorter)."""
        hist = self._hist
        if not hist or hist[0][0] > when:
            return None
        best = hist[-1]
        for k in range(len(hist) - 1, -1, -1):
            s = hist[k]
            if s[0] <= when:
                return s if when - s[0] <= best[0] - when else best
            best = s
        return best

    def breathing_rate(self) -> float | None:
        """Breaths per minute over the last quiet window; None when unknown, 0.0 when still."""
        if self.last_t is None or self._quiet_since is None:
            return None
        start = max(self.last_t - self.window_s, self._quiet_since + 1.0)
        samples = [s for s in self._hist if s[0] >= start]
        if len(samples) < 10 or samples[-1][0] - samples[0][0] < self.min_span_s:
            return None
        n = len(samples)
        ts = [s[0] for s in samples]
        # Each axis minus its centred moving median: slow drift and the steps of a
        # small shift of the body go, the breathing oscillation stays.
        dx = _minus_moving_median(ts, [s[1] for s in samples], self.detrend_s / 2)
        dy = _minus_moving_median(ts, [s[2] for s in samples], self.detrend_s / 2)
        # Project on the main axis of what is left (breathing moves the CoP along a line).
        cxx = sum(v * v for v in dx)
        cyy = sum(v * v for v in dy)
        cxy = sum(a * b for a, b in zip(dx, dy, strict=True))
        angle = 0.5 * math.atan2(2 * cxy, cxx - cyy)
        ux, uy = math.cos(angle), math.sin(angle)
        p = [a * ux + b * uy for a, b in zip(dx, dy, strict=True)]
        noise = sum(s[3] for s in samples) / n
        # Typical amplitude, robust to a spike: 1.48 x the median |p| is sigma for noise,
        # about the amplitude for a sine.
        spread = 1.48 * sorted(abs(v) for v in p)[n // 2]
        if spread < 2.0 * noise:
            return 0.0
        h = max(1.5 * noise, 0.3 * spread)
        state = 0
        crossings: list[float] = []
        for t, v in zip(ts, p, strict=True):
            if v > h and state <= 0:
                if state < 0:
                    crossings.append(t)
                state = 1
            elif v < -h and state >= 0:
                if state > 0:
                    crossings.append(t)
                state = -1
        if len(crossings) >= 4:
            # Median half-period: one odd interval (a shift of the body) does not count.
            halves = sorted(b - a for a, b in itertools.pairwise(crossings))
            m = len(halves)
            median = halves[m // 2] if m % 2 else (halves[m // 2 - 1] + halves[m // 2]) / 2
            if median > 0:
                return 30.0 / median
        # Fewer than two breaths in the window: slow (or no) breathing.
        return 60.0 * len(crossings) / (2.0 * (ts[-1] - ts[0]))


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    m = len(s)
    return s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) / 2


def _minus_moving_median(ts: Sequence[float], xs: Sequence[float], half: float) -> list[float]:
    """x minus the median of x over [t - half, t + half] (a sorted window, two pointers)."""
    window: list[float] = []
    out: list[float] = []
    lo = hi = 0
    n = len(xs)
    for i, t in enumerate(ts):
        while hi < n and ts[hi] <= t + half:
            bisect.insort(window, xs[hi])
            hi += 1
        while ts[lo] < t - half:
            del window[bisect.bisect_left(window, xs[lo])]
            lo += 1
        m = len(window)
        med = window[m // 2] if m % 2 else (window[m // 2 - 1] + window[m // 2]) / 2
        out.append(xs[i] - med)
    return out


@dataclass(frozen=True, slots=True)
class MatReading:
    """Everything the nap rules need from one frame."""

    t: float
    seq: int
    occupied: bool
    load_kg: float
    load_counts: float
    cop_cm: tuple[float, float] | None
    """(along, across) the mat, cm from cell (0, 0)'s edge; None when nothing presses."""
    motion_mm: float
    moving: bool
    seconds_since_motion: float
    """Since the last body motion, or since the cot became occupied; 0 while empty."""
    breathing_rate: float | None
    """Breaths/min (refreshed about once a second); None when unknown or empty."""
    calibrated: bool = True
    """False while the empty mat is only roughly known (see :class:`MatSignals`)."""


class MatSignals:
    """Calibration, occupancy and motion wired together: ``update(frame, t)`` per frame.

    Give it the mat's :class:`MatCalibration` from an empty cot (the installer's
    check), or ``None`` to calibrate itself: it starts from
    :meth:`MatCalibration.rough` (works with a child already in the cot) and
    swaps in a per-cell calibration learnt from the first 5 s
    (``AUTO_CALIBRATION_FRAMES``) during which the cot reads empty.  A frame of
    another geometry (a different mat) starts that over; it never raises.
    """

    def __init__(
        self,
        calibration: MatCalibration | None = None,
        *,
        occupancy: Occupancy | None = None,
        tracker: MotionTracker | None = None,
        drift_alpha: float = DRIFT_ALPHA,
        rate_every_s: float = 1.0,
        counts_per_kg: float = COUNTS_PER_KG,
        cell_cm: float = CELL_CM,
    ) -> None:
        self.calibration = calibration
        self.calibrated = calibration is not None
        """True once the calibration is per cell, from an empty cot."""
        self.occupancy = occupancy or Occupancy()
        self.tracker = tracker or MotionTracker()
        self.drift_alpha = drift_alpha
        self.rate_every_s = rate_every_s
        self._scale: dict[str, float] = (
            {"counts_per_kg": calibration.counts_per_kg, "cell_cm": calibration.cell_cm}
            if calibration is not None
            else {"counts_per_kg": counts_per_kg, "cell_cm": cell_cm}
        )
        self._first: list[MatFrame] = []
        self._empty: list[MatFrame] = []
        self._rate: float | None = None
        self._rate_at: float | None = None
        self.last: MatReading | None = None

    def _calibration_for(self, frame: MatFrame) -> MatCalibration:
        cal = self.calibration
        if cal is not None and cal.matches(frame):
            if not self.calibrated and len(self._first) < AUTO_ROUGH_FRAMES:
                self._first.append(frame)  # refine the stop-gap's noise over the first second
                if len(self._first) == AUTO_ROUGH_FRAMES:
                    cal = self.calibration = MatCalibration.rough(self._first, **self._scale)
            return cal
        if cal is not None:
            log.warning(
                "motion mat is now %d x %d, calibrated for %d x %d: calibrating again",
                frame.rows,
                frame.cols,
                cal.rows,
                cal.cols,
            )
        self.calibrated = False
        self._first, self._empty = [frame], []
        self.tracker.reset(None)
        cal = self.calibration = MatCalibration.rough([frame], **self._scale)
        return cal

    def update(self, frame: MatFrame, t: float) -> MatReading:
        """Derive one reading from one frame taken at ``t`` (s, monotonic)."""
        cal = self._calibration_for(frame)
        load = cal.measure(frame)
        was = self.occupancy.occupied
        occupied = self.occupancy.update(t, load.kg)
        if occupied and not was:
            self.tracker.reset(t)
            self._rate = self._rate_at = None
        self.tracker.update(t, load)
        if not occupied:
            if load.kg < self.occupancy.on_kg:
                cal.adapt(frame, self.drift_alpha)
            self._rate = None
        elif self._rate_at is None or t - self._rate_at >= self.rate_every_s:
            self._rate = self.tracker.breathing_rate()
            self._rate_at = t
        if not self.calibrated:
            self._learn_empty(frame, quiet=not occupied and load.kg < self.occupancy.off_kg)
        cop = (
            (load.cop_x_cm, load.cop_y_cm)
            if load.cop_x_cm is not None and load.cop_y_cm is not None
            else None
        )
        self.last = MatReading(
            t=t,
            seq=frame.seq,
            occupied=occupied,
            load_kg=load.kg,
            load_counts=load.counts,
            cop_cm=cop,
            motion_mm=self.tracker.motion_mm,
            moving=self.tracker.moving,
            seconds_since_motion=self.tracker.seconds_since_motion if occupied else 0.0,
            breathing_rate=self._rate,
            calibrated=self.calibrated,
        )
        return self.last

    def _learn_empty(self, frame: MatFrame, *, quiet: bool) -> None:
        """Collect frames of an empty cot; enough in a row become the per-cell calibration."""
        if not quiet:
            self._empty.clear()
            return
        self._empty.append(frame)
        if len(self._empty) >= AUTO_CALIBRATION_FRAMES:
            self.calibration = MatCalibration.from_empty(self._empty, **self._scale)
            self.calibrated = True
            self._empty = []
            log.info("motion mat calibrated per cell from an empty cot")
