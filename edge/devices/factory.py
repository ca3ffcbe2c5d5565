"""Configuration -> devices: the one place that builds drivers and actuators.

The daemon, ``edge check`` and the bench (through the daemon) open the same
devices the same way: a ``[sensors.NAME]`` or ``[actuators.NAME]`` table
becomes the driver its ``type`` names, on the pin factory, I²C bus or serial
port given.  Vendor imports (gpiozero's backends, smbus2, pyserial) happen here,
when a device is opened, never at import.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import MutableMapping
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

log = logging.getLogger(__name__)

LGPIO_WORKDIR = "LG_WD"
"""The variable naming the folder where ``import lgpio`` makes its notification pipe
(``.lgd-nfy*``), and which it makes the process's working folder (else it stays put)."""


def _writable(folder: str) -> bool:
    """True if a file can be made in ``folder`` now (tried, not guessed from its mode)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def lgpio_workdir(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Give lgpio a folder it can write before gpiozero imports it; the folder chosen, or
    ``None`` where lgpio already has one (``LG_WD`` set, or a writable working folder).

    ``import lgpio`` (gpiozero's default backend on a Pi) fails with ``PermissionError``
    when it cannot make its pipe in ``LG_WD``, or without it in the working folder: ``/``
    for the daemon under systemd, which its user cannot write.  The daemon's unit sets
    ``LG_WD``; a device whose unit predates that line (units are installed at first boot)
    still gets a folder here: systemd's ``RUNTIME_DIRECTORY`` first (``/run/satoyama``),
    then the working folder, ``STATE_DIRECTORY``, and the temporary folder.
    """
    if environ.get(LGPIO_WORKDIR):
        return None
    here = None
    try:
        here = os.getcwd()
    except OSError:  # the working folder was removed
        pass
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")
    state = environ.get("STATE_DIRECTORY", "").split(":")
    for folder in [*runtime[:1], here, *state[:1], tempfile.gettempdir()]:
        if folder and _writable(folder):
            if folder == here:
                return None
            environ[LGPIO_WORKDIR] = folder
            log.info(
                "GPIO: lgpio's pipe goes in %s (%s is not set%s)", folder, LGPIO_WORKDIR,
                "" if here is None else f"; the working folder is {here}",
            )
            return folder
    return None  # nowhere writable: lgpio's own error names the folder


def make_pin_factory(name: str) -> PinFactory:
    """The gpiozero pin factory named in ``[gpio] pin_factory`` (None: gpiozero's default)."""
    if name in ("auto", "lgpio"):
        lgpio_workdir()
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
