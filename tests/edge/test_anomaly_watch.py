"""The anomaly model on a sensor's series: one event per episode, at the model's own period."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.anomaly_watch import AnomalyWatch


class Events:
    def __init__(self) -> None:
        self.got: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, kind: str, severity: str, data: dict[str, Any]) -> None:
        self.got.append((kind, severity, data))


async def test_a_stuck_sensor_is_one_anomaly_event_per_episode() -> None:
    events = Events()
    watch = AnomalyWatch("level_east", "water", events)
    await watch.start()
    assert watch.model is not None and watch.period_s > 0
    for i in range(200):  # stuck at exactly 50.0 cm for 200 samples
        await watch.add(50.0, i * watch.period_s)
    kinds = [k for k, _, _ in events.got]
    assert kinds == ["anomaly"]
    _, severity, data = events.got[0]
    assert severity == "warning"
    assert data["sensor"] == "level_east" and data["series"] == "water"
    assert data["score"] > data["threshold"]


async def test_water_is_scored_at_the_water_rules_default_cadence() -> None:
    # The water rule reads every 600 s while idle and every 300 s while
    # observing (edge/config.py defaults); the water model is trained at 600 s.
    events = Events()
    watch = AnomalyWatch("level_east", "water", events)
    await watch.start()
    assert watch.period_s == 600.0
    rng = np.random.default_rng(4)
    t = 0.0
    for _ in range(100):  # idle: one reading every 10 minutes
        t += 600.0 + rng.uniform(-2.0, 2.0)
        await watch.add(50.0 + rng.normal(0.0, 0.7), t)
    assert watch.scored == 100 - 63
    for _ in range(100):  # observing: every 5 minutes, every second one scored
        t += 300.0 + rng.uniform(-2.0, 2.0)
        await watch.add(50.0 + rng.normal(0.0, 0.7), t)
    assert watch.scored == 100 - 63 + 50
    assert events.got == [], "a calm, noisy level is not an anomaly"


async def test_values_much_slower_than_the_models_period_are_not_scored() -> None:
    events = Events()
    watch = AnomalyWatch("level_east", "water", events)
    await watch.start()
    for i in range(200):  # one value an hour: the model's 10-minute shapes mean nothing here
        await watch.add(50.0, i * 3600.0)
    assert watch.scored == 0 and events.got == []


async def test_faster_values_are_thinned_to_the_models_period() -> None:
    events = Events()
    watch = AnomalyWatch("mat_1", "mat_load", events)
    await watch.start()
    for i in range(10 * 64 * 2):  # 10 readings per model period
        await watch.add(6.0, i * watch.period_s / 10)
    assert watch.scored <= 64 + 2
