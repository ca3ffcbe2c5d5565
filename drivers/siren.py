"""A siren (or any steady-on load, such as a buzzer) switched by one GPIO output."""

from __future__ import annotations

from typing import Any

from gpiozero import DigitalOutputDevice

from drivers.base import Driver


class Siren(Driver):
    def __init__(
        self, pin: int | str, *, pin_factory: Any = None, active_high: bool = True
    ) -> None:
        self._device = DigitalOutputDevice(
            pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
        )

    @property
    def pin(self) -> Any:
        return self._device.pin

    @property
    def is_on(self) -> bool:
        return bool(self._device.value)

    def on(self) -> None:
        self._check_open()
        self._device.on()

    def off(self) -> None:
        self._check_open()
        self._device.off()

    def _release(self) -> None:
        """Switch off and release the pin."""
        if not self._device.closed:
            self._device.off()
        self._device.close()
