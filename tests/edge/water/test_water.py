"""The water rule: spike removal, cadence, stages with hysteresis, rate of rise, proof of life.

Pure logic: every timestamp is passed in, nothing sleeps and nothing is mocked.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.water.rule import (
    ImplausibleReading,
    ObservationStarted,
    ObservationStopped,
    Outcome,
    Reading,
    Report,
    RiseAlert,
    Stage,
    StageAlert,
    WaterRule,
    WaterRuleSettings,
    WindowRejected,
    remove_spikes,
)

RIVER_STAGES = (
    Stage("flood_watch", "水防団待機水位", 100.0),
    Stage("flood_warning", "氾濫注意水位", 150.0),
    Stage("evacuation", "避難判断水位", 200.0),
    Stage("danger", "氾濫危険水位", 250.0, severity="alarm"),
)
PADDY_STAGES = (
    Stage("too_low", "水が少ない", 2.0, direction="below"),
    Stage("too_high", "水が多い", 5.0),
)


def river(**overrides: object) -> WaterRule:
    kwargs: dict[str, object] = {"stages": RIVER_STAGES}
    kwargs.update(overrides)
    return WaterRule(WaterRuleSettings(**kwargs))  # type: ignore[arg-type]


def reading(level: float, t: float) -> Reading:
    """A reading as a 20 s window ending at ``t`` would give it."""
    return Reading(level, t - 19.0, t, n_samples=20, n_rejected_spikes=0, spread_cm=0.0)


def window(rule: WaterRule, samples: Sequence[float | None], t0: float) -> Reading | WindowRejected:
    """Feed one window (None = a failed read) at the rule's sample interval from ``t0``."""
    result: Reading | WindowRejected | None = None
    for i, value in enumerate(samples):
        assert result is None, f"window closed early, after {i} samples"
        t = t0 + i * rule.settings.sample_s
        result = rule.add_failure(t) if value is None else rule.add_sample(value, t)
    assert result is not None, "window still open"
    return result


def stage_alerts(outcomes: list[Outcome]) -> list[tuple[str, str, bool]]:
    return [(o.stage.name, o.direction, o.cleared) for o in outcomes if isinstance(o, StageAlert)]


def report_of(outcomes: list[Outcome]) -> Report:
    reports = [o for o in outcomes if isinstance(o, Report)]
    assert len(reports) == 1 and outcomes[-1] is reports[0]
    return reports[0]


# --- spike removal and windows ---------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    level=st.floats(0, 1500),
    amplitude=st.floats(0, 1.0),
    rng=st.randoms(use_true_random=False),
    wild=st.floats(-50, 2000),
    position=st.integers(0, 19),
)
def test_one_wild_sample_among_20_moves_the_mean_less_than_half_a_cm(
    level: float, amplitude: float, rng: random.Random, wild: float, position: int
) -> None:
    clean = [level + rng.uniform(-amplitude, amplitude) for _ in range(20)]
    samples = list(clean)
    samples[position] = wild
    result = window(WaterRule(WaterRuleSettings()), samples, t0=1000.0)
    assert isinstance(result, Reading)
    assert abs(result.level_cm - statistics.fmean(clean)) < 0.5


def test_a_splash_is_removed_as_a_spike() -> None:
    samples = [100.0 + 0.3 * ((i % 3) - 1) for i in range(20)]
    samples[7] = 160.0  # a wave splash on the ultrasonic ranger's face
    result = window(WaterRule(WaterRuleSettings()), samples, t0=0.0)
    assert isinstance(result, Reading)
    assert result.n_samples == 20 and result.n_rejected_spikes == 1
    assert result.level_cm == pytest.approx(statistics.fmean(samples[:7] + samples[8:]))
    assert (result.t_start, result.t_end) == (0.0, 19.0)
    assert result.spread_cm < 0.5


def test_calm_quantised_water_loses_no_samples() -> None:
    # MAD 0: the floor keeps honest 1 cm steps.
    samples = [120.0] * 14 + [121.0] * 4 + [119.0] * 2
    assert remove_spikes(samples, k=3.5, floor_cm=2.0) == samples
    result = window(WaterRule(WaterRuleSettings()), samples, t0=0.0)
    assert isinstance(result, Reading) and result.n_rejected_spikes == 0
    assert result.level_cm == pytest.approx(statistics.fmean(samples))


def test_half_garbage_window_is_rejected() -> None:
    # Every other read fails and one of the rest is a debris echo: 9 valid of 20.
    samples: list[float | None] = [None if i % 2 else 80.0 for i in range(20)]
    samples[4] = 5.0
    result = window(WaterRule(WaterRuleSettings()), samples, t0=0.0)
    assert isinstance(result, WindowRejected)
    assert (result.n_samples, result.n_failures, result.n_rejected_spikes) == (10, 10, 1)
    assert result.n_required == 10


def test_exactly_half_valid_is_still_a_reading() -> None:
    samples: list[float | None] = [None if i % 2 else 80.0 for i in range(20)]
    result = window(WaterRule(WaterRuleSettings()), samples, t0=0.0)
    assert isinstance(result, Reading)
    assert (result.level_cm, result.n_samples, result.n_failures) == (80.0, 10, 10)


def test_a_dead_sensor_gives_rejected_windows_and_a_non_finite_value_is_a_failure() -> None:
    rule = WaterRule(WaterRuleSettings())
    result = window(rule, [None] * 19 + [float("nan")], t0=0.0)
    assert isinstance(result, WindowRejected) and result.n_failures == 20
    # The schedule goes on regardless.
    assert rule.next_window_start(20.0) == 600.0


def test_a_window_interrupted_for_longer_than_a_window_starts_again() -> None:
    rule = WaterRule(WaterRuleSettings())
    for i in range(5):
        assert rule.add_sample(50.0, float(i)) is None
    result = window(rule, [60.0] * 20, t0=100.0)
    assert isinstance(result, Reading)
    assert (result.level_cm, result.t_start, result.n_samples) == (60.0, 100.0, 20)
    assert rule.windows_abandoned == 1


# --- cadence and observation mode ------------------------------------------


def measure(rule: WaterRule, level: float, now: float) -> tuple[float, list[Outcome]]:
    """One window at the time the rule asks for, all samples at ``level``."""
    t0 = rule.next_window_start(now)
    assert t0 >= now
    result = window(rule, [level] * 20, t0)
    assert isinstance(result, Reading)
    return t0, rule.evaluate(result)


def test_cadence_idle_active_idle_with_separate_start_and_stop_levels() -> None:
    rule = WaterRule(WaterRuleSettings(observe_start_cm=120.0, observe_stop_cm=100.0))
    assert rule.next_window_start(5000.0) == 5000.0  # the first window at once

    t0, out = measure(rule, 50.0, 5000.0)
    assert t0 == 5000.0 and out == [out[-1]] and not report_of(out).urgent
    assert rule.window_open is False
    assert rule.next_window_start(5019.0) == 5600.0  # idle: 10 minutes

    t0, out = measure(rule, 130.0, 5019.0)
    assert t0 == 5600.0
    assert out[0] == ObservationStarted(130.0, 120.0)
    assert rule.observing and report_of(out).urgent
    assert rule.next_window_start(5619.0) == 5900.0  # active: 5 minutes

    for level in (110.0, 100.0, 119.9):  # between stop and start: still observing
        t_prev, out = measure(rule, level, rule.next_window_start(0.0))
        assert rule.observing and report_of(out).urgent
        assert rule.next_window_start(t_prev + 19) == t_prev + 300

    t0, out = measure(rule, 99.0, t_prev + 19)
    assert out[0] == ObservationStopped(99.0, 100.0)
    assert not rule.observing and report_of(out).urgent  # the all-clear goes out at once
    assert rule.next_window_start(t0 + 19) == t0 + 600

    t0, out = measure(rule, 119.0, t0 + 19)  # below start: hysteresis keeps it idle
    assert not rule.observing and not report_of(out).urgent
    assert rule.next_window_start(t0 + 19) == t0 + 600
    # A caller that overslept is told to start at once.
    assert rule.next_window_start(t0 + 5000) == t0 + 5000


def test_next_window_start_while_a_window_is_open_is_now() -> None:
    rule = WaterRule(WaterRuleSettings())
    assert rule.add_sample(10.0, 0.0) is None
    assert rule.window_open
    assert rule.next_window_start(3.0) == 3.0


# --- river stages ------------------------------------------------------------


def test_river_rising_through_all_four_stages_in_one_reading() -> None:
    rule = river()
    assert stage_alerts(rule.evaluate(reading(50.0, 0.0))) == []
    out = rule.evaluate(reading(300.0, 600.0))
    alerts = [o for o in out if isinstance(o, StageAlert)]
    assert [a.stage.name for a in alerts] == [
        "flood_watch",
        "flood_warning",
        "evacuation",
        "danger",
    ]
    assert all(a.direction == "rising" and not a.cleared for a in alerts)
    assert [a.threshold_cm for a in alerts] == [100.0, 150.0, 200.0, 250.0]
    assert [a.severity for a in alerts] == ["warning", "warning", "warning", "alarm"]
    assert rule.current_stage == RIVER_STAGES[3]
    assert stage_alerts(rule.evaluate(reading(300.0, 1200.0))) == []


def test_river_rising_step_by_step_alerts_once_per_stage_in_order() -> None:
    rule = river()
    levels = [50, 99.9, 100, 120, 149, 150, 180, 200, 230, 250, 260, 255, 251, 262]
    seen: list[tuple[float, str]] = []
    stages_seen: list[str | None] = []
    for i, level in enumerate(levels):
        out = rule.evaluate(reading(float(level), 300.0 * i))
        seen += [(level, name) for name, _, _ in stage_alerts(out)]
        stage = rule.current_stage
        stages_seen.append(stage.name if stage else None)
    assert seen == [
        (100, "flood_watch"),
        (150, "flood_warning"),
        (200, "evacuation"),
        (250, "danger"),
    ]
    assert stages_seen[:3] == [None, None, "flood_watch"]
    assert stages_seen[-1] == "danger"


def test_a_device_booting_in_a_flood_alerts_at_its_first_reading() -> None:
    rule = river()
    out = rule.evaluate(reading(210.0, 0.0))
    assert stage_alerts(out) == [
        ("flood_watch", "rising", False),
        ("flood_warning", "rising", False),
        ("evacuation", "rising", False),
    ]


@settings(max_examples=40, deadline=None)
@given(
    fraction=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**32 - 1),
    stage=st.sampled_from(RIVER_STAGES),
)
def test_a_level_hovering_at_a_line_alerts_once(fraction: float, seed: int, stage: Stage) -> None:
    rule = river()
    rng = random.Random(seed)
    amplitude = fraction * rule.settings.hysteresis_cm  # noise smaller than the hysteresis
    alerts: list[tuple[str, str, bool]] = []
    for i in range(1000):
        level = stage.level_cm if i == 0 else stage.level_cm + rng.uniform(-amplitude, amplitude)
        alerts += stage_alerts(rule.evaluate(reading(level, 300.0 * i)))
    # One alert for the line (and for each stage below it), never a clear.
    assert [name for name, _, _ in alerts if name == stage.name] == [stage.name]
    assert all(direction == "rising" and not cleared for _, direction, cleared in alerts)
    assert len({name for name, _, _ in alerts}) == len(alerts)
    assert rule.current_stage == stage


def test_falling_past_the_rearm_line_then_rising_alerts_again() -> None:
    rule = river()
    assert ("danger", "rising", False) in stage_alerts(rule.evaluate(reading(260.0, 0.0)))
    assert stage_alerts(rule.evaluate(reading(248.0, 300.0))) == []  # not below 250 - 2
    assert stage_alerts(rule.evaluate(reading(251.0, 600.0))) == []  # still reached
    out = rule.evaluate(reading(247.9, 900.0))
    [clear] = [o for o in out if isinstance(o, StageAlert)]
    assert (clear.stage.name, clear.direction, clear.cleared) == ("danger", "falling", True)
    assert (clear.severity, clear.threshold_cm) == ("info", 248.0)
    assert rule.current_stage == RIVER_STAGES[2]
    out = rule.evaluate(reading(250.0, 1200.0))
    assert stage_alerts(out) == [("danger", "rising", False)]


def test_a_fast_fall_clears_stages_from_the_top() -> None:
    rule = river()
    rule.evaluate(reading(300.0, 0.0))
    out = rule.evaluate(reading(10.0, 600.0))
    assert stage_alerts(out) == [
        ("danger", "falling", True),
        ("evacuation", "falling", True),
        ("flood_warning", "falling", True),
        ("flood_watch", "falling", True),
    ]
    assert rule.current_stage is None and rule.active_stages == ()


# --- paddy band ----------------------------------------------------------------


def test_paddy_band_too_low_and_too_high() -> None:
    rule = WaterRule(WaterRuleSettings(stages=PADDY_STAGES, hysteresis_cm=0.5))
    steps: list[tuple[float, list[tuple[str, str, bool]]]] = [
        (3.5, []),
        (2.0, [("too_low", "falling", False)]),
        (1.0, []),
        (2.4, []),  # not above 2.0 + 0.5 yet
        (2.6, [("too_low", "rising", True)]),
        (2.0, [("too_low", "falling", False)]),  # re-armed, so alerts again
        (6.0, [("too_low", "rising", True), ("too_high", "rising", False)]),
        (4.6, []),
        (4.4, [("too_high", "falling", True)]),
    ]
    for i, (level, expected) in enumerate(steps):
        out = rule.evaluate(reading(level, 600.0 * i))
        assert stage_alerts(out) == expected, f"at {level} cm"
        if level == 6.0:
            assert rule.current_stage == PADDY_STAGES[1]
            assert rule.active_stages == (PADDY_STAGES[1],)
        if level == 1.0:
            assert rule.current_stage is None  # "below" stages are not the river's stage
            assert rule.active_stages == (PADDY_STAGES[0],)


# --- rate of rise --------------------------------------------------------------


def rises(rule: WaterRule, points: Sequence[tuple[float, float]]) -> list[list[RiseAlert]]:
    return [
        [o for o in rule.evaluate(reading(level, t)) if isinstance(o, RiseAlert)]
        for t, level in points
    ]


def test_rise_alert_at_exactly_the_threshold_not_below() -> None:
    below = rises(river(rise_cm_per_10min=5.0), [(0, 100.0), (600, 104.99)])
    assert below == [[], []]
    at = rises(river(rise_cm_per_10min=5.0), [(0, 100.0), (600, 105.0)])
    assert at == [[], [RiseAlert(5.0, 105.0, 5.0)]]
    # Five minutes of readings are enough: 2.5 cm in 300 s is 5 cm per 10 min.
    half = rises(river(rise_cm_per_10min=5.0), [(0, 100.0), (300, 102.5)])
    assert half == [[], [RiseAlert(5.0, 102.5, 5.0)]]


def test_rise_alert_rearms_below_half_the_threshold() -> None:
    rule = river(rise_cm_per_10min=5.0)
    points = [
        (0, 100.0),
        (300, 105.0),  # 10 cm / 10 min: alert
        (600, 110.0),  # still fast: no second alert
        (900, 112.0),  # 7
        (1200, 113.0),  # 3: not below 2.5, not re-armed
        (1500, 113.0),  # 1: re-armed
        (1800, 118.0),  # 5: alert again
    ]
    counts = [len(r) for r in rises(rule, points)]
    assert counts == [0, 1, 0, 0, 0, 0, 1]


def test_rise_rate_with_irregular_intervals() -> None:
    rule = river()
    rates = [
        report_of(rule.evaluate(reading(level, t))).rise_cm_per_10min
        for t, level in [(0, 100.0), (250, 101.0), (420, 103.0), (700, 107.0)]
    ]
    assert rates[0] is None and rates[1] is None  # less than 5 minutes of history
    assert rates[2] == pytest.approx(3.0 * 600 / 420)  # oldest reading, over its real span
    # At 700 s the level 10 minutes earlier (t = 100) lies between 0 s and 250 s.
    assert rates[3] == pytest.approx(107.0 - (100.0 + 1.0 * 100 / 250))


def test_rise_rate_with_a_jittered_idle_cadence_and_after_an_outage() -> None:
    rule = river()
    rule.evaluate(reading(50.0, 0.0))
    # The next idle reading came 0.4 s late: the level at t - 600 s is interpolated.
    report = report_of(rule.evaluate(reading(53.0, 600.4)))
    assert report.rise_cm_per_10min == pytest.approx(3.0 * (1 - 0.4 / 600.4))
    rule = river(rise_cm_per_10min=3.0)
    # Two hours without readings: no rate across the gap, then one from new readings.
    out = rises(rule, [(0, 50.0), (7200, 90.0), (7350, 95.0), (7500, 96.0)])
    assert out[:3] == [[], [], []]
    assert out[3] == [RiseAlert(pytest.approx(12.0), 96.0, 3.0)]  # type: ignore[arg-type]


# --- reports and proof of life ---------------------------------------------------


def test_proof_of_life_after_24_hours_without_a_flushed_report() -> None:
    rule = river()
    assert rule.due_proof_of_life(0.0)  # nothing sent yet
    proofs: list[float] = []
    for i in range(2 * 144 + 1):  # two days at the idle cadence
        t = 600.0 * i + 19
        report = report_of(rule.evaluate(reading(50.0, t)))
        assert not report.urgent
        if report.proof_of_life:
            proofs.append(t)
    assert proofs == [19.0, 19.0 + 86400, 19.0 + 2 * 86400]
    assert not rule.due_proof_of_life(19.0 + 2 * 86400 + 86399)
    assert rule.due_proof_of_life(19.0 + 3 * 86400)
    rule.report_flushed(19.0 + 3 * 86400)  # the periodic telemetry went out
    assert not rule.due_proof_of_life(19.0 + 3 * 86400 + 1)


def test_urgent_reports_count_as_flushed() -> None:
    rule = river(observe_start_cm=120.0, observe_stop_cm=100.0)
    assert report_of(rule.evaluate(reading(130.0, 0.0))).urgent
    assert not rule.due_proof_of_life(86399.0)
    assert rule.due_proof_of_life(86400.0)


@pytest.mark.parametrize("level", [2000.5, -50.5, float("nan")])
def test_an_implausible_reading_gives_no_alerts_and_changes_nothing(level: float) -> None:
    rule = river(observe_start_cm=120.0, observe_stop_cm=100.0, rise_cm_per_10min=1.0)
    rule.evaluate(reading(50.0, 0.0))
    bad = reading(level, 600.0)
    assert rule.evaluate(bad) == [ImplausibleReading(bad)]
    assert not rule.observing and rule.current_stage is None
    assert rule.last_reading == reading(50.0, 0.0)
    assert rule.implausible_readings == 1


# --- validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sample_s": 0}, "sample_s"),
        ({"sample_s": 2.0}, "sample_s"),
        ({"window_s": 0.5}, "window_s"),
        ({"window_s": float("nan")}, "window_s"),
        ({"active_interval_s": 301.0}, "active_interval_s"),
        ({"idle_interval_s": 200.0, "active_interval_s": 250.0}, "active_interval_s"),
        ({"active_interval_s": 15.0}, "window_s"),
        ({"idle_interval_s": 0}, "idle_interval_s"),
        ({"observe_start_cm": 100.0}, "observe_stop_cm"),
        ({"observe_start_cm": 100.0, "observe_stop_cm": 100.0}, "observe_stop_cm"),
        ({"hysteresis_cm": 0.0}, "hysteresis_cm"),
        ({"rise_cm_per_10min": 0.0}, "rise_cm_per_10min"),
        ({"rise_min_span_s": 900.0}, "rise_min_span_s"),
        ({"spike_k": -1.0}, "spike_k"),
        ({"spike_floor_cm": -1.0}, "spike_floor_cm"),
        ({"min_valid_fraction": 0.0}, "min_valid_fraction"),
        ({"min_valid_fraction": 1.5}, "min_valid_fraction"),
        ({"proof_of_life_s": 0.0}, "proof_of_life_s"),
        ({"min_plausible_cm": 10.0, "max_plausible_cm": 10.0}, "max_plausible_cm"),
        ({"stages": (Stage("a", "", 1.0), Stage("a", "", 2.0))}, r"stages\[1\]\.name"),
        ({"stages": (Stage("a", "", 5000.0),)}, r"stages\[0\]\.level_cm"),
        ({"stages": [Stage("a", "", 1.0)]}, "stages"),
    ],
)
def test_settings_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        WaterRuleSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"level_cm": float("inf")}, "level_cm"),
        ({"direction": "up"}, "direction"),
        ({"severity": "critical"}, "severity"),
    ],
)
def test_stage_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"name": "danger", "label": "氾濫危険水位", "level_cm": 250.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{field}: "):
        Stage(**args)  # type: ignore[arg-type]


def test_defaults_follow_the_flood_gauge_practice() -> None:
    s = WaterRuleSettings()
    assert (s.sample_s, s.window_s, s.expected_samples) == (1.0, 20.0, 20)
    assert (s.idle_interval_s, s.active_interval_s, s.proof_of_life_s) == (600.0, 300.0, 86400.0)
