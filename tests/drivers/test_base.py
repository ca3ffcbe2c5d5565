"""The driver base: every synchronous driver closes once, works with ``with``, and refuses use
after ``close()`` with our own error (real drivers on gpiozero's MockFactory and the emulated bus).
"""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from drivers.ads1115 import ADS1115
from drivers.base import AsyncDriver, Driver
from drivers.errors import DriverClosed, DriverError
from drivers.motion_mat import MotionMat
from drivers.pir import PirDetector
from drivers.siren import Siren
from drivers.strobe import Strobe
from drivers.trap_switch import TrapSwitch
from drivers.ultrasonic import UltrasonicRanger
from edge.sim.i2c import ADS1115Model, EmulatedI2CBus
from edge.sim.mat_emulator import MatModel
from edge.sim.serial_device import UltrasonicModel


def test_an_actuator_closes_twice_and_switches_off(pins: MockFactory) -> None:
    for cls in (Siren, Strobe):
        device = cls(17, pin_factory=pins)
        pin = pins.pin(17)
        device.on()
        assert pin.state  # lit (a strobe is lit at once)
        device.close()
        device.close()  # idempotent: no error, nothing switched back on
        assert not pin.state, f"{cls.__name__} left its output on after close()"
        assert device.is_closed
        with pytest.raises(DriverClosed, match=cls.__name__):
            device.on()
        with pytest.raises(DriverClosed):
            device.off()
        pins.reset()


def test_with_releases_the_pin_for_the_next_user(pins: MockFactory) -> None:
    with Siren(5, pin_factory=pins) as siren:
        siren.on()
        assert pins.pin(5).state
    assert not pins.pin(5).state
    # The pin is free again: a second driver on it does not raise GPIOPinInUse.
    with Siren(5, pin_factory=pins) as again:
        again.on()
        assert again.is_on


def test_inputs_refuse_reads_after_close(pins: MockFactory) -> None:
    detector = PirDetector(4, pin_factory=pins, warmup_s=0)
    switch = TrapSwitch(22, pin_factory=pins)
    assert not detector.active
    assert switch.closed is False
    for driver in (detector, switch):
        driver.close()
        driver.close()
    with pytest.raises(DriverClosed):
        _ = detector.active
    with pytest.raises(DriverClosed):
        _ = switch.closed
    # The error is ours, and still the builtin a caller who knows no drivers expects.
    with pytest.raises(DriverError):
        _ = detector.active
    with pytest.raises(RuntimeError):
        _ = switch.closed


def test_an_adc_on_a_shared_bus_leaves_the_bus_open() -> None:
    bus = EmulatedI2CBus()
    chip = ADS1115Model(instant=True)
    bus.attach(0x48, chip)
    chip.set_input(0, 1.0)
    with ADS1115(bus, 0x48) as first:
        assert first.read_volts(0, data_rate=860) == pytest.approx(1.0, abs=0.001)
    with pytest.raises(DriverClosed):
        first.read_raw(0)
    with pytest.raises(DriverClosed):
        first.read_config()
    # The bus was passed in, not opened by the ADC: another probe on it still reads.
    assert ADS1115(bus, 0x48).read_volts(0, data_rate=860) == pytest.approx(1.0, abs=0.001)


def test_every_gpio_and_i2c_driver_is_a_driver() -> None:
    for cls in (Siren, Strobe, PirDetector, TrapSwitch, ADS1115):
        assert issubclass(cls, Driver)
        assert "close" not in vars(cls), f"{cls.__name__} writes its own close()"
        assert "__enter__" not in vars(cls)


async def test_serial_drivers_open_with_async_with_and_close_on_the_way_out() -> None:
    with MatModel(seed=11) as emu, UltrasonicModel(distance_mm=900, period_s=0.02, seed=3) as m:
        async with MotionMat(emu.port) as mat, UltrasonicRanger(m.port) as ranger:
            assert mat.is_open and ranger.is_open
            assert (await mat.read(2.0)).rows == 16
            assert await ranger.read(2.0) == 900
        assert not mat.is_open and not ranger.is_open
        mat.close()  # twice: fine
        ranger.close()
        await ranger.aclose()
        with pytest.raises(DriverClosed):
            await ranger.read(0.5)  # a closed ranger stays closed
        # A mat is documented to reopen on the next read (a cable put back in).
        assert (await mat.read(2.0)).rows == 16
        mat.close()


def test_every_serial_driver_is_an_async_driver() -> None:
    for cls in (MotionMat, UltrasonicRanger):
        assert issubclass(cls, AsyncDriver)
        assert "__aenter__" not in vars(cls) and "__aexit__" not in vars(cls)
