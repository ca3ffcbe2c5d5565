"""A sensor task that dies is never silent: the real daemon, a real broker, emulated hardware.

The water probe's ADC sits on the emulated I²C bus; its adapter misbehaves in a
way no driver expects (it raises a ``RuntimeError``, not an ``OSError``), so
the water task dies at its first sample.  The daemon's supervisor must report
``sensor_fault``, show the sensor as ``fault`` in heartbeats, keep every other
sensor working, start the task again, and report ``sensor_recovered`` once it
has run for a while.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from edge.config import UltrasonicConfig, parse
from edge.daemon import Daemon
from edge.health.supervisor import RestartPolicy
from edge.sim.broker import Mosquitto
from edge.sim.i2c import ADS1115Model, EmulatedI2CBus
from edge.sim.serial_device import UltrasonicModel
from edge.sim.site import device_config
from tests.support.spy import Spy, spy_on
from tests.support.waiting import until

pytestmark = pytest.mark.slow
DEVICE = "shiojiri-kataoka-01"

WATER = """
[sensors.probe_a]
type = "pressure_probe"
address = 0x48

[sensors.probe_b]
type = "pressure_probe"
address = 0x49

[rules.river_a]
type = "water"
sensor = "probe_a"
sample_s = 0.05
window_s = 0.5
idle_interval_s = 1
active_interval_s = 1

[rules.river_b]
type = "water"
sensor = "probe_b"
sample_s = 0.05
window_s = 0.5
idle_interval_s = 1
active_interval_s = 1
stages = [{ name = "flood_watch", level_cm = 200 }]

[health]
modem = "none"
anomaly_models = false
"""

FAST = RestartPolicy(transient_first_s=0.05, permanent_first_s=0.2, max_s=0.4, stable_s=1.5)


class GlitchingADS1115(ADS1115Model):
    """An ADS1115 behind an adapter that, while ``glitch`` is set, fails a read with it:
    an exception type the drivers do not expect (the hardware misbehaving, not our code)."""

    glitch: Exception | None = None

    def i2c_read(self, length: int) -> bytes:
        if self.glitch is not None:
            raise self.glitch
        return super().i2c_read(length)


def _ma(level_cm: float) -> float:
    return 4.0 + 16.0 * level_cm / 500.0


def _heartbeat_sensors(spy: Spy) -> list[dict[str, str]]:
    return [e.data["sensors"] for e in spy.of_kind("heartbeat")]


async def test_a_water_task_that_dies_is_reported_retried_and_recovers(
    tmp_path: Path, broker: Mosquitto
) -> None:
    bus = EmulatedI2CBus(1)
    adc_a = GlitchingADS1115(instant=True)
    adc_b = ADS1115Model(instant=True)
    bus.attach(0x48, adc_a)
    bus.attach(0x49, adc_b)
    adc_a.set_current_ma(0, _ma(100.0))
    adc_b.set_current_ma(0, _ma(100.0))
    adc_a.glitch = RuntimeError("i2c adapter in an unexpected state")
    config = parse(device_config(tmp_path / "outbox.sqlite3", broker.port, warmup_s=0) + WATER)
    daemon = Daemon(config, i2c_bus={1: bus}.__getitem__)
    daemon.supervisor.policy = FAST
    supervised = "water river_a"

    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with daemon:
            await spy.wait(lambda: bool(spy.of_kind("sensor_fault")), 20, "the sensor_fault")
            [fault] = spy.of_kind("sensor_fault")
            assert fault.severity == "warning"
            assert fault.data["sensor"] == "probe_a" and fault.data["fault"] == "task_failed"
            assert fault.data["error"] == "RuntimeError" and fault.data["transient"] is False
            assert "i2c adapter in an unexpected state" in fault.data["message"]

            # the heartbeat says so, and only of probe_a
            assert daemon.sensors.states()["probe_a"] == "fault"
            await daemon.heartbeat.beat()
            await spy.wait(
                lambda: any(s.get("probe_a") == "fault" for s in _heartbeat_sensors(spy)),
                10, "a heartbeat showing probe_a's fault",
            )  # fmt: skip
            [beat] = [s for s in _heartbeat_sensors(spy) if s.get("probe_a") == "fault"]
            assert beat["probe_b"] == "ok" and beat["pir_north"] == "ok"

            # every other sensor keeps working meanwhile: the other probe's stage alert ...
            adc_b.set_current_ma(0, _ma(250.0))
            await spy.wait(
                lambda: bool(spy.of_kind("water_level_alert")), 20, "probe_b's stage alert"
            )
            # ... and the animal detector with its siren
            pin = daemon.pin_factory.pin(17)
            await asyncio.to_thread(pin.drive_high)
            await spy.wait(lambda: bool(spy.of_kind("animal_detected")), 10, "the detection")
            await asyncio.to_thread(pin.drive_low)

            # the failed task is started again, and again (backing off) while it fails
            await until(lambda: daemon.supervisor.tasks[supervised].restarts >= 2, 20,
                        "two restarts")  # fmt: skip
            assert daemon.sensors.states()["probe_a"] == "fault"

            # the adapter behaves again: the task runs, and after a while has recovered
            adc_a.glitch = None
            await spy.wait(
                lambda: bool(spy.of_kind("sensor_recovered")), 20, "the sensor_recovered"
            )
            await until(lambda: daemon.water["probe_a"].last_level_cm is not None, 10,
                        "a level from probe_a")  # fmt: skip
            assert daemon.water["probe_a"].last_level_cm == pytest.approx(100.0, abs=1.0)
            assert daemon.sensors.states()["probe_a"] == "ok"
            await daemon.heartbeat.beat()
            await spy.wait(lambda: _heartbeat_sensors(spy)[-1].get("probe_a") == "ok", 10,
                           "a heartbeat showing probe_a ok")  # fmt: skip

    [recovered] = spy.of_kind("sensor_recovered")
    assert recovered.data["sensor"] == "probe_a" and recovered.data["fault"] == "task_failed"
    assert recovered.data["restarts"] >= 2 and recovered.data["down_s"] > 0
    assert len(spy.of_kind("sensor_fault")) == 1, "one report for the whole episode"
    [alert] = spy.of_kind("water_level_alert")
    assert alert.data["sensor"] == "probe_b" and alert.data["stage"] == "flood_watch"
    # every stage of the rule travels with the alert, for the mail's chart (issue 14)
    assert alert.data["stages"] == [{"name": "flood_watch", "label": "", "level_cm": 200.0}]


async def test_a_ranger_port_that_cannot_open_is_a_reported_fault_not_a_silent_death(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The original finding: a negative baud rate (pyserial's ValueError, not an OSError)
    killed the water task while heartbeats said the sensor was fine.  Validation now
    refuses it; should anything like it get through, the driver raises PortSettingsError
    (a permanent DriverError) and the water watch reports the sensor as faulty."""
    with UltrasonicModel(1500, period_s=0.05) as model:
        text = device_config(tmp_path / "outbox.sqlite3", broker.port, warmup_s=0) + f"""
[sensors.ranger]
type = "ultrasonic"
port = "{model.port}"
mount_height_cm = 400

[rules.river]
type = "water"
sensor = "ranger"
sample_s = 0.05
window_s = 0.5
idle_interval_s = 1
active_interval_s = 1

[health]
modem = "none"
anomaly_models = false
"""
        config = parse(text)
        ranger = config.sensors["ranger"]
        assert isinstance(ranger, UltrasonicConfig)
        # what `validate` refuses, forced past it: as if a check were missing
        bad = msgspec.structs.replace(ranger, baudrate=-9600)
        config = msgspec.structs.replace(config, sensors={**config.sensors, "ranger": bad})
        daemon = Daemon(config)
        daemon.supervisor.policy = FAST
        async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
            async with daemon:
                await spy.wait(lambda: bool(spy.of_kind("sensor_fault")), 20, "the fault")
                assert daemon.sensors.states()["ranger"] == "fault"
                await daemon.heartbeat.beat()
                await spy.wait(
                    lambda: any(s.get("ranger") == "fault" for s in _heartbeat_sensors(spy)),
                    10, "a heartbeat showing the ranger's fault",
                )  # fmt: skip
    [fault] = spy.of_kind("sensor_fault")
    assert fault.data["sensor"] == "ranger"
    assert "baudrate" in fault.data["message"].lower()
