"""The mat fault rules: what staff would be told, and what they must not be told."""

from __future__ import annotations

import json
import math

import numpy as np

from edge.health.mat_load_faults import Finding, MatLoadDetector

PERIOD = 0.5


def sleeping(rng: np.random.Generator, minutes: float, kg: float = 11.0,
             sigma: float = 0.03) -> np.ndarray:
    """A child lying still: constant total, live sensor noise, one-count quantisation."""
    n = int(minutes * 60 / PERIOD)
    return np.round((kg + rng.normal(0.0, sigma, n)) * 600) / 600


def feed(det: MatLoadDetector, values: np.ndarray, t0: float = 0.0,
         period: float = PERIOD) -> list[tuple[float, Finding]]:
    out = []
    for i, v in enumerate(values):
        t = t0 + i * period
        out += [(t, f) for f in det.add(t, float(v))]
    return out


def names_of(found: list[tuple[float, Finding]]) -> list[str]:
    return [f.test for _, f in found]


def test_a_child_sleeping_still_for_an_hour_raises_nothing() -> None:
    rng = np.random.default_rng(1)
    assert feed(MatLoadDetector(), sleeping(rng, 60)) == []


def test_a_frozen_reading_is_stuck_within_half_a_minute() -> None:
    rng = np.random.default_rng(2)
    values = sleeping(rng, 10)
    onset = len(values) // 2
    values[onset:] = values[onset]
    found = feed(MatLoadDetector(), values)
    assert names_of(found) == ["stuck"]
    t, finding = found[0]
    assert 0 < t - onset * PERIOD <= 30
    assert finding.pattern == "stuck" and f"{values[onset]:.3f} kg" in finding.detail


def test_turning_over_patting_and_a_blanket_raise_nothing() -> None:
    rng = np.random.default_rng(3)
    values = sleeping(rng, 40, kg=9.0)
    n = len(values)
    t = np.arange(n) * PERIOD
    # turning over twice: seconds of body motion, then a slightly different total
    for start, shift in ((900, 0.1), (3000, -0.25)):
        values[start:start + 16] += 2.0 * np.sin(np.linspace(0, 6 * math.pi, 16))
        values[start + 16:] += shift
    # tonton: 1.6 Hz pats of 1 kg for 8 minutes
    pats = slice(1200, 1200 + 960)
    values[pats] += np.maximum(0.0, np.sin(2 * math.pi * 1.6 * t[pats])) ** 2 * 1.0
    # a blanket pulled off over 2 s (0.6 kg) and laid back on at once
    values[3600:3604] -= np.linspace(0.15, 0.6, 4)
    values[3604:4200] -= 0.6
    assert feed(MatLoadDetector(), values) == []


def test_the_load_falling_at_once_while_the_child_lies_there_is_a_step() -> None:
    rng = np.random.default_rng(4)
    values = sleeping(rng, 10)
    onset = len(values) // 2
    values[onset:] -= 1.5
    found = feed(MatLoadDetector(), values)
    assert names_of(found) == ["step"]
    t, finding = found[0]
    assert 15 <= t - onset * PERIOD <= 60
    assert finding.pattern == "spike_or_step" and "fell" in finding.detail


def test_the_load_falling_to_nothing_at_once_is_a_dropout() -> None:
    rng = np.random.default_rng(5)
    values = sleeping(rng, 10)
    onset = len(values) // 2
    values[onset:] = rng.normal(0.0, 0.03, len(values) - onset)
    found = feed(MatLoadDetector(), values)
    assert names_of(found) == ["dropout"]
    assert found[0][1].pattern == "dropout"


def test_a_child_lifted_out_and_put_back_is_not_a_fault() -> None:
    rng = np.random.default_rng(6)
    values = sleeping(rng, 20)
    a = 1200
    values[a:a + 6] += np.array([0.4, -0.3, 0.8, 0.2, 0.9, 0.5])  # hands slide under
    values[a + 6:a + 9] = np.array([7.0, 3.0, 0.6])  # lifted over 1.5 s
    values[a + 9:a + 400] = rng.normal(0.0, 0.03, 391)  # three minutes away
    values[a + 400:a + 406] = np.array([1.0, 4.0, 9.0, 11.8, 10.6, 11.3])  # put back
    assert feed(MatLoadDetector(), values) == []


def test_a_sensor_ten_times_noisier_is_told_within_six_minutes() -> None:
    rng = np.random.default_rng(7)
    values = sleeping(rng, 30)
    onset = len(values) // 2
    values[onset:] += rng.normal(0.0, 0.3, len(values) - onset)
    found = feed(MatLoadDetector(), values)
    assert names_of(found) == ["noise"]
    assert 0 < found[0][0] - onset * PERIOD <= 360


def test_a_slow_drift_while_the_child_lies_still_is_told_and_does_not_mask_a_step() -> None:
    rng = np.random.default_rng(8)
    values = sleeping(rng, 40)
    onset = 1200
    values[onset:] += np.minimum(1.0, np.arange(len(values) - onset) / 1200) * 1.5  # 1.5 kg/10 min
    values[3600:] -= 2.0  # and later the load falls at once
    det = MatLoadDetector()
    found = feed(det, values)
    assert names_of(found) == ["drift", "step"]
    t_drift = found[0][0]
    assert onset * PERIOD < t_drift <= onset * PERIOD + 600
    assert found[0][1].pattern == "drift" and "risen" in found[0][1].detail
    assert "drift" in det.active  # the drift's episode was still running when the step came


def test_an_episode_ends_and_a_new_fault_of_the_same_kind_is_told_again() -> None:
    rng = np.random.default_rng(9)
    values = sleeping(rng, 20)
    values[600:700] = values[600]
    values[1800:1900] = values[1800]
    det = MatLoadDetector()
    found = feed(det, values[:1000])
    assert names_of(found) == ["stuck"] and det.active == []
    assert names_of(feed(det, values[1000:], t0=1000 * PERIOD)) == ["stuck"]


def test_state_survives_a_restart_as_json() -> None:
    rng = np.random.default_rng(10)
    values = sleeping(rng, 20)
    values[2000:] -= 1.0
    whole = feed(MatLoadDetector(), values)
    det = MatLoadDetector()
    feed(det, values[:1990])
    kept = json.loads(json.dumps(det.state()))
    again = MatLoadDetector.from_state(kept)
    rest = feed(again, values[1990:], t0=1990 * PERIOD)
    assert [(t, f.test) for t, f in rest] == [(t, f.test) for t, f in whole] == [
        (whole[0][0], "step")
    ]


def test_ten_readings_a_second_are_thinned_to_the_mats_pace() -> None:
    rng = np.random.default_rng(11)
    fast = np.round((11.0 + rng.normal(0.0, 0.03, 20 * 60 * 10)) * 600) / 600
    det = MatLoadDetector()
    assert feed(det, fast, period=0.1) == []
    frozen = np.full(10 * 60, fast[-1])
    found = feed(det, frozen, t0=20 * 60.0, period=0.1)
    assert names_of(found) == ["stuck"] and found[0][0] - 20 * 60.0 <= 30


def test_one_glitch_is_not_told_but_a_connector_that_keeps_glitching_is() -> None:
    """A lone reading 3 kg off hides no child: staff are not called for it.  Three within
    five minutes are a failing connector: told, once."""
    rng = np.random.default_rng(9)
    values = sleeping(rng, 30)
    values[1200] += 3.0
    assert feed(MatLoadDetector(), values) == []
    for k in (2400, 2600, 2800):  # 100 s apart
        values[k] += 3.0
    found = feed(MatLoadDetector(), values)
    assert names_of(found) == ["spike"]
    t, _ = found[0]
    assert 2800 * PERIOD <= t <= 2800 * PERIOD + 10.0  # judged once the mat is calm again
