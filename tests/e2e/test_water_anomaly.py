"""The water anomaly path through the real daemon: probe -> water rule -> model -> broker.

A water window is 64 readings ten minutes apart (10 h 40 min), far too long for
a test to wait for; but the daemon keeps that window (and its count of
anomalous windows in a row) beside its outbox across restarts, so a test can
stand where a restarted device stands: the kept window holds 63 readings, the
last ten minutes ago, and the next reading the probe gives completes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from edge.config import parse
from edge.daemon import Daemon
from edge.sim.broker import Mosquitto
from edge.sim.i2c import ADS1115Model, EmulatedI2CBus
from edge.sim.site import device_config
from tests.support.spy import spy_on
from tests.support.waiting import until

pytestmark = pytest.mark.slow
DEVICE = "shiojiri-kataoka-01"

PROBE = """
[sensors.level_probe]
type = "pressure_probe"
bus = 1
address = 0x48
channel = 0
shunt_ohm = 150
range_cm = 500

[rules.river]
type = "water"
sensor = "level_probe"
sample_s = 0.05
window_s = 0.5

[health]
modem = "none"
"""


def _site(tmp_path: Path, port: int) -> tuple[Daemon, ADS1115Model]:
    bus = EmulatedI2CBus(1)
    adc = bus.attach(0x48, ADS1115Model(instant=True))
    assert isinstance(adc, ADS1115Model)
    config = parse(device_config(tmp_path / "outbox.sqlite3", port, warmup_s=0) + PROBE)
    return Daemon(config, i2c_bus={1: bus}.__getitem__), adc


def _keep_window(
    tmp_path: Path, level_cm: float, last_s_ago: float, *, slipped_to: float | None = None
) -> Path:
    """63 kept readings at ``level_cm``; with ``slipped_to``, the last two already there and
    flagged (the watch needs three anomalous windows in a row: the third comes now)."""
    rng = np.random.default_rng(12)
    values = [round(level_cm + float(rng.normal(0.0, 0.7)), 1) for _ in range(63)]
    run = 0
    if slipped_to is not None:
        values[-2:] = [slipped_to, round(slipped_to + 0.3, 1)]
        run = 2
    kept = tmp_path / "anomaly-level_probe.json"
    kept.write_text(json.dumps({
        "version": 1, "series": "water", "period_s": 600.0, "wall": time.time() - last_s_ago,
        "values": values, "active": False, "calm": 0, "run": run,
    }))  # fmt: skip
    return kept


def _ma(level_cm: float) -> float:
    return 4.0 + 16.0 * level_cm / 500.0


async def test_a_probe_that_slipped_before_a_restart_is_reported_at_the_next_reading(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # the probe slipped 30 cm twenty minutes before an update restarted the daemon
    kept = _keep_window(tmp_path, 100.0, last_s_ago=600.0, slipped_to=130.0)
    daemon, adc = _site(tmp_path, broker.port)
    adc.set_current_ma(0, _ma(130.0))
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with daemon:
            await spy.wait(lambda: bool(spy.of_kind("anomaly")), 20, "the anomaly event")
            await until(lambda: len(json.loads(kept.read_text())["values"]) == 64, 10,
                        "the kept window to take the new reading")  # fmt: skip
    [event] = spy.of_kind("anomaly")
    assert event.severity == "warning"
    assert event.data["sensor"] == "level_probe" and event.data["series"] == "water"
    assert event.data["pattern"] == "spike_or_step" and "peak" in event.data["tests"]
    assert event.data["score"] > event.data["threshold"]
    state = json.loads(kept.read_text())
    assert state["values"][-1] == pytest.approx(130.0, abs=1.0)
    assert state["active"] is True, "the episode is kept too: no second event after a restart"


async def test_a_calm_level_after_a_restart_raises_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    kept = _keep_window(tmp_path, 100.0, last_s_ago=600.0)
    daemon, adc = _site(tmp_path, broker.port)
    adc.set_current_ma(0, _ma(100.4))
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with daemon:
            await until(lambda: len(json.loads(kept.read_text())["values"]) == 64, 20,
                        "the first reading to be scored")  # fmt: skip
            assert daemon.water["level_probe"].anomaly.scored == 1
    assert spy.of_kind("anomaly") == []
