"""Passive-infrared animal detector (HC-SR501 kind) on one GPIO input.

The module drives its output high while it sees a warm body.  We react to the
rising edge (gpiozero's ``DigitalInputDevice``), not by polling: gpiozero's
``MotionSensor`` samples at 10 Hz and adds up to 100 ms.  PIR modules
false-trigger for about a minute after power-on, so activations during
``warmup_s`` are counted and dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from gpiozero import DigitalInputDevice

from drivers.base import Driver

log = logging.getLogger(__name__)

DetectCallback = Callable[[float], None]
"""Called on gpiozero's callback thread with ``time.monotonic()`` of the edge."""


class PirDetector(Driver):
    def __init__(
        self,
        pin: int | str,
        *,
        pin_factory: Any = None,
        pull: Literal["down", "up", "none"] = "down",
        active_high: bool = True,
        warmup_s: float = 60.0,
        on_detect: DetectCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        pull_up: bool | None = {"down": False, "up": True, "none": None}[pull]
        active_state = active_high if pull_up is None else None
        self._device = DigitalInputDevice(
            pin, pull_up=pull_up, active_state=active_state, pin_factory=pin_factory
        )
        if pull_up is not None and active_high == pull_up:
            # A pulled-up line that reads "active" when high would be active at rest.
            self._device.close()
            raise ValueError("an active-high detector needs pull='down' or 'none'")
        self._clock = clock
        self.ready_at = clock() + warmup_s
        self.on_detect = on_detect
        self.detections = 0
        self.ignored_warmup = 0
        self._device.when_activated = self._activated

    @property
    def pin(self) -> Any:
        return self._device.pin

    @property
    def warming_up(self) -> bool:
        return self._clock() < self.ready_at

    @property
    def active(self) -> bool:
        self._check_open()
        return bool(self._device.is_active)

    def _activated(self) -> None:
        now = self._clock()
        if now < self.ready_at:
            self.ignored_warmup += 1
            log.info(
                "PIR on %s fired during its warm-up (%.0f s left): ignored",
                self._device.pin,
                self.ready_at - now,
            )
            return
        self.detections += 1
        if self.on_detect is not None:
            self.on_detect(now)

    def _release(self) -> None:
        self._device.close()
