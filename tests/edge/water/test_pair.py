"""Two gauges on the same water (``same_water_as``): the water's own movements -- a tide,
a flood, a gate's steps -- cancel in their difference; a drifting, slipped or moved gauge
does not.  The gauges read at their own times (not in step), each with its own noise and
datum, as two real ones would."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.water.pair import Agreement, Disagreement, GaugePair, PairParams

HOUR = 3600.0
DAY = 24 * HOUR


def water(t: float) -> float:
    """A tidal river mouth's level (cm): a 12.42-h tide of 80 cm, a spring-neap swing, a
    flood of 120 cm on day 3 and a gate that lifts the level 25 cm from day 5."""
    tide = 80.0 * math.sin(2 * math.pi * t / (12.42 * HOUR)) * (
        0.75 + 0.25 * math.cos(2 * math.pi * t / (14.77 * DAY))
    )
    flood = 120.0 * math.exp(-(((t - 3.2 * DAY) / (5 * HOUR)) ** 2))
    gate = 25.0 if t >= 5 * DAY else 0.0
    return 150.0 + tide + flood + gate


def readings(
    days: float,
    fault: tuple[str, float, float] | None = None,
    noise: float = 0.5,
    seed: int = 0,
) -> list[tuple[float, str, float]]:
    """Both gauges' readings in time order: ``a`` every 10 min, ``b`` every 10 min from 4 min
    later, ``b`` with a datum 37 cm lower; ``fault``: (kind, from day, size) on ``a``: a
    ``drift`` of size cm/day or an ``offset`` of size cm."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(days * DAY / 600)):
        for sensor, t in (("a", i * 600.0), ("b", i * 600.0 + 240.0)):
            level = water(t) + rng.normal(0.0, noise)
            if sensor == "b":
                level -= 37.0
            elif fault is not None and t >= fault[1] * DAY:
                since = t - fault[1] * DAY
                level += fault[2] * since / DAY if fault[0] == "drift" else fault[2]
            out.append((t, sensor, round(level, 1)))
    return out


def run(pair: GaugePair, rows: list[tuple[float, str, float]]) -> list[tuple[float, object]]:
    return [(t, f) for t, sensor, v in rows for f in pair.add(t, sensor, v)]


def test_a_tide_a_flood_and_a_gate_seen_by_both_gauges_raise_nothing() -> None:
    for seed in range(3):
        pair = GaugePair("a", "b", 3.0)
        assert run(pair, readings(10, seed=seed)) == []
        assert pair.usual_cm == pytest.approx(37.0, abs=0.3)  # learnt: a reads 37 cm above b
        assert pair.tolerance == 3.0  # the pairs' noise (0.7 cm) is well inside it


def test_a_drift_of_5_cm_a_day_on_one_gauge_is_told_within_a_day_naming_both() -> None:
    found = run(GaugePair("a", "b", 3.0), readings(8, fault=("drift", 2.0, 5.0)))
    assert len(found) == 1  # one episode, told once
    t, f = found[0]
    assert isinstance(f, Disagreement)
    assert 2 * DAY < t < 3 * DAY  # well inside the target's 3 days, whatever the tide did
    assert f.shift_cm > 3.0 and f.tolerance_cm == 3.0
    assert f.detail.startswith("a - b reads +")
    assert "one of the two gauges drifted, slipped or was moved" in f.detail
    # A fall is told too, as a fall.
    (t, f), = run(GaugePair("a", "b", 3.0), readings(8, fault=("drift", 2.0, -5.0)))
    assert isinstance(f, Disagreement) and f.shift_cm < -3.0 and t < 3 * DAY


def test_a_slipped_probe_during_the_gates_steps_is_told_within_hours() -> None:
    # The gate lifts the level 25 cm on day 5, and gauge a slips 6 cm down on day 4.5: a
    # single gauge's fault checks cannot tell that slip from a gate step without a gate input.
    (t, f), = run(GaugePair("a", "b", 3.0), readings(7, fault=("offset", 4.5, -6.0)))
    assert isinstance(f, Disagreement)
    assert 0 < t - 4.5 * DAY < 4 * HOUR
    assert -6.5 < f.shift_cm < -3.0  # told as the 6-h median crosses the tolerance


def test_the_disagreement_ends_once_the_gauge_is_put_right() -> None:
    rows = readings(6, fault=("offset", 2.0, 8.0))
    fixed = [(t, s, v - 8.0 if s == "a" and t >= 3 * DAY else v) for t, s, v in rows]
    found = run(pair := GaugePair("a", "b", 3.0), fixed)
    assert [type(f) for _, f in found] == [Disagreement, Agreement]
    told, settled = found[0][0], found[1][0]
    assert told < 2.2 * DAY and 3 * DAY + 6 * HOUR <= settled < 3 * DAY + 10 * HOUR
    assert not pair.active


def test_two_noisy_gauges_are_allowed_their_own_noise() -> None:
    # 3 cm of noise per reading each: single pairs differ by over 4 cm half the time.
    pair = GaugePair("a", "b", 3.0)
    assert run(pair, readings(8, noise=3.0, seed=4)) == []
    assert pair.tolerance > 3.0 * 4 * 0.9  # 4 x the difference's own noise (about 4.2 cm)


def test_the_learning_is_kept_and_a_drift_is_not_learnt_after_a_restart() -> None:
    rows = readings(6, fault=("drift", 2.0, 5.0))
    before = GaugePair("a", "b", 3.0)
    run(before, [r for r in rows if r[0] < 1.5 * DAY])
    kept = before.state()
    assert kept["usual_cm"] == pytest.approx(37.0, abs=0.3)
    after = GaugePair("a", "b", 3.0)  # the daemon restarted
    assert after.restore(kept) and after.learnt
    found = run(after, [r for r in rows if r[0] >= 1.5 * DAY])
    assert [type(f) for _, f in found] == [Disagreement]
    # Another pair's state, or one kept while still learning, teaches nothing.
    assert not GaugePair("a", "c", 3.0).restore(kept)
    learning = GaugePair("a", "b", 3.0)
    assert learning.restore({**kept, "usual_cm": None}) and not learning.learnt


def test_gaps_and_readings_out_of_step_are_paired_only_where_the_level_is_known() -> None:
    params = PairParams(learn_s=HOUR, window_s=HOUR, min_pairs=3)
    pair = GaugePair("a", "b", 3.0, params)
    # b reads between two readings of a 10 min apart: a's level there is on their line.
    assert pair.add(0.0, "a", 100.0) == [] and pair.add(300.0, "b", 60.0) == []
    pair.add(600.0, "a", 110.0)
    assert pair._learning == [(300.0, 105.0 - 60.0)]
    # And a's reading between two of b's, on b's line.
    pair.add(900.0, "b", 61.0)
    assert pair._learning[1] == (600.0, 110.0 - 60.5)
    # a silent for an hour: b's reading in that gap is not paired with a guess.
    pair.add(600.0 + 3600.0, "a", 130.0)
    assert len(pair._learning) == 2
    with pytest.raises(ValueError, match="'c' is not one of 'a', 'b'"):
        pair.add(0.0, "c", 1.0)
