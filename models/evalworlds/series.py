"""Scalar sensor series with labelled faults: EVALUATION ONLY, NEVER FOR TRAINING OR TUNING.

These generators measure whether the device's series fault detectors (issue 15) work on
data nobody here generated for them.  No detector, threshold, window length or model may be
trained, fitted or tuned on them; a figure measured here is only honest while that holds.
They were written from first principles and field facts, without reading the detectors,
their training generators or their model cards.

Two kinds of series:

``water(family, n, days, seed, fault=None)``: water level in cm, one reading every 600 s.
``mat(family, n, minutes, seed, fault=None)``: a cot mat's total load in kg, one reading
every 0.5 s.

Each call returns ``n`` series.  ``fault=None`` gives clean series; a fault name gives
series carrying exactly that one fault, with ``onset`` the index of the first faulty
reading.  Everything is deterministic in ``(family, seed, index, fault)``: series ``i`` of a
call is the same whatever ``n`` is, and a faulty series equals the clean series of the same
``(family, seed, i)`` before its onset (the fault is injected into that clean world), so a
clean/faulty pair can be compared reading by reading.

Common assumptions
------------------
* Readings are reported unclipped inside the sensor's range and quantised: water to
  0.01 cm, mat load to 0.001 kg.  With the noise floors below, quantisation makes short
  runs of equal readings possible in clean series (as on a real device), never long ones
  (the tests check no clean series repeats a value 6 times in a row).
* ``meta`` is JSON-serialisable: the world's parameters, legitimate events
  (``meta["events"]``: dicts with ``kind``, ``start``, ``end`` reading indices, end
  exclusive) and, for a faulty series, the fault's parameters and ``fault_end`` (index after
  the last faulty reading; None when the fault persists to the end).
* Faults start at an onset drawn uniformly in [20 %, 70 %] of the series.

Water level (period 600 s; a reading is the mean of 20 one-second samples with spikes
removed, so white noise per reading is small)
------------------------------------------------------------------------------------
Sensor: a 4-20 mA level transmitter with range 0..span cm, span the smallest of 50, 100,
200, 300, 500, 1000, 2000 cm that is >= 1.25 x the site's highest clean level (an installer
sizes the range to the site).  Per NAMUR NE43 a working transmitter saturates at 3.8 mA and
20.5 mA: readings are clipped to [-1.25 %, +103.125 %] of span (clean series never reach
these rails by construction; faulty ones may and then saturate, ``meta["saturated_at"]``).

Every series starts at a random local clock hour (``meta["start_hour"]``); diurnal effects
follow the clock.

``paddy`` -- rice paddy, water depth above the soil (cm).
  Probe zero offset 0.5-1.0 cm (a dry paddy reads that + noise), white noise 0.10-0.25 cm.
  Weir crest 8-14 cm: above it water spills with time constant 0.5-2 h.
  Farmer band: refill threshold 1.5-5 cm, target threshold+2-6 cm (< weir).
  Loss (evaporation + percolation) 0.5-3 cm/day, percolation share 0.2-0.6 constant over
  the day, the rest evapotranspiration shaped as a half-sine 06-18 h (so more loss by day,
  none at night); day-to-day factor lognormal (sigma 0.3); 15 % of days are calm
  (factor 0.05-0.2: almost no change, farmer does not come).
  Inlet: the farmer checks once a day at 06-08:30; every 1-2 days (or whenever the level is
  under the threshold) opens the inlet for a rise of 2-6 cm over 1-4 h (capped 0.3 cm under
  the weir; skipped if < 2 cm is possible).
  Rain: 0.15-0.4 events/day, depth lognormal (median 1.5 cm, 0.2-8 cm), 1-12 h, times
  1.0-1.3 for runoff from the levees.
  Mid-season drying (half of the series of >= 4 days): the drain opens at a random time in
  15-55 % of the series, level falls to 0 with time constant 1-4 h and stays dry 3-10 days
  (rain drains off with the same time constant), then a refill of 3-8 h to the target
  (a refill may rise more than 6 cm).  While dry the probe reads its zero offset + noise:
  a real paddy state, not a fault.  ``meta["events"]`` holds it as kind "drainage" with
  ``dry_from`` (first reading at 0 water).
``river`` -- stage of a small river, base 10-150 cm.
  Discharge in units of the initial baseflow: baseflow recedes exponentially (time
  constant 20-100 days) to a floor of 0.3-0.6; rain hydrographs at 0.1-0.4 events/day
  (peak lognormal, median 1, 0.1-7 x baseflow), quick response a gamma (Nash cascade,
  n 2-4, k 1-6 h) plus a slow recession (10-30 % of the peak, 1-5 days).
  30 % of series have a spring snowmelt cycle: melt 09-19 h, 0.1-0.6 x baseflow, day
  factor 0.3-1.5, growing over the series, routed through a linear reservoir (k 2-6 h):
  an evening stage peak.  Stage = h0 + A q^0.6 with A 0.3-0.8 x base (a rating curve).
  40 % have weed growth raising stage 0.05-0.4 cm/day (an order of magnitude under the
  drift fault); of those with >= 7 days, 30 % have the weeds cut: stage falls by 50-100 %
  of the weed rise over 1-3 h in daytime.
  Noise: white 0.1-0.6 cm x q^0.3 (turbulence at high flow) + AR(1) ripple (sd 0.1-0.5 cm,
  phi 0.6-0.95 per reading).
``tidal`` -- river mouth, depth over the sensor.
  M2 (12.4206 h) amplitude 20-150 cm, S2 (12.00 h) 0.25-0.5 x M2 (spring/neap beat 14.8
  days), K1 0-0.35 x, O1 0-0.25 x (diurnal inequality), M4 overtide 0-0.1 x (shallow-water
  asymmetry).  River floor: the channel cannot drain below the river's own stage, so low
  tides are cut smoothly (3 cm soft maximum) at a floor that removes 0-60 % of the range.
  River floods 0.05-0.2/day (10-80 cm, gamma k 3-12 h; 30-70 % of it shows at high tide).
  Storm surges 0.02-0.1/day (20-100 cm, Gaussian sd 4-12 h); wave noise rises up to 2.5 x
  during a surge (a legitimate noise rise, well under the noise fault's 5-20 x).
  Noise: white 0.3-1.0 cm + AR(1) ripple sd 0.2-0.8 cm (phi 0.5-0.9).
``reservoir_gate`` -- irrigation channel below a gate.
  Base level 20-80 cm; gate operations 0.5-3/day (85 % in 06-18 h), each a step of 5-30 cm
  (sign keeps the gated level in 10-150 cm) completing as a raised-cosine ramp of 60-1200 s, so
  within one or two readings: a legitimate step, not a fault.  A small seiche follows
  (0-10 % of the step, period 15-60 min, decay 30-90 min).  Otherwise flat: diurnal
  demand 0-0.3 cm, trend -0.3..0.3 cm/day, white noise 0.10-0.15 cm.

Water faults (one per faulty series):
  spike    1-3 consecutive readings off by 5-50 cm (same sign; up unless that leaves range).
  stuck    the logger repeats the last good value exactly for >= 6 h: half persist to the
           end, half recover after 6-72 h (``fault_end``).
  offset   permanent step of 5-40 cm from onset (the probe slipped on its mount).
  dropout  from onset to the end one exact constant (``meta["dropout_value"]``, variant in
           ``meta["dropout_variant"]``): "zero" (device substitutes 0.0), "fail_low" (NE43
           3.6 mA = -2.5 % of span), "fail_high" (21 mA = 106.25 %), "wire_break" (0 mA read
           through the linear scaling = -25 % of span).  Not clipped: these are failure
           signals outside the working rails.
  drift    linear drift of 2-10 cm/day from onset to the end (fouling, silting); the first
           faulty reading is already one step (600 s) into the drift.
  noise    extra white noise from onset to the end so that the total short-term noise is
           5-20 x the series' normal noise (``meta["noise_factor"]``; normal =
           ``meta["noise_cm"]``, white and ripple combined, at base flow).

Mat load (period 0.5 s)
-----------------------
A reading is the load averaged over a 0.1 s aperture (one load-cell conversion) at its time;
there is no anti-alias filter, so a 1-2 Hz pat sampled at 2 Hz appears at the alias
|2 - f| Hz (and its harmonics fold likewise).  ``mat(..., period_s=0.05)`` samples the same
world (events identical, noise redrawn) faster, to show the pats really are 1-2 Hz.

Every family: child's static load 2.5-15 kg, breathing 0.33-0.8 Hz (20-48 /min, slow 8 %
rate wander, 20 % amplitude wander, a 2nd harmonic) of amplitude 0.005-0.03 kg scaled by
how much of the child is on the mat, white noise 0.02-0.04 kg, twitches 0-0.3/min of
0.02-0.1 kg (0.5-2 s).  Family-specific:
``still``    nothing more.
``restless`` bouts (on 1-5 min, off 0.5-3 min) of turning over at 1.5-5 turns/min: each turn
             1.5-4 s, a partial unloading of 5-25 % of the load as a limb lifts (0.5-1.5 s),
             a push of 5-30 % (0.3-1 s), and a new resting level (mat sensitivity is not
             uniform: offset mean-reverting, sd 3 %); small movements 2-8/min of 1-5 %.
``tonton``   1-2 episodes of 1-5 min (never more than 80 % of the series) of patting at
             1-2 Hz (tempo drift -3..3 % over the episode, 2 % jitter per pat, cumulating):
             half-sine pats of 0.2-2 kg (sd 15 % each) with duty 25-50 %, the hand resting
             0-30 % of that between pats, 2-5 s fade in/out.
``blanket``  1-3 blanket changes: a step of 0.2-1.0 kg over 1-3 s (on or off, alternating
             from a random start) with a hand transient of 0.3-3 kg (1-4 s); plus 0-2 hand
             presses on the mattress of 0.5-5 kg (1-5 s).
``resettle`` 1-2 lifts: hands slide under (+0.2-1 kg, 1-2 s), the load falls over 1-2.5 s to
             the empty mat's tare residual (-0.05..0.1 kg), empty 5-60 s (maybe a hand touch
             of 0.3-2 kg), put down over 1-2 s to a new level (sd 3 %) with a damped bounce
             (5-20 % of the load, 1-2.5 Hz, decay 0.3-0.8 s), then 3-8 small movements in
             the next minute.

Mat faults:
  stuck  the value freezes exactly at the last good reading: half to the end, half for
         30-600 s.
  spike  1-3 readings off by 1-10 kg (down only if the reading stays >= 0).
  drift  0.5-3 kg accumulated linearly over 2-10 min (0.05-1.5 kg/min), then held to the
         end (``meta["drift_kg_per_min"]``; ``meta["drift_end"]``: first reading at the full
         drift ``meta["drift_kg"]``); a series too short for the whole ramp ends mid-ramp
         (``meta["drift_truncated"]``).
  drop   while the child is on the mat (not within 10 s of a lift): either "partial", a
         permanent drop by 0.5-3 kg (at most 80 % of the load), or "zero", the reading falls
         to 0 kg + the normal noise for good.
  noise  extra white noise to the end: total noise 8-12 x normal (``meta["noise_factor"]``).
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MAT_FAMILIES",
    "MAT_FAULTS",
    "MAT_PERIOD_S",
    "WATER_FAMILIES",
    "WATER_FAULTS",
    "WATER_PERIOD_S",
    "Series",
    "mat",
    "water",
]

Array = NDArray[np.float64]

WATER_PERIOD_S = 600.0
MAT_PERIOD_S = 0.5
WATER_FAMILIES: tuple[str, ...] = ("paddy", "river", "tidal", "reservoir_gate")
WATER_FAULTS: tuple[str, ...] = ("spike", "stuck", "offset", "dropout", "drift", "noise")
MAT_FAMILIES: tuple[str, ...] = ("still", "restless", "tonton", "blanket", "resettle")
MAT_FAULTS: tuple[str, ...] = ("stuck", "spike", "drift", "drop", "noise")

_SPANS_CM = (50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0)
_STEPS_PER_DAY = 144
_STUCK_MIN = 36  # 6 h of 600 s readings
_M2_H = 12.4206012
_S2_H = 12.0
_K1_H = 23.9344697
_O1_H = 25.8193417


@dataclass(frozen=True, eq=False)
class Series:
    """One generated series; ``values`` is read-only.  eq=False: arrays have no truth value."""

    family: str
    values: Array
    period_s: float
    fault: str | None
    onset: int | None
    meta: dict[str, Any] = field(default_factory=dict)


def _rng(*key: int | str) -> np.random.Generator:
    """A generator keyed by a tuple, so each (seed, family, index, stream) is independent."""
    ints = [k % 2**63 if isinstance(k, int) else zlib.crc32(k.encode()) for k in key]
    return np.random.default_rng(np.random.SeedSequence(ints))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _smoothstep(x: Array) -> Array:
    """0 before 0, 1 after 1, raised cosine between."""
    c = np.clip(x, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * c)


def _hann(t: Array, start: float, width: float) -> Array:
    """A Hann bump of peak 1 on [start, start + width]."""
    x = (t - start) / width
    inside = (x >= 0.0) & (x <= 1.0)
    return np.where(inside, np.sin(np.pi * np.clip(x, 0.0, 1.0)) ** 2, 0.0)


def _gamma_peak1(t: Array, n: float, k: float) -> Array:
    """Nash-cascade (gamma) response to a pulse at t=0, scaled to peak 1 at t=(n-1)k."""
    tp = (n - 1.0) * k
    x = np.clip(t, 1e-9, None)
    out = np.exp((n - 1.0) * np.log(x / tp) - (x - tp) / k)
    return np.where(t > 0.0, out, 0.0)


def _ar1(rng: np.random.Generator, n: int, sd: float, phi: float) -> Array:
    """Stationary AR(1) of marginal sd ``sd``."""
    e = rng.normal(0.0, sd * math.sqrt(1.0 - phi * phi), n)
    out = np.empty(n)
    x = float(rng.normal(0.0, sd))
    for i in range(n):
        x = phi * x + float(e[i])
        out[i] = x
    return out


def _linres(inflow: Array, k_steps: float) -> Array:
    """Route a series through a linear reservoir (time constant in steps), unit gain."""
    a = math.exp(-1.0 / k_steps)
    out = np.empty_like(inflow)
    s = 0.0
    for i, q in enumerate(inflow):
        s = a * s + (1.0 - a) * float(q)
        out[i] = s
    return out


def _events_poisson(rng: np.random.Generator, rate: float, t0: float, t1: float) -> Array:
    """Event times of a Poisson process of ``rate`` per unit time on [t0, t1)."""
    k = int(rng.poisson(max(rate * (t1 - t0), 0.0)))
    return np.sort(rng.uniform(t0, t1, k))


# ---------------------------------------------------------------------------------------
# water worlds: each returns (level in cm incl. noise, unquantised; meta)
# ---------------------------------------------------------------------------------------

WorldFn = Callable[[int, np.random.Generator, np.random.Generator], tuple[Array, dict[str, Any]]]


def _clock(n: int, start_hour: float) -> tuple[Array, NDArray[np.int64]]:
    hours = start_hour + np.arange(n, dtype=np.float64) * WATER_PERIOD_S / 3600.0
    return hours % 24.0, (hours // 24.0).astype(np.int64)


def _paddy(
    n: int, rng: np.random.Generator, nrng: np.random.Generator
) -> tuple[Array, dict[str, Any]]:
    start_hour = _u(rng, 0.0, 24.0)
    clock, day = _clock(n, start_hour)
    ndays = int(day[-1]) + 1
    days = n / _STEPS_PER_DAY
    weir = _u(rng, 8.0, 14.0)
    h_low = _u(rng, 1.5, 5.0)
    h_high = min(h_low + _u(rng, 2.0, 6.0), weir - 0.5)
    loss_day = _u(rng, 0.5, 3.0)
    perc = _u(rng, 0.2, 0.6)
    tau_w = _u(rng, 0.5, 2.0) * 6.0  # steps
    zero = _u(rng, 0.5, 1.0)
    noise = _u(rng, 0.10, 0.25)
    fac = np.exp(rng.normal(0.0, 0.3, ndays))
    calm = rng.random(ndays) < 0.15
    fac[calm] = rng.uniform(0.05, 0.2, int(calm.sum()))
    shape = np.pi * np.maximum(0.0, np.sin(np.pi * (clock - 6.0) / 12.0))
    loss = loss_day * fac[day] * (perc + (1.0 - perc) * shape) / _STEPS_PER_DAY
    events: list[dict[str, Any]] = []
    # rain
    rain = np.zeros(n)
    runoff = _u(rng, 1.0, 1.3)
    for t in _events_poisson(rng, _u(rng, 0.15, 0.4), 0.0, days):
        depth = float(np.clip(1.5 * math.exp(rng.normal(0.0, 0.8)), 0.2, 8.0))
        dur = max(1, round(_u(rng, 1.0, 12.0) * 6))
        k0 = int(t * _STEPS_PER_DAY)
        k1 = min(n, k0 + dur)
        if k1 > k0:
            rain[k0:k1] += runoff * depth / dur
            events.append({"kind": "rain", "start": k0, "end": k1, "depth_cm": round(depth, 2)})
    # mid-season drying
    drain_start, drain_end = n, n
    if days >= 4 and rng.random() < 0.5:
        drain_start = int(_u(rng, 0.15, 0.55) * n)
        drain_end = min(n, drain_start + int(_u(rng, 3.0, 10.0) * _STEPS_PER_DAY))
    tau_d = _u(rng, 1.0, 4.0) * 6.0
    check = [int(_u(rng, 6.0, 8.5) * 6) for _ in range(ndays)]  # step of the day's visit
    interval = _u(rng, 1.0, 2.0)
    last_irrig = -interval
    h = _u(rng, h_low, h_high)
    inlet_left, inlet_rate = 0, 0.0
    dry_from: int | None = None
    level = np.empty(n)
    a_w, a_d = math.exp(-1.0 / tau_w), math.exp(-1.0 / tau_d)
    for k in range(n):
        d = int(day[k])
        step_of_day = round(float(clock[k]) * 6.0)
        draining = drain_start <= k < drain_end
        if k == drain_end and drain_end < n:  # refill after drying
            rise = max(h_high - h, 2.0)
            steps = max(1, round(_u(rng, 3.0, 8.0) * 6))
            inlet_left, inlet_rate = steps, rise / steps
            events.append(
                {"kind": "refill", "start": k, "end": min(n, k + steps), "rise_cm": round(rise, 2)}
            )
            last_irrig = k / _STEPS_PER_DAY
        elif not draining and inlet_left == 0 and not calm[d] and step_of_day == check[d]:
            since = k / _STEPS_PER_DAY - last_irrig
            if (since >= interval and h < h_high - 1.0) or h < h_low:
                rise = min(_u(rng, 2.0, 6.0), weir - 0.3 - h)
                if rise >= 2.0:
                    steps = max(1, round(_u(rng, 1.0, 4.0) * 6))
                    inlet_left, inlet_rate = steps, rise / steps
                    events.append(
                        {
                            "kind": "inlet",
                            "start": k,
                            "end": min(n, k + steps),
                            "rise_cm": round(rise, 2),
                        }
                    )
                    last_irrig = k / _STEPS_PER_DAY
                    interval = _u(rng, 1.0, 2.0)
        if inlet_left > 0:
            h += inlet_rate
            inlet_left -= 1
        h += float(rain[k]) - float(loss[k])
        if draining:
            h *= a_d
            if h <= 0.01:
                h = 0.0
                if dry_from is None:
                    dry_from = k
        if h > weir:
            h = weir + (h - weir) * a_w
        h = max(h, 0.0)
        level[k] = h
    if drain_start < n:
        events.append(
            {"kind": "drainage", "start": drain_start, "end": drain_end, "dry_from": dry_from}
        )
    values = zero + level + nrng.normal(0.0, noise, n)
    meta = {
        "start_hour": start_hour,
        "weir_cm": weir,
        "threshold_cm": h_low,
        "target_cm": h_high,
        "loss_cm_per_day": loss_day,
        "percolation_share": perc,
        "zero_offset_cm": zero,
        "noise_cm": noise,
        "calm_days": int(calm.sum()),
        "events": sorted(events, key=lambda e: e["start"]),
    }
    return values, meta


def _river(
    n: int, rng: np.random.Generator, nrng: np.random.Generator
) -> tuple[Array, dict[str, Any]]:
    start_hour = _u(rng, 0.0, 24.0)
    clock, day = _clock(n, start_hour)
    days = n / _STEPS_PER_DAY
    th = np.arange(n, dtype=np.float64) * WATER_PERIOD_S / 3600.0
    td = th / 24.0
    base = _u(rng, 10.0, 150.0)
    amp = base * _u(rng, 0.3, 0.8)
    h0 = base - amp
    q_floor = _u(rng, 0.3, 0.6)
    q = q_floor + (1.0 - q_floor) * np.exp(-td / _u(rng, 20.0, 100.0))
    events: list[dict[str, Any]] = []
    for t in _events_poisson(rng, _u(rng, 0.1, 0.4), -2.0, days):
        peak = float(np.clip(math.exp(rng.normal(0.0, 0.9)), 0.1, 7.0))
        nc, kq = _u(rng, 2.0, 4.0), _u(rng, 1.0, 6.0)
        dt_h = th - t * 24.0
        slow_share, ks = _u(rng, 0.1, 0.3), _u(rng, 1.0, 5.0) * 24.0
        q += peak * _gamma_peak1(dt_h, nc, kq)
        q += (
            slow_share
            * peak
            * np.where(
                dt_h > 0,
                (1.0 - np.exp(-np.clip(dt_h, 0, None) / (nc * kq)))
                * np.exp(-np.clip(dt_h, 0, None) / ks),
                0.0,
            )
        )
        k0 = max(0, int(t * _STEPS_PER_DAY))
        if k0 < n:
            events.append(
                {
                    "kind": "flood",
                    "start": k0,
                    "end": min(n, k0 + int((nc + 3) * kq * 6)),
                    "peak_q": round(peak, 3),
                }
            )
    melt = rng.random() < 0.3
    if melt:
        m = _u(rng, 0.1, 0.6)
        dayf = rng.uniform(0.3, 1.5, int(day[-1]) + 1)
        inp = (
            m
            * dayf[day]
            * (1.0 + td / max(days, 1.0))
            * np.maximum(0.0, np.sin(np.pi * (clock - 9.0) / 10.0)) ** 1.5
            * (clock >= 9.0)
            * (clock <= 19.0)
        )
        q += _linres(inp * 2.4, _u(rng, 2.0, 6.0) * 6.0)  # 2.4: a 10 h pulse averages ~0.4
    stage = h0 + amp * q**0.6
    weeds = rng.random() < 0.4
    weed_rate = _u(rng, 0.05, 0.4) if weeds else 0.0
    weed = weed_rate * td
    if weeds and days >= 7 and rng.random() < 0.3:
        t_cut = math.floor(_u(rng, 0.3, 0.9) * days) * 24.0 + _u(rng, 8.0, 16.0) - start_hour
        dur = _u(rng, 1.0, 3.0)
        cut = weed_rate * t_cut / 24.0 * _u(rng, 0.5, 1.0)
        weed = weed - cut * _smoothstep((th - t_cut) / dur)
        k0 = max(0, int(t_cut * 6))
        events.append(
            {
                "kind": "weed_cut",
                "start": k0,
                "end": min(n, k0 + int(dur * 6) + 1),
                "fall_cm": round(cut, 2),
            }
        )
    stage = stage + weed
    white, ripple, phi = _u(rng, 0.1, 0.6), _u(rng, 0.1, 0.5), _u(rng, 0.6, 0.95)
    values = stage + nrng.normal(0.0, white, n) * np.clip(q, 1.0, None) ** 0.3
    values += _ar1(nrng, n, ripple, phi)
    meta = {
        "start_hour": start_hour,
        "base_cm": base,
        "rating_amp_cm": amp,
        "snowmelt": melt,
        "weed_cm_per_day": weed_rate,
        "white_cm": white,
        "ripple_cm": ripple,
        "ripple_phi": phi,
        "noise_cm": math.hypot(white, ripple),
        "events": events,
    }
    return values, meta


def _tidal(
    n: int, rng: np.random.Generator, nrng: np.random.Generator
) -> tuple[Array, dict[str, Any]]:
    th = np.arange(n, dtype=np.float64) * WATER_PERIOD_S / 3600.0
    days = n / _STEPS_PER_DAY
    a = _u(rng, 20.0, 150.0)
    ratios = {
        "S2": _u(rng, 0.25, 0.5),
        "K1": _u(rng, 0.0, 0.35),
        "O1": _u(rng, 0.0, 0.25),
        "M4": _u(rng, 0.0, 0.1),
    }
    periods = {"M2": _M2_H, "S2": _S2_H, "K1": _K1_H, "O1": _O1_H, "M4": _M2_H / 2.0}
    tide = np.zeros(n)
    for name, per in periods.items():
        amp = a * (1.0 if name == "M2" else ratios[name])
        tide += amp * np.cos(2.0 * np.pi * th / per - _u(rng, 0.0, 2.0 * np.pi))
    maxsum = a * (1.0 + sum(ratios.values()))
    d0 = maxsum + _u(rng, 10.0, 60.0)
    events: list[dict[str, Any]] = []
    flood = np.zeros(n)
    for t in _events_poisson(rng, _u(rng, 0.05, 0.2), -1.0, days):
        peak, k = _u(rng, 10.0, 80.0), _u(rng, 3.0, 12.0)
        flood += peak * _gamma_peak1(th - t * 24.0, 3.0, k)
        k0 = max(0, int(t * _STEPS_PER_DAY))
        if k0 < n:
            events.append(
                {
                    "kind": "river_flood",
                    "start": k0,
                    "end": min(n, k0 + int(8 * k * 6)),
                    "peak_cm": round(peak, 1),
                }
            )
    surge = np.zeros(n)
    for t in _events_poisson(rng, _u(rng, 0.02, 0.1), -1.0, days):
        peak, sd = _u(rng, 20.0, 100.0), _u(rng, 4.0, 12.0)
        surge += peak * np.exp(-0.5 * ((th - t * 24.0) / sd) ** 2)
        k0, k1 = max(0, int((t * 24.0 - 2 * sd) * 6)), min(n, int((t * 24.0 + 2 * sd) * 6))
        if k0 < n and k1 > 0:
            events.append({"kind": "surge", "start": k0, "end": k1, "peak_cm": round(peak, 1)})
    cut = _u(rng, 0.0, 0.6)
    floor = d0 - maxsum + cut * 2.0 * a * (1.0 + ratios["S2"]) + flood
    sea = d0 + tide + surge + flood * _u(rng, 0.3, 0.7)
    s = 3.0
    level = s * np.logaddexp(sea / s, floor / s)
    white, ripple, phi = _u(rng, 0.3, 1.0), _u(rng, 0.2, 0.8), _u(rng, 0.5, 0.9)
    waves = 1.0 + 1.5 * np.clip(surge / 100.0, 0.0, 1.0)
    values = level + (nrng.normal(0.0, white, n) + _ar1(nrng, n, ripple, phi)) * waves
    meta = {
        "m2_cm": a,
        **{f"{k.lower()}_ratio": v for k, v in ratios.items()},
        "mean_depth_cm": d0,
        "low_tide_cut": cut,
        "white_cm": white,
        "ripple_cm": ripple,
        "noise_cm": math.hypot(white, ripple),
        "events": sorted(events, key=lambda e: e["start"]),
    }
    return values, meta


def _gate(
    n: int, rng: np.random.Generator, nrng: np.random.Generator
) -> tuple[Array, dict[str, Any]]:
    start_hour = _u(rng, 0.0, 24.0)
    clock, _ = _clock(n, start_hour)
    ts = np.arange(n, dtype=np.float64) * WATER_PERIOD_S
    days = n / _STEPS_PER_DAY
    base = _u(rng, 20.0, 80.0)
    level = base + _u(rng, 0.0, 0.3) * np.sin(2 * np.pi * (clock - _u(rng, 0, 24)) / 24.0)
    level += _u(rng, -0.3, 0.3) * ts / 86400.0
    events: list[dict[str, Any]] = []
    cur = base
    times: list[float] = []
    for t in _events_poisson(rng, _u(rng, 0.5, 3.0), 0.0, days):
        t_s = float(t) * 86400.0
        if rng.random() < 0.85:  # move into working hours of that day
            hod = (start_hour + t_s / 3600.0) % 24.0
            t_s += (_u(rng, 6.0, 18.0) - hod) * 3600.0
        if 0.0 <= t_s < ts[-1]:
            times.append(t_s)
    for t_s in sorted(times):
        step = _u(rng, 5.0, 30.0) * (1 if rng.random() < 0.5 else -1)
        if not 10.0 <= cur + step <= 150.0:
            step = -step
        cur += step
        ramp = _u(rng, 60.0, 1200.0)
        level += step * _smoothstep((ts - t_s) / ramp)
        sa, sp, sd = _u(rng, 0.0, 0.1) * step, _u(rng, 900.0, 3600.0), _u(rng, 1800.0, 5400.0)
        after = ts - (t_s + ramp)
        level += np.where(
            after > 0,
            sa * np.sin(2 * np.pi * after / sp) * np.exp(-np.clip(after, 0.0, None) / sd),
            0.0,
        )
        k0 = math.floor(t_s / WATER_PERIOD_S) + 1
        events.append(
            {
                "kind": "gate",
                "start": k0,
                "end": min(n, math.ceil((t_s + ramp) / WATER_PERIOD_S) + 1),
                "step_cm": round(step, 2),
            }
        )
    noise = _u(rng, 0.10, 0.15)
    values = level + nrng.normal(0.0, noise, n)
    events.sort(key=lambda e: e["start"])
    meta = {"start_hour": start_hour, "base_cm": base, "noise_cm": noise, "events": events}
    return values, meta


_WATER_WORLDS: dict[str, WorldFn] = {
    "paddy": _paddy,
    "river": _river,
    "tidal": _tidal,
    "reservoir_gate": _gate,
}


def _signs(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.5 else -1


def _fit_sign(sign: int, mag_max: float, lo_val: float, hi_val: float, lo: float, hi: float) -> int:
    """Keep a fault's direction if it stays inside the rails, else take the other one."""
    if sign > 0 and hi_val + mag_max > hi and lo_val - mag_max >= lo:
        return -1
    if sign < 0 and lo_val - mag_max < lo:
        return 1
    return sign


def _water_fault(
    fault: str, clean: Array, meta: dict[str, Any], rng: np.random.Generator
) -> tuple[Array, int, dict[str, Any]]:
    n = len(clean)
    span = float(meta["span_cm"])
    lo, hi = meta["rails_cm"]
    onset = int(rng.integers(max(1, int(0.2 * n)), int(0.7 * n) + 1))
    v = clean.copy()
    fm: dict[str, Any] = {"fault_end": None}
    rest = clean[onset:]
    if fault == "spike":
        length = int(rng.integers(1, 4))
        sizes = rng.uniform(5.0, 50.0, length)
        seg = clean[onset : onset + length]
        sign = _fit_sign(
            _signs(rng), float(sizes.max()), float(seg.min()), float(seg.max()), lo, hi
        )
        v[onset : onset + length] += sign * sizes
        fm.update(fault_end=onset + length, spike_cm=[round(float(s) * sign, 3) for s in sizes])
    elif fault == "stuck":
        persists = rng.random() < 0.5
        length = n - onset if persists else int(rng.integers(_STUCK_MIN, min(n - onset, 432) + 1))
        v[onset : onset + length] = clean[onset - 1]
        fm.update(
            fault_end=None if onset + length >= n else onset + length,
            stuck_value=float(clean[onset - 1]),
        )
    elif fault == "offset":
        mag = _u(rng, 5.0, 40.0)
        sign = _fit_sign(_signs(rng), mag, float(rest.min()), float(rest.max()), lo, hi)
        v[onset:] += sign * mag
        fm.update(offset_cm=sign * mag)
    elif fault == "dropout":
        variants = {
            "zero": 0.0,
            "fail_low": -0.025 * span,
            "fail_high": 1.0625 * span,
            "wire_break": -0.25 * span,
        }
        name = str(rng.choice(sorted(variants)))
        v[onset:] = variants[name]
        fm.update(dropout_variant=name, dropout_value=variants[name])
    elif fault == "drift":
        rate = _u(rng, 2.0, 10.0)
        steps = np.arange(1, n - onset + 1, dtype=np.float64)
        total = rate * (n - onset) / _STEPS_PER_DAY
        sign = _fit_sign(_signs(rng), total, float(rest.min()), float(rest.max()), lo, hi)
        v[onset:] += sign * rate * steps / _STEPS_PER_DAY
        fm.update(drift_cm_per_day=sign * rate)
    elif fault == "noise":
        factor = _u(rng, 5.0, 20.0)
        extra = float(meta["noise_cm"]) * math.sqrt(factor * factor - 1.0)
        v[onset:] += rng.normal(0.0, extra, n - onset)
        fm.update(noise_factor=factor)
    else:  # pragma: no cover - validated by the caller
        raise ValueError(fault)
    if fault != "dropout":
        clipped = (v < lo) | (v > hi)
        v = np.clip(v, lo, hi)
        fm["saturated_at"] = int(np.argmax(clipped)) if clipped.any() else None
        v = np.round(v, 2)
    return v, onset, fm


def water(family: str, n: int, days: float, seed: int, *, fault: str | None = None) -> list[Series]:
    """``n`` water-level series of ``days`` days (600 s readings), clean or with ``fault``."""
    if family not in WATER_FAMILIES:
        raise ValueError(f"unknown water family {family!r}; known: {WATER_FAMILIES}")
    if fault is not None and fault not in WATER_FAULTS:
        raise ValueError(f"unknown water fault {fault!r}; known: {WATER_FAULTS}")
    steps = round(days * 86400.0 / WATER_PERIOD_S)
    if steps < _STEPS_PER_DAY:
        raise ValueError("water series need at least one day")
    out: list[Series] = []
    for i in range(n):
        raw, meta = _WATER_WORLDS[family](
            steps, _rng(seed, "water", family, i, "world"), _rng(seed, "water", family, i, "noise")
        )
        top = float(raw.max())
        span = next((s for s in _SPANS_CM if s >= 1.25 * top), _SPANS_CM[-1])
        rails = (-0.0125 * span, 1.03125 * span)
        meta.update(index=i, seed=seed, span_cm=span, rails_cm=list(rails))
        clean: Array = np.round(np.clip(raw, rails[0], rails[1]), 2).astype(np.float64)
        onset: int | None = None
        values = clean
        if fault is not None:
            values, onset, fmeta = _water_fault(
                fault, clean, meta, _rng(seed, "water", family, i, "fault", fault)
            )
            meta.update(fmeta)
        values = values.astype(np.float64)
        values.flags.writeable = False
        out.append(Series(family, values, WATER_PERIOD_S, fault, onset, meta))
    return out


# ---------------------------------------------------------------------------------------
# mat worlds: a list of load components in continuous time (seconds)
# ---------------------------------------------------------------------------------------


@dataclass
class _MatWorld:
    """The child's load as a sum of analytic pieces, evaluable at any times."""

    mass: float
    steps: list[tuple[float, float, float]] = field(default_factory=list)  # (t0, dur, delta)
    bumps: list[tuple[float, float, float]] = field(default_factory=list)  # (start, width, amp)
    bounces: list[tuple[float, float, float, float]] = field(default_factory=list)  # t0,a,f,tau
    pats: list[tuple[float, float, float]] = field(default_factory=list)  # (start, width, amp)
    presence: list[tuple[float, float, float]] = field(default_factory=list)  # child on mat
    events: list[dict[str, Any]] = field(default_factory=list)

    def static(self, t: Array) -> Array:
        out = np.full_like(t, self.mass)
        for t0, dur, delta in self.steps:
            out += delta * _smoothstep((t - t0) / dur)
        return out

    def on_mat(self, t: Array) -> Array:
        """Fraction of the child on the mat (scales breathing)."""
        out = np.ones_like(t)
        for t0, dur, delta in self.presence:
            out += delta * _smoothstep((t - t0) / dur)
        return np.clip(out, 0.0, 1.0)

    def transients(self, t: Array) -> Array:
        out = np.zeros_like(t)
        for start, width, amp in self.bumps:
            i0, i1 = np.searchsorted(t, [start, start + width])
            out[i0:i1] += amp * _hann(t[i0:i1], start, width)
        for start, width, amp in self.pats:  # half-sine pats
            i0, i1 = np.searchsorted(t, [start, start + width])
            out[i0:i1] += amp * np.sin(np.pi * (t[i0:i1] - start) / width)
        for t0, a, f, tau in self.bounces:
            i0, i1 = np.searchsorted(t, [t0, t0 + 8 * tau])
            x = t[i0:i1] - t0
            out[i0:i1] += a * np.sin(2 * np.pi * f * x) * np.exp(-x / tau)
        return out


def _mat_base(rng: np.random.Generator, dur_s: float) -> tuple[_MatWorld, dict[str, Any]]:
    w = _MatWorld(mass=_u(rng, 2.5, 15.0))
    meta: dict[str, Any] = {
        "mass_kg": w.mass,
        "breath_hz": _u(rng, 0.33, 0.8),
        "breath_kg": _u(rng, 0.005, 0.03),
        "breath_phase": _u(rng, 0, 2 * np.pi),
        "breath_fm_hz": _u(rng, 0.005, 0.02),
        "breath_am_hz": _u(rng, 0.003, 0.02),
        "noise_kg": _u(rng, 0.02, 0.04),
    }
    for t in _events_poisson(rng, _u(rng, 0.0, 0.3) / 60.0, 0.0, dur_s):
        w.bumps.append((float(t), _u(rng, 0.5, 2.0), _u(rng, 0.02, 0.1) * _signs(rng)))
    return w, meta


def _breathing(t: Array, meta: dict[str, Any]) -> Array:
    f0, fm = meta["breath_hz"], meta["breath_fm_hz"]
    phase = (
        2 * np.pi * f0 * t + (0.08 * f0 / fm) * np.sin(2 * np.pi * fm * t) + meta["breath_phase"]
    )
    am = 1.0 + 0.2 * np.sin(2 * np.pi * meta["breath_am_hz"] * t)
    out: Array = float(meta["breath_kg"]) * am * (np.sin(phase) + 0.2 * np.sin(2 * phase + 0.7))
    return out


def _movements(
    w: _MatWorld, rng: np.random.Generator, t0: float, t1: float, rate_min: float
) -> None:
    for t in _events_poisson(rng, rate_min / 60.0, t0, t1):
        w.bumps.append((float(t), _u(rng, 0.5, 2.0), w.mass * _u(rng, 0.01, 0.05) * _signs(rng)))


def _restless(w: _MatWorld, rng: np.random.Generator, dur_s: float) -> None:
    t, on, off = 0.0, rng.random() < 0.7, 0.0
    rate = _u(rng, 1.5, 5.0)
    while t < dur_s:
        length = _u(rng, 60.0, 300.0) if on else _u(rng, 30.0, 180.0)
        if on:
            turns = 0
            for t0 in _events_poisson(rng, rate / 60.0, t, min(t + length, dur_s)):
                d = _u(rng, 1.5, 4.0)
                new = 0.5 * off + float(rng.normal(0.0, 0.03))
                w.steps.append((float(t0), d, w.mass * (new - off)))
                off = new
                turns += 1
                w.bumps.append(
                    (
                        float(t0) + _u(rng, 0.0, 0.4) * d,
                        _u(rng, 0.5, 1.5),
                        -w.mass * _u(rng, 0.05, 0.25),
                    )
                )
                w.bumps.append(
                    (
                        float(t0) + _u(rng, 0.3, 0.8) * d,
                        _u(rng, 0.3, 1.0),
                        w.mass * _u(rng, 0.05, 0.3),
                    )
                )
            _movements(w, rng, t, min(t + length, dur_s), _u(rng, 2.0, 8.0))
            w.events.append(
                {
                    "kind": "restless_bout",
                    "start_s": t,
                    "end_s": min(t + length, dur_s),
                    "turns": turns,
                }
            )
        t += length
        on = not on


def _tonton(w: _MatWorld, rng: np.random.Generator, dur_s: float, meta: dict[str, Any]) -> None:
    k = 1 if rng.random() < 0.5 or dur_s < 360 else 2
    free = 0.0
    slots = [(i * dur_s / k, (i + 1) * dur_s / k) for i in range(k)]
    for a, b in slots:
        length = min(_u(rng, 60.0, 300.0), 0.8 * (b - a))
        start = max(a, free) + _u(rng, 0.0, max(0.0, b - a - length))
        f0, drift = _u(rng, 1.0, 2.0), _u(rng, -0.03, 0.03)
        amp, duty, rest = _u(rng, 0.2, 2.0), _u(rng, 0.25, 0.5), _u(rng, 0.0, 0.3)
        fade = _u(rng, 2.0, 5.0)
        t = start
        while t < start + length:
            f = f0 * (1.0 + drift * (t - start) / length)
            env = min(1.0, (t - start) / fade, (start + length - t) / fade)
            width = duty / f
            w.pats.append(
                (t, width, max(0.05, amp * (1 + 0.15 * float(rng.normal()))) * max(env, 0.1))
            )
            t += (1.0 / f) * (1.0 + 0.02 * float(rng.normal()))
        if rest > 0:  # the hand resting on the back between pats
            w.steps.append((start - 1.0, 1.5, rest * amp))
            w.steps.append((start + length, 1.5, -rest * amp))
        w.events.append(
            {
                "kind": "tonton",
                "start_s": start,
                "end_s": start + length,
                "pat_hz": f0,
                "pat_hz_end": f0 * (1 + drift),
                "pat_kg": amp,
            }
        )
        free = start + length
    meta["pat_hz"] = [e["pat_hz"] for e in w.events]


def _blanket(w: _MatWorld, rng: np.random.Generator, dur_s: float) -> None:
    on = rng.random() < 0.5
    times = np.sort(rng.uniform(0.05 * dur_s, 0.95 * dur_s, int(rng.integers(1, 4))))
    for t in times:
        step = _u(rng, 0.2, 1.0) * (-1 if on else 1)
        on = not on
        d = _u(rng, 1.0, 3.0)
        w.steps.append((float(t), d, step))
        width = _u(rng, 1.0, 4.0)
        w.bumps.append((float(t) + d / 2 - width / 2, width, _u(rng, 0.3, 3.0)))
        w.events.append(
            {
                "kind": "blanket_on" if step > 0 else "blanket_off",
                "start_s": float(t),
                "end_s": float(t) + max(d, width),
                "step_kg": step,
            }
        )
    for t in rng.uniform(0.0, dur_s, int(rng.integers(0, 3))):
        width = _u(rng, 1.0, 5.0)
        w.bumps.append((float(t), width, _u(rng, 0.5, 5.0)))
        w.events.append({"kind": "hand_press", "start_s": float(t), "end_s": float(t) + width})


def _resettle(w: _MatWorld, rng: np.random.Generator, dur_s: float) -> None:
    k = 1 if rng.random() < 0.5 or dur_s < 300 else 2
    level = w.mass
    for i in range(k):
        a, b = i * dur_s / k, (i + 1) * dur_s / k
        empty = _u(rng, 5.0, 60.0)
        t0 = a + _u(rng, 0.1, 0.6) * max(0.0, b - a - empty - 70.0)
        w.bumps.append((t0, _u(rng, 1.0, 2.0), _u(rng, 0.2, 1.0)))
        lift = _u(rng, 1.0, 2.5)
        residual = _u(rng, -0.05, 0.1)
        w.steps.append((t0 + 0.5, lift, residual - level))
        w.presence.append((t0 + 0.5, lift, -1.0))
        t1 = t0 + 0.5 + lift + empty
        if rng.random() < 0.5:
            w.bumps.append(
                (t0 + 0.5 + lift + _u(rng, 0, empty), _u(rng, 0.5, 2.0), _u(rng, 0.3, 2.0))
            )
        new = w.mass * (1.0 + float(rng.normal(0.0, 0.03)))
        down = _u(rng, 1.0, 2.0)
        w.steps.append((t1, down, new - residual))
        w.presence.append((t1, down, 1.0))
        w.bounces.append(
            (t1 + down * 0.7, w.mass * _u(rng, 0.05, 0.2), _u(rng, 1.0, 2.5), _u(rng, 0.3, 0.8))
        )
        _movements(w, rng, t1 + down, t1 + down + 60.0, _u(rng, 3.0, 8.0))
        w.events.append(
            {
                "kind": "resettle",
                "start_s": t0,
                "empty_from_s": t0 + 0.5 + lift,
                "empty_to_s": t1,
                "end_s": t1 + down + 60.0,
            }
        )
        level = new


def _mat_fault(
    fault: str,
    clean: Array,
    base_noise: float,
    present: NDArray[np.bool_],
    period_s: float,
    rng: np.random.Generator,
    nrng: np.random.Generator,
) -> tuple[Array, int, dict[str, Any]]:
    n = len(clean)
    per_min = 60.0 / period_s
    onset = int(rng.integers(max(1, int(0.2 * n)), int(0.7 * n) + 1))
    v = clean.copy()
    fm: dict[str, Any] = {"fault_end": None}
    if fault == "stuck":
        persists = rng.random() < 0.5
        lo = min(n - onset, max(1, round(30.0 / period_s)))
        length = (
            n - onset
            if persists
            else int(rng.integers(lo, min(n - onset, round(600 / period_s)) + 1))
        )
        v[onset : onset + length] = clean[onset - 1]
        fm.update(
            fault_end=None if onset + length >= n else onset + length,
            stuck_value=float(clean[onset - 1]),
        )
    elif fault == "spike":
        length = int(rng.integers(1, 4))
        sizes = rng.uniform(1.0, 10.0, length)
        seg = clean[onset : onset + length]
        sign = -1 if rng.random() < 0.5 and float(seg.min()) - float(sizes.max()) >= 0.0 else 1
        v[onset : onset + length] += sign * sizes
        fm.update(fault_end=onset + length, spike_kg=[round(float(s) * sign, 4) for s in sizes])
    elif fault == "drift":
        total, minutes = _u(rng, 0.5, 3.0), _u(rng, 2.0, 10.0)
        rate = total / minutes  # 0.05-1.5 kg/min; a short series cuts the ramp, not the rate
        truncated = minutes > (n - onset) / per_min
        minutes = min(minutes, (n - onset) / per_min)
        sign = -1 if rng.random() < 0.5 and float(clean[onset:].min()) - total >= 0.5 else 1
        steps = np.minimum(np.arange(1, n - onset + 1, dtype=np.float64), minutes * per_min)
        v[onset:] += sign * rate * steps / per_min
        fm.update(
            drift_kg_per_min=sign * rate,
            drift_minutes=minutes,
            drift_kg=sign * rate * minutes,
            drift_truncated=truncated,
            drift_end=min(n, onset + math.ceil(minutes * per_min - 1e-9) - 1),
        )
    elif fault == "drop":
        ok = np.flatnonzero(present[onset:])
        onset = onset + int(ok[0]) if len(ok) else onset
        if rng.random() < 0.5:
            d = min(_u(rng, 0.5, 3.0), 0.8 * float(clean[onset]))
            v[onset:] -= d
            fm.update(drop_variant="partial", drop_kg=d)
        else:
            v[onset:] = nrng.normal(0.0, base_noise, n - onset)
            fm.update(drop_variant="zero", drop_kg=float(clean[onset]))
    elif fault == "noise":
        factor = _u(rng, 8.0, 12.0)
        v[onset:] += nrng.normal(0.0, base_noise * math.sqrt(factor**2 - 1.0), n - onset)
        fm.update(noise_factor=factor)
    else:  # pragma: no cover - validated by the caller
        raise ValueError(fault)
    return np.round(v, 3), onset, fm


def mat(
    family: str,
    n: int,
    minutes: float,
    seed: int,
    *,
    fault: str | None = None,
    period_s: float = MAT_PERIOD_S,
) -> list[Series]:
    """``n`` cot-mat load series of ``minutes`` (0.5 s readings by default), clean or faulty.

    ``period_s`` samples the same world at another rate (tests use it to see pats unaliased).
    """
    if family not in MAT_FAMILIES:
        raise ValueError(f"unknown mat family {family!r}; known: {MAT_FAMILIES}")
    if fault is not None and fault not in MAT_FAULTS:
        raise ValueError(f"unknown mat fault {fault!r}; known: {MAT_FAULTS}")
    steps = round(minutes * 60.0 / period_s)
    dur_s = steps * period_s
    if minutes < 2.0:
        raise ValueError("mat series need at least two minutes")
    out: list[Series] = []
    t = np.arange(steps, dtype=np.float64) * period_s
    aperture = 0.1
    sub = (t[:, None] - aperture * (np.arange(4) + 0.5)[None, :] / 4.0).ravel()
    for i in range(n):
        rng = _rng(seed, "mat", family, i, "world")
        nrng = _rng(seed, "mat", family, i, "noise", round(period_s * 1e6))
        w, meta = _mat_base(rng, dur_s)
        if family == "restless":
            _restless(w, rng, dur_s)
        elif family == "tonton":
            _tonton(w, rng, dur_s, meta)
        elif family == "blanket":
            _blanket(w, rng, dur_s)
        elif family == "resettle":
            _resettle(w, rng, dur_s)
        load = w.static(sub) + _breathing(sub, meta) * w.on_mat(sub) + w.transients(sub)
        clean = load.reshape(steps, 4).mean(axis=1) + nrng.normal(0.0, meta["noise_kg"], steps)
        clean = np.round(clean, 3)
        present = w.on_mat(t) >= 1.0
        for e in w.events:
            if e["kind"] == "resettle":  # no drop fault within 10 s of a lift
                present &= ~((t > e["start_s"] - 10.0) & (t < e["end_s"]))
        meta["events"] = [
            {
                **e,
                "start": int(e["start_s"] / period_s),
                "end": min(steps, math.ceil(e["end_s"] / period_s)),
            }
            for e in sorted(w.events, key=lambda e: e["start_s"])
        ]
        meta.update(index=i, seed=seed)
        onset: int | None = None
        values = clean
        if fault is not None:
            values, onset, fmeta = _mat_fault(
                fault,
                clean,
                meta["noise_kg"],
                present,
                period_s,
                _rng(seed, "mat", family, i, "fault", fault),
                nrng,
            )
            meta.update(fmeta)
        values = values.astype(np.float64)
        values.flags.writeable = False
        out.append(Series(family, values, period_s, fault, onset, meta))
    return out


# ---------------------------------------------------------------------------------------


def _sparkline(v: Array, width: int = 60) -> str:
    chars = " .:-=+*#%@"
    idx = np.linspace(0, len(v), width + 1).astype(int)
    m = np.array([v[a:b].mean() for a, b in itertools.pairwise(idx)])
    lo, hi = float(m.min()), float(m.max())
    q = (
        np.zeros(width, dtype=int)
        if hi - lo < 1e-9
        else ((m - lo) / (hi - lo) * 9).round().astype(int)
    )
    return "".join(chars[k] for k in q)


def _summary() -> None:
    print("water (cm, 600 s): family  range  median |diff|  sparkline of series 0")
    for fam in WATER_FAMILIES:
        ss = water(fam, 8, 14, seed=1)
        lo = min(float(s.values.min()) for s in ss)
        hi = max(float(s.values.max()) for s in ss)
        noise = float(np.median([np.median(np.abs(np.diff(s.values))) for s in ss]))
        print(f"  {fam:15s} {lo:7.1f}..{hi:7.1f}  {noise:5.2f}  |{_sparkline(ss[0].values)}|")
    for flt in WATER_FAULTS:
        s = water("river", 1, 14, seed=1, fault=flt)[0]
        print(f"  river+{flt:9s} onset {s.onset:5d}   |{_sparkline(s.values)}|")
    print("mat (kg, 0.5 s): family  range  median |diff|  sparkline of series 0")
    for fam in MAT_FAMILIES:
        ss = mat(fam, 8, 10, seed=1)
        lo = min(float(s.values.min()) for s in ss)
        hi = max(float(s.values.max()) for s in ss)
        noise = float(np.median([np.median(np.abs(np.diff(s.values))) for s in ss]))
        print(f"  {fam:15s} {lo:7.2f}..{hi:7.2f}  {noise:5.3f}  |{_sparkline(ss[0].values)}|")
    for flt in MAT_FAULTS:
        s = mat("still", 1, 10, seed=1, fault=flt)[0]
        print(f"  still+{flt:9s} onset {s.onset:5d}   |{_sparkline(s.values)}|")


if __name__ == "__main__":
    _summary()
