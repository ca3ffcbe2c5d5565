"""The water fault rules: judged against the sensor's own noise, one episode per test."""

from __future__ import annotations

import json

import numpy as np

from edge.health.water_faults import Finding, WaterFaultDetector, WaterFaultParams, d3_scale

P = 600.0
DAY = 144  # readings a day


def calm(n: int, noise: float, seed: int = 1, level: float = 8.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(level + rng.normal(0.0, noise, n), 1)


def tide(n: int, noise: float, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * P / 60.0
    x = 150 + 80 * np.cos(2 * np.pi * t / 745.2) + 25 * np.cos(2 * np.pi * t / 720.0 + 1.0)
    out: np.ndarray = np.round(x + rng.normal(0.0, noise, n), 1)
    return out


def feed(det: WaterFaultDetector, x: np.ndarray, start: int = 0) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for i, v in enumerate(x, start):
        out.extend((i, f.test) for f in det.add(i * P, float(v)))
    return out


def test_a_quiet_paddy_is_not_stuck() -> None:
    # 0.1 cm per reading, rounded to 1 mm: a third of the readings repeat the last one
    det = WaterFaultDetector()
    assert feed(det, calm(6 * DAY, 0.1)) == []
    assert det.floor is not None and 0.05 < det.floor < 0.2


def test_a_frozen_reading_is_stuck_once_with_the_floor_in_its_detail() -> None:
    det = WaterFaultDetector()
    x = calm(2 * DAY, 0.3)
    x[DAY:] = x[DAY - 1]
    found: list[tuple[int, Finding]] = []
    for i, v in enumerate(x):
        found.extend((i, f) for f in det.add(i * P, float(v)))
    assert [f.test for _, f in found] == ["stuck"]
    at, f = found[0]
    assert DAY < at <= DAY + 18, "caught within 3 hours"
    assert f.pattern == "stuck" and f.score > f.threshold
    assert "noise floor" in f.detail and f"{det.floor:.2f} cm" in f.detail


def test_a_tide_is_normal_but_a_step_on_it_is_not() -> None:
    x = tide(5 * DAY, 0.3)
    assert feed(WaterFaultDetector(), x) == []
    x[3 * DAY :] += 12.0  # the probe slipped on its mount
    found = feed(WaterFaultDetector(), x)
    assert [t for _, t in found] == ["step"]
    assert 3 * DAY <= found[0][0] <= 3 * DAY + 8


def test_a_spike_is_told_even_while_another_tests_episode_runs() -> None:
    det = WaterFaultDetector()
    x = calm(3 * DAY, 0.2)
    x[DAY:] += np.random.default_rng(5).normal(0.0, 1.5, 2 * DAY)  # noise from here on
    x = np.round(x, 1)
    x[2 * DAY] += 25.0
    found = feed(det, x)
    assert [t for _, t in found] == ["noise", "spike"]
    assert det.active == ["noise"], "the spike's episode ended, the noise goes on"


def test_a_dropout_to_zero_is_one_dropout_not_also_a_step_and_stuck() -> None:
    x = calm(3 * DAY, 0.4, level=60.0)
    x[DAY:] = 0.0
    found = feed(WaterFaultDetector(), x)
    assert [t for _, t in found] == ["dropout"]
    assert found[0][0] <= DAY + 3


def test_drift_of_5_cm_a_day_is_caught_within_3_days() -> None:
    x = calm(10 * DAY, 0.5, level=80.0).astype(float)
    x[3 * DAY :] -= 5.0 * np.arange(7 * DAY) / DAY
    found = feed(WaterFaultDetector(), np.round(x, 1))
    assert [t for _, t in found] == ["drift"]
    assert found[0][0] - 3 * DAY <= 3 * DAY


def test_the_state_goes_on_after_a_restart_without_a_second_event() -> None:
    x = calm(2 * DAY, 0.3)
    x[DAY:] = x[DAY - 1]
    det = WaterFaultDetector()
    assert [t for _, t in feed(det, x[: DAY + 30])] == ["stuck"]
    kept = json.loads(json.dumps(det.state()))  # through the JSON file
    # a new process: its monotonic clock starts at 0, ten minutes after the last reading
    shift = 0.0 - (DAY + 29) * P - P
    again = WaterFaultDetector.from_state(kept, shift_s=shift)
    assert again.floor == det.floor and again.active == ["stuck"]
    found = []
    for i, v in enumerate(x[DAY + 30 :]):
        found.extend(again.add(i * P, float(v)))
    assert found == [], "the same episode goes on"


def test_the_floor_is_learnt_again_after_a_noise_episode_ends() -> None:
    det = WaterFaultDetector()
    rng = np.random.default_rng(3)
    x = np.round(np.concatenate([40 + rng.normal(0, 0.2, DAY), 40 + rng.normal(0, 2.0, DAY),
                                 40 + rng.normal(0, 0.35, 3 * DAY)]), 1)  # fmt: skip
    found = feed(det, x)
    assert "noise" in [t for _, t in found]  # (its first wild readings may be spikes too)
    assert det.floor is not None and 0.26 < det.floor < 0.5, "the new sensor's floor"


def gated(n: int, seed: int = 7, noise: float = 0.1) -> np.ndarray:
    """A channel held by a gate: flat, with a gate operation of 5-30 cm every ~8 h, done
    within one reading or two."""
    rng = np.random.default_rng(seed)
    x = np.full(n, 120.0)
    held = 0.0
    for at in range(30, n, 48):
        jump = rng.uniform(5.0, 30.0) * (1.0 if held <= 0 else -1.0)
        part = 1.0 if at % 96 == 30 else 0.5
        x[at:] += part * jump
        x[at + 1 :] += (1.0 - part) * jump
        held += jump
    return np.round(x + rng.normal(0.0, noise, n), 1)


def test_one_level_change_does_not_lift_the_noise_scale() -> None:
    rng = np.random.default_rng(11)
    x = np.round(50 + rng.normal(0.0, 0.3, 18), 1)
    quiet = d3_scale(x)
    x[9:] += 20.0  # a gate moved the level within one reading
    assert d3_scale(x) < 1.2 * quiet
    x[13:] -= 15.0  # and again an hour later
    assert d3_scale(x) < 1.5 * quiet
    noisy = x + np.round(rng.normal(0.0, 1.5, 18), 1)  # a noisy sensor is still noisy
    assert d3_scale(noisy) > 3.0 * quiet


def test_a_gated_channel_raises_nothing_when_steps_are_expected() -> None:
    x = gated(8 * DAY)
    told = [t for _, t in feed(WaterFaultDetector(), x)]
    assert "step" in told, "without the key every gate operation is a sensor step"
    assert feed(WaterFaultDetector(WaterFaultParams(steps_expected=True)), x) == []


def test_with_steps_expected_faults_other_than_a_step_are_still_told() -> None:
    gate = WaterFaultParams(steps_expected=True)
    x = gated(4 * DAY)
    stuck = x.copy()
    stuck[2 * DAY :] = stuck[2 * DAY - 1]
    assert "stuck" in [t for _, t in feed(WaterFaultDetector(gate), stuck)]
    zero = x.copy()
    zero[2 * DAY :] = 0.0
    found = feed(WaterFaultDetector(gate), zero)
    assert [t for _, t in found] == ["dropout"] and found[0][0] <= 2 * DAY + 3
    rail = x.copy()
    rail[2 * DAY :] = 500.0
    found = feed(WaterFaultDetector(gate), rail)
    assert [t for _, t in found] == ["dropout"] and found[0][0] <= 2 * DAY + 7, "within 1 h"
    noisy = x.copy()
    noisy[2 * DAY :] += np.random.default_rng(4).normal(0.0, 0.8, 2 * DAY)
    assert "noise" in [t for _, t in feed(WaterFaultDetector(gate), np.round(noisy, 1))]


def test_with_steps_expected_a_drift_is_told_and_the_gates_steps_are_not_one() -> None:
    gate = WaterFaultParams(steps_expected=True)
    x = gated(9 * DAY).astype(float)
    assert feed(WaterFaultDetector(gate), x) == []
    x[3 * DAY :] += 6.0 * np.arange(6 * DAY) / DAY  # a sensor sinking 6 cm a day
    found = feed(WaterFaultDetector(gate), np.round(x, 1))
    assert [t for _, t in found] == ["drift"]
    assert found[0][0] - 3 * DAY <= 3 * DAY


def big_tide(n: int, noise: float, seed: int = 9) -> np.ndarray:
    """A 2-m spring tide with a strong diurnal part: steep, and curving within 3 h."""
    rng = np.random.default_rng(seed)
    h = np.arange(n) * P / 3600.0
    x = (200 + 110 * np.cos(2 * np.pi * h / 12.42) + 45 * np.cos(2 * np.pi * h / 12.0 + 0.4)
         + 30 * np.cos(2 * np.pi * h / 23.93 + 1.1))  # fmt: skip
    out: np.ndarray = np.round(x + rng.normal(0.0, noise, n), 1)
    return out


def test_a_step_at_the_turn_of_a_steep_tide_is_told_and_the_tide_alone_is_not() -> None:
    x = big_tide(4 * DAY, 0.15)
    assert feed(WaterFaultDetector(), x) == []
    # high water near reading 3 * DAY - 3: two lines cannot fit the turn there
    at = 2 * DAY + int(np.argmax(x[2 * DAY : 2 * DAY + 75]))
    y = x.copy()
    y[at:] -= 6.0
    found = feed(WaterFaultDetector(), y)
    assert [t for _, t in found] == ["step"]
    assert at <= found[0][0] <= at + 7


def test_a_recession_slowing_down_is_not_a_drift() -> None:
    # a flood's tail, each day's fall half the day before's (time constant 1.5 days; the
    # test excuses a rate that slows to under 0.6 x in a day)
    rng = np.random.default_rng(12)
    days = np.arange(8 * DAY) / DAY
    x = 60 + 40 * np.exp(-days / 1.5) + rng.normal(0.0, 0.3, 8 * DAY)
    assert feed(WaterFaultDetector(), np.round(x, 1)) == []


def test_a_growing_tidal_range_over_a_fixed_bed_is_not_a_drift() -> None:
    # neap to spring over a river mouth: the highs rise 30 cm a day, the lows sit on the bed
    rng = np.random.default_rng(13)
    h = np.arange(8 * DAY) * P / 3600.0
    amp = 40 + 30 * h / 24.0
    eta = amp * np.cos(2 * np.pi * h / 12.42)
    bed = -30.0
    x = 100 + bed + 4.0 * np.logaddexp(0.0, (eta - bed) / 4.0) + rng.normal(0, 0.3, len(h))
    assert [t for _, t in feed(WaterFaultDetector(), np.round(x, 1))] == []


def river_mouth(n: int, seed: int) -> np.ndarray:
    """A river mouth through a spring/neap cycle (M2 + S2: the range varies 2 x over 14.77
    days), two unequal tides a day (K1, O1), low water on the river's stage, and a wet spell
    on day 6: the river's flood lifts its stage (the low water) by 25 cm for a day or two and
    high water by a third of that."""
    rng = np.random.default_rng(seed)
    h = np.arange(n) * P / 3600.0
    eta = (60 * np.cos(2 * np.pi * h / 12.4206) + 20 * np.cos(2 * np.pi * h / 12.0 + 0.7)
           + 12 * np.cos(2 * np.pi * h / 23.9345 + 2.0) + 9 * np.cos(2 * np.pi * h / 25.8193))
    k = np.maximum(h - 6 * 24.0, 0.0)
    flood = np.where(h < 6 * 24.0, 0.0, np.where(k < 6, 25 * k / 6, 25 * np.exp(-(k - 6) / 20)))
    floor = -55.0 + flood
    x = 120 + floor + 5.0 * np.logaddexp(0.0, (eta + flood / 3 - floor) / 5.0)
    out: np.ndarray = np.round(x + rng.normal(0.0, 0.4, n), 1)
    return out


def test_a_river_mouth_through_spring_and_neap_and_a_wet_spell_is_not_a_drift() -> None:
    for seed in (21, 22):
        assert [t for _, t in feed(WaterFaultDetector(), river_mouth(16 * DAY, seed))] == []


def test_a_river_mouths_gauge_drifting_5_cm_a_day_is_told_within_3_days() -> None:
    x = river_mouth(10 * DAY, 23).astype(float)
    x[2 * DAY :] += 5.0 * np.arange(8 * DAY) / DAY
    found = [(i, t) for i, t in feed(WaterFaultDetector(), np.round(x, 1)) if t == "drift"]
    assert found and 2 * DAY <= found[0][0] <= 5 * DAY


def test_a_drift_on_a_tide_is_caught_within_3_days() -> None:
    x = big_tide(9 * DAY, 0.4).astype(float)
    x[3 * DAY :] += 5.0 * np.arange(6 * DAY) / DAY
    found = feed(WaterFaultDetector(), np.round(x, 1))
    assert [t for _, t in found] == ["drift"]
    assert found[0][0] - 3 * DAY <= 3 * DAY


def test_a_state_saved_before_the_drift_shape_keys_still_loads() -> None:
    det = WaterFaultDetector()
    feed(det, calm(DAY, 0.3))
    old = json.loads(json.dumps(det.state()))
    for key in (
        "drift_first_share",
        "drift_ratio",
        "drift_fall_min",
        "drift_low_share",
        "drift_raw_share",
    ):
        del old["params"][key]  # an older device's file had no such parameters
    old["params"]["drift_cm_day"] = 4.0
    again = WaterFaultDetector.from_state(old)
    assert again.floor == det.floor and again.p.drift_cm_day == WaterFaultParams().drift_cm_day


def sump(n: int, fill_cm_day: float = 20.0, seed: int = 14) -> np.ndarray:
    """A pump sump: fills steadily, pumped from 60 down to 40 cm within two readings."""
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    h = 50.0
    for i in range(n):
        h += fill_cm_day / DAY
        if h >= 60.0:
            h -= 10.0
            x[i] = h
            h -= 10.0
            continue
        x[i] = h
    return x + rng.normal(0.0, 0.2, n)


def test_a_pump_sumps_fill_between_pumpings_is_not_a_drift() -> None:
    # de-stepped, the sump is a steady 20 cm/day rise; with its steps left in it goes nowhere
    gate = WaterFaultParams(steps_expected=True)
    assert feed(WaterFaultDetector(gate), np.round(sump(9 * DAY), 1)) == []


def test_gate_moves_in_quick_succession_are_neither_noise_nor_a_spike() -> None:
    """Several moves within 3 h, each over two readings, and a move down then up to another
    level a reading later: a gate's work, told as nothing where steps are expected."""
    rng = np.random.default_rng(21)
    x = 60.0 + rng.normal(0.0, 0.15, 3 * DAY)
    for at, jump in ((DAY + 10, 13.0), (DAY + 16, 8.0), (DAY + 20, -6.0)):
        x[at : at + 1] += jump / 2  # the gate takes two readings
        x[at + 1 :] += jump
    x[2 * DAY :] -= 18.0  # down, and a reading later up past where it was
    x[2 * DAY + 2 :] += 25.0
    gate = WaterFaultParams(steps_expected=True)
    assert feed(WaterFaultDetector(gate), np.round(x, 1)) == []
    spiked = x.copy()
    spiked[2 * DAY + 40] -= 12.0  # the sensor's own spike: back where it was
    assert [t for _, t in feed(WaterFaultDetector(gate), np.round(spiked, 1))] == ["spike"]
    noisy = x.copy()  # and a sensor that turns noisy among the moves is still noise
    noisy[DAY + 12 :] += rng.normal(0.0, 0.8, len(x) - DAY - 12)
    assert "noise" in [t for _, t in feed(WaterFaultDetector(gate), np.round(noisy, 1))]


def test_with_a_gate_input_the_gates_steps_are_excused_and_a_slipped_probe_is_not() -> None:
    x = gated(5 * DAY)
    ops = [at * P for at in range(30, 5 * DAY, 48)]  # what the gate-position input says

    def with_input(y: np.ndarray) -> tuple[list[tuple[int, str]], WaterFaultDetector]:
        det, todo = WaterFaultDetector(), list(ops)
        out: list[tuple[int, str]] = []
        for i, v in enumerate(y):
            while todo and todo[0] <= i * P:
                det.gate_moved(todo.pop(0))
            out.extend((i, f.test) for f in det.add(i * P, float(v)))
        return out, det

    assert with_input(x)[0] == [], "every move was the gate's"
    slipped = x.astype(float)
    slipped[3 * DAY :] += 9.0  # the probe slipped 3 h after the last move
    found, det = with_input(np.round(slipped, 1))
    assert [t for _, t in found] == ["step"] and found[0][0] <= 3 * DAY + 7
    kept = WaterFaultDetector.from_state(json.loads(json.dumps(det.state())), shift_s=-5.0)
    assert kept.gate_input and kept.gate_times == [g - 5.0 for g in det.gate_times]
    old = det.state()
    del old["gate_input"], old["gate_times"]  # a state kept before gate inputs
    del old["flow_scale"], old["flow_op"]  # or before the water's roughness was allowed for
    back = WaterFaultDetector.from_state(old)
    assert not back.gate_input and back.flow_scale is None and back.flow_op is None


def stirred(n: int, ops: list[int], rough: float, seed: int = 31) -> np.ndarray:
    """A quiet pond (0.1 cm noise) whose outlet gate opens at the readings ``ops`` (each
    opening drawing the water at the probe down 6 cm over about half an hour, then the flow
    keeps the water there rough by ``rough`` cm a reading) and closes again 12 h later."""
    rng = np.random.default_rng(seed)
    x = 80.0 + rng.normal(0.0, 0.1, n)
    k = np.arange(n, dtype=float)
    for at in ops:
        open_ = (k >= at) & (k < at + 72)
        x -= np.where(open_, 6.0 * (1.0 - np.exp(-(k - at) / 2.0)), 0.0)
        x += np.where(open_, rng.normal(0.0, rough, n), 0.0)
    return np.round(x, 1)


def feed_with_gate(x: np.ndarray, opened: list[int]) -> list[tuple[int, str]]:
    """The rules with the gate's switch: it changes as the gate opens and as it closes."""
    det, out = WaterFaultDetector(), list[tuple[int, str]]()
    todo = sorted(at * P for o in opened for at in (o, o + 72))
    for i, v in enumerate(x):
        while todo and todo[0] <= i * P:
            det.gate_moved(todo.pop(0))
        out.extend((i, f.test) for f in det.add(i * P, float(v)))
    return out


def test_with_a_gate_input_water_stirred_by_an_open_gate_is_not_noise_a_failing_probe_is() -> None:
    ops = [DAY + 20, 2 * DAY + 40, 3 * DAY + 30]
    x = stirred(5 * DAY, ops, 0.4)
    # (the part of each half-hour ramp that the drift test's de-stepping leaves in adds up
    # over days: a known gap, docs/series-faults.md; here only the short tests are judged)
    found = [f for f in feed_with_gate(x, ops) if f[1] != "drift"]
    assert found == [], "the ramp and the flow's roughness are the water's"
    failing = x.astype(float)
    at = 2 * DAY + 40 + 36  # 6 h after the gate was opened, the cable starts to fail
    failing[at:] += np.random.default_rng(5).normal(0.0, 2.0, len(x) - at)
    found = feed_with_gate(np.round(failing, 1), ops)
    assert found and found[0][1] == "noise" and at <= found[0][0] <= at + 18
    slipped = x.astype(float)
    slipped[2 * DAY + 40 + 30 :] += 8.0  # the probe slips 5 h after the gate was opened
    found = [f for f in feed_with_gate(np.round(slipped, 1), ops) if f[1] != "drift"]
    assert [t for _, t in found] == ["step"] and found[0][0] <= 2 * DAY + 40 + 37


def test_steps_expected_water_stirred_since_a_step_is_not_noise_a_failing_probe_is() -> None:
    rng = np.random.default_rng(8)
    x = 80.0 + rng.normal(0.0, 0.1, 5 * DAY)
    x[DAY + 20 :] += rng.normal(0.0, 0.33, 4 * DAY - 20) - 6.0  # the outlet opened and left so
    gate = WaterFaultParams(steps_expected=True)
    assert feed(WaterFaultDetector(gate), np.round(x, 1)) == []
    at = 3 * DAY  # two days later the probe's cable starts to fail
    x[at:] += rng.normal(0.0, 2.0, len(x) - at)
    found = feed(WaterFaultDetector(gate), np.round(x, 1))
    assert [t for _, t in found] == ["noise"] and at <= found[0][0] <= at + 18
