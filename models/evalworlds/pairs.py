"""An independent evaluation world for a two-gauge water-level fault check.

Two gauges at the same place read the same water; the world is built from the physics of the
water and of the two sensors, not from any knowledge of how a check works.  Four families:

``paddy``  a rice field's few cm of water (irrigation, drainage, ET, percolation, rain, wind
           set-up across the field, the water table below the soil when the field dries);
``river``  a small river at a bridge: baseflow recession and rain floods of 0.5-3 m, a pressure
           probe on the bed and an ultrasonic ranger on the bridge;
``tidal``  a tidal river mouth: M2/S2/N2/K1/O1/M4 tide, spring-neap, low water truncated by the
           river bed, river floods, storm surge, harbour seiche, waves, a salt wedge;
``gate``   a channel whose level is moved in steps several times a day by a gate (scheduled
           set-points) or a pump (a sawtooth between switch levels), with sloshing.

Each gauge has its own datum, noise, calibration errors, sampling schedule, clock, jitter and
missed readings; readings are 20-s means rounded to 0.1 cm.  A fault (``drift`` or ``offset``)
is added to ONE gauge from a labelled onset between day 2.5 and day 5.  The water and both
gauges' healthy readings depend only on (family, seed); the fault only on (family, seed, fault),
so a faulty series is the healthy series of the same seed with one gauge changed from onset.

Effects can be switched off by name (``disable=``) for attributing a check's behaviour; every
random number is still drawn, so the rest of the world is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Reading = tuple[float, str, float]

FAMILIES: Final = ("paddy", "river", "tidal", "gate")
FAULTS: Final = ("none", "drift", "offset")
# Physical effects that can be switched off for attribution (all on by default).
EFFECTS: Final = (
    "sound_speed",  # ultrasonic: speed of sound vs the temperature it assumes
    "hydraulic",  # velocity head at the probe, crest bias of the ranger, local surface slopes
    "density",  # sediment (floods) and salt (tidal) in the water over a pressure probe
    "thermal",  # pressure probe / 4-20 mA loop temperature coefficients
    "wind",  # wind set-up tilting a paddy's water
    "slosh",  # transients after gate/pump steps, harbour seiche, flood surges
    "floor",  # a sensor cannot see water below its sensing point (dry paddy)
    "spikes",  # false echoes, EMI: single wild readings
    "calibration",  # span (gain) errors of the probes
)

DAY: Final = 86400.0
HOUR: Final = 3600.0
DT: Final = 10.0  # fine time grid of the water, s
GRAV: Final = 9.81
SAMPLE_WINDOW_S: Final = 20.0  # a reading is the mean of ~20 s of samples
IDLE_CADENCE_S: Final = 600.0
HIGH_CADENCE_S: Final = 300.0


@dataclass(frozen=True)
class PairSeries:
    """Both gauges' readings (t s, gauge name, level cm) in time order, and the labels."""

    readings: list[Reading]
    labels: dict[str, object]


@dataclass
class _Channel:
    """One gauge's noise-free measurement on the fine grid and its random parts."""

    name: str
    kind: str  # "pressure" or "ultrasonic"
    clean: FloatArray  # measured level incl. datum, before white noise (cm)
    sd: FloatArray  # white noise of one 20-s mean (cm)
    spike_p: FloatArray  # probability that one reading is a wild one
    spike_max: FloatArray  # largest wild excursion (cm)
    spike_up_only: bool  # a false echo is always nearer, so the level reads high
    high_above: float | None  # reading (cm) above which the device samples every 300 s
    settings: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class _Weather:
    hour: FloatArray  # local clock hour
    t_air: FloatArray  # °C
    sun: FloatArray  # 0..1 solar forcing
    clear: FloatArray  # 0..1 clearness
    rain: FloatArray  # mm/h
    raining: FloatArray  # 0..1, smoothed
    wind: FloatArray  # m/s
    wind_dir: FloatArray  # rad
    events: list[tuple[float, float, float]]  # rain events (start s, duration s, depth mm)


class _Fx:
    """Which effects are on: multiply an effect by ``fx("name")``."""

    def __init__(self, disabled: Iterable[str]) -> None:
        self.off = frozenset(disabled)
        unknown = self.off - set(EFFECTS)
        if unknown:
            raise ValueError(f"unknown effects {sorted(unknown)}; known: {EFFECTS}")

    def __call__(self, name: str) -> float:
        return 0.0 if name in self.off else 1.0


# --------------------------------------------------------------------------- small helpers


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _lu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _smooth(rng: np.random.Generator, t: FloatArray, knot_s: float, sd: float) -> FloatArray:
    """A slowly varying random signal: N(0, sd) at knots every knot_s, interpolated."""
    n = math.ceil((float(t[-1]) - float(t[0])) / knot_s) + 2
    knots = float(t[0]) - knot_s * float(rng.uniform()) + knot_s * np.arange(n, dtype=float)
    vals = rng.normal(0.0, sd, n)
    return np.asarray(np.interp(t, knots, vals), dtype=float)


def _lowpass(t: FloatArray, x: FloatArray, tau_s: float) -> FloatArray:
    """Causal first-order low-pass (time constant tau_s), computed on a coarser grid."""
    step = max(DT, tau_s / 20.0)
    tc = np.arange(float(t[0]), float(t[-1]) + step, step)
    xc = np.interp(tc, t, x)
    n = max(2, int(5.0 * tau_s / step))
    k = np.exp(-np.arange(n) * step / tau_s)
    k /= k.sum()
    padded = np.concatenate([np.full(n - 1, xc[0]), xc])
    yc = np.convolve(padded, k, mode="valid")
    return np.asarray(np.interp(t, tc, yc), dtype=float)


def _pulse(x: FloatArray, shape: float) -> FloatArray:
    """Hydrograph-like pulse: 0 before x=0, peak 1 at x=1, gamma-shaped recession."""
    xc = np.clip(x, 0.0, None)
    return np.asarray((xc * np.exp(1.0 - xc)) ** shape, dtype=float)


def _softmax(a: FloatArray, b: FloatArray, width: float) -> FloatArray:
    m = np.maximum(a, b)
    return np.asarray(
        m + width * np.log(np.exp((a - m) / width) + np.exp((b - m) / width)), dtype=float
    )


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


# --------------------------------------------------------------------------------- weather


def _weather(
    rng: np.random.Generator,
    t: FloatArray,
    *,
    hour0: float,
    t_mean: float,
    diurnal: float,
    rain_per_day: float,
    heavy_frac: float,
    extra: list[tuple[float, float, float]],
) -> _Weather:
    """Air temperature, sun, rain events and wind for a wet-season week (June-October)."""
    hour = (hour0 + t / HOUR) % 24.0
    t_end = float(t[-1])
    n_ev = int(rng.poisson(rain_per_day * (t_end / DAY + 1.0)))
    events: list[tuple[float, float, float]] = []
    for _ in range(n_ev):
        start = _u(rng, -DAY, t_end)
        dur = _lu(rng, 1.0, 24.0) * HOUR
        heavy = rng.uniform() < heavy_frac
        depth = _lu(rng, 20.0, 150.0) if heavy else _lu(rng, 1.0, 15.0)
        events.append((start, dur, depth))
    events.extend(extra)
    rain = np.zeros_like(t)
    for start, dur, depth in events:
        x = (t - start) / dur
        tri = np.clip(1.0 - np.abs(2.0 * x - 1.0), 0.0, None)
        rain += tri * (2.0 * depth / (dur / HOUR))
    raining = _lowpass(t, (rain > 0.2).astype(float), 1.5 * HOUR)
    clear = np.clip(0.65 + _smooth(rng, t, 6 * HOUR, 0.3), 0.05, 1.0) * (1.0 - 0.85 * raining)
    day_shape = np.clip(np.sin(math.pi * (hour - 5.5) / 13.0), 0.0, None)
    sun = clear * day_shape
    t_air = (
        t_mean
        + diurnal
        * (0.35 + 0.65 * _lowpass(t, clear, 3 * HOUR))
        * np.cos(2 * math.pi * (hour - 14.5) / 24.0)
        + _smooth(rng, t, 12 * HOUR, 2.0)
        - 2.5 * raining
    )
    wind = np.clip(
        _u(rng, 0.5, 3.0)
        + 1.5 * np.clip(np.sin(math.pi * (hour - 9.0) / 10.0), 0.0, None)
        + _smooth(rng, t, HOUR, 0.8)
        + 0.25 * np.minimum(rain, 30.0),
        0.0,
        None,
    )
    wind_dir = _u(rng, 0.0, 2 * math.pi) + _smooth(rng, t, 6 * HOUR, 1.0)
    return _Weather(hour, t_air, sun, clear, rain, raining, wind, wind_dir, events)


def _river_stage(
    rng: np.random.Generator,
    t: FloatArray,
    events: list[tuple[float, float, float]],
    *,
    h_base: float,
    k_catch: float,
    p_loss: float,
) -> tuple[FloatArray, FloatArray, FloatArray, dict[str, object]]:
    """Stage above the bed (cm), flow Q and baseflow Qb (both relative to Q at t=0).

    Baseflow recedes exponentially toward a floor; each rain event adds a gamma-shaped flood
    pulse (plus a slow interflow tail) in flow; stage follows a power-law rating h ~ Q^beta.
    """
    beta = _u(rng, 0.35, 0.55)
    tau_r = _u(rng, 5.0, 30.0) * DAY
    floor_frac = _u(rng, 0.4, 0.8)
    tp = _u(rng, 1.0, 5.0) * HOUR  # catchment lag after the rain's centre
    shape = _u(rng, 2.0, 4.0)
    qb = floor_frac + (1.0 - floor_frac) * np.exp(-t / tau_r)
    q = qb.copy()
    floods: list[list[float]] = []
    for start, dur, depth in events:
        rise = min(k_catch * max(depth - p_loss, 0.0), 320.0)
        if rise < 0.3:
            continue
        ratio = ((h_base + rise) / h_base) ** (1.0 / beta) - 1.0
        tpk = dur / 2.0 + tp
        x = (t - start) / tpk
        q += ratio * (0.85 * _pulse(x, shape) + 0.15 * _pulse(x / 4.0, 1.5))
        if rise >= 5.0:
            floods.append([_r((start + tpk) / HOUR, 1), _r(rise, 1)])
    h = np.minimum(h_base * q**beta, h_base + 350.0)
    info: dict[str, object] = {
        "rating_beta": _r(beta),
        "recession_days": _r(tau_r / DAY, 1),
        "catchment_lag_h": _r(tp / HOUR, 2),
        "floods_peak_h_rise_cm": floods,
        "max_rise_cm": _r(float(h.max()) - h_base, 1),
    }
    return h, q, qb, info


# ------------------------------------------------------------------------------- sensors


def _pressure(
    rng: np.random.Generator,
    fx: _Fx,
    t: FloatArray,
    *,
    level: FloatArray,
    z_probe: float,
    full_scale: float,
    t_water: FloatArray,
    t_box: FloatArray,
    hv: FloatArray,
    drawdown_max: float,
    rho_ex: FloatArray,
    wave: FloatArray,
    extra_sd: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, dict[str, object]]:
    """A vented submersible pressure probe on a 4-20 mA loop, reporting depth + datum.

    depth = (water above the sensing point) x (column density / density it assumes)
            - drawdown coefficient x velocity head (flow past the housing / stilling tube),
    times (1 + span error); plus the probe's zero temperature coefficient (water temperature)
    and the logger shunt's tempco (box temperature) acting on the whole 4-20 mA signal.
    """
    datum = _u(rng, -50.0, 50.0)
    sigma = _lu(rng, 0.1, 1.0)
    span = _u(rng, -0.003, 0.003)
    k_temp = _u(rng, -4e-4, 4e-4) * full_scale  # cm/°C: ±0.04 %FS/°C
    box_ppm = _u(rng, -50e-6, 50e-6)  # 1/°C on the loop current
    c_v = _u(rng, 0.0, drawdown_max)
    k_turb = _u(rng, 0.01, 0.04)
    p_spike = _u(rng, 0.0, 5e-4)
    submerged = level - z_probe
    if fx("floor"):
        wet = (submerged > 0.0).astype(float)
        depth_true = np.clip(submerged, 0.0, None)
    else:  # as if the probe could read below its sensing point
        wet = np.ones_like(submerged)
        depth_true = submerged
    depth = depth_true * (1.0 + fx("density") * rho_ex) - fx("hydraulic") * c_v * hv * wet
    depth = depth * (1.0 + fx("calibration") * span)
    thermal = k_temp * (t_water - 20.0) + box_ppm * (t_box - 25.0) * (depth + full_scale / 4)
    clean = datum + z_probe + depth + fx("thermal") * thermal
    sd = np.sqrt(sigma**2 + (k_turb * hv) ** 2 + (0.05 * wave) ** 2 + extra_sd**2)
    spike_p = np.full_like(t, p_spike * fx("spikes"))
    spike_max = np.full_like(t, 15.0)
    info: dict[str, object] = {
        "kind": "pressure",
        "datum_cm": _r(datum, 2),
        "noise_cm": _r(sigma),
        "span_err": _r(span, 5),
        "zero_tempco_cm_per_C": _r(k_temp, 4),
        "loop_tempco_per_C": _r(box_ppm, 7),
        "drawdown_coeff": _r(c_v),
        "turbulence_coeff": _r(k_turb),
        "spike_p": _r(p_spike, 5),
        "z_probe_cm": _r(z_probe, 2),
    }
    return clean, sd, spike_p, spike_max, info


def _ultrasonic(
    rng: np.random.Generator,
    fx: _Fx,
    t: FloatArray,
    *,
    level: FloatArray,
    floor: float,
    z_mount: float,
    t_air: FloatArray,
    t_path: FloatArray,
    sun_lp: FloatArray,
    compensated: bool,
    wave: FloatArray,
    crest_max: float,
    rain: FloatArray,
    flood: FloatArray,
    extra_sd: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, dict[str, object]]:
    """An ultrasonic ranger looking down: level = mount - distance (time of flight x c/2).

    The distance is computed with the speed of sound at an assumed temperature: a fixed 20 °C
    (uncompensated) or the sensor's own thermistor, which reads the housing (heated by the
    sun, with a lag) rather than the air along the beam (compensated).  d_meas = d_true *
    c(assumed)/c(path), c ~ sqrt(273.15 + T), i.e. ~0.17 %/°C of the air gap.  On a rough
    surface the first echo comes from the crests: the level reads high by a fraction of the
    wave height.  False echoes (spiders, birds, foam, debris, rain) give wild readings that
    are always too high; more of them in floods and rain.
    """
    datum = _u(rng, -50.0, 50.0)
    sigma = _lu(rng, 0.1, 1.0)
    k_crest = _u(rng, 0.0, crest_max)
    a_sun = _u(rng, 1.0, 8.0)  # housing heating in full sun, °C
    p_spike = _u(rng, 0.0, 0.002)
    surface = np.maximum(level, floor) if fx("floor") else level
    gap = z_mount - surface
    t_assumed = t_air + a_sun * sun_lp if compensated else np.full_like(t, 20.0)
    ratio = np.sqrt((273.15 + t_assumed) / (273.15 + t_path))
    d_meas = gap * (1.0 + fx("sound_speed") * (ratio - 1.0))
    clean = datum + z_mount - d_meas + fx("hydraulic") * k_crest * wave
    sd = np.sqrt(sigma**2 + (0.08 * wave) ** 2 + (0.05 * rain) ** 2 + extra_sd**2)
    spike_p = np.clip(p_spike * (1.0 + 5.0 * flood + 0.05 * rain), 0.0, 0.05) * fx("spikes")
    spike_max = np.clip(gap, 3.0, 150.0)
    info: dict[str, object] = {
        "kind": "ultrasonic",
        "datum_cm": _r(datum, 2),
        "noise_cm": _r(sigma),
        "compensated": compensated,
        "housing_sun_heating_C": _r(a_sun, 2) if compensated else None,
        "air_gap_cm_at_start": _r(float(gap[0]), 1),
        "air_gap_cm_min": _r(float(gap.min()), 1),
        "crest_bias_coeff": _r(k_crest),
        "spike_p": _r(p_spike, 5),
        "z_mount_cm": _r(z_mount, 1),
    }
    return clean, sd, spike_p, spike_max, info


def _sensor_kinds(rng: np.random.Generator, probs: tuple[float, float, float]) -> list[str]:
    """(pressure, pressure), (pressure, ultrasonic) or (ultrasonic, ultrasonic), shuffled."""
    i = int(rng.choice(3, p=list(probs)))
    kinds = [["pressure", "pressure"], ["pressure", "ultrasonic"], ["ultrasonic", "ultrasonic"]][i]
    if rng.uniform() < 0.5:
        kinds = kinds[::-1]
    return kinds


# ---------------------------------------------------------------------------------- paddy


def _paddy(
    rng: np.random.Generator, t: FloatArray, fx: _Fx
) -> tuple[list[_Channel], dict[str, object]]:
    """A paddy's water W (cm above the mean soil surface) from a water balance on a 60-s step.

    Gains: rain, irrigation inflow (an automatic valve between two levels, or a farmer who
    looks at ~6:30 and ~17:30).  Losses: evapotranspiration 3-7 mm/day (daytime, with sun),
    percolation + seepage 3-20 mm/day, overflow at the outlet weir board (6-12 cm) ~ head^1.5.
    Regimes: continuous flooding, alternate wetting and drying (AWD: let it fall 5-15 cm below
    the soil, then refill), mid-season drainage (outlet opened, refilled 2-4 days later or
    not).  Below the soil the water table moves 1/Sy (Sy 0.3-0.6) times faster than ponded
    water, and diverges between the two gauges' pipes (soil heterogeneity).
    """
    days = float(t[-1]) / DAY
    hour0 = _u(rng, 0.0, 24.0)
    t_mean = _u(rng, 20.0, 29.0)
    w = _weather(
        rng,
        t,
        hour0=hour0,
        t_mean=t_mean,
        diurnal=_u(rng, 3.0, 6.0),
        rain_per_day=_u(rng, 0.1, 0.5),
        heavy_frac=0.3,
        extra=[],
    )
    regime = ["continuous", "awd", "drain"][int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
    control = "auto" if rng.uniform() < 0.5 else "manual"
    crest = _u(rng, 6.0, 12.0)
    et_day = _u(rng, 0.3, 0.7)
    perc_day = _u(rng, 0.3, 2.0)
    sy = _u(rng, 0.3, 0.6)
    inflow = _u(rng, 0.5, 3.0)  # cm/h when the inlet is open
    k_weir = _u(rng, 0.5, 1.5)  # cm/h per cm^1.5 above the crest
    if regime == "awd":
        low, high = -_u(rng, 5.0, 15.0), _u(rng, 3.0, 7.0)
    else:
        low = _u(rng, 1.5, 3.5)
        high = low + _u(rng, 2.0, 4.0)
    high = min(high, crest - 0.5)
    w0 = _u(rng, low if regime != "awd" else -5.0, high)
    t_drain = _u(rng, 1.0, 6.0) * DAY
    t_refill = t_drain + _u(rng, 2.0, 4.0) * DAY
    checks: list[float] = []
    for d in range(-1, int(days) + 2):
        for h in (6.5, 17.5):
            checks.append((d * 24.0 + h - hour0 + float(rng.normal(0.0, 0.5))) * HOUR)
    checks_arr = np.array(sorted(checks))

    step = 60.0
    tc = np.arange(0.0, float(t[-1]) + step, step)
    sun_c = np.interp(tc, t, w.sun)
    rain_c = np.interp(tc, t, w.rain) / 10.0  # cm/h
    et_c = et_day / 24.0 * sun_c / 0.345  # daily mean of the clear-sky day shape is ~0.345
    n_checks_before = np.searchsorted(checks_arr, tc, side="right")
    wc = np.empty_like(tc)
    qin_c = np.zeros_like(tc)
    qout_c = np.zeros_like(tc)
    level = w0
    valve = False
    dt_h = step / HOUR
    for k in range(tc.size):
        tk = float(tc[k])
        drained = regime == "drain" and t_drain <= tk < t_refill
        crest_eff = -2.0 if drained else crest
        check_now = control == "auto" or (k > 0 and n_checks_before[k] > n_checks_before[k - 1])
        if drained:
            valve = False
        elif check_now:
            if level < low:
                valve = True
            elif level >= high:
                valve = False
        q_in = inflow if valve else 0.0
        q_out = k_weir * max(level - crest_eff, 0.0) ** 1.5
        if level > 0.0:
            loss = et_c[k] + perc_day / 24.0
            level += (rain_c[k] + q_in - loss - q_out) * dt_h
        else:
            loss = 0.7 * et_c[k] + 0.5 * perc_day / 24.0
            level += (rain_c[k] + q_in - loss - q_out) * dt_h / sy
        level = min(max(level, -40.0), crest + 15.0)
        wc[k] = level
        qin_c[k] = q_in
        qout_c[k] = q_out
    water = np.interp(t, tc, wc)
    through = np.interp(t, tc, qin_c - qout_c)

    # Wind set-up: surface slope = rho_a Cd U^2 / (rho_w g h), sheltered by the rice canopy.
    canopy = _u(rng, 0.1, 1.0)
    sep_m = _u(rng, 2.0, 15.0)
    bearing = _u(rng, 0.0, 2 * math.pi)
    h_m = np.clip(water, 1.0, None) / 100.0
    slope = canopy * 1.2 * 1.3e-3 * w.wind**2 / (1000.0 * GRAV * h_m)
    tilt = np.clip(slope * sep_m * 100.0 * np.cos(w.wind_dir - bearing), -3.0, 3.0)
    ponded = np.clip(water / 1.0, 0.0, 1.0)
    # Through-flow gradient from the inlet (x=0) to the outlet (x=1) of a 30-100 m field.
    field_m = _u(rng, 30.0, 100.0)
    x_a = _u(rng, 0.0, 1.0)
    x_b = float(np.clip(x_a + rng.choice([-1.0, 1.0]) * sep_m / field_m, 0.0, 1.0))
    grad = _u(rng, 0.2, 1.0)  # cm across the field per cm/h of through-flow
    soil_sd = _u(rng, 0.5, 2.0)  # field levelling, cm
    in_pipe = rng.uniform() < 0.7
    kinds = _sensor_kinds(rng, (0.6, 0.25, 0.15))
    t_water = (
        t_mean
        + 2.0
        + _u(rng, 3.0, 7.0)
        * (0.3 + 0.7 * _lowpass(t, w.clear, 3 * HOUR))
        * np.cos(2 * math.pi * (w.hour - 14.0) / 24.0)
    )
    t_box = w.t_air + 12.0 * _lowpass(t, w.sun, 0.5 * HOUR)
    sun_lp = _lowpass(t, w.sun, 1200.0)
    t_path = 0.5 * (w.t_air + t_water)
    zeros = np.zeros_like(t)
    channels: list[_Channel] = []
    for i, (name, x_i, sgn) in enumerate((("a", x_a, 0.5), ("b", x_b, -0.5))):
        g_i = float(rng.normal(0.0, soil_sd))
        pipe = _u(rng, 15.0, 30.0) if in_pipe else 0.0
        delta = float(rng.normal(0.0, 0.1))  # water-table divergence per cm below the soil
        local = (
            water
            + ponded * (fx("wind") * sgn * tilt + fx("hydraulic") * grad * (0.5 - x_i) * through)
            + (1.0 - ponded) * delta * np.clip(-water, 0.0, None)
        )
        floor = g_i - pipe
        ripple = 0.02 * w.wind
        if kinds[i] == "pressure":
            clean, sd, sp, sm, info = _pressure(
                rng,
                fx,
                t,
                level=local,
                z_probe=floor + 1.0,
                full_scale=100.0,
                t_water=t_water,
                t_box=t_box,
                hv=zeros,
                drawdown_max=0.0,
                rho_ex=zeros,
                wave=ripple,
                extra_sd=zeros,
            )
        else:
            z_u = g_i + _u(rng, 30.0, 100.0)
            clean, sd, sp, sm, info = _ultrasonic(
                rng,
                fx,
                t,
                level=local,
                floor=floor,
                z_mount=z_u,
                t_air=w.t_air,
                t_path=t_path,
                sun_lp=sun_lp,
                compensated=bool(rng.uniform() < 0.5),
                wave=ripple,
                crest_max=0.3,
                rain=w.rain,
                flood=zeros,
                extra_sd=zeros,
            )
        info.update(
            {
                "soil_cm": _r(g_i, 2),
                "pipe_depth_cm": _r(pipe, 1),
                "x": _r(x_i),
                "water_table_divergence": _r(delta),
            }
        )
        channels.append(
            _Channel(name, kinds[i], clean, sd, sp, sm, kinds[i] == "ultrasonic", None, info)
        )
    settings: dict[str, object] = {
        "regime": regime,
        "control": control,
        "weir_crest_cm": _r(crest, 2),
        "low_cm": _r(low, 2),
        "high_cm": _r(high, 2),
        "et_cm_day": _r(et_day),
        "percolation_cm_day": _r(perc_day),
        "specific_yield": _r(sy),
        "inflow_cm_h": _r(inflow),
        "drain_day": _r(t_drain / DAY, 2) if regime == "drain" else None,
        "refill_day": _r(t_refill / DAY, 2) if regime == "drain" else None,
        "canopy_shelter": _r(canopy),
        "separation_m": _r(sep_m, 2),
        "field_m": _r(field_m, 1),
        "flow_gradient_cm_per_cm_h": _r(grad),
        "soil_levelling_sd_cm": _r(soil_sd),
        "in_pipes": in_pipe,
        "t_air_mean_C": _r(t_mean, 1),
        "rain_mm": _r(float(w.rain.sum() * DT / HOUR), 1),
        "water_min_cm": _r(float(water.min()), 2),
        "water_max_cm": _r(float(water.max()), 2),
        "max_wind_tilt_cm": _r(float(np.abs(tilt * ponded).max())),
    }
    return channels, settings


# ---------------------------------------------------------------------------------- river


def _river(
    rng: np.random.Generator, t: FloatArray, fx: _Fx
) -> tuple[list[_Channel], dict[str, object]]:
    """A small river at a bridge: a pressure probe on the bed, an ultrasonic ranger above.

    Floods: rain events (wet season) with an initial loss of 2-10 mm and 1-3 cm of rise per
    mm of effective rain; with probability 0.6 one extra flood of 50-300 cm.  Velocity from
    Manning (n 0.03-0.05, slope 1/1000-1/150) reaches 2-4 m/s in a 3 m flood (velocity head
    20-80 cm).  The probe reads low by 0-10 % of the velocity head (drawdown past its housing
    or stilling tube) and high by the suspended sediment's density (up to ~0.6 %); the ranger
    stands elsewhere on the cross-section (±5 % of the velocity head in local surface level)
    and catches crests of standing waves (0-30 % of a wave height ~ 0.25 velocity heads).
    Surges of the turbulent surface (a few cm over minutes) are common to both.
    """
    days = float(t[-1]) / DAY
    hour0 = _u(rng, 0.0, 24.0)
    t_mean = _u(rng, 5.0, 28.0)
    k_catch = _u(rng, 1.0, 3.0)
    p_loss = _u(rng, 2.0, 10.0)
    extra: list[tuple[float, float, float]] = []
    if rng.uniform() < 0.6:
        rise = _u(rng, 50.0, 300.0)
        extra.append(
            (_u(rng, 0.3, days - 0.5) * DAY, _u(rng, 3.0, 12.0) * HOUR, rise / k_catch + p_loss)
        )
    w = _weather(
        rng,
        t,
        hour0=hour0,
        t_mean=t_mean,
        diurnal=_u(rng, 3.0, 8.0),
        rain_per_day=_u(rng, 0.15, 0.5),
        heavy_frac=0.3,
        extra=extra,
    )
    h_base = _u(rng, 20.0, 80.0)
    h, q, qb, flow_info = _river_stage(
        rng, t, w.events, h_base=h_base, k_catch=k_catch, p_loss=p_loss
    )
    n_man = _u(rng, 0.03, 0.05)
    slope = _lu(rng, 1.0 / 1000.0, 1.0 / 150.0)
    v = np.minimum((h / 100.0) ** (2.0 / 3.0) * math.sqrt(slope) / n_man, 4.0)
    hv = v**2 / (2 * GRAV) * 100.0
    flood = np.clip((h - h_base) / 100.0, 0.0, 1.0)
    surge_sd = 0.1 + 0.03 * hv
    level = h + fx("slosh") * _smooth(rng, t, 120.0, 1.0) * surge_sd
    wave = 0.25 * hv + 0.1 * w.wind
    kappa = _u(rng, 1e-4, 4e-4)
    q_early = np.interp(t + HOUR, t, q)  # sediment peaks before the flow (first flush)
    qb_early = np.interp(t + HOUR, t, qb)
    rho_ex = np.minimum(kappa * np.clip(q_early - qb_early, 0.0, None) ** 0.7, 0.006)
    t_water = (
        t_mean
        - 1.0
        + _u(rng, 0.5, 2.5) * np.cos(2 * math.pi * (w.hour - 16.0) / 24.0)
        + _smooth(rng, t, 12 * HOUR, 0.5)
        - 1.5 * flood
    )
    t_box = w.t_air + 12.0 * _lowpass(t, w.sun, 0.5 * HOUR)
    sun_lp = _lowpass(t, w.sun, 1200.0)
    t_path = w.t_air + 0.3 * (t_water - w.t_air)
    compensated = bool(rng.uniform() < 0.5)
    gap0 = _u(rng, 150.0, 500.0)
    z_u = max(h_base + gap0, float(h.max()) + 60.0)
    c_pos = _u(rng, -0.05, 0.05)
    high_rise = _u(rng, 20.0, 60.0)
    zeros = np.zeros_like(t)
    kinds = ["pressure", "ultrasonic"] if rng.uniform() < 0.5 else ["ultrasonic", "pressure"]
    channels: list[_Channel] = []
    for name, kind in zip(("a", "b"), kinds, strict=True):
        if kind == "pressure":
            clean, sd, sp, sm, info = _pressure(
                rng,
                fx,
                t,
                level=level,
                z_probe=0.0,
                full_scale=500.0,
                t_water=t_water,
                t_box=t_box,
                hv=hv,
                drawdown_max=0.1,
                rho_ex=rho_ex,
                wave=wave,
                extra_sd=zeros,
            )
        else:
            local = level + fx("hydraulic") * c_pos * hv
            clean, sd, sp, sm, info = _ultrasonic(
                rng,
                fx,
                t,
                level=local,
                floor=-1e6,
                z_mount=z_u,
                t_air=w.t_air,
                t_path=t_path,
                sun_lp=sun_lp,
                compensated=compensated,
                wave=wave,
                crest_max=0.3,
                rain=w.rain,
                flood=flood,
                extra_sd=zeros,
            )
        datum = info["datum_cm"]
        assert isinstance(datum, float)
        thr = datum + h_base + high_rise
        channels.append(_Channel(name, kind, clean, sd, sp, sm, kind == "ultrasonic", thr, info))
    settings: dict[str, object] = {
        "depth_at_base_cm": _r(h_base, 1),
        "catchment_cm_per_mm": _r(k_catch),
        "initial_loss_mm": _r(p_loss, 2),
        "forced_flood": bool(extra),
        "manning_n": _r(n_man, 4),
        "slope": _r(slope, 5),
        "v_max_m_s": _r(float(v.max())),
        "velocity_head_max_cm": _r(float(hv.max()), 1),
        "sediment_density_max": _r(float(rho_ex.max()), 5),
        "ranger_position_coeff": _r(c_pos),
        "compensated": compensated,
        "t_air_mean_C": _r(t_mean, 1),
        "t_air_range_C": [_r(float(w.t_air.min()), 1), _r(float(w.t_air.max()), 1)],
        "high_cadence_above_base_cm": _r(high_rise, 1),
        "rain_mm": _r(float(w.rain.sum() * DT / HOUR), 1),
        **flow_info,
    }
    return channels, settings


# ---------------------------------------------------------------------------------- tidal

_TIDE_SPEEDS_DEG_H: Final = {
    "M2": 28.984104,
    "S2": 30.0,
    "N2": 28.43973,
    "K1": 15.041069,
    "O1": 13.943036,
    "M4": 57.96821,
}


def _tidal(
    rng: np.random.Generator, t: FloatArray, fx: _Fx
) -> tuple[list[_Channel], dict[str, object]]:
    """A tidal river mouth; level in cm above mean sea level.

    Tide: M2 30-90 cm, S2 0.3-0.5 M2 (spring-neap 14.8 d), N2, K1 10-30 cm, O1, and an M4
    overtide of 1-10 cm (flood faster than ebb).  Low water is truncated by the river's own
    stage over the bar (soft max).  River floods of 20-150 cm raise that floor and back up
    the tide.  A storm (p 0.35) brings a surge of 20-100 cm over 6-18 h, wind, rain, waves
    (Hs 15-60 cm inside the mouth) and amplified seiche.  Harbour seiche (two modes, 5-40 min,
    0.5-3 cm, x3-8 in a storm) is common to both gauges but not sampled at the same instants.
    A salt wedge (0-2.4 % denser water over part of the column) comes and goes with the tide
    and is pushed out by floods: the probe reads the column's weight, the ranger the surface.
    """
    days = float(t[-1]) / DAY
    hour0 = _u(rng, 0.0, 24.0)
    t_mean = _u(rng, 5.0, 28.0)
    amp = {"M2": _u(rng, 30.0, 90.0)}
    amp["S2"] = amp["M2"] * _u(rng, 0.3, 0.5)
    amp["N2"] = amp["M2"] * _u(rng, 0.15, 0.25)
    amp["K1"] = _u(rng, 10.0, 30.0)
    amp["O1"] = amp["K1"] * _u(rng, 0.6, 0.9)
    amp["M4"] = _u(rng, 1.0, 10.0)
    th = t / HOUR
    tide = np.zeros_like(t)
    dtide = np.zeros_like(t)
    for name, a in amp.items():
        om = math.radians(_TIDE_SPEEDS_DEG_H[name])
        ph = _u(rng, 0.0, 2 * math.pi)
        tide += a * np.cos(om * th + ph)
        dtide -= a * om * np.sin(om * th + ph)  # cm/h
    mhws = amp["M2"] + amp["S2"] + amp["K1"] + amp["O1"]
    storm = rng.uniform() < 0.35
    t_storm = _u(rng, 0.5, days - 0.5) * DAY
    w_storm = _u(rng, 6.0, 18.0) * HOUR
    surge_cm = _u(rng, 20.0, 100.0)
    env = np.exp(-(((t - t_storm) / w_storm) ** 2)) if storm else np.zeros_like(t)
    k_catch = _u(rng, 0.5, 1.5)
    p_loss = _u(rng, 2.0, 10.0)
    extra: list[tuple[float, float, float]] = []
    if storm:
        extra.append((t_storm - w_storm, 1.5 * w_storm, _u(rng, 30.0, 150.0)))
    elif rng.uniform() < 0.4:
        extra.append(
            (
                _u(rng, 0.3, days - 0.5) * DAY,
                _u(rng, 3.0, 12.0) * HOUR,
                _u(rng, 20.0, 150.0) / k_catch + p_loss,
            )
        )
    w = _weather(
        rng,
        t,
        hour0=hour0,
        t_mean=t_mean,
        diurnal=_u(rng, 2.0, 6.0),
        rain_per_day=_u(rng, 0.15, 0.5),
        heavy_frac=0.3,
        extra=extra,
    )
    h_r0 = _u(rng, 30.0, 80.0)
    h_r, _q, _qb, flow_info = _river_stage(
        rng, t, w.events, h_base=h_r0, k_catch=k_catch, p_loss=p_loss
    )
    flood = h_r - h_r0
    bar = -mhws * _u(rng, 0.4, 1.1)  # river stage over the bar at low flow, cm re MSL
    setup = 0.1 * _u(rng, 15.0, 60.0) * env
    sea = tide + surge_cm * env + setup
    level = _softmax(sea + 0.3 * flood, bar + flood, 5.0)
    seiche_amp = _u(rng, 0.5, 3.0) * (1.0 + _u(rng, 3.0, 8.0) * env)
    seiche = np.zeros_like(t)
    for _ in range(2):
        period = _u(rng, 5.0, 40.0) * 60.0
        mod = 0.5 + np.abs(_smooth(rng, t, 3 * HOUR, 0.7))
        seiche += (
            _u(rng, 0.3, 1.0)
            * seiche_amp
            * mod
            * np.sin(2 * math.pi * t / period + _u(rng, 0.0, 2 * math.pi))
        )
    level = level + fx("slosh") * seiche
    hs = _u(rng, 2.0, 10.0) + _u(rng, 15.0, 60.0) * env
    v_tide = _u(rng, 0.3, 1.2) * dtide / max(float(np.abs(dtide).max()), 1e-9)
    v_river = 0.3 + 1.5 * np.clip(flood, 0.0, None) / 100.0
    v = np.minimum(np.abs(v_river - v_tide), 3.5)  # ebb (falling tide) adds to the river
    hv = v**2 / (2 * GRAV) * 100.0
    wave = hs + 0.15 * hv
    sal_expo = _u(rng, 0.0, 1.0)
    sal_part = _u(rng, 0.3, 1.0)
    lag = _u(rng, 0.5, 1.5) * HOUR
    tide_lag = np.interp(t - lag, t, tide)
    salt = (
        sal_expo
        / (1.0 + np.exp(-(tide_lag - 0.0) / 15.0))
        * np.exp(-np.clip(flood, 0.0, None) / 40.0)
    )
    rho_ex = 0.024 * sal_part * salt
    t_water = (
        t_mean
        - 1.0
        + _u(rng, 0.3, 1.5) * np.cos(2 * math.pi * (w.hour - 16.0) / 24.0)
        + _smooth(rng, t, 12 * HOUR, 0.5)
    )
    t_box = w.t_air + 12.0 * _lowpass(t, w.sun, 0.5 * HOUR)
    sun_lp = _lowpass(t, w.sun, 1200.0)
    t_path = w.t_air + 0.3 * (t_water - w.t_air)
    compensated = bool(rng.uniform() < 0.5)
    z_p = float(level.min()) - _u(rng, 30.0, 100.0)
    z_u = max(mhws + _u(rng, 150.0, 400.0), float(level.max()) + 80.0)
    c_pos = _u(rng, -0.05, 0.05)
    high_above = mhws + _u(rng, 20.0, 60.0)
    flood_frac = np.clip(flood / 100.0, 0.0, 1.0) + env
    zeros = np.zeros_like(t)
    kinds = ["pressure", "ultrasonic"] if rng.uniform() < 0.5 else ["ultrasonic", "pressure"]
    channels: list[_Channel] = []
    for name, kind in zip(("a", "b"), kinds, strict=True):
        if kind == "pressure":
            clean, sd, sp, sm, info = _pressure(
                rng,
                fx,
                t,
                level=level,
                z_probe=z_p,
                full_scale=1000.0,
                t_water=t_water,
                t_box=t_box,
                hv=hv,
                drawdown_max=0.08,
                rho_ex=rho_ex,
                wave=wave,
                extra_sd=zeros,
            )
        else:
            clean, sd, sp, sm, info = _ultrasonic(
                rng,
                fx,
                t,
                level=level + fx("hydraulic") * c_pos * hv,
                floor=-1e6,
                z_mount=z_u,
                t_air=w.t_air,
                t_path=t_path,
                sun_lp=sun_lp,
                compensated=compensated,
                wave=wave,
                crest_max=0.15,
                rain=w.rain,
                flood=flood_frac,
                extra_sd=zeros,
            )
        datum = info["datum_cm"]
        assert isinstance(datum, float)
        channels.append(
            _Channel(name, kind, clean, sd, sp, sm, kind == "ultrasonic", datum + high_above, info)
        )
    settings: dict[str, object] = {
        "tide_amp_cm": {k: _r(a, 1) for k, a in amp.items()},
        "mhws_cm": _r(mhws, 1),
        "bar_cm": _r(bar, 1),
        "storm": storm,
        "storm_day": _r(t_storm / DAY, 2) if storm else None,
        "surge_cm": _r(surge_cm, 1) if storm else None,
        "seiche_cm": _r(float(seiche_amp[0]), 2),
        "salt_exposure": _r(sal_expo),
        "salt_density_max": _r(float(rho_ex.max()), 5),
        "velocity_head_max_cm": _r(float(hv.max()), 1),
        "compensated": compensated,
        "level_range_cm": [_r(float(level.min()), 1), _r(float(level.max()), 1)],
        "max_rate_cm_per_h": _r(float(np.abs(np.diff(level)).max() / DT * HOUR), 1),
        "river_depth_at_base_cm": _r(h_r0, 1),
        "t_air_mean_C": _r(t_mean, 1),
        "rain_mm": _r(float(w.rain.sum() * DT / HOUR), 1),
        **flow_info,
    }
    return channels, settings


# ----------------------------------------------------------------------------------- gate


def _gate(
    rng: np.random.Generator, t: FloatArray, fx: _Fx
) -> tuple[list[_Channel], dict[str, object]]:
    """A channel reach whose level a structure moves in steps; depth above the bed in cm.

    ``gate``: an operator or controller changes the set-point 3-8 times a day (±5-50 cm); the
    reach follows with a time constant of 1-10 min.  ``pump``: inflow (2-10 cm/h, more after
    rain) fills the reach until the pump starts and pulls it down at 40-200 cm/h over a band
    of 10-40 cm.  Each change rings the reach's seiche (period 1-7 min, decay 5-20 min; its
    amplitude differs by ±30 % between the two positions, with a small phase difference).
    The gauge nearer the structure reads lower by 0-2 cm while water flows through it.
    """
    days = float(t[-1]) / DAY
    hour0 = _u(rng, 0.0, 24.0)
    t_mean = _u(rng, 5.0, 28.0)
    w = _weather(
        rng,
        t,
        hour0=hour0,
        t_mean=t_mean,
        diurnal=_u(rng, 3.0, 8.0),
        rain_per_day=_u(rng, 0.1, 0.4),
        heavy_frac=0.3,
        extra=[],
    )
    mode = "gate" if rng.uniform() < 0.5 else "pump"
    depth0 = _u(rng, 60.0, 200.0)
    period = _u(rng, 60.0, 400.0)
    decay = _u(rng, 300.0, 1200.0)
    sep_m = _u(rng, 2.0, 10.0)
    delay_b = sep_m / math.sqrt(GRAV * depth0 / 100.0)
    # steps: (time, size of the change, slosh amplitude)
    steps: list[tuple[float, float, float]] = []
    settings: dict[str, object] = {
        "mode": mode,
        "depth0_cm": _r(depth0, 1),
        "slosh_period_s": _r(period, 1),
        "slosh_decay_s": _r(decay, 1),
        "separation_m": _r(sep_m, 2),
    }
    if mode == "gate":
        per_day = int(rng.integers(3, 9))
        clock = np.sort(rng.uniform(0.0, 24.0, per_day))
        tau = _u(rng, 60.0, 600.0)
        slosh_ratio = _u(rng, 0.05, 0.25)
        base = np.full_like(t, depth0)
        target = depth0
        for d in range(int(days) + 1):
            for c in clock:
                ts = (d * 24.0 + float(c) - hour0 + float(rng.normal(0.0, 0.3))) * HOUR
                size = float(rng.choice([-1.0, 1.0])) * _lu(rng, 5.0, 50.0)
                new = float(np.clip(target + size, 30.0, depth0 + 80.0))
                size = new - target
                target = new
                if ts <= 0.0:  # a change before the series starts: already settled
                    base = base + size
                    continue
                if ts >= float(t[-1]):
                    continue
                on = t >= ts
                base = base + np.where(
                    on, size * (1.0 - np.exp(-np.clip(t - ts, 0.0, None) / tau)), 0.0
                )
                steps.append((ts, size, abs(size) * slosh_ratio))
        mean_level = base + _smooth(rng, t, 2 * HOUR, _u(rng, 0.5, 2.0))
        flow = np.clip(0.6 + _smooth(rng, t, 6 * HOUR, 0.3), 0.0, 1.0)
        settings.update(
            {"steps_per_day": per_day, "step_tau_s": _r(tau, 1), "slosh_ratio": _r(slosh_ratio)}
        )
    else:
        r_in = _u(rng, 2.0, 10.0)
        band = _u(rng, 10.0, 40.0)
        r_pump = _u(rng, 40.0, 200.0)
        slosh_cm = _u(rng, 1.0, 5.0)
        rain_resp = _lowpass(t, w.rain, 3 * HOUR)  # mm/h, delayed by the catchment
        inflow = (
            r_in
            * (1.0 + 0.3 * rain_resp)
            * np.clip(1.0 + _smooth(rng, t, 3 * HOUR, 0.2), 0.3, None)
        )
        h_off = depth0
        h_on = depth0 + band
        lvl = _u(rng, h_off, h_on)
        pump = False
        base = np.empty_like(t)
        pumping = np.zeros_like(t)
        for k in range(t.size):
            rate = inflow[k] - (r_pump if pump else 0.0)
            lvl += rate * DT / HOUR
            if not pump and lvl >= h_on:
                pump = True
                steps.append((float(t[k]), -band, slosh_cm))
            elif pump and lvl <= h_off:
                pump = False
                steps.append((float(t[k]), band, slosh_cm))
            base[k] = lvl
            pumping[k] = 1.0 if pump else 0.0
        mean_level = base
        flow = _lowpass(t, pumping, 60.0)
        settings.update(
            {
                "inflow_cm_h": _r(r_in, 2),
                "band_cm": _r(band, 1),
                "pump_cm_h": _r(r_pump, 1),
                "slosh_cm": _r(slosh_cm, 2),
                "pump_starts": sum(1 for s in steps if s[1] < 0),
            }
        )
    kinds = _sensor_kinds(rng, (0.3, 0.5, 0.2))
    t_water = (
        t_mean
        - 1.0
        + _u(rng, 0.5, 2.0) * np.cos(2 * math.pi * (w.hour - 16.0) / 24.0)
        + _smooth(rng, t, 12 * HOUR, 0.5)
    )
    t_box = w.t_air + 12.0 * _lowpass(t, w.sun, 0.5 * HOUR)
    sun_lp = _lowpass(t, w.sun, 1200.0)
    t_path = w.t_air + 0.3 * (t_water - w.t_air)
    channels: list[_Channel] = []
    for i, name in enumerate(("a", "b")):
        shift = delay_b if i == 1 else 0.0
        tt = t - shift
        m_i = _u(rng, 0.7, 1.3)
        phi = _u(rng, -0.3, 0.3)
        draw = _u(rng, 0.0, 2.0)
        turb = _u(rng, 0.1, 0.8)
        slosh = np.zeros_like(t)
        for ts, _size, a in steps:
            dtt = tt - ts
            on = dtt > 0
            slosh += np.where(
                on,
                a
                * m_i
                * np.exp(-np.clip(dtt, 0.0, None) / decay)
                * np.sin(2 * math.pi * np.clip(dtt, 0.0, None) / period + phi),
                0.0,
            )
        local = np.interp(tt, t, mean_level) + fx("slosh") * slosh - fx("hydraulic") * draw * flow
        extra_sd = turb * flow
        if kinds[i] == "pressure":
            clean, sd, sp, sm, info = _pressure(
                rng,
                fx,
                t,
                level=local,
                z_probe=0.0,
                full_scale=300.0,
                t_water=t_water,
                t_box=t_box,
                hv=np.zeros_like(t),
                drawdown_max=0.0,
                rho_ex=np.zeros_like(t),
                wave=np.zeros_like(t),
                extra_sd=extra_sd,
            )
        else:
            z_u = float(local.max()) + _u(rng, 50.0, 300.0)
            clean, sd, sp, sm, info = _ultrasonic(
                rng,
                fx,
                t,
                level=local,
                floor=-1e6,
                z_mount=z_u,
                t_air=w.t_air,
                t_path=t_path,
                sun_lp=sun_lp,
                compensated=bool(rng.uniform() < 0.5),
                wave=np.full_like(t, 1.0),
                crest_max=0.3,
                rain=w.rain,
                flood=np.zeros_like(t),
                extra_sd=extra_sd,
            )
        info.update(
            {
                "slosh_gain": _r(m_i),
                "slosh_phase_rad": _r(phi),
                "drawdown_at_flow_cm": _r(draw),
                "flow_turbulence_cm": _r(turb),
            }
        )
        channels.append(
            _Channel(name, kinds[i], clean, sd, sp, sm, kinds[i] == "ultrasonic", None, info)
        )
    settings.update(
        {
            "n_steps": len(steps),
            "t_air_mean_C": _r(t_mean, 1),
            "level_range_cm": [_r(float(mean_level.min()), 1), _r(float(mean_level.max()), 1)],
        }
    )
    return channels, settings


_BUILDERS: Final = {"paddy": _paddy, "river": _river, "tidal": _tidal, "gate": _gate}


# ------------------------------------------------------------------------------- sampling


def _sample(
    rng: np.random.Generator,
    t: FloatArray,
    ch: _Channel,
    t_end: float,
    fault: tuple[str, float, float] | None,
) -> tuple[list[float], list[float], dict[str, object]]:
    """One device's readings: its own phase, clock error, jitter, misses and outages.

    Every reading draws the same random numbers whether it is kept or not, so the readings
    before a fault's onset are identical to the healthy twin's.
    """
    phase = _u(rng, 0.0, IDLE_CADENCE_S)
    ppm = _u(rng, -50.0, 50.0) * 1e-6
    jitter = _u(rng, 0.5, 20.0)
    p_miss = _u(rng, 0.003, 0.03)
    outages: list[tuple[float, float]] = []
    if rng.uniform() < 0.3:
        start = _u(rng, 0.0, t_end)
        outages.append((start, start + _u(rng, 0.5, 6.0) * HOUR))
    offsets = np.linspace(-SAMPLE_WINDOW_S, 0.0, 5)
    times: list[float] = []
    values: list[float] = []
    sched = phase
    high = False
    last = -math.inf
    while sched <= t_end:
        u = rng.uniform(size=4)
        z = rng.normal(size=2)
        tr = sched + float(np.clip(z[0], -3.0, 3.0)) * jitter
        sched += (HIGH_CADENCE_S if high else IDLE_CADENCE_S) * (1.0 + ppm)
        if tr <= last + 1.0 or tr < SAMPLE_WINDOW_S or tr > t_end:
            continue
        if u[0] < p_miss or any(a <= tr < b for a, b in outages):
            continue
        v = float(np.interp(tr + offsets, t, ch.clean).mean())
        v += float(z[1]) * float(np.interp(tr, t, ch.sd))
        if u[1] < float(np.interp(tr, t, ch.spike_p)):
            big = 3.0 + float(u[2]) * (float(np.interp(tr, t, ch.spike_max)) - 3.0)
            v += big if ch.spike_up_only or u[3] < 0.5 else -big
        if fault is not None:
            kind, onset, amount = fault
            if tr >= onset:
                v += amount * (tr - onset) / DAY if kind == "drift" else amount
        v = round(v, 1)
        if ch.high_above is not None:
            if v > ch.high_above:
                high = True
            elif v < ch.high_above - 5.0:
                high = False
        times.append(round(tr, 3))
        values.append(v)
        last = tr
    info: dict[str, object] = {
        "phase_s": _r(phase, 1),
        "clock_ppm": _r(ppm * 1e6, 1),
        "jitter_s": _r(jitter, 2),
        "p_miss": _r(p_miss, 4),
        "outages_h": [[_r(a / HOUR, 2), _r(b / HOUR, 2)] for a, b in outages],
        "high_cadence_above": None if ch.high_above is None else _r(ch.high_above, 1),
        "n_readings": len(times),
    }
    return times, values, info


def generate(
    family: str,
    fault: str = "none",
    seed: int = 0,
    days: float = 8.0,
    disable: Iterable[str] = (),
) -> PairSeries:
    """A two-gauge series of ``family`` with ``fault`` ("none", "drift" or "offset").

    Gauges are named "a" and "b".  Labels: family, fault, seed, days, onset_s (None when
    healthy), gauge (the faulty one), rate_cm_per_day (drift, signed), size_cm (offset,
    signed), the physical settings drawn (``world``) and each gauge's sensor and timing.
    """
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} not in {FAMILIES}")
    if fault not in FAULTS:
        raise ValueError(f"fault {fault!r} not in {FAULTS}")
    if days < 5.5:
        raise ValueError("days must leave room for an onset up to day 5 and its aftermath")
    fx = _Fx(disable)
    fam_i = FAMILIES.index(family)
    rng = np.random.default_rng([seed, fam_i])
    t_end = days * DAY
    t = np.arange(0.0, t_end + 2 * DT, DT)
    channels, world = _BUILDERS[family](rng, t, fx)
    child_seeds = rng.integers(0, 2**62, size=len(channels))

    frng = np.random.default_rng([seed, fam_i, 7919, FAULTS.index(fault)])
    onset = _u(frng, 2.5, 5.0) * DAY
    faulty = "a" if frng.uniform() < 0.5 else "b"
    sign = 1.0 if frng.uniform() < 0.5 else -1.0
    rate = sign * _u(frng, 2.0, 10.0)
    size = sign * _lu(frng, 3.0, 30.0)
    labels: dict[str, object] = {
        "family": family,
        "fault": fault,
        "seed": seed,
        "days": days,
        "disabled": sorted(fx.off),
    }
    if fault == "none":
        labels.update({"onset_s": None, "gauge": None, "rate_cm_per_day": None, "size_cm": None})
    else:
        labels.update(
            {
                "onset_s": _r(onset, 1),
                "gauge": faulty,
                "rate_cm_per_day": _r(rate) if fault == "drift" else None,
                "size_cm": _r(size) if fault == "offset" else None,
            }
        )
    readings: list[Reading] = []
    gauges: dict[str, object] = {}
    for ch, cs in zip(channels, child_seeds, strict=True):
        f: tuple[str, float, float] | None = None
        if fault != "none" and ch.name == faulty:
            f = (fault, onset, rate if fault == "drift" else size)
        times, values, tinfo = _sample(np.random.default_rng(int(cs)), t, ch, t_end, f)
        readings.extend((tt, ch.name, vv) for tt, vv in zip(times, values, strict=True))
        gauges[ch.name] = {**ch.settings, **tinfo}
    readings.sort(key=lambda r: (r[0], r[1]))
    labels["world"] = world
    labels["gauges"] = gauges
    return PairSeries(readings, labels)
