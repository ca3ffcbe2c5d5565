"""Exponential backoff with jitter: how long to wait before trying a connection or a send again.

One home for the device's MQTT reconnects (``edge.link.uplink``) and the
notifier's MQTT reconnects and SMTP retries (``cloud``).  The cloud imports it
from here because the pacing is a contract with the broker both ends share:
a fleet that lost its cell tower, and a notifier that lost the broker, come
back spread over the window (full jitter) instead of all at once, and the two
must not drift apart.  Pure: no I/O, no clock; the random source is injected.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class Backoff:
    """Delays that double from ``initial`` up to ``maximum``, randomised.

    ``jitter="full"`` draws from ``[0, d]`` (spreads many clients reconnecting
    to one broker at once); ``"equal"`` draws from ``[d/2, d]`` (never retries
    a mail much sooner than planned).  ``d`` is the capped exponential delay.

    Ask by attempt number (:meth:`delay`, when the caller counts, as the
    notifier does per mail), or let it count failures in a row
    (:meth:`next_delay`, :meth:`reset` after a success, as the uplink does).
    """

    initial: float
    maximum: float
    jitter: Literal["full", "equal"] = "full"
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempt: int = field(default=0, init=False)
    """Failures in a row counted by :meth:`next_delay` (0 after :meth:`reset`)."""

    def delay(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (1 for the first retry)."""
        exponent = min(max(attempt, 1) - 1, 62)  # 2**62 * anything >= any sane maximum
        ceiling = min(self.maximum, self.initial * 2.0**exponent)
        if self.jitter == "full":
            return self.rng.uniform(0.0, ceiling)
        return self.rng.uniform(ceiling / 2.0, ceiling)

    def next_delay(self) -> float:
        """Count one more failure in a row; the delay before the next try."""
        self.attempt = min(self.attempt + 1, 64)
        return self.delay(self.attempt)

    def reset(self) -> None:
        """A try succeeded: the next failure waits ``initial`` at most again."""
        self.attempt = 0
