"""The independent two-gauge world (``models/evalworlds/pairs.py``): deterministic, both gauges
read in time order with their own schedules, a fault changes one gauge from its onset only."""

from __future__ import annotations

from itertools import pairwise

import pytest

from models.evalworlds.pairs import DAY, FAMILIES, generate


@pytest.mark.parametrize("family", FAMILIES)
def test_a_series_is_two_gauges_in_time_order_and_the_same_for_the_same_seed(
    family: str,
) -> None:
    s = generate(family, "drift", seed=3, days=6)
    assert s == generate(family, "drift", seed=3, days=6)
    for gauge in ("a", "b"):
        times = [t for t, g, _ in s.readings if g == gauge]
        assert len(times) > 6 * 24 * 5  # about one every 10 min, a few missed
        assert all(b > a for a, b in pairwise(times))
        assert all(round(v, 1) == v for _, g, v in s.readings if g == gauge)
    assert [t for t, _, _ in s.readings] == sorted(t for t, _, _ in s.readings)
    onset = s.labels["onset_s"]
    assert isinstance(onset, float) and 2.5 * DAY <= onset <= 5 * DAY
    assert s.labels["gauge"] in ("a", "b") and isinstance(s.labels["rate_cm_per_day"], float)


def test_a_fault_is_its_healthy_twin_with_one_gauge_changed_from_the_onset() -> None:
    healthy = generate("tidal", "none", seed=5, days=6)
    faulty = generate("tidal", "offset", seed=5, days=6)
    onset, gauge = faulty.labels["onset_s"], faulty.labels["gauge"]
    assert isinstance(onset, float)
    before = [r for r in faulty.readings if r[0] < onset]
    assert before == [r for r in healthy.readings if r[0] < onset]
    other = [r for r in faulty.readings if r[1] != gauge]
    assert other == [r for r in healthy.readings if r[1] != gauge]
    moved = [(f[2] - h[2]) for f, h in zip(faulty.readings, healthy.readings, strict=True)
             if f[1] == gauge and f[0] >= onset]  # fmt: skip
    size = faulty.labels["size_cm"]
    assert isinstance(size, float)
    assert all(abs(m - size) < 0.11 for m in moved)


def test_unknown_names_and_too_short_series_are_refused() -> None:
    with pytest.raises(ValueError, match="family"):
        generate("lake")
    with pytest.raises(ValueError, match="fault"):
        generate("river", "stuck")
    with pytest.raises(ValueError, match="days"):
        generate("river", days=4)
