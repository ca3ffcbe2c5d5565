"""The level-sensor seam: a 4-20 mA probe and an ultrasonic ranger both answer ``read_cm``
with the level above the site's datum, and fail with the driver's error.

The probe sits on an emulated ADS1115 on an emulated I2C bus; the ranger is an
emulated A02YYUW on a real pseudo-terminal.
"""

from __future__ import annotations

import pytest

from drivers.errors import LoopFault, SensorTimeout
from edge.config import PressureProbeConfig, UltrasonicConfig
from edge.devices.factory import build_level_sensor
from edge.sim.i2c import ADS1115Model, EmulatedI2CBus
from edge.sim.serial_device import UltrasonicModel


async def test_a_probe_reads_its_depth_plus_offset_and_a_cut_cable_is_a_loop_fault() -> None:
    bus = EmulatedI2CBus(1)
    adc = ADS1115Model()
    bus.attach(0x48, adc)
    adc.set_current_ma(0, 12.0, 150.0)  # mid-range: half of range_cm
    config = PressureProbeConfig(range_cm=500.0, offset_cm=-20.0)
    sensor = build_level_sensor(config, i2c_bus={1: bus}.__getitem__)
    try:
        assert await sensor.read_cm() == pytest.approx(230.0, abs=0.5)
        assert sensor.raw == "12.00 mA"
        adc.set_current_ma(0, 1.5, 150.0)  # below NAMUR's 3.6 mA: the loop is open
        with pytest.raises(LoopFault) as caught:
            await sensor.read_cm()
        assert caught.value.kind == "wire_break"
    finally:
        await sensor.aclose()


async def test_a_ranger_reads_height_less_distance_the_dead_zone_as_its_top_and_silence_fails(
) -> None:
    with UltrasonicModel(distance_mm=1500).start() as ranger:
        config = UltrasonicConfig(port=ranger.port, mount_height_cm=400.0)
        sensor = build_level_sensor(config, patience_s=1.0)
        try:
            assert await sensor.read_cm() == pytest.approx(250.0)
            assert sensor.raw == "1500 mm"
            # Water within the ranger's dead zone (a flood): the top of what it can measure,
            # not a fault.
            ranger.set_distance_mm(100)
            assert await sensor.read_cm() == pytest.approx(400.0 - 25.0)
            ranger.unplug()
            with pytest.raises(SensorTimeout):
                await sensor.read_cm()
        finally:
            await sensor.aclose()
