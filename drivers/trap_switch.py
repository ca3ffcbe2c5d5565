"""The switch on a box trap's door (reed or micro switch) on one GPIO input.

Normally-open and normally-closed wiring both exist, so which level means
"closed" is a setting.  This driver reports raw edges with their time; the
debouncing (a door that rattles as it falls) is done by the trap rule, with a
clock it can be tested with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from gpiozero import DigitalInputDevice

from drivers.base import Driver

EdgeCallback = Callable[[bool, float], None]
"""Called on gpiozero's callback thread with (closed, ``time.monotonic()``)."""


class TrapSwitch(Driver):
    def __init__(
        self,
        pin: int | str,
        *,
        pin_factory: Any = None,
        closed_level: Literal["high", "low"] = "low",
        pull: Literal["up", "down", "none"] = "up",
        on_edge: EdgeCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        pull_up: bool | None = {"down": False, "up": True, "none": None}[pull]
        active_high = closed_level == "high"
        self._device = DigitalInputDevice(
            pin,
            pull_up=pull_up,
            active_state=active_high if pull_up is None else None,
            pin_factory=pin_factory,
        )
        if pull_up is not None and pull_up == active_high:
            self._device.close()
            raise ValueError(
                f"closed_level={closed_level!r} with pull={pull!r} would read 'closed' with "
                "the switch disconnected; use the opposite pull or 'none'"
            )
        self._clock = clock
        self.on_edge = on_edge
        self._device.when_activated = self._closed
        self._device.when_deactivated = self._opened

    @property
    def pin(self) -> Any:
        return self._device.pin

    @property
    def closed(self) -> bool:
        """The door's state as the pin reads it right now (not debounced)."""
        self._check_open()
        return bool(self._device.is_active)

    def _closed(self) -> None:
        if self.on_edge is not None:
            self.on_edge(True, self._clock())

    def _opened(self) -> None:
        if self.on_edge is not None:
            self.on_edge(False, self._clock())

    def _release(self) -> None:
        self._device.close()
