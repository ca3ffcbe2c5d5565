"""What an actuator is to the rules, and the test pattern an installer can fire.

The drivers themselves are built by :mod:`edge.devices.factory` (the one place
that turns configuration into devices), so the daemon, ``edge check`` and the
bench sound the same patterns: siren 1 s, strobe 3 s flashing, buzzer three beeps.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from edge.config import ActuatorConfig, BuzzerConfig, StrobeConfig


class Actuator(Protocol):
    """A siren, a strobe or a buzzer as the rules and the self-test use it."""

    @property
    def is_on(self) -> bool: ...
    def on(self) -> None: ...
    def off(self) -> None: ...
    def close(self) -> None: ...


async def test_pattern(device: Actuator, cfg: ActuatorConfig) -> None:
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
