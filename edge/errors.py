"""The one exception root of the daemon's package (``edge/``).

Every error ``edge`` raises on purpose derives from :class:`EdgeError`, and a
leaf also inherits the builtin it resembles (``ConfigError`` is a
``ValueError``, ``OutboxError`` a ``RuntimeError``), so a caller can catch all
of ours at once and code that knows only the builtins still catches them
(gpiozero's ``PinInvalidPull(PinError, ValueError)`` shape).  The leaves live
beside the code that raises them; this module holds only the root.  Driver
errors have their own root (``drivers.errors.DriverError``): ``drivers/``
imports nothing of ours.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error the daemon, its tools and its emulators raise on purpose."""
