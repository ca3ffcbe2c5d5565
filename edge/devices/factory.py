"""Configuration -> devices: the one place that builds drivers and actuators.

The daemon, ``edge check`` and the bench (through the daemon) open the same
devices the same way: a ``[sensors.NAME]`` or ``[actuators.NAME]`` table
becomes the driver its ``type`` names, on the pin factory, I²C bus or serial
port given.  Vendor imports (gpiozero's backends, smbus2, pyserial) happen here,
when a device is opened, never at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.siren import Siren
from drivers.strobe import Strobe
from edge.config import (
    ActuatorConfig,
    MatSensorConfig,
    PirSensorConfig,
    PressureProbeConfig,
    StrobeConfig,
    TrapSensorConfig,
    UltrasonicConfig,
)
from edge.devices.actuators import Actuator
from edge.devices.level import I2cBusFactory, LevelSensor, ProbeLevel, RangerLevel

if TYPE_CHECKING:
    from gpiozero import Button, DigitalInputDevice

    from drivers.motion_mat import MotionMat
    from drivers.pir import DetectCallback, PirDetector
    from drivers.trap_switch import TrapSwitch

PinFactory = Any
"""gpiozero's pin factory (``None``: gpiozero's default); gpiozero ships no type for it."""


def make_pin_factory(name: str) -> PinFactory:
    """The gpiozero pin factory named in ``[gpio] pin_factory`` (None: gpiozero's default)."""
    if name == "auto":
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    if name == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    if name == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    if name == "pigpio":
        from gpiozero.pins.pigpio import PiGPIOFactory

        return PiGPIOFactory()
    if name == "native":
        from gpiozero.pins.native import NativeFactory

        return NativeFactory()
    raise ValueError(f"unknown pin factory {name!r}")


def build_actuator(cfg: ActuatorConfig, pin_factory: PinFactory) -> Actuator:
    """The driver for one ``[actuators.NAME]`` table (a buzzer is a steady-on load)."""
    if isinstance(cfg, StrobeConfig):
        return Strobe(
            cfg.pin, pin_factory=pin_factory, active_high=cfg.active_high, flash_hz=cfg.flash_hz
        )
    return Siren(cfg.pin, pin_factory=pin_factory, active_high=cfg.active_high)


def build_detector(
    cfg: PirSensorConfig,
    pin_factory: PinFactory,
    *,
    on_detect: DetectCallback | None = None,
    warmup_s: float | None = None,
) -> PirDetector:
    """A PIR detector (``warmup_s``: the configured one unless given, e.g. 0 for a self-test)."""
    from drivers.pir import PirDetector

    return PirDetector(
        cfg.pin,
        pin_factory=pin_factory,
        pull=cfg.pull,
        active_high=cfg.active_high,
        warmup_s=cfg.warmup_s if warmup_s is None else warmup_s,
        on_detect=on_detect,
    )


def build_trap_switch(cfg: TrapSensorConfig, pin_factory: PinFactory) -> TrapSwitch:
    from drivers.trap_switch import TrapSwitch

    return TrapSwitch(
        cfg.pin, pin_factory=pin_factory, closed_level=cfg.closed_level, pull=cfg.pull
    )


def build_ack_button(pin: int, pin_factory: PinFactory) -> Button:
    """The nap room's acknowledge button: to ground, pulled up, debounced 50 ms."""
    from gpiozero import Button

    return Button(pin, pull_up=True, bounce_time=0.05, pin_factory=pin_factory)


def build_gate_input(pin: int, pin_factory: PinFactory) -> DigitalInputDevice:
    """A gate's limit switch or a pump's run contact (to ground, pulled up): each change of
    state is an operation of what moves the water level.  Debounced 100 ms (a mechanical
    switch on a moving gate chatters)."""
    from gpiozero import DigitalInputDevice

    return DigitalInputDevice(pin, pull_up=True, bounce_time=0.1, pin_factory=pin_factory)


def build_level_sensor(
    cfg: PressureProbeConfig | UltrasonicConfig,
    *,
    i2c_bus: I2cBusFactory | None = None,
    patience_s: float = 1.0,
    name: str = "",
) -> LevelSensor:
    """A water-level sensor (``patience_s``: how long a ranger may stay silent per sample)."""
    if isinstance(cfg, PressureProbeConfig):
        return ProbeLevel(cfg, i2c_bus=i2c_bus)
    return RangerLevel(cfg, patience_s=patience_s, name=name)


def open_mat(cfg: MatSensorConfig) -> MotionMat:
    from drivers.motion_mat import MotionMat

    return MotionMat(cfg.port, baudrate=cfg.baudrate)
