"""What every synchronous driver shares: an idempotent ``close()`` and ``with``.

A driver holds one resource (a GPIO line, a bus handle).  :class:`Driver`
gives it the protocol gpiozero's devices and aiomqtt's client have: ``close()``
releases the resource once and is safe to call again; ``with Driver(...) as d``
closes on the way out; a call that needs the resource after ``close()`` raises
:class:`~drivers.errors.DriverClosed` (our error, not the vendor library's).

A subclass implements :meth:`Driver._release` (free the resource; called at most
once) and calls :meth:`Driver._check_open` at the top of each method that uses it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from drivers.errors import DriverClosed


class Driver:
    """Base of the synchronous drivers: ``close()`` once, ``with``, use after close refused."""

    _released: bool = False

    def _release(self) -> None:
        """Free what the driver holds.  Called at most once, by the first :meth:`close`."""

    def close(self) -> None:
        """Release the driver's resource.  Safe to call twice."""
        if self._released:
            return
        self._released = True
        self._release()

    @property
    def is_closed(self) -> bool:
        """``close()`` has been called."""
        return self._released

    def _check_open(self) -> None:
        if self._released:
            raise DriverClosed(f"{type(self).__name__} is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncDriver:
    """Base of the serial-port drivers: ``async with`` opens the port and closes it on the way out.

    A subclass implements :meth:`open` (a no-op when already open) and
    :meth:`close` (safe to call twice); :meth:`aclose` also waits for the port
    to be released where that takes a moment.  Whether a read after ``close()``
    reopens the port or is refused is the driver's to say.
    """

    async def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close; a driver whose port takes a moment to release waits for it here."""
        self.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
