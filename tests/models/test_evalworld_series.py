"""The evaluation-only series generators: labels true where they say, clean worlds clean.

A detector's measured hit and false-alarm rates are only as good as these labels, so each
fault is checked against the clean twin of its series (same seed, index) and each
legitimate behaviour that resembles a fault (drained paddy, gate steps, pats) is checked to
be the physical thing the docstring says.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.evalworlds.series import (
    MAT_FAMILIES,
    MAT_FAULTS,
    WATER_FAMILIES,
    WATER_FAULTS,
    Series,
    mat,
    water,
)

DAYS = 10
MINUTES = 12


def _longest_run(v: np.ndarray) -> int:
    """Longest stretch of exactly equal consecutive readings."""
    changes = np.flatnonzero(np.diff(v) != 0)
    edges = np.concatenate([[-1], changes, [len(v) - 1]])
    return int(np.diff(edges).max())


def _peak(v: np.ndarray, period: float, fmin: float) -> float:
    """Frequency (per unit of ``period``) of the largest spectral peak above ``fmin``."""
    x = (v - v.mean()) * np.hanning(len(v))
    nfft = 1 << 17
    spec = np.abs(np.fft.rfft(x, nfft))
    freq = np.fft.rfftfreq(nfft, d=period)
    keep = freq > fmin
    return float(freq[keep][np.argmax(spec[keep])])


# -- shape, determinism, API ----------------------------------------------------------------


def test_water_shapes_period_and_readonly() -> None:
    for fam in WATER_FAMILIES:
        ss = water(fam, 3, 2.5, seed=1)
        assert len(ss) == 3
        for s in ss:
            assert isinstance(s, Series)
            assert s.family == fam and s.fault is None and s.onset is None
            assert s.period_s == 600.0
            assert s.values.shape == (360,) and s.values.dtype == np.float64
            assert not s.values.flags.writeable
            json.dumps(s.meta)


def test_mat_shapes_period_and_readonly() -> None:
    for fam in MAT_FAMILIES:
        ss = mat(fam, 2, 3, seed=1)
        for s in ss:
            assert s.period_s == 0.5 and s.values.shape == (360,)
            assert s.values.dtype == np.float64 and not s.values.flags.writeable
            json.dumps(s.meta)


def test_deterministic_and_independent_of_n() -> None:
    a = water("river", 4, 3, seed=7, fault="drift")
    b = water("river", 2, 3, seed=7, fault="drift")
    for x, y in zip(a[:2], b, strict=True):
        assert np.array_equal(x.values, y.values) and x.onset == y.onset and x.meta == y.meta
    c = water("river", 2, 3, seed=8, fault="drift")
    assert not np.array_equal(a[0].values, c[0].values)
    m1, m2 = mat("tonton", 3, 4, seed=7), mat("tonton", 3, 4, seed=7)
    for x, y in zip(m1, m2, strict=True):
        assert np.array_equal(x.values, y.values) and x.meta == y.meta
    assert not np.array_equal(m1[0].values, m1[1].values)


def test_unknown_names_and_too_short_are_refused() -> None:
    with pytest.raises(ValueError):
        water("lake", 1, 2, seed=0)
    with pytest.raises(ValueError):
        water("river", 1, 2, seed=0, fault="drop")  # a mat fault
    with pytest.raises(ValueError):
        water("river", 1, 0.5, seed=0)
    with pytest.raises(ValueError):
        mat("awake", 1, 5, seed=0)
    with pytest.raises(ValueError):
        mat("still", 1, 5, seed=0, fault="offset")  # a water fault
    with pytest.raises(ValueError):
        mat("still", 1, 1, seed=0)


# -- clean series carry nothing fault-like by construction ------------------------------------


@pytest.mark.parametrize("family", WATER_FAMILIES)
def test_clean_water_has_no_stuck_runs_and_stays_in_range(family: str) -> None:
    for s in water(family, 12, 20, seed=11):
        assert _longest_run(s.values) < 6  # a stuck test's 36 readings is far off
        lo, hi = s.meta["rails_cm"]
        assert lo < s.values.min() and s.values.max() < hi  # never saturated
        assert s.meta["noise_cm"] >= 0.1


@pytest.mark.parametrize("family", MAT_FAMILIES)
def test_clean_mat_has_no_stuck_runs(family: str) -> None:
    for s in mat(family, 8, MINUTES, seed=11):
        assert _longest_run(s.values) < 6
        assert 0.02 <= s.meta["noise_kg"] <= 0.04
        assert 2.5 <= s.meta["mass_kg"] <= 15.0


# -- faults are where onset says, and nowhere else ------------------------------------------


@pytest.mark.parametrize("family", WATER_FAMILIES)
@pytest.mark.parametrize("fault", WATER_FAULTS)
def test_water_fault_is_where_onset_says(family: str, fault: str) -> None:
    clean = water(family, 6, DAYS, seed=21)
    faulty = water(family, 6, DAYS, seed=21, fault=fault)
    n = DAYS * 144
    for c, f in zip(clean, faulty, strict=True):
        assert f.fault == fault and f.onset is not None
        k = f.onset
        assert 0.2 * n - 1 <= k <= 0.7 * n
        assert np.array_equal(f.values[:k], c.values[:k])  # untouched before onset
        diff = f.values - c.values
        sat = f.meta.get("saturated_at")
        end = n if sat is None else sat
        if fault == "spike":
            stop = f.meta["fault_end"]
            assert 1 <= stop - k <= 3
            assert np.all(np.abs(diff[k:stop][: end - k]) >= 5.0 - 0.02)
            assert np.all(np.abs(diff[k:stop]) <= 50.0 + 0.02)
            assert np.array_equal(f.values[stop:], c.values[stop:])
        elif fault == "stuck":
            stop = n if f.meta["fault_end"] is None else f.meta["fault_end"]
            assert stop - k >= 36  # at least 6 h
            assert np.all(f.values[k:stop] == f.values[k - 1])
            assert np.array_equal(f.values[stop:], c.values[stop:])
        elif fault == "offset":
            off = f.meta["offset_cm"]
            assert 5.0 <= abs(off) <= 40.0
            assert np.allclose(diff[k:end], off, atol=0.011)
        elif fault == "dropout":
            span = f.meta["span_cm"]
            assert f.meta["dropout_value"] in (0.0, -0.025 * span, 1.0625 * span, -0.25 * span)
            assert np.all(f.values[k:] == f.meta["dropout_value"])
        elif fault == "drift":
            rate = f.meta["drift_cm_per_day"]
            assert 2.0 <= abs(rate) <= 10.0
            days = (np.arange(k, end) - k + 1) / 144.0
            slope = np.polyfit(days, diff[k:end], 1)[0]
            assert slope == pytest.approx(rate, abs=0.02)
            assert abs(diff[k]) > 0  # the first faulty reading has already drifted
        elif fault == "noise":
            factor = f.meta["noise_factor"]
            assert 5.0 <= factor <= 20.0
            if sat is None:
                extra = np.std(diff[k:]) / f.meta["noise_cm"]
                assert extra == pytest.approx(math.sqrt(factor**2 - 1.0), rel=0.2)
            else:  # a shallow paddy's noise hits the transmitter's 3.8 mA rail and saturates
                lo, hi = f.meta["rails_cm"]
                assert sat >= k and np.all((f.values[k:] >= lo) & (f.values[k:] <= hi))
                assert np.isclose(f.values[sat], lo, atol=0.006) or np.isclose(
                    f.values[sat], hi, atol=0.006
                )


@pytest.mark.parametrize("family", MAT_FAMILIES)
@pytest.mark.parametrize("fault", MAT_FAULTS)
def test_mat_fault_is_where_onset_says(family: str, fault: str) -> None:
    clean = mat(family, 5, MINUTES, seed=31)
    faulty = mat(family, 5, MINUTES, seed=31, fault=fault)
    n = MINUTES * 120
    for c, f in zip(clean, faulty, strict=True):
        k = f.onset
        assert k is not None and 0.2 * n - 1 <= k < n
        assert np.array_equal(f.values[:k], c.values[:k])
        diff = f.values - c.values
        if fault == "stuck":
            stop = n if f.meta["fault_end"] is None else f.meta["fault_end"]
            assert stop - k >= 60  # at least 30 s
            assert np.all(f.values[k:stop] == f.values[k - 1])
        elif fault == "spike":
            stop = f.meta["fault_end"]
            assert 1 <= stop - k <= 3
            assert np.all((np.abs(diff[k:stop]) >= 1.0 - 0.002) & (np.abs(diff[k:stop]) <= 10.002))
            assert np.array_equal(f.values[stop:], c.values[stop:])
        elif fault == "drift":
            rate, ramp_end = f.meta["drift_kg_per_min"], f.meta["drift_end"]
            assert 0.05 <= abs(rate) <= 1.5
            minutes = (np.arange(k, ramp_end) - k + 1) / 120.0
            slope = np.polyfit(minutes, diff[k:ramp_end], 1)[0]
            assert slope == pytest.approx(rate, abs=0.01)
            assert np.allclose(diff[ramp_end:], f.meta["drift_kg"], atol=0.0015)
            if not f.meta["drift_truncated"]:  # else the series ended mid-ramp
                assert 0.5 <= abs(f.meta["drift_kg"]) <= 3.0
        elif fault == "drop":
            assert c.values[k] > 1.0  # the child is on the mat
            if f.meta["drop_variant"] == "partial":
                assert 0.5 <= f.meta["drop_kg"] <= 3.0 or f.meta["drop_kg"] < 0.8 * c.values[k]
                assert np.allclose(diff[k:], -f.meta["drop_kg"], atol=0.0015)
            else:
                assert abs(np.mean(f.values[k:])) < 0.02
                assert np.std(f.values[k:]) < 2 * f.meta["noise_kg"]
        elif fault == "noise":
            factor = f.meta["noise_factor"]
            assert 8.0 <= factor <= 12.0
            extra = np.std(diff[k:]) / f.meta["noise_kg"]
            assert extra == pytest.approx(math.sqrt(factor**2 - 1.0), rel=0.15)


# -- legitimate behaviours are the physical thing they claim -----------------------------------


def test_paddy_drainage_really_reads_its_floor_and_normal_water_is_a_few_cm() -> None:
    drained = 0
    for s in water("paddy", 16, 30, seed=41):
        zero = s.meta["zero_offset_cm"]
        for e in s.meta["events"]:
            if e["kind"] != "drainage" or e["dry_from"] is None:
                continue
            seg = s.values[e["dry_from"] : e["end"]]
            assert len(seg) >= 2 * 144  # dry for days
            assert abs(np.median(seg) - zero) < 0.1
            wet = np.zeros(len(s.values), dtype=bool)  # rain and a day after it
            for r in s.meta["events"]:
                if r["kind"] == "rain":
                    wet[r["start"] : r["end"] + 144] = True
            dry = seg[~wet[e["dry_from"] : e["end"]]]
            assert np.all(np.abs(dry - zero) < 5 * s.meta["noise_cm"])
            drained += 1
        before = s.values[
            : min(
                [e["start"] for e in s.meta["events"] if e["kind"] == "drainage"] + [len(s.values)]
            )
        ]
        assert 1.0 <= np.median(before) - zero <= 14.0  # a few cm between farmer visits
    assert drained >= 4


def test_paddy_loses_more_water_by_day_than_by_night() -> None:
    day, night = [], []
    for s in water("paddy", 16, 20, seed=43):
        busy = np.zeros(len(s.values), dtype=bool)
        for e in s.meta["events"]:
            busy[max(0, e["start"] - 1) : e["end"] + 36] = True  # 6 h for spill to settle
        hours = (s.meta["start_hour"] + np.arange(len(s.values)) / 6.0) % 24.0
        step = np.diff(s.values)
        quiet = ~busy[1:] & ~busy[:-1]
        day.extend(step[quiet & (hours[1:] >= 10) & (hours[1:] < 16)])
        night.extend(step[quiet & ((hours[1:] >= 22) | (hours[1:] < 4))])
    day_loss, night_loss = -np.mean(day) * 6, -np.mean(night) * 6  # cm per hour
    assert day_loss > 2.0 * night_loss
    assert 0.5 / 24 < day_loss < 3 * 3.0 / 24


def test_tidal_series_peak_at_the_m2_period() -> None:
    for s in water("tidal", 8, 30, seed=51):
        per_hour = _peak(s.values, 600 / 3600, fmin=1 / 30)
        assert 1 / per_hour == pytest.approx(12.42, abs=0.06)  # M2, not S2's 12.00 h
        assert 20.0 <= s.meta["m2_cm"] <= 150.0


def test_gate_steps_complete_within_two_readings_and_flat_between() -> None:
    steps = 0
    for s in water("reservoir_gate", 10, 10, seed=61):
        v = s.values
        events = s.meta["events"]
        for i, e in enumerate(events):
            a, b = e["start"], e["end"]
            others = events[:i] + events[i + 1 :]
            if a < 1 or b >= len(v) or any(abs(o["start"] - a) < 12 for o in others):
                continue  # another gate move within 2 h would mix in
            assert b - a <= 3  # at most two readings in between, then the new level
            assert 5.0 <= abs(e["step_cm"]) <= 30.0
            assert v[b - 1] - v[a - 1] == pytest.approx(
                e["step_cm"], abs=0.1 * abs(e["step_cm"]) + 1
            )
            steps += 1
        jumps = np.abs(np.diff(v))
        assert np.median(jumps) < 0.25  # noise 0.10-0.15 cm
    assert steps >= 20


def test_tonton_pats_are_1_to_2_hz_and_alias_at_2_readings_a_second() -> None:
    fine = mat("tonton", 6, 10, seed=71, period_s=0.05)
    device = mat("tonton", 6, 10, seed=71)
    for s, d in zip(fine, device, strict=True):
        assert [e["start_s"] for e in s.meta["events"]] == [e["start_s"] for e in d.meta["events"]]
        for es, ed in zip(s.meta["events"], d.meta["events"], strict=True):
            pat = (es["pat_hz"] + es["pat_hz_end"]) / 2
            assert 1.0 <= es["pat_hz"] <= 2.0
            peak = _peak(s.values[es["start"] : es["end"]], 0.05, fmin=0.2)
            assert peak == pytest.approx(pat, abs=0.03)
            alias = _peak(d.values[ed["start"] : ed["end"]], 0.5, fmin=0.05)
            if abs(2.0 - pat) > 0.08:  # a pat near 2 Hz folds to almost DC
                assert alias == pytest.approx(2.0 - pat, abs=0.03)


def test_resettle_empties_the_mat_then_returns() -> None:
    for s in mat("resettle", 6, MINUTES, seed=81):
        for e in s.meta["events"]:
            empty = s.values[int(e["empty_from_s"] / 0.5) + 4 : int(e["empty_to_s"] / 0.5) - 1]
            assert abs(np.median(empty)) < 0.15
            after = s.values[e["end"] : e["end"] + 20]
            if len(after):
                assert np.median(after) > 2.0


def test_restless_turns_several_times_a_minute_in_bouts() -> None:
    for s in mat("restless", 6, 20, seed=91):
        bouts = [e for e in s.meta["events"] if e["kind"] == "restless_bout"]
        rates = [e["turns"] / ((e["end_s"] - e["start_s"]) / 60) for e in bouts]
        assert bouts and 0.5 < np.mean(rates) < 8.0
