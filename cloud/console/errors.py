"""The console's exceptions: one root under the notifier's, leaves that also inherit a builtin."""

from __future__ import annotations

from cloud.errors import NotifierError


class ConsoleError(NotifierError):
    """Root of every error the console raises on purpose."""


class ConsoleNotFound(ConsoleError, LookupError):
    """No such device (or cot, or rollout) in what the console knows."""


class RolloutActionFailed(ConsoleError, RuntimeError):
    """``satoyama-deploy`` refused or failed; ``str(error)`` carries what it said."""
