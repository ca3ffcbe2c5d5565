"""The trap rule: a box trap's door, debounced, with reminders and a daily proof of life.

* The first closure that stays closed for ``debounce_s`` is ``trap_triggered``
  (alarm), once: a door that bounces as it falls is one closure.
* While it stays closed, a ``trap_triggered`` reminder (``reminder: true``)
  every ``reminder_s``: a trapped animal must not be forgotten.
* While it is open, a ``trap_armed`` report every ``armed_report_s`` (daily by
  default): trappers must check every trap daily, and this report — the
  sensor is alive and the trap armed — is what lets them trust the sensor.
* Reopening (stable for ``debounce_s``) is ``trap_reset``.

Pure state with explicit times: the daemon feeds raw edges and calls
:meth:`TrapRule.tick` at the time :meth:`TrapRule.next_deadline` asks for.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class TrapOutcome:
    kind: str  # "trap_triggered" | "trap_reset" | "trap_armed"
    closed_since: float | None
    """Monotonic time the door closed (debounced), while closed."""
    reminder: bool = False
    closed_s: float | None = None


class TrapRule:
    def __init__(
        self,
        name: str,
        *,
        debounce_s: float,
        reminder_s: float,
        armed_report_s: float,
        closed_now: bool,
        now: float,
    ) -> None:
        self.name = name
        self.debounce_s = debounce_s
        self.reminder_s = reminder_s
        self.armed_report_s = armed_report_s
        self._lock = threading.Lock()
        self._raw = closed_now
        self._raw_since = now
        self.closed = closed_now
        """The debounced state."""
        self.closed_since: float | None = now if closed_now else None
        # At start, say at once how the trap is: armed (proof of life) or closed
        # (a reminder: whoever was told before the restart must not forget it).
        self._next_report = now

    def edge(self, closed: bool, now: float) -> None:
        """A raw edge from the switch (any thread)."""
        with self._lock:
            if closed != self._raw:
                self._raw = closed
                self._raw_since = now

    def next_deadline(self) -> float:
        with self._lock:
            if self._raw != self.closed:
                return min(self._raw_since + self.debounce_s, self._next_report)
            return self._next_report

    def tick(self, now: float) -> list[TrapOutcome]:
        """What is due at ``now``: transitions that are stable, reminders, reports."""
        out: list[TrapOutcome] = []
        with self._lock:
            if self._raw != self.closed and now - self._raw_since >= self.debounce_s:
                self.closed = self._raw
                if self.closed:
                    self.closed_since = self._raw_since
                    out.append(TrapOutcome("trap_triggered", self.closed_since, closed_s=0.0))
                    self._next_report = self._raw_since + self.reminder_s
                else:
                    since = self.closed_since
                    self.closed_since = None
                    out.append(
                        TrapOutcome(
                            "trap_reset",
                            since,
                            closed_s=None if since is None else self._raw_since - since,
                        )
                    )
                    self._next_report = self._raw_since + self.armed_report_s
            if now >= self._next_report:
                if self.closed:
                    assert self.closed_since is not None
                    out.append(
                        TrapOutcome(
                            "trap_triggered",
                            self.closed_since,
                            reminder=True,
                            closed_s=now - self.closed_since,
                        )
                    )
                    self._next_report = now + self.reminder_s
                else:
                    out.append(TrapOutcome("trap_armed", None))
                    self._next_report = now + self.armed_report_s
        return out
