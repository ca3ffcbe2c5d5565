"""The deterrent rule: an animal detected -> siren and strobe at once, on the device.

This is the actuator path, so it never waits for disk, network or the event
loop: :meth:`DeterrentRule.detected` runs on gpiozero's callback thread and
switches the actuators before it returns.  Everything else (the event, the log
line) happens afterwards, elsewhere.

Timing, all with an injectable clock:

* a detection switches every actuator on and keeps them on for ``on_s``;
  further detections extend that, but one sounding never lasts longer than
  ``max_on_s`` (a lingering animal does not get a siren forever);
* after a sounding ends the rule rests for ``cooldown_s``: detections then are
  reported but do not sound (the animal is still there; the siren rests so it
  neither habituates the animal nor wears out the neighbours);
* the detector's own warm-up after power-on is handled by the detector driver.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

log = logging.getLogger(__name__)


class Actuator(Protocol):
    def on(self) -> None: ...
    def off(self) -> None: ...


class Outcome(enum.Enum):
    SOUNDED = "sounded"
    """Actuators switched on by this detection: a new animal visit."""
    EXTENDED = "extended"
    """Already sounding; the sounding was extended (up to ``max_on_s``)."""
    RESTING = "resting"
    """First detection during the cool-down: reported, not sounded."""
    RESTING_AGAIN = "resting_again"
    """Further detections during the same cool-down: counted only."""


class DeterrentRule:
    """Thread-safe state machine driving a set of actuators."""

    def __init__(
        self,
        name: str,
        actuators: Sequence[tuple[str, Actuator]],
        *,
        on_s: float,
        max_on_s: float,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_on_s < on_s:
            raise ValueError("max_on_s must be >= on_s")
        self.name = name
        self.actuators = list(actuators)
        self.on_s = on_s
        self.max_on_s = max_on_s
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._lock = threading.Lock()
        self._sounding_since: float | None = None
        self._off_at = 0.0
        self._rest_until = float("-inf")
        self._rest_reported = False
        self.detections_in_visit = 0

    @property
    def sounding(self) -> bool:
        return self._sounding_since is not None

    def detected(self, now: float | None = None) -> Outcome:
        """A detector fired.  Switches actuators on before returning."""
        overdue: float | None = None
        with self._lock:
            if now is None:
                now = self.clock()
            if self._sounding_since is not None and now >= self._off_at:
                # The switch-off was due but its tick has not run yet (a busy event
                # loop): judge this detection as coming after that sounding ended,
                # not as extending a sounding already past its end (or its cap).
                overdue = self._switch_off(now)
            outcome = self._detected(now)
        if overdue is not None:
            self._log_off(overdue)
        if outcome is Outcome.SOUNDED:
            log.info("deterrent %s: %s ON", self.name, ", ".join(n for n, _ in self.actuators))
        return outcome

    def _detected(self, now: float) -> Outcome:
        if self._sounding_since is not None:
            self._off_at = min(now + self.on_s, self._sounding_since + self.max_on_s)
            self.detections_in_visit += 1
            return Outcome.EXTENDED
        if now < self._rest_until:
            self.detections_in_visit += 1
            if self._rest_reported:
                return Outcome.RESTING_AGAIN
            self._rest_reported = True
            return Outcome.RESTING
        for _, actuator in self.actuators:
            actuator.on()
        self._sounding_since = now
        self._off_at = now + self.on_s
        self.detections_in_visit = 1
        return Outcome.SOUNDED

    def tick(self, now: float | None = None) -> float | None:
        """Switch off when due.  Returns the next time ``tick`` must run, or None."""
        with self._lock:
            if now is None:
                now = self.clock()
            if self._sounding_since is None:
                return None
            if now < self._off_at:
                return self._off_at
            duration = self._switch_off(now)
        self._log_off(duration)
        return None

    def _switch_off(self, now: float) -> float:
        """End the sounding (with the lock held); returns how long it lasted."""
        assert self._sounding_since is not None
        for _, actuator in self.actuators:
            actuator.off()
        duration = now - self._sounding_since
        self._sounding_since = None
        self._rest_until = now + self.cooldown_s
        self._rest_reported = False
        return duration

    def _log_off(self, duration: float) -> None:
        log.info(
            "deterrent %s: %s OFF after %.1f s; resting %.0f s",
            self.name,
            ", ".join(n for n, _ in self.actuators),
            duration,
            self.cooldown_s,
        )

    def next_deadline(self) -> float | None:
        with self._lock:
            return self._off_at if self._sounding_since is not None else None

    def stop(self) -> None:
        """Switch everything off (daemon shutdown)."""
        with self._lock:
            for _, actuator in self.actuators:
                actuator.off()
            self._sounding_since = None
