"""The world model: one river level for every gauge, from rain along a hydrograph."""

import pytest

from edge.sim.world import Rain, WorldSpec, level_at


def test_rain_rises_to_its_peak_then_recedes() -> None:
    spec = WorldSpec(base_level_cm=80, rain=[Rain(at_s=10, rise_cm=100, time_to_peak_s=5,
                                                  recession_s=10)])
    assert level_at(spec, 0) == 80
    assert level_at(spec, 12.5) == pytest.approx(130)
    assert level_at(spec, 15) == pytest.approx(180)
    assert level_at(spec, 25) == pytest.approx(80 + 100 / 2.718281828, rel=1e-6)
    assert level_at(spec, 1000) == pytest.approx(80, abs=1e-6)


def test_two_storms_add_up() -> None:
    one = Rain(at_s=0, rise_cm=50, time_to_peak_s=1)
    spec = WorldSpec(base_level_cm=0, rain=[one, Rain(at_s=0, rise_cm=30, time_to_peak_s=1)])
    assert level_at(spec, 1) == pytest.approx(80)
