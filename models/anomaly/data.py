"""Normal scalar series and injected anomalies for the anomaly detector (numpy only).

Two series, both seen through 64-point windows (:data:`WINDOW`):

**water** -- river / paddy water level in cm, one reading every 10 minutes
(:data:`SAMPLE_PERIOD_S`: the water rule's idle cadence; while observing it
reads every 5 minutes and the device scores every second reading), so a
window is 10 h 40 min.  Each reading stands for the rule's 20-s mean of 1-s
samples with spikes removed:

- 70 % small rivers: base level U(10, 150) cm, a slow trend U(-1, +0.5)
  cm/day (base flow); rain events up to 40 cm;
- 30 % paddy fields (:data:`PADDY_SHARE`): a few centimetres, U(2, 12) cm,
  falling U(1, 3) cm/day (evaporation, percolation) and topped up by the
  farmer (inlet opened: +2-6 cm over 1-4 h, a smoothstep, on average as much
  as the field loses); rain events up to 8 cm (the outlet weir caps them);
- rain events, Poisson, on average one every 12 h (:data:`RAIN_GAP_MIN`: a
  wet spell, the time the alarms matter), starting up to three days before
  the series so recessions are running; each a hydrograph
  ``A * (t / tp * exp(1 - t / tp)) ** k`` (peak A at tp after onset, then a
  long recession), A log-uniform (rivers 3-40 cm, paddies 1-8 cm), time to
  peak tp log-uniform 30-360 min (small catchments), k 2-5; events overlap
  freely;
- surface ripple and sensor noise per reading: white, sigma U(0.6, 0.9) cm per
  sensor; readings rounded to 1 mm.

**mat_load** -- total load of a sleeping child on the body-motion mat in kg,
two readings a second (a window is 32 s):

- the child's mass U(3, 13) kg (the total is constant while the child lies on
  the mat: breathing only moves load between chest and belly);
- a breathing artefact on the total (the mattress's dynamics), amplitude
  U(0.005, 0.03) kg at 20-45 breaths/min;
- sensor noise, white, sigma U(0.025, 0.035) kg (0.7 counts per cell over
  512 cells is 0.03 kg);
- restless movements, Poisson, one every 45 s: a half-sine bump of
  +-0.05-0.25 kg over 1-4 readings, leaving a +-0.02 kg change of level.

**Anomalies**, one per anomalous window, injected into a normal window at a
random place (units: cm for water, kg for mat_load):

| type | what | water | mat_load |
|---|---|---|---|
| ``spike`` | 1-3 readings off by +-A | A 6-40 | A 0.5-3 |
| ``stuck`` | the reading freezes (exact constant) for 32-64 readings | | |
| ``drift`` | a ramp from the first half, D at the window's end | D +-(10-30) | D +-(0.4-2) |
| ``drop`` | a step down by D from a point 8-56 to the end; 30 %: to 0 | D 8-40 | D 0.5-3 |

(Water drift is thus 10-30 cm over 5-10 hours: a sensor sinking into silt or
slipping on its mount, a blocked vent tube of a pressure probe in a deep
low; mat drift is 0.4-2 kg over 16-32 s.)

Windows are normalised per series (:data:`SCALE`): minus the window's mean,
divided by the series' scale, clipped to +-:data:`CLIP`.

Seeds: training uses generator seeds ``TRAIN_BASE * (seed + 1) + i``;
held-out evaluation ``HELDOUT_BASE + i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.seeds import HELDOUT_BASE as HELDOUT_BASE  # re-exported: the generator's seeds
from models.seeds import TRAIN_BASE as TRAIN_BASE
from models.seeds import heldout_seeds as heldout_seeds
from models.seeds import train_seeds as train_seeds

WINDOW = 64
SERIES: tuple[str, ...] = ("water", "mat_load")
SCALE: dict[str, float] = {"water": 4.0, "mat_load": 0.15}
"""Divide a mean-removed window by this (cm; kg) before the model."""
CODE: dict[str, float] = {"water": 0.0, "mat_load": 1.0}
"""The series code the model gets as its last input (it conditions the reconstruction)."""
UNITS: dict[str, str] = {"water": "cm", "mat_load": "kg"}
SAMPLE_PERIOD_S: dict[str, float] = {"water": 600.0, "mat_load": 0.5}
"""Seconds between readings: the water rule's idle cadence (10 min), the mat's frame pairs."""
PADDY_SHARE = 0.3
"""Share of water series that are paddy fields (the rest: small rivers)."""
RAIN_GAP_MIN = 720.0
"""Mean time between rain events, minutes."""
CLIP = 8.0
ANOMALIES: tuple[str, ...] = ("spike", "stuck", "drift", "drop")


def water_series(
    rng: np.random.Generator, n: int, *, noise: bool = True, paddy: bool | None = None
) -> np.ndarray:
    """``n`` readings of water level (cm), one every :data:`SAMPLE_PERIOD_S` ``["water"]``.

    ``noise=False``: the level without sensor noise or rounding; ``paddy``: force the kind
    (the draw is made anyway, so seeds give the same series as before)."""
    step = SAMPLE_PERIOD_S["water"] / 60.0  # minutes per reading
    t = np.arange(n, dtype=np.float64) * step
    drawn = rng.random() < PADDY_SHARE
    paddy = drawn if paddy is None else paddy
    if paddy:
        level = np.full(n, rng.uniform(2.0, 12.0))
        decline = rng.uniform(1.0, 3.0)  # cm/day: evaporation and percolation
        level -= decline * t / 1440.0
        # the farmer tops the field up: on average exactly what it loses
        fill_mean = 4.0
        gap = fill_mean / decline * 1440.0
        at = rng.uniform(-gap, 0.0)
        while at < t[-1]:
            rise = rng.uniform(2.0, 6.0)
            over = rng.uniform(60.0, 240.0)
            s = np.clip((t - at) / over, 0.0, 1.0)
            level += rise * s * s * (3.0 - 2.0 * s)  # smoothstep: inlet opened, then closed
            at += rng.exponential(gap)
        amp_lo, amp_hi = 1.0, 8.0  # the outlet weir caps what rain adds
    else:
        level = np.full(n, rng.uniform(10.0, 150.0)) + rng.uniform(-1.0, 0.5) * t / 1440.0
        amp_lo, amp_hi = 3.0, 40.0
    # rain events; they may start up to three days before the series (recession)
    onset = -4320.0 + rng.exponential(RAIN_GAP_MIN)
    while onset < t[-1]:
        amp = float(np.exp(rng.uniform(np.log(amp_lo), np.log(amp_hi))))
        tp = float(np.exp(rng.uniform(np.log(30.0), np.log(360.0))))
        k = rng.uniform(2.0, 5.0)
        s = np.clip(t - onset, 0.0, None) / tp
        level += amp * (s * np.exp(1.0 - s)) ** k
        onset += rng.exponential(RAIN_GAP_MIN)
    if not noise:
        return level
    level += rng.normal(0.0, rng.uniform(0.6, 0.9), n)
    return np.round(level, 1)


def mat_load_series(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` half-second readings of a sleeping child's total load (kg)."""
    t = np.arange(n) * SAMPLE_PERIOD_S["mat_load"]
    load = np.full(n, rng.uniform(3.0, 13.0))
    rate = rng.uniform(20.0, 45.0) / 60.0
    load += rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    load += rng.normal(0.0, rng.uniform(0.025, 0.035), n)
    i = 0.0
    while True:
        i += rng.exponential(90.0)  # readings (45 s)
        if i >= n:
            break
        j = int(i)
        width = int(rng.integers(1, 5))
        amp = rng.uniform(0.05, 0.25) * rng.choice((-1.0, 1.0))
        bump = amp * np.sin(np.pi * (np.arange(width) + 1) / (width + 1))
        load[j : j + width] += bump[: n - j]
        load[j:] += rng.uniform(-0.02, 0.02)
    return load


def series(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if kind == "water":
        return water_series(rng, n)
    if kind == "mat_load":
        return mat_load_series(rng, n)
    raise ValueError(f"series must be one of {SERIES}, got {kind!r}")


def normal_windows(kind: str, seeds: Sequence[int], per_seed: int = 16) -> np.ndarray:
    """Raw windows ``(len(seeds) * per_seed, WINDOW)``, random places in one series per seed."""
    out: list[np.ndarray] = []
    for s in seeds:
        rng = np.random.default_rng([s, SERIES.index(kind)])
        x = series(kind, rng, 2048)
        starts = rng.integers(0, len(x) - WINDOW, per_seed)
        out.extend(x[a : a + WINDOW] for a in starts)
    return np.stack(out)


def inject(kind: str, window: np.ndarray, anomaly: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``window`` with one ``anomaly`` injected."""
    x = np.array(window, dtype=np.float64)
    n = len(x)
    water = kind == "water"
    if anomaly == "spike":
        width = int(rng.integers(1, 4))
        at = int(rng.integers(0, n - width + 1))
        amp = rng.uniform(6.0, 40.0) if water else rng.uniform(0.5, 3.0)
        x[at : at + width] += amp * rng.choice((-1.0, 1.0))
    elif anomaly == "stuck":
        length = int(rng.integers(32, n + 1))
        at = int(rng.integers(0, n - length + 1))
        x[at : at + length] = x[at]
    elif anomaly == "drift":
        at = int(rng.integers(0, n // 2))
        d = rng.uniform(10.0, 30.0) if water else rng.uniform(0.4, 2.0)
        ramp = np.clip(np.arange(n) - at, 0, None) / (n - 1 - at)
        x += d * rng.choice((-1.0, 1.0)) * ramp
    elif anomaly == "drop":
        at = int(rng.integers(8, n - 7))
        if rng.random() < 0.3:
            x[at:] = 0.0
        else:
            x[at:] -= rng.uniform(8.0, 40.0) if water else rng.uniform(0.5, 3.0)
    else:
        raise ValueError(f"anomaly must be one of {ANOMALIES}, got {anomaly!r}")
    return x


def anomalous_windows(
    kind: str, anomaly: str, seeds: Sequence[int], per_seed: int = 4
) -> np.ndarray:
    """Raw windows with ``anomaly`` injected, from normal windows of other seeds' series."""
    base = normal_windows(kind, seeds, per_seed)
    rng = np.random.default_rng([seeds[0] if len(seeds) else 0, 7, ANOMALIES.index(anomaly)])
    return np.stack([inject(kind, w, anomaly, rng) for w in base])


def normalise(kind: str, windows: np.ndarray) -> np.ndarray:
    """What the model sees: mean removed, divided by the series' scale, clipped."""
    w = np.asarray(windows, dtype=np.float64)
    w = w - w.mean(axis=-1, keepdims=True)
    out: np.ndarray = np.clip(w / SCALE[kind], -CLIP, CLIP).astype(np.float32)
    return out


def heldout_sets(n_seeds: int) -> dict[str, dict[str, np.ndarray]]:
    """Held-out raw windows per series: ``normal`` (16 per seed) and 4 per seed of each anomaly."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for kind in SERIES:
        sets = {"normal": normal_windows(kind, heldout_seeds(n_seeds), per_seed=16)}
        for a in ANOMALIES:
            off = 100_000 * (1 + ANOMALIES.index(a))
            sets[a] = anomalous_windows(kind, a, heldout_seeds(n_seeds, off), per_seed=4)
        out[kind] = sets
    return out


# -- long water series by family, for the rule-based fault detector (issue 15) ----------------

WATER_FAMILIES: tuple[str, ...] = ("river", "paddy", "calm", "tidal", "gate")
"""Tuning families of :func:`water_family`: small rivers in a wet spell, paddy fields,
calm water (a pond, a still channel), a tidal river mouth, a channel held by a gate."""
WATER_FAULTS: tuple[str, ...] = ("spike", "stuck", "offset", "dropout", "drift", "noise")


def water_family(
    family: str, rng: np.random.Generator, n: int, *, noise_cm: float | None = None
) -> np.ndarray:
    """``n`` readings (cm, every 600 s, rounded to 1 mm) of one site of ``family``.

    Noise per reading is white with sigma ``noise_cm`` (default: log-uniform 0.1-1 cm:
    a device reading is the mean of 20 samples, so calm water can be very quiet).

    - ``river``: :func:`water_series`'s rivers (rain every 12 h on average);
    - ``paddy``: :func:`water_series`'s paddies (falling 1-3 cm/day, topped up);
    - ``calm``: a pond or still channel: level U(20, 200) cm, a wander of a few mm
      (a seiche of 10-60 min, wind set-up over hours), rare small rain (one every 3 days,
      0.5-3 cm, slow);
    - ``tidal``: a river mouth: M2 (12.42 h) amplitude U(20, 120) cm, S2 (12.00 h) 0.2-0.45
      of it (spring-neap beat), K1/O1 diurnal inequality up to 0.3 of it, mean U(50, 250) cm,
      plus river floods of :func:`water_series`'s rain (3-25 cm, damped by the sea);
    - ``gate``: a channel or reservoir held by a gate, sluice or pump: level U(50, 200) cm,
      a wander of a few mm, and gate operations (one every 12 h on average) that move it by
      5-30 cm within one or two readings (real, instantaneous steps; the level is kept
      within 40 cm of its start); noise 0.1 cm per reading unless ``noise_cm`` says.
    """
    sigma = float(np.exp(rng.uniform(np.log(0.1), np.log(1.0)))) if noise_cm is None else noise_cm
    step = SAMPLE_PERIOD_S["water"] / 60.0
    t = np.arange(n, dtype=np.float64) * step  # minutes
    if family in ("river", "paddy"):
        clean = water_series(rng, n, noise=False, paddy=family == "paddy")
    elif family == "calm":
        clean = np.full(n, rng.uniform(20.0, 200.0))
        seiche = rng.uniform(10.0, 60.0)
        clean += rng.uniform(0.0, 0.3) * np.sin(2 * np.pi * t / seiche + rng.uniform(0, 6.3))
        walk = np.cumsum(rng.normal(0.0, 0.02, n))  # wind set-up, evaporation: mm per hour
        clean += walk - np.linspace(0, walk[-1], n) * rng.uniform(0.5, 1.0)
        onset = rng.exponential(4320.0)
        while onset < t[-1]:
            s = np.clip((t - onset) / rng.uniform(240.0, 720.0), 0.0, None)
            clean += rng.uniform(0.5, 3.0) * (1 - np.exp(-s)) * np.exp(-s / 20.0)
            onset += rng.exponential(4320.0)
    elif family == "tidal":
        a = rng.uniform(20.0, 120.0)
        ph = rng.uniform(0, 2 * np.pi, 4)
        clean = rng.uniform(50.0, 250.0) + a * np.cos(2 * np.pi * t / 745.2 + ph[0])
        clean += a * rng.uniform(0.2, 0.45) * np.cos(2 * np.pi * t / 720.0 + ph[1])
        clean += a * rng.uniform(0.0, 0.3) * np.cos(2 * np.pi * t / 1436.0 + ph[2])
        clean += a * rng.uniform(0.0, 0.2) * np.cos(2 * np.pi * t / 1549.0 + ph[3])
        onset = -4320.0 + rng.exponential(RAIN_GAP_MIN * 2)
        while onset < t[-1]:
            amp = float(np.exp(rng.uniform(np.log(3.0), np.log(25.0))))
            tp = float(np.exp(rng.uniform(np.log(60.0), np.log(480.0))))
            s = np.clip(t - onset, 0.0, None) / tp
            clean += amp * (s * np.exp(1.0 - s)) ** rng.uniform(2.0, 5.0)
            onset += rng.exponential(RAIN_GAP_MIN * 2)
    elif family == "gate":
        sigma = 0.1 if noise_cm is None else noise_cm
        base = rng.uniform(50.0, 200.0)
        clean = np.full(n, base)
        walk = np.cumsum(rng.normal(0.0, 0.02, n))
        clean += walk - np.linspace(0, walk[-1], n) * rng.uniform(0.5, 1.0)
        held = 0.0  # the gate's offset from the base
        at = rng.exponential(720.0 / step)  # readings
        while at < n:
            i = int(at)
            jump = rng.uniform(5.0, 30.0) * rng.choice((-1.0, 1.0))
            if abs(held + jump) > 40.0:
                jump = -jump
            part = 1.0 if rng.random() < 0.5 else rng.uniform(0.2, 0.8)  # over 1 or 2 readings
            clean[i:] += part * jump
            clean[i + 1 :] += (1.0 - part) * jump
            held += jump
            at += 1 + rng.exponential(720.0 / step)
    else:
        raise ValueError(f"family must be one of {WATER_FAMILIES}, got {family!r}")
    return np.round(clean + rng.normal(0.0, sigma, n), 1)


def inject_water_fault(
    x: np.ndarray, fault: str, at: int, rng: np.random.Generator
) -> np.ndarray:
    """A copy of a long water series with ``fault`` from reading ``at`` on (persisting, except a
    spike): spike 1-3 readings +-(6-40) cm; stuck at the reading before ``at``; offset +-(5-40)
    cm; dropout to 0 (60 %) or a rail (500 cm, the probe's range); drift 2-10 cm/day either
    way; noise: white noise of 3-8 x the series' own noise added."""
    y = np.array(x, dtype=np.float64)
    n = len(y)
    per_day = 86400.0 / SAMPLE_PERIOD_S["water"]
    sign = rng.choice((-1.0, 1.0))
    if fault == "spike":
        width = int(rng.integers(1, 4))
        y[at : at + width] += sign * rng.uniform(6.0, 40.0)
    elif fault == "stuck":
        y[at:] = y[at - 1]
    elif fault == "offset":
        y[at:] += sign * rng.uniform(5.0, 40.0)
    elif fault == "dropout":
        y[at:] = 0.0 if rng.random() < 0.6 else 500.0
    elif fault == "drift":
        y[at:] += sign * rng.uniform(2.0, 10.0) * np.arange(n - at) / per_day
    elif fault == "noise":
        own = float(np.median(np.abs(np.diff(x[:at], 3)))) * 1.4826 / np.sqrt(20.0)
        y[at:] += rng.normal(0.0, max(own, 0.1) * rng.uniform(3.0, 8.0), n - at)
    else:
        raise ValueError(f"fault must be one of {WATER_FAULTS}, got {fault!r}")
    return np.round(y, 1)
