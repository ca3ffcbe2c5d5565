"""The one exception root of every driver, and its leaves.

Each leaf also inherits the builtin it resembles (``BusError`` is an
``OSError`` with the kernel's errno, ``ProtocolError`` a ``ValueError``), so
code that knows only the builtins still catches them.  The daemon's supervisor
(``edge.health.supervisor``) decides *retry* versus *report* from the class,
never from the message: a :class:`TransientDriverError` may succeed if the same
call is simply tried again, without anyone touching the hardware; any other
``DriverError`` needs someone to act.
"""

from __future__ import annotations

from typing import Literal

LoopFaultKind = Literal["wire_break", "short"]


class DriverError(Exception):
    """Root of every error a driver raises on purpose."""


class TransientDriverError(DriverError):
    """The same call may succeed if simply tried again (noise, a loose connector, a busy bus)."""


class DriverClosed(DriverError, RuntimeError):
    """A driver was used after its ``close()``: a bug in the caller, never the hardware."""


class SensorTimeout(TransientDriverError, TimeoutError):
    """The device said nothing in time: a conversion that never finished, a silent UART.

    Transient: a loose connector or a busy bus; an unplugged cable looks the
    same until it is plugged back.
    """


class BusError(TransientDriverError, OSError):
    """An I²C or serial transaction failed; ``errno`` is the kernel's.

    Raise it as ``BusError(errno, message)`` so ``.errno`` and ``.strerror``
    are set (``EREMOTEIO``: the device did not acknowledge; ``ETIMEDOUT``: the
    bus hung; ``EIO``: anything else the adapter reports).
    """


class ProtocolError(TransientDriverError, ValueError):
    """Bytes arrived but make no sense: a bad frame, a checksum, a register that reads back wrong.

    Transient: electrical noise and a chip that reset mid-transaction both
    clear on the next try; if it repeats, the wiring or the device is wrong.
    """


class PortSettingsError(DriverError, ValueError):
    """A port that can never open as configured: a baud rate or URL the serial layer refuses.

    Not transient: trying again changes nothing until the configuration does.
    """


class LoopFault(DriverError, ValueError):
    """A 4-20 mA loop current outside the NAMUR NE 43 band: a fault, never a water level.

    ``kind`` is ``"wire_break"`` (below 3.6 mA) or ``"short"`` (above 21 mA);
    ``current_ma`` is what was measured, when known.  Not transient: someone
    has to fix the wiring or the transducer.
    """

    def __init__(
        self, kind: LoopFaultKind, current_ma: float | None = None, message: str | None = None
    ) -> None:
        if kind not in ("wire_break", "short"):
            raise ValueError(f"LoopFault kind must be 'wire_break' or 'short', not {kind!r}")
        if message is None:
            measured = "" if current_ma is None else f": {current_ma:.3f} mA"
            message = f"4-20 mA loop {kind.replace('_', ' ')}{measured}"
        super().__init__(message)
        self.kind: LoopFaultKind = kind
        self.current_ma = current_ma

    def __reduce__(self) -> tuple[type[LoopFault], tuple[LoopFaultKind, float | None, str]]:
        # Keeps the exception picklable (it crosses process pools and logging queues).
        return (type(self), (self.kind, self.current_ma, str(self)))
