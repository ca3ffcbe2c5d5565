"""Actuators from configuration, and the test pattern an installer can fire.

One place for both, so the daemon and ``edge check`` build the same devices and
sound the same patterns: siren 1 s, strobe 3 s flashing, buzzer three beeps.
"""

from __future__ import annotations

import asyncio
from typing import Any

from drivers.siren import Siren
from drivers.strobe import Strobe
from edge.config import ActuatorConfig, BuzzerConfig, StrobeConfig


def build_actuator(cfg: ActuatorConfig, pin_factory: Any) -> Siren | Strobe:
    """The driver for one ``[actuators.NAME]`` table (a buzzer is a steady-on load)."""
    if isinstance(cfg, StrobeConfig):
        return Strobe(
            cfg.pin, pin_factory=pin_factory, active_high=cfg.active_high, flash_hz=cfg.flash_hz
        )
    return Siren(cfg.pin, pin_factory=pin_factory, active_high=cfg.active_high)


async def test_pattern(device: Siren | Strobe, cfg: ActuatorConfig) -> None:
    """Siren 1 s, strobe 3 s flashing, buzzer 3 beeps; off afterwards."""
    if isinstance(cfg, BuzzerConfig):
        for _ in range(3):
            device.on()
            await asyncio.sleep(0.2)
            device.off()
            await asyncio.sleep(0.2)
        return
    device.on()
    try:
        await asyncio.sleep(3 if isinstance(cfg, StrobeConfig) else 1)
    finally:
        device.off()
