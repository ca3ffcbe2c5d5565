"""Configuration -> devices: the one factory the daemon, ``edge check`` and the bench use."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from edge.config import BuzzerConfig, PirSensorConfig, StrobeConfig, TrapSensorConfig
from edge.devices.factory import (
    build_actuator,
    build_detector,
    build_trap_switch,
    make_pin_factory,
)


def test_each_actuator_type_drives_its_pin(pins: MockFactory) -> None:
    buzzer = build_actuator(BuzzerConfig(pin=12), pins)
    strobe = build_actuator(StrobeConfig(pin=22, active_high=False), pins)
    try:
        buzzer.on()
        assert pins.pin(12).state == 1 and buzzer.is_on
        buzzer.off()
        assert pins.pin(12).state == 0
        assert pins.pin(22).state == 1  # active low, off
    finally:
        buzzer.close()
        strobe.close()


def test_detector_and_trap_switch_keep_their_configured_wiring(pins: MockFactory) -> None:
    seen: list[float] = []
    detector = build_detector(PirSensorConfig(pin=17, warmup_s=600), pins, on_detect=seen.append)
    quiet = build_detector(PirSensorConfig(pin=18, warmup_s=600), pins, warmup_s=0)
    switch = build_trap_switch(TrapSensorConfig(pin=5), pins)
    try:
        assert detector.warming_up and not quiet.warming_up
        pins.pin(17).drive_high()
        assert seen == []  # still warming up: ignored
        assert not switch.closed
        pins.pin(5).drive_low()  # normally open to ground, pulled up
        assert switch.closed
    finally:
        detector.close()
        quiet.close()
        switch.close()


def test_a_pin_factory_is_made_by_name_and_an_unknown_name_is_refused() -> None:
    assert make_pin_factory("auto") is None
    mock = make_pin_factory("mock")
    try:
        assert isinstance(mock, MockFactory)
    finally:
        mock.close()
    with pytest.raises(ValueError, match="unknown pin factory 'bogus'"):
        make_pin_factory("bogus")
