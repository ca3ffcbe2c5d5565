"""The water fault path through the real daemon: probe -> water rule -> fault rules -> broker.

The fault rules learn a sensor's noise floor from 12 hours of readings ten
minutes apart, far too long for a test to wait for; but the daemon keeps the
detector's state (floor, history, episodes) beside its outbox across restarts,
so a test can stand where a restarted device stands: the kept state holds 80
readings, the last ten minutes ago, and the next reading the probe gives is
judged at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from edge.config import parse
from edge.daemon import Daemon
from edge.health.water_faults import WaterFaultDetector
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


def _keep_state(tmp_path: Path, level_cm: float, last_s_ago: float, *, dropped: int = 0) -> Path:
    """80 kept readings near ``level_cm`` (the floor learnt); with ``dropped``, the last
    ``dropped`` of them already at 0 cm (the dropout test needs three at the same value)."""
    rng = np.random.default_rng(12)
    values = [round(level_cm + float(rng.normal(0.0, 0.7)), 1) for _ in range(80)]
    values[len(values) - dropped :] = [0.0] * dropped
    det = WaterFaultDetector()
    for i, v in enumerate(values):
        assert det.add(i * 600.0, v) == []
    kept = tmp_path / "anomaly-level_probe.json"
    kept.write_text(json.dumps({
        "version": 2, "series": "water", "period_s": 600.0, "wall": time.time() - last_s_ago,
        "t_last": 79 * 600.0, "rule": det.state(),
    }))  # fmt: skip
    return kept


def _kept_readings(kept: Path) -> int:
    return len(json.loads(kept.read_text())["rule"]["x"])


def _ma(level_cm: float) -> float:
    return 4.0 + 16.0 * level_cm / 500.0


async def test_a_probe_that_dropped_out_before_a_restart_is_reported_at_the_next_reading(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # the probe's loop broke twenty minutes before an update restarted the daemon: 4 mA, 0 cm
    kept = _keep_state(tmp_path, 100.0, last_s_ago=600.0, dropped=2)
    daemon, adc = _site(tmp_path, broker.port)
    adc.set_current_ma(0, _ma(0.0))
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with daemon:
            await spy.wait(lambda: bool(spy.of_kind("anomaly")), 20, "the anomaly event")
            await until(lambda: _kept_readings(kept) == 81, 10,
                        "the kept state to take the new reading")  # fmt: skip
    [event] = spy.of_kind("anomaly")
    assert event.severity == "warning"
    assert event.data["sensor"] == "level_probe" and event.data["series"] == "water"
    assert event.data["pattern"] == "dropout" and event.data["tests"] == ["dropout"]
    assert event.data["score"] > event.data["threshold"]
    state = json.loads(kept.read_text())["rule"]
    assert state["x"][-1] == pytest.approx(0.0, abs=0.5)
    assert state["episodes"]["dropout"]["active"] is True, "no second event after a restart"


async def test_a_calm_level_after_a_restart_raises_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    kept = _keep_state(tmp_path, 100.0, last_s_ago=600.0)
    daemon, adc = _site(tmp_path, broker.port)
    adc.set_current_ma(0, _ma(100.4))
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with daemon:
            await until(lambda: _kept_readings(kept) == 81, 20,
                        "the first reading to be judged")  # fmt: skip
            assert daemon.water["level_probe"].anomaly.scored == 1
    assert spy.of_kind("anomaly") == []


async def test_a_channel_moved_by_a_gate_reaches_the_rules_as_steps_expected(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """`level_steps = "expected"` on the water rule is what the daemon's fault rules get
    (without it, a gate opening is a sensor step; with it, no step test at all)."""
    bus = EmulatedI2CBus(1)
    bus.attach(0x48, ADS1115Model(instant=True))
    gated = PROBE.replace('window_s = 0.5', 'window_s = 0.5\nlevel_steps = "expected"')
    config = parse(device_config(tmp_path / "outbox.sqlite3", broker.port, warmup_s=0) + gated)
    async with Daemon(config, i2c_bus={1: bus}.__getitem__) as daemon:
        watch = daemon.water["level_probe"].anomaly
        assert watch is not None and watch.steps_expected is True
    async with _site(tmp_path / "plain", broker.port)[0] as daemon:
        watch = daemon.water["level_probe"].anomaly
        assert watch is not None and watch.steps_expected is False


async def test_a_gate_input_reaches_the_fault_rules_and_is_kept_across_restarts(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The water rule's ``gate_pin``: the gate's switch, operated, is a gate move for the
    level's fault rules (which then excuse the steps around it), kept with their state."""
    kept = _keep_state(tmp_path, 100.0, last_s_ago=600.0)
    bus = EmulatedI2CBus(1)
    adc = bus.attach(0x48, ADS1115Model(instant=True))
    assert isinstance(adc, ADS1115Model)
    adc.set_current_ma(0, _ma(100.4))
    # A 3-s window: the switch is operated well before the first reading is judged.
    gated = PROBE.replace("sample_s = 0.05\nwindow_s = 0.5",
                          "sample_s = 0.3\nwindow_s = 3\ngate_pin = 5")  # fmt: skip
    config = parse(device_config(tmp_path / "outbox.sqlite3", broker.port, warmup_s=0) + gated)
    async with Daemon(config, i2c_bus={1: bus}.__getitem__) as daemon:
        switch = daemon.pin_factory.pin(5)  # type: ignore[union-attr]
        switch.drive_low()  # the gate's limit switch closes to ground: the gate moved
        await until(lambda: _kept_readings(kept) == 81, 20, "the first reading to be judged")
    state = json.loads(kept.read_text())["rule"]
    assert state["gate_input"] is True and len(state["gate_times"]) == 1
    assert state["gate_times"][0] <= state["t"][-1], "the move came before the reading"


FAST = "window_s = 0.5\nidle_interval_s = 1\nactive_interval_s = 1"
"""A reading a second: the pair's window fills in seconds (its medians need 12 pairs)."""
PAIR = PROBE.replace("window_s = 0.5", FAST) + f"""
[sensors.spare_probe]
type = "pressure_probe"
bus = 1
address = 0x48
channel = 1
shunt_ohm = 150
range_cm = 500

[rules.river_spare]
type = "water"
sensor = "spare_probe"
sample_s = 0.05
{FAST}
same_water_as = "level_probe"
"""


async def test_two_gauges_on_the_same_water_that_part_are_reported_once_naming_both(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """``same_water_as``: both gauges' readings reach the pair; with the difference learnt
    before a restart (the spare reads 2 cm above the main probe), a spare that now reads
    12 cm above it is one ``disagree`` anomaly, kept as open across the restart."""
    kept = tmp_path / "pair-spare_probe-level_probe.json"
    kept.write_text(json.dumps({"version": 1, "first": "spare_probe", "second": "level_probe",
                                "usual_cm": 2.0, "noise_cm": 0.3, "active": False}))  # fmt: skip
    bus = EmulatedI2CBus(1)
    adc = bus.attach(0x48, ADS1115Model(instant=True))
    assert isinstance(adc, ADS1115Model)
    adc.set_current_ma(0, _ma(100.0))
    adc.set_current_ma(1, _ma(112.0))
    config = parse(device_config(tmp_path / "outbox.sqlite3", broker.port, warmup_s=0) + PAIR)
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with Daemon(config, i2c_bus={1: bus}.__getitem__) as daemon:
            [pair] = daemon.water["level_probe"].pairs
            assert daemon.water["spare_probe"].pairs == [pair]
            await spy.wait(lambda: bool(spy.of_kind("anomaly")), 60, "the disagree anomaly")
            await until(lambda: json.loads(kept.read_text())["active"] is True, 10,
                        "the open disagreement to be kept")  # fmt: skip
    [event] = spy.of_kind("anomaly")
    assert event.data["sensor"] == "spare_probe" and event.data["series"] == "water"
    assert event.data["tests"] == ["disagree"] and event.data["pattern"] == "disagree"
    assert event.data["score"] == pytest.approx(10.0, abs=1.0)  # moved 10 cm from its usual 2
    assert event.data["threshold"] == 3.0
    assert event.data["detail"].startswith("spare_probe - level_probe reads +12.")
    state = json.loads(kept.read_text())
    assert state["usual_cm"] == 2.0, "what was learnt is kept, not re-learnt from the drift"
