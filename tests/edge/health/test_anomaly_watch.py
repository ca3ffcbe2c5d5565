"""A series watched by its fault rules (water, a mat's load): one event per episode and test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.motion_mat import MatFrame
from edge.config import parse
from edge.event import EventData, Severity
from edge.health.anomaly_watch import AnomalyWatch, cadence_warnings, scored_period
from edge.nursery.mat import MatSignals
from edge.sim.mat_emulator import MatScene

REPO = Path(__file__).resolve().parents[3]


class Events:
    def __init__(self) -> None:
        self.got: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(
        self, data: EventData, *, severity: Severity | None = None, at: float | None = None
    ) -> None:
        self.got.append((data.kind, severity or data.severity or "", data.to_data()))


def _calm_levels(n: int, seed: int = 5, noise: float = 0.3) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(round(60.0 + rng.normal(0.0, noise), 1)) for _ in range(n)]


async def test_a_stuck_sensor_is_one_anomaly_event_per_episode() -> None:
    events = Events()
    watch = AnomalyWatch("level_east", "water", events)
    await watch.start()
    assert watch.rule is not None and watch.model is None, "no autoencoder for water"
    levels = _calm_levels(90) + [61.3] * 200  # learns its floor, then freezes
    for i, level in enumerate(levels):
        await watch.add(level, i * 600.0)
    assert [k for k, _, _ in events.got] == ["anomaly"]
    _, severity, data = events.got[0]
    assert severity == "warning"
    assert data["sensor"] == "level_east" and data["series"] == "water"
    assert data["score"] > data["threshold"]
    assert data["tests"] == ["stuck"] and data["pattern"] == "stuck"
    assert data["detail"].startswith("level repeats 61.30 cm exactly for "), data["detail"]


async def test_a_quiet_paddy_is_not_stuck() -> None:
    # a reading is the mean of 20 samples: 0.1 cm of noise on calm water is a good sensor
    events = Events()
    watch = AnomalyWatch("paddy_3", "water", events)
    await watch.start()
    for i, level in enumerate(_calm_levels(3 * 144, noise=0.1)):
        await watch.add(level, i * 600.0)
    assert events.got == []


async def test_a_step_down_is_told_as_a_spike_or_step() -> None:
    # A probe knocked lower on its mount: the level drops 12 cm at once.
    events = Events()
    watch = AnomalyWatch("level_east", "water", events)
    await watch.start()
    levels = _calm_levels(120, noise=0.7)
    levels[100:] = [v - 12.0 for v in levels[100:]]
    for i, level in enumerate(levels):
        await watch.add(level, i * 600.0)
    assert [k for k, _, _ in events.got] == ["anomaly"]
    data = events.got[0][2]
    assert data["pattern"] == "spike_or_step" and data["tests"] == ["step"], data


@pytest.mark.parametrize("expected", [False, True])
async def test_a_gate_moving_the_level_is_a_fault_only_where_steps_are_not_expected(
    expected: bool,
) -> None:
    # A sluice opened and closed twice a day: the level moves 15 cm within a reading.
    events = Events()
    watch = AnomalyWatch("canal", "water", events, steps_expected=expected)
    await watch.start()
    levels = _calm_levels(3 * 144, noise=0.1)
    for at in range(100, len(levels), 72):
        levels[at:] = [v + (15.0 if (at // 72) % 2 else -15.0) for v in levels[at:]]
    for i, level in enumerate(levels):
        await watch.add(level, i * 600.0)
    told = [data["tests"] for _, _, data in events.got]
    assert told == [] if expected else ["step"] in told, told


async def test_with_a_gate_input_the_gates_moves_are_excused_and_a_slipped_probe_is_told(
) -> None:
    """The water rule's ``gate_pin``: each operation the input reports excuses the steps
    around it; a step with no operation near it is still a sensor step."""
    levels = _calm_levels(3 * 144, noise=0.1)
    moves = list(range(100, len(levels) - 60, 72))
    for n, at in enumerate(moves):
        levels[at:] = [v + (15.0 if n % 2 else -15.0) for v in levels[at:]]

    async def run(levels: list[float], *, gate: bool) -> list[list[str]]:
        events = Events()
        watch = AnomalyWatch("canal", "water", events)
        await watch.start()
        if gate:
            watch.gate_input()
        for i, level in enumerate(levels):
            if gate and i in moves:
                watch.gate_moved(i * 600.0 - 120.0)  # the switch moves before the level does
            await watch.add(level, i * 600.0)
        return [data["tests"] for _, _, data in events.got]

    assert ["step"] in await run(levels, gate=False), "without the input: the gate's steps"
    assert await run(levels, gate=True) == []
    slipped = levels[:-30] + [v - 9.0 for v in levels[-30:]]  # 14 h after the last move
    assert await run(slipped, gate=True) == [["step"]]


async def test_water_is_judged_at_the_water_rules_default_cadence() -> None:
    # The water rule reads every 600 s while idle and every 300 s while
    # observing (edge/config.py defaults); the rules are tuned at 600 s.
    events = Events()
    watch = AnomalyWatch("level_east", "water", events)
    await watch.start()
    assert watch.period_s == 600.0
    rng = np.random.default_rng(4)
    t = 0.0
    for _ in range(100):  # idle: one reading every 10 minutes
        t += 600.0 + rng.uniform(-2.0, 2.0)
        await watch.add(round(50.0 + rng.normal(0.0, 0.7), 1), t)
    assert watch.scored == 100
    for _ in range(100):  # observing: every 5 minutes, every second one judged
        t += 300.0 + rng.uniform(-2.0, 2.0)
        await watch.add(round(50.0 + rng.normal(0.0, 0.7), 1), t)
    assert watch.scored == 150
    assert events.got == [], "a calm, noisy level is not an anomaly"


async def test_values_much_slower_than_the_period_are_not_judged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = Events()
    watch = AnomalyWatch("level_east", "water", events)
    await watch.start()
    for i in range(200):  # one value an hour: never two in a row to judge
        await watch.add(50.0, i * 3600.0)
    assert events.got == []
    assert "not judged" in caplog.text


async def test_faster_values_are_thinned_to_the_rules_period() -> None:
    events = Events()
    watch = AnomalyWatch("mat_1", "mat_load", events)
    await watch.start()
    for i in range(10 * 128):  # ten readings per 0.5-s period, 64 s
        await watch.add(6.0, i * watch.period_s / 10)
    assert 126 <= watch.scored <= 130
    assert [d["tests"] for _, _, d in events.got] == [["stuck"]], "a frozen load, once"


# -- the water state across restarts ------------------------------------------------------


class Wall:
    """A settable wall clock (seconds since the epoch)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def _run_water(
    state_dir: Path, wall: Wall, levels: list[float], t0: float = 0.0
) -> tuple[AnomalyWatch, Events]:
    events = Events()
    watch = AnomalyWatch("level_east", "water", events, state_dir=state_dir, wall=wall)
    await watch.start()
    for i, level in enumerate(levels):
        if i:
            wall.t += 600.0
        await watch.add(level, t0 + i * 600.0)
    return watch, events


async def test_a_restart_keeps_the_learnt_floor(tmp_path: Path) -> None:
    wall = Wall(1_790_000_000.0)
    first, _ = await _run_water(tmp_path, wall, _calm_levels(80))
    assert first.rule.floor is not None, "twelve hours learnt"
    assert (tmp_path / "anomaly-level_east.json").exists()
    # the daemon restarts (a new process: monotonic time starts elsewhere); the
    # next reading comes ten minutes after the last one before the restart
    wall.t += 600.0
    second, events = await _run_water(tmp_path, wall, _calm_levels(3, seed=6), t0=5.0)
    assert second.rule.floor == first.rule.floor, "not learnt again for 12 h"
    assert len(second.rule.x_hist) == 83 and events.got == []


async def test_a_stuck_episode_is_not_raised_again_after_a_restart(tmp_path: Path) -> None:
    wall = Wall(1_790_000_000.0)
    _, events = await _run_water(tmp_path, wall, _calm_levels(80) + [61.3] * 40)
    assert [k for k, _, _ in events.got] == ["anomaly"]
    wall.t += 600.0
    second, events = await _run_water(tmp_path, wall, [61.3] * 5, t0=9.0)
    assert second.scored == 5 and events.got == [], "the same episode goes on"
    assert second.rule.active == ["stuck"]


@pytest.mark.parametrize(
    ("shift_s", "why"),
    [(3 * 3600.0, "down for three hours"), (-86_400.0 * 400, "clock not synced after boot")],
)
async def test_after_an_outage_or_a_misdated_state_the_floor_is_kept(
    tmp_path: Path, shift_s: float, why: str
) -> None:
    wall = Wall(1_790_000_000.0)
    first, _ = await _run_water(tmp_path, wall, _calm_levels(80))
    wall.t += shift_s
    second, events = await _run_water(tmp_path, wall, _calm_levels(10, seed=6))
    assert second.rule.floor == first.rule.floor, why
    assert second.scored == 10 and events.got == [], why


async def test_a_corrupt_kept_state_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "anomaly-level_east.json").write_bytes(b'{"version": 2, "rule": [1.0, \x00')
    watch, events = await _run_water(tmp_path, Wall(1_790_000_000.0), _calm_levels(70))
    assert "unreadable" in caplog.text and "starting afresh" in caplog.text
    assert watch.scored == 70 and events.got == []
    kept = json.loads((tmp_path / "anomaly-level_east.json").read_text())
    assert len(kept["rule"]["x"]) == 70, "the bad file was replaced by a good one"


async def test_a_mat_window_is_not_written_to_the_card(tmp_path: Path) -> None:
    watch = AnomalyWatch("mat_1", "mat_load", Events(), state_dir=tmp_path)
    await watch.start()
    assert watch.rule is not None and watch.model is None, "the mat's rule, no model"
    for i in range(100):
        await watch.add(6.0 + 0.03 * np.sin(i), i * watch.period_s)
    assert watch.scored == 100
    left = list(tmp_path.iterdir())  # noqa: ASYNC240 - one listing, in a test
    assert left == [], "a 32-s window refills at once: no SD card wear"


async def test_an_unwritable_state_dir_only_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "not-there"
    watch, _ = await _run_water(missing, Wall(1_790_000_000.0), _calm_levels(66))
    assert watch.scored == 66
    assert "cannot keep the anomaly state" in caplog.text


# -- cadences the rules cannot judge as tuned -------------------------------------------


@pytest.mark.parametrize(
    ("interval", "scored"),
    [(600, 600), (300, 600), (60, 540), (240, 720), (900, 900), (1200, 1200), (1201, None)],
)
def test_scored_period(interval: float, scored: float | None) -> None:
    assert scored_period(interval, 600.0) == scored


def _river(idle: float, active: float, anomaly_models: bool = True) -> Any:
    text = (REPO / "edge/sim/sites/river.toml").read_text()
    text = text.replace(
        "idle_interval_s = 1.5\nactive_interval_s = 1\nobserve_start_cm",
        f"idle_interval_s = {idle}\nactive_interval_s = {active}\nobserve_start_cm",
    )
    text = text.replace(
        'modem = "none"', f'modem = "none"\nanomaly_models = {str(anomaly_models).lower()}'
    )
    return parse(text)


def test_cadence_warnings_name_the_key_and_the_sensor() -> None:
    assert cadence_warnings(_river(600, 300)) == []
    warnings = cadence_warnings(_river(1800, 240))
    assert len(warnings) == 2
    assert warnings[0].startswith("rules.river_probe.idle_interval_s: a reading every 1800 s")
    assert "sensors.level_probe is not checked for a stuck or drifting sensor" in warnings[0]
    assert warnings[1].startswith(
        "rules.river_probe.active_interval_s: readings every 240 s are scored every 720 s"
    )
    assert cadence_warnings(_river(1800, 240, anomaly_models=False)) == []


def test_edge_validate_prints_the_cadence_warning(tmp_path: Path) -> None:
    config = tmp_path / "river.toml"
    text = (REPO / "edge/sim/sites/river.toml").read_text()
    config.write_text(
        text.replace(
            "idle_interval_s = 1.5\nactive_interval_s = 1\nobserve_start_cm",
            "idle_interval_s = 3600\nactive_interval_s = 300\nobserve_start_cm",
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "edge", "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr  # valid, only unwise
    assert "ok - device bench-river-01" in result.stdout
    assert (
        "warning: rules.river_probe.idle_interval_s: a reading every 3600 s is more than "
        "twice the sensor fault checks' 600-s period"
    ) in result.stdout


async def test_a_reading_that_comes_while_the_watch_starts_is_judged_once_it_has(
    tmp_path: Path,
) -> None:
    wall = Wall(1_790_000_000.0)
    await _run_water(tmp_path, wall, _calm_levels(80))
    wall.t += 600.0
    events = Events()
    watch = AnomalyWatch("level_east", "water", events, state_dir=tmp_path, wall=wall)
    await watch.add(60.2, 3.0)  # the daemon's first reading, before start() finished
    assert watch.scored == 0
    await watch.start()
    assert watch.scored == 1 and len(watch.rule.x_hist) == 81, "added to the kept history"


async def test_a_nap_with_rolls_and_a_shift_raises_no_anomaly() -> None:
    # The emulated infant of the bench (edge.sim), not the model's own generator:
    # ten minutes of a nap with rolls and a restless shift, the mat's load
    # through MatSignals at the mat's 10 frames a second, as the daemon feeds it.
    t = [0.0]
    scene = MatScene(seed=3, clock=lambda: t[0])
    signals = MatSignals()
    scene.lie_down("supine", at=5.0)
    for at, posture in ((120.0, "left"), (240.0, "supine"), (360.0, "right"), (480.0, "supine")):
        scene.roll_to(posture, at=at)
    events = Events()
    watch = AnomalyWatch("mat_1", "mat_load", events)
    await watch.start()
    for i in range(6000):
        t[0] = i * 0.1
        reading = signals.update(MatFrame(i, 16, 32, scene.frame_at(t[0])), t[0])
        if reading.occupied:
            await watch.add(reading.load_kg, reading.t)
    assert watch.scored > 1000
    assert events.got == [], events.got
