"""The development water sites: physical shapes and labelled faults (models.anomaly.water_sites)."""

from __future__ import annotations

import itertools

import numpy as np

from models.anomaly import water_sites as W


def test_series_are_reproducible_rounded_and_ten_minutes_apart() -> None:
    a = W.water("river", 2, 4, 3, None)
    b = W.water("river", 2, 4, 3, None)
    assert all(np.array_equal(x.values, y.values) for x, y in zip(a, b, strict=True))
    for s in a:
        assert s.period_s == 600.0 and len(s.values) == 4 * 144
        assert np.allclose(s.values, np.round(s.values, 1))
        assert 0.1 <= s.meta["noise_cm"] <= 1.0


def test_a_tidal_mouth_repeats_every_12_h_25_min() -> None:
    x = W.water("tidal", 1, 8, 0, None)[0].values.astype(float)
    x = x - x.mean()
    ac = [float(np.dot(x[:-k], x[k:])) for k in range(60, 90)]
    assert 60 + int(np.argmax(ac)) in (74, 75, 76), "the M2 tide: 74.5 readings"


def test_a_paddy_stays_above_its_probes_zero_and_has_a_day_night_rhythm() -> None:
    for s in W.water("paddy", 4, 6, 1, None):
        assert s.values.min() > 0.0


def test_a_gate_moves_the_level_within_a_reading_or_two() -> None:
    jumps = 0
    for s in W.water("gate", 4, 6, 2, None):
        d = np.abs(np.diff(s.values))
        jumps += int(np.sum(d > 4.0))
    assert jumps >= 8


def test_each_fault_starts_at_its_labelled_onset_and_not_before() -> None:
    rng = np.random.default_rng(8)
    x, noise = W.clean("river", rng, 8 * 144)
    for fault in W.FAULTS:
        y = W.inject(x, fault, 500, noise, rng)
        assert np.array_equal(y[:500], x[:500]) and not np.array_equal(y[500:], x[500:]), fault
        for s in W.water("river", 3, 8, 5, fault):
            assert s.onset is not None and 3 * 144 <= s.onset < 5 * 144 and s.fault == fault
    assert all(s.fault is None and s.onset is None for s in W.water("river", 3, 8, 5, None))
    s = W.water("paddy", 1, 8, 4, "stuck")[0]
    assert s.onset is not None and np.all(s.values[s.onset :] == s.values[s.onset - 1])
    s = W.water("river", 1, 8, 4, "dropout")[0]
    assert s.onset is not None and s.values[s.onset] in (0.0, -99.9, 300.0, 500.0)


def test_a_gate_channel_says_when_its_gate_or_pump_was_operated() -> None:
    for s in W.water("gate", 4, 6, 2, None):
        ops = s.meta["gate_ops"]
        assert ops and all(0 <= i for i in ops) and ops == sorted(ops)
        big = np.flatnonzero(np.abs(np.diff(s.values)) > 4.0) + 1  # a move within a reading
        near = [i for i in big if any(abs(i - o) <= 4 for o in ops)]
        assert len(near) >= 0.8 * len(big), "the level moves where the gate was operated"


def test_a_reservoirs_gate_is_worked_a_few_times_a_day_and_inched_in_steps() -> None:
    for s in W.water("reservoir", 4, 6, 2, None):
        ops = s.meta["gate_ops"]
        assert ops == sorted(ops) and len(ops) >= 6, "worked a few times a day, in steps"
        assert s.values.min() > 0.0
    rng = np.random.default_rng(4)
    _, ops = W.reservoir_operated(rng, 6 * 144)
    assert any(b - a <= 2 for a, b in itertools.pairwise(ops)), "inched: 10-20 min apart"
