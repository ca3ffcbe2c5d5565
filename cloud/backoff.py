"""Exponential backoff with jitter, for MQTT reconnects and SMTP retries."""

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
    """

    initial: float
    maximum: float
    jitter: Literal["full", "equal"] = "full"
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (1 for the first retry)."""
        exponent = min(max(attempt, 1) - 1, 62)  # 2**62 * anything >= any sane maximum
        ceiling = min(self.maximum, self.initial * 2.0**exponent)
        if self.jitter == "full":
            return self.rng.uniform(0.0, ceiling)
        return self.rng.uniform(ceiling / 2.0, ceiling)
