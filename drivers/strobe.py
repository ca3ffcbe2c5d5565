"""A strobe light that flashes while on (gpiozero's background blink thread)."""

from __future__ import annotations

from typing import Any

from gpiozero import DigitalOutputDevice

from drivers.base import Driver


class Strobe(Driver):
    def __init__(
        self,
        pin: int | str,
        *,
        pin_factory: Any = None,
        active_high: bool = True,
        flash_hz: float = 2.0,
    ) -> None:
        if not 0 < flash_hz <= 50:
            raise ValueError(f"flash_hz must be in (0, 50], got {flash_hz}")
        self._device = DigitalOutputDevice(
            pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
        )
        self.half_period = 0.5 / flash_hz
        self._flashing = False

    @property
    def pin(self) -> Any:
        return self._device.pin

    @property
    def is_on(self) -> bool:
        """True while flashing (the lamp itself is lit half the time)."""
        return self._flashing

    def on(self) -> None:
        self._check_open()
        if self._flashing:
            return
        self._flashing = True
        # Lit at once, then toggles every half period until off().
        self._device.blink(on_time=self.half_period, off_time=self.half_period, background=True)

    def off(self) -> None:
        self._check_open()
        self._flashing = False
        self._device.off()  # also stops the blink thread

    def _release(self) -> None:
        """Stop flashing and release the pin."""
        self._flashing = False
        if not self._device.closed:
            self._device.off()  # also stops the blink thread
        self._device.close()
