"""Exceptions of the cloud notifier: one root, leaves that also inherit a builtin."""

from __future__ import annotations


class NotifierError(Exception):
    """Root of every error the notifier raises on purpose."""


class ConfigError(NotifierError, ValueError):
    """The configuration file is missing, unreadable or invalid.

    ``key`` is the dotted path of the offending key (``"smtp.port"``), or ``""``
    when the problem is the file as a whole; ``str(error)`` is one line that
    names the key and what was expected.
    """

    def __init__(self, key: str, problem: str, *, file: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.file = file
        super().__init__(f"{key}: {problem}" if key else problem)


class StoreError(NotifierError, OSError):
    """The SQLite store cannot be opened, is corrupt, or a write failed."""


class DeliveryError(NotifierError):
    """Sending one mail over SMTP failed (see the two leaves for what to do next)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TransientDeliveryError(DeliveryError, ConnectionError):
    """Worth retrying later: server unreachable, timeout, 4xx reply, or a setup
    problem an operator can fix (authentication, sender refused) without the
    mail being lost."""


class PermanentDeliveryError(DeliveryError):
    """The server refused this mail for good (5xx for this recipient or content)."""
