"""Development water-level series for tuning the water fault rules (issue 15).

A second, separately written world beside ``models/anomaly/data.py``: each family
is built from a small physical model of its site, not from a curve library.  The
rules in ``edge/health/water_faults.py`` are tuned on these series (and on
``data.py``'s); ``models/evalworlds`` is for evaluation only and never read here.

One reading every 600 s (the water rule's idle cadence below its observation-start
level), the mean of about 20 one-second samples: sensor noise per reading white,
log-uniform 0.1-1 cm, plus the site's own short-period motion (wind ripple in a
paddy, surface waves on a river); readings rounded to 1 mm.  A reading is the level
above the probe's zero, which sits 5-40 cm below the lowest water the site sees.

Families (:data:`FAMILIES`):

``paddy``  a field's water balance, hour by hour: evapotranspiration 0.3-0.8 cm/day
           in daylight only (a half-sine from 06:00 to 18:00), percolation 0.3-2 cm/day
           rising with depth, the farmer opening the inlet in the morning when the depth
           falls below a low mark (filling 0.5-3 cm/h to a high mark), rain (Poisson,
           0.3 events a day, 0.3-6 cm over 1-6 h) with the outlet weir spilling the excess
           (outflow grows with the head over the weir to the power 1.5), and now and then
           a few days left without top-up; the depth never goes below the soil (a drained
           field reads the soil's wet surface, a level that barely moves);
``river``  a stage from a rating curve ``h = a Q^0.5`` on a discharge that is a
           baseflow in slow recession (time constant 5-40 days, recovering after big
           storms) plus storm hydrographs (Poisson, 0.15-0.6 a day: a gamma-shaped rise of
           1-8 h and an exponential fall with time constant 5-60 h), plus a diurnal
           evapotranspiration ripple on the baseflow;
``tidal``  a river mouth: M2 (40-150 cm), S2 (0.2-0.5 of M2), K1 and O1 (5-40 cm each,
           diurnal inequality and its fortnightly beat), an M4 overtide (the flood shorter
           than the ebb), spring-neap modulation from M2 + S2, a weather surge (a
           smoothed random walk, +-5-25 cm over days), wind set-up (an onshore wind of
           6-36 h piling 5-25 cm against the coast, 0.15 a day), river floods after rain
           for a day or two, and low water cut off by the bar/bed: the level cannot fall
           below the river's own stage, which a flood raises by its whole height while high
           water rises by only 0.2-0.6 of it (the river's water spread over the estuary);
``gate``   a channel or pond whose level a sluice gate or a pump moves: slow inflow
           (filling 0-4 cm/day), a gate or pump operated 1-4 times a day at irregular
           hours that moves the level 5-30 cm within one or two readings, or, for a pump
           sump (a third of them), a sawtooth: filling slowly and pumped down within 20-40
           minutes when it reaches its high mark.  On half of the gate channels the gate's
           water also does what a real basin's does: the gate takes 10-40 min to travel, the
           basin rings after a move (a seiche, aliased by 10-min readings into swings from
           one reading to the next), a gate opened for a 10-30 min flush now and then, and
           wind that lifts the site's motion 1-4 x in the afternoon.  A gate series' label
           ``gate_ops`` lists the readings at which the gate or pump was operated (what a
           gate-position input or a pump's run signal would tell the device);
``reservoir`` a small reservoir or irrigation pond read near its outlet
           (:func:`reservoir_operated`): the pond's water balance (a stream's inflow with
           storms, the outflow through the gate's opening, a spillway), a keeper who works the
           gate 2-4 times a day to hold a mark, inching it open or shut in 1-5 steps 10-20 min
           apart; at the probe the flowing water stands lower by part of its velocity head,
           follows each step over 10-30 min, and is rough while the gate is open. Also labelled
           with ``gate_ops``.

Faults (:data:`FAULTS`), labelled with their onset (day 3-5), injected into a clean
series: ``spike`` 1-3 readings off by 4-40 cm (either way); ``offset`` the probe slips
or is re-mounted, a step of 3-30 cm kept from then on; ``stuck`` the reading freezes at
its last value (exactly, until the end); ``dropout`` to 0 (a lost signal, 50 %), to the
probe's range (300 or 500 cm), or to a negative error value, for 2-48 h; ``noise`` a
failing cable or a wave-struck probe: white noise of 3-10 x the sensor's noise for 6-48 h;
``drift`` a fouled or sinking sensor: a ramp of 2-10 cm/day either way, to the end.

    .venv/bin/python -m models.anomaly.water_dev      # the development table
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.anomaly.scoring import Series

PERIOD_S = 600.0
DAY_S = 86400.0
PER_DAY = int(DAY_S / PERIOD_S)
FAMILIES: tuple[str, ...] = ("paddy", "river", "tidal", "gate", "reservoir")
GATED: tuple[str, ...] = ("gate", "reservoir")
"""Families whose level a gate or pump moves (they carry ``gate_ops``)."""
FAULTS: tuple[str, ...] = ("spike", "stuck", "offset", "dropout", "drift", "noise")
BASE_SEED = 20_261_205


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _smooth_walk(rng: np.random.Generator, n: int, sd: float, tau: int) -> np.ndarray:
    """A random walk smoothed over ``tau`` readings and scaled to standard deviation ``sd``."""
    w = np.cumsum(rng.normal(0.0, 1.0, n + 4 * tau))
    k = np.exp(-np.arange(4 * tau) / max(tau, 1))
    s = np.convolve(w - w.mean(), k / k.sum(), mode="valid")[:n]
    s = s - s.mean()
    out: np.ndarray = s * (sd / max(float(s.std()), 1e-9))
    return out


def _ar1(rng: np.random.Generator, n: int, sd: float, phi: float) -> np.ndarray:
    e = rng.normal(0.0, sd * math.sqrt(1.0 - phi * phi), n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + e[i]
        out[i] = acc
    return out


def paddy(rng: np.random.Generator, n: int) -> np.ndarray:
    """Depth (cm) of a paddy field, one value every :data:`PERIOD_S`, by a water balance."""
    dt_h = PERIOD_S / 3600.0
    et_day = rng.uniform(0.3, 0.8)
    perc_day = rng.uniform(0.3, 2.0)
    low, high = rng.uniform(1.0, 4.0), rng.uniform(5.0, 10.0)
    weir = high + rng.uniform(1.0, 5.0)
    inflow_h = _loguniform(rng, 0.5, 3.0)
    spill_k = rng.uniform(0.3, 1.5)  # cm/h per cm^1.5 of head over the weir
    rain = np.zeros(n)
    t = rng.exponential(DAY_S / 0.3) / PERIOD_S
    while t < n:
        dur = int(rng.uniform(1.0, 6.0) * 3600 / PERIOD_S)
        total = _loguniform(rng, 0.3, 6.0)
        i0 = int(t)
        rain[i0 : i0 + dur] += total / dur
        t += rng.exponential(DAY_S / 0.3) / PERIOD_S
    # spells without top-up (the farmer away; mid-season drying, nakaboshi)
    no_topup = np.zeros(n, dtype=bool)
    if rng.random() < 0.5:
        a = int(rng.integers(0, n))
        no_topup[a : a + int(rng.uniform(2.0, 6.0) * PER_DAY)] = True
    hour = (np.arange(n) * PERIOD_S / 3600.0 + rng.uniform(0, 24)) % 24.0
    sun = np.where((hour > 6) & (hour < 18), np.sin(np.pi * (hour - 6) / 12.0), 0.0)
    sun_norm = et_day / (24.0 * float(np.mean(np.where(sun > 0, sun, 0.0))) * 1.0)
    h = rng.uniform(low, high)
    filling = False
    soil = 0.0
    out = np.empty(n)
    for i in range(n):
        et = sun[i] * sun_norm * dt_h
        perc = perc_day / 24.0 * dt_h * (0.5 + 0.5 * min(h, 10.0) / 5.0) if h > 0 else 0.0
        h += rain[i] - et - perc
        if not no_topup[i]:
            if h < low and 7.0 <= hour[i] <= 10.0:
                filling = True
            if filling:
                h += inflow_h * dt_h
                if h >= high:
                    filling = False
        if h > weir:
            h -= min(h - weir, spill_k * (h - weir) ** 1.5 * dt_h)
        h = max(h, soil)
        out[i] = h
    return out


def river(rng: np.random.Generator, n: int) -> np.ndarray:
    """Stage (cm) of a small river: rating curve on baseflow + storm hydrographs."""
    t = np.arange(n) * PERIOD_S / 3600.0  # hours
    q0 = _loguniform(rng, 0.5, 5.0)
    tau_b = rng.uniform(5.0, 40.0) * 24.0
    q = q0 * np.exp(-t / tau_b)
    q = q * (1.0 + rng.uniform(0.0, 0.04) * np.sin(2 * np.pi * (t + rng.uniform(0, 24)) / 24.0))
    rate = rng.uniform(0.15, 0.6) / 24.0
    ts = -rng.uniform(0.0, 72.0)
    while ts < t[-1]:
        peak = q0 * _loguniform(rng, 0.2, 15.0)
        tp = rng.uniform(1.0, 8.0)
        tr = rng.uniform(5.0, 60.0)
        dtt = t - ts
        rise = np.where(
            dtt > 0, (np.clip(dtt, 0, None) / tp) ** 3 * np.exp(3 * (1 - dtt / tp)), 0.0
        )
        fall = np.exp(-(dtt - tp) / tr)
        hydro = np.where(dtt <= tp, rise, fall)
        q = q + peak * np.where(dtt > 0, hydro, 0.0)
        if peak > 5 * q0:  # a big storm recharges the baseflow a little
            q = q + np.where(dtt > tp, 0.1 * peak * np.exp(-(dtt - tp) / tau_b), 0.0)
        ts += rng.exponential(1.0 / rate)
    a = rng.uniform(8.0, 30.0)
    stage: np.ndarray = a * np.sqrt(q) + rng.uniform(5.0, 40.0)
    return stage


def tidal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Level (cm) at a tidal river mouth: astronomical tide, surge, river floods, bed cut-off."""
    t = np.arange(n) * PERIOD_S / 3600.0 + rng.uniform(0.0, 24.0 * 30)
    m2 = rng.uniform(40.0, 150.0)
    consts = (
        (m2, 12.4206),
        (m2 * rng.uniform(0.2, 0.5), 12.0),
        (rng.uniform(5.0, 40.0), 23.9345),
        (rng.uniform(5.0, 40.0), 25.8193),
        (m2 * rng.uniform(0.0, 0.12), 6.2103),
        (m2 * rng.uniform(0.0, 0.2), 12.6583),  # N2
    )
    eta = np.zeros(n)
    for amp, per in consts:
        eta += amp * np.cos(2 * np.pi * t / per + rng.uniform(0, 2 * np.pi))
    eta += _smooth_walk(rng, n, rng.uniform(3.0, 12.0), int(rng.uniform(0.5, 2.0) * PER_DAY))
    flood = np.zeros(n)
    ts = rng.exponential(DAY_S / 0.2) / PERIOD_S
    while ts < n:
        i0 = int(ts)
        k = np.arange(n - i0)
        up = int(rng.uniform(3, 12) * 6)
        flood[i0:] += _loguniform(rng, 3.0, 40.0) * np.where(
            k < up, k / up, np.exp(-(k - up) / (rng.uniform(8, 40) * 6))
        )
        ts += rng.exponential(DAY_S / 0.2) / PERIOD_S
    bed = -rng.uniform(0.5, 1.2) * m2  # low water cannot fall below the river's own stage
    soft = rng.uniform(3.0, 15.0)
    ext = np.random.default_rng(rng.integers(2**32))  # the river's share and wind set-up
    # A flood is the river's discharge after rain: it raises the river's own stage (the floor
    # low water cannot fall below) by its whole height, and high water by only a share of it
    # (the river's water spreads over the estuary at high water).
    eta += ext.uniform(0.2, 0.6) * flood
    floor = bed + flood
    # Wind set-up: an onshore wind for 6-36 h piles water against the coast (5-25 cm), rising
    # over the wind's hours and falling within a few hours after it drops (0.15 a day).
    ts = ext.exponential(DAY_S / 0.15) / PERIOD_S
    while ts < n:
        i0, dur = int(ts), int(ext.uniform(6.0, 36.0) * 6)
        k = np.arange(n - i0)
        eta[i0:] += ext.uniform(5.0, 25.0) * np.where(
            k < dur, np.sin(0.5 * np.pi * np.minimum(k / max(dur // 3, 1), 1.0)),
            np.exp(-(k - dur) / (ext.uniform(2.0, 8.0) * 6)),
        )
        ts += ext.exponential(DAY_S / 0.15) / PERIOD_S
    level = floor + soft * np.logaddexp(0.0, (eta - floor) / soft)
    return level - float(level.min()) + rng.uniform(5.0, 40.0)


def gate(rng: np.random.Generator, n: int) -> np.ndarray:
    """Level (cm) of a channel or pond moved by a gate, or of a pump sump (a sawtooth)."""
    return gate_operated(rng, n)[0]


def gate_operated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[int]]:
    """:func:`gate` and the readings at which the gate or pump was operated (what a
    gate-position input or a pump's run signal would tell the device)."""
    out = np.empty(n)
    ops: list[int] = []
    if rng.random() < 1 / 3:  # pump sump
        lo, hi = rng.uniform(20, 60), 0.0
        hi = lo + rng.uniform(10, 30)
        fill_day = rng.uniform(5.0, 40.0)
        wet = 1.0 + 0.5 * _smooth_walk(rng, n, 1.0, PER_DAY)
        wet = np.clip(wet, 0.2, None)
        pump_per = rng.uniform(2.0, 4.0)  # readings the pump takes
        h = rng.uniform(lo, hi)
        pumping = False
        for i in range(n):
            if pumping:
                h -= (hi - lo) / pump_per
                if h <= lo:
                    h, pumping = lo, False
            else:
                h += fill_day * wet[i] / PER_DAY
                if h >= hi:
                    pumping = True
                    ops.append(i + 1)
            out[i] = h
        return out, ops
    level = rng.uniform(20.0, 120.0)
    inflow = rng.uniform(0.0, 4.0) / PER_DAY
    target_lo, target_hi = level - 20.0, level + 20.0
    per_day = rng.uniform(1.0, 4.0)
    nxt = rng.exponential(PER_DAY / per_day)
    i = 0
    pending = 0.0
    moves: list[tuple[int, float]] = []
    while i < n:
        if i >= nxt:
            jump = rng.uniform(5.0, 30.0) * (1 if rng.random() < 0.5 else -1)
            if level + jump < target_lo or level + jump > target_hi:
                jump = -jump
            if rng.random() < 0.5:
                level += jump
                moves.append((i, jump))
            else:
                level += jump / 2
                pending = jump / 2
                moves += [(i, jump / 2), (i + 1, jump / 2)]
            nxt = i + max(2.0, rng.exponential(PER_DAY / per_day))
        elif pending:
            level += pending
            pending = 0.0
        level += inflow
        out[i] = level
        i += 1
    out = out + _gate_dynamics(rng, n, moves, ops)
    ops += [i for i, _ in moves]
    return out - min(0.0, float(out.min()) - 10.0), sorted(set(ops))


def _gate_dynamics(
    rng: np.random.Generator, n: int, moves: list[tuple[int, float]], ops: list[int]
) -> np.ndarray:
    """What a gate's water does besides stepping, on half of the gate channels: the gate takes
    10-40 min to travel (the level follows the step with a first-order lag), the basin rings
    after a move (a seiche of period 12-90 min, 10-30 % of the move, dying out over 0.5-2 h;
    read every 10 min it is aliased into reading-to-reading swings), a gate opened for a
    10-30 min flush now and then (a pulse of 1-3 readings that goes back), and wind on open
    water that rises by day (the site's motion 1-4 x larger in the afternoon)."""
    extra = np.zeros(n)
    if rng.random() < 0.5:
        return extra
    tau = rng.uniform(1.0, 4.0)  # readings of 600 s
    k = np.arange(n, dtype=np.float64)
    period = rng.uniform(1.2, 9.0)  # readings
    for at, jump in moves:
        after = k - at
        on = after >= 0
        lag = np.where(on, -jump * np.exp(-np.clip(after, 0, None) / tau), 0.0)
        ring = np.where(
            on,
            rng.uniform(0.1, 0.3) * jump * np.exp(-np.clip(after, 0, None) / rng.uniform(3.0, 12.0))
            * np.sin(2 * np.pi * after / period + rng.uniform(0, 2 * np.pi)),
            0.0,
        )
        extra += lag + ring
    pulse = np.zeros(n)
    t = rng.exponential(DAY_S / rng.uniform(0.2, 1.0)) / PERIOD_S
    while t < n - 3:
        w = int(rng.integers(1, 4))
        pulse[int(t) : int(t) + w] += rng.uniform(3.0, 20.0) * (1 if rng.random() < 0.5 else -1)
        ops += [int(t), int(t) + w]  # opened, and closed again
        t += rng.exponential(DAY_S / rng.uniform(0.2, 1.0)) / PERIOD_S
    alpha = 1.0 - math.exp(-1.0 / tau)  # the flush through the same slow gate
    acc = 0.0
    for i in range(n):
        acc += alpha * (pulse[i] - acc)
        extra[i] += acc
    hour = (k * PERIOD_S / 3600.0 + rng.uniform(0, 24)) % 24.0
    gust = 1.0 + rng.uniform(0.0, 3.0) * np.clip(np.sin(np.pi * (hour - 9) / 10.0), 0, None)
    extra += _ar1(rng, n, rng.uniform(0.05, 0.3), 0.5) * gust
    return extra


def reservoir(rng: np.random.Generator, n: int) -> np.ndarray:
    """Level (cm) near the outlet of a small reservoir: :func:`reservoir_operated`'s level."""
    return reservoir_operated(rng, n)[0]


def reservoir_operated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[int]]:
    """Level (cm) read near the outlet of a small reservoir or irrigation pond, and the readings
    at which its outlet gate was operated. The pond's storage follows its water balance: a
    stream's inflow (a base of 0-3 cm/day of level plus storms: a gamma-shaped inflow of 2-15 cm
    over a day or two), the outlet's outflow in proportion to the gate's opening (a full opening
    takes out 4-12 cm/day more than the base inflow) and a spillway above a crest. The gate is
    worked 2-4 times a day by a keeper who holds the pond near a mark (when it stands more than
    2-5 cm off, setting the opening that would bring it back within about half a day; else now
    and then a small adjustment), by hand or motor in 1-5 increments 10-20 min apart (a gate is
    inched open, not flung). At the probe, near the outlet, the flowing water stands lower than
    the pond by a share of its velocity head (2-15 cm at full opening), reached 10-30 min after
    each increment (the approach flow taking up speed), and the flow's eddies and vortices make
    the water there rough while the gate is open (0.1-0.8 cm at full opening, correlated over
    minutes)."""
    dt_day = PERIOD_S / DAY_S
    base_in = rng.uniform(0.0, 3.0)
    inflow = np.full(n, base_in)
    t = rng.exponential(PER_DAY / 0.3)
    while t < n:
        total, up = _loguniform(rng, 2.0, 15.0), rng.uniform(3.0, 12.0) * 6
        since = np.arange(n - int(t), dtype=np.float64)
        shape = (since / up) ** 2 * np.exp(2.0 * (1.0 - since / up))
        inflow[int(t) :] += total * shape / (float(shape.sum()) * dt_day)
        t += rng.exponential(PER_DAY / 0.3)
    full_out = base_in + rng.uniform(4.0, 12.0)
    crest = rng.uniform(60.0, 150.0)
    drawdown = rng.uniform(2.0, 15.0)
    rough = rng.uniform(0.1, 0.8)
    lag = rng.uniform(1.0, 3.0)  # readings
    alpha = 1.0 - math.exp(-1.0 / lag)  # the water takes ``lag`` readings to follow
    band = rng.uniform(5.0, 15.0)  # the keeper holds the pond within +-band of a mark
    mark = crest - band - rng.uniform(5.0, 30.0)
    per_day = rng.uniform(2.0, 4.0)
    ops: list[int] = []
    plan: dict[int, float] = {}  # reading -> the opening set then
    g = float(rng.choice((0.0, rng.uniform(0.2, 1.0))))
    follow = np.empty(n)
    pond = np.empty(n)
    acc, h = g, mark + rng.uniform(-band, band)
    nxt = int(rng.exponential(PER_DAY / per_day))
    for k in range(n):
        if k >= nxt:  # the keeper's round: too high, open more; too low, close; else maybe adjust
            need = (inflow[k] + (h - mark) * 2.0) / full_out  # the opening that brings it back
            if abs(h - mark) > 0.3 * band:
                target = float(np.clip(need * rng.uniform(0.7, 1.3), 0.0, 1.0))
            elif rng.random() < 0.4:
                target = float(np.clip(g + rng.uniform(-0.3, 0.3), 0.0, 1.0))
            else:
                target = g
            if target != g:
                steps = int(rng.integers(1, 6))
                a = k
                for j in range(steps):
                    plan[a] = g + (target - g) * (j + 1) / steps
                    a += int(rng.integers(1, 3))  # 10-20 min apart (at least a reading)
            nxt = k + max(12, int(rng.exponential(PER_DAY / per_day)))
        if k in plan:
            g = plan.pop(k)
            ops.append(k)
        acc += alpha * (g - acc)
        follow[k] = acc
        h += (inflow[k] - full_out * acc) * dt_day
        if h > crest:
            h -= min(h - crest, 0.5 * (h - crest) ** 1.5)
        h = max(h, 5.0)
        pond[k] = h
    level = pond - drawdown * follow**2 + _ar1(rng, n, rough, 0.3) * follow
    return level - min(0.0, float(level.min()) - 10.0), sorted(set(ops))


BUILDERS = {
    "paddy": paddy, "river": river, "tidal": tidal, "gate": gate,
    "reservoir": reservoir,
}

MOTION_SD = {
    "paddy": (0.0, 0.3), "river": (0.0, 0.5), "tidal": (0.0, 0.8), "gate": (0.0, 0.2),
    "reservoir": (0.0, 0.3),
}
"""Site motion a 20-s mean keeps (wind ripple, waves), correlated over an hour: sd range, cm."""


def clean(
    family: str, rng: np.random.Generator, n: int, ops: list[int] | None = None
) -> tuple[np.ndarray, float]:
    """A clean series of ``family`` (cm, unrounded) and its sensor noise per reading; ``ops``
    (a gate channel's): filled with the readings at which the gate or pump was operated."""
    if family in GATED:
        level, done = (gate_operated if family == "gate" else reservoir_operated)(rng, n)
        if ops is not None:
            ops.extend(done)
    else:
        level = BUILDERS[family](rng, n)
    if family == "paddy":
        level = level + rng.uniform(5.0, 40.0)
    lo, hi = MOTION_SD[family]
    motion = _ar1(rng, n, rng.uniform(lo, hi), 0.7)
    noise = _loguniform(rng, 0.1, 1.0)
    return level + motion + rng.normal(0.0, noise, n), noise


def inject(
    x: np.ndarray, fault: str, at: int, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """``x`` with ``fault`` from reading ``at`` (see the module's docstring)."""
    y = np.array(x, dtype=np.float64)
    n = len(y)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if fault == "spike":
        w = int(rng.integers(1, 4))
        y[at : at + w] += sign * rng.uniform(4.0, 40.0) * rng.uniform(0.8, 1.0, w)
    elif fault == "offset":
        y[at:] += sign * rng.uniform(3.0, 30.0)
    elif fault == "stuck":
        y[at:] = np.round(y[at - 1], 1)
    elif fault == "dropout":
        end = min(n, at + int(rng.uniform(2.0, 48.0) * 3600 / PERIOD_S))
        r = rng.random()
        y[at:end] = 0.0 if r < 0.5 else (-99.9 if r < 0.65 else rng.choice((300.0, 500.0)))
    elif fault == "noise":
        end = min(n, at + int(rng.uniform(6.0, 48.0) * 3600 / PERIOD_S))
        y[at:end] += rng.normal(0.0, noise * rng.uniform(3.0, 10.0), end - at)
    elif fault == "drift":
        y[at:] += sign * rng.uniform(2.0, 10.0) * np.arange(n - at) / PER_DAY
    else:
        raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
    return y


def water(family: str, k: int, days: float, seed: int, fault: str | None) -> list[Series]:
    """``k`` series of ``family``, ``days`` long, ``fault`` from day 3-5 (``None``: clean)."""
    n = int(days * PER_DAY)
    code = FAMILIES.index(family) * 10 + (0 if fault is None else 1 + FAULTS.index(fault))
    out = []
    for i in range(k):
        rng = np.random.default_rng([BASE_SEED, seed, code, i])
        ops: list[int] = []
        x, noise = clean(family, rng, n, ops)
        meta: dict[str, Any] = {"noise_cm": noise}
        if family in GATED:
            meta["gate_ops"] = ops  # readings at which the gate or pump was operated
        at = None
        if fault is not None:
            at = int(rng.integers(3 * PER_DAY, min(5 * PER_DAY, n - 3 * PER_DAY)))
            y = inject(x, fault, at, noise, rng)
            if fault == "drift":  # cm/day, signed
                meta["drift_cm_day"] = float(y[-1] - x[-1]) * PER_DAY / (n - 1 - at)
            x = y
        out.append(Series(family, np.round(x, 1), PERIOD_S, fault, at, meta))
    return out
