"""Rows the broker holds but the cloud has not yet said it stored: when to send them again.

A PUBACK only means the broker has the message in memory; the row stays in the
outbox until the cloud notifier, having committed it, names its id on
``PREFIX/DEVICE/ack`` (end-to-end acknowledgement, ``docs/protocols/mqtt.md``).
:class:`AckTracker` is the pure rule the uplink consults (no I/O, no clock of
its own, no threads): which rows are *awaiting* that acknowledgement (the
uplink skips them when it reads the outbox), and which of them must be sent
again.

* While the cloud is acknowledging (an acknowledgement came within
  ``timeout_s``), every row awaiting longer than ``timeout_s`` is released at
  once: the broker or the cloud lost it (a crash, a queue overflow).
* While the cloud is silent (a notifier down for hours), sending everything
  again would only fill the broker's queue and spend the SIM's data twice:
  one overdue row is released as a *probe*, then the next after twice the wait,
  up to ``probe_max_s``.  The first acknowledgement ends the silence, and the
  next look releases everything overdue.  Each probe is the row that has
  waited longest.
* A row sent again and again without an acknowledgement while the cloud
  acknowledges others (one the cloud cannot store) waits twice as long each
  time, up to ``probe_max_s``: it can neither block the queue nor spend the
  SIM's data every minute.
* When the broker lost its state (a reconnect without a session), everything
  awaiting is released: it may have died with the broker.
* At most ``max_awaiting`` rows wait at once (:attr:`full`): the uplink stops
  publishing new rows until acknowledgements or releases make room, so a
  silent cloud costs at most that many rows' worth of data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class AckTracker:
    """Row ids published and awaiting the cloud's acknowledgement, in the order sent."""

    def __init__(self, *, timeout_s: float, probe_max_s: float, max_awaiting: int) -> None:
        self.timeout_s = timeout_s
        self.probe_max_s = max(probe_max_s, timeout_s)
        self.max_awaiting = max_awaiting
        self._sent: dict[str, float] = {}
        """id -> when it is due again; insertion order is send order."""
        self._attempts: dict[str, int] = {}
        """id -> times it was released unacknowledged (bounded; cleared on ack)."""
        self._last_ack = -math.inf
        self._probe_wait = timeout_s
        self._next_probe = -math.inf
        self.acknowledged = 0
        """Rows the cloud acknowledged while they were awaited (since start)."""
        self.released = 0
        """Rows released for sending again (timeouts, probes, lost sessions)."""

    def __len__(self) -> int:
        return len(self._sent)

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._sent

    @property
    def full(self) -> bool:
        return len(self._sent) >= self.max_awaiting

    def ids(self) -> set[str]:
        return set(self._sent)

    def sent(self, row_id: str, now: float) -> None:
        """The broker acknowledged ``row_id`` (PUBACK): now it awaits the cloud."""
        self._sent.pop(row_id, None)
        wait = self.timeout_s * 2 ** min(self._attempts.get(row_id, 0), 20)
        self._sent[row_id] = now + min(wait, self.probe_max_s)

    def acked(self, ids: Iterable[str], now: float) -> list[str]:
        """The cloud stored ``ids``; returns those that were awaited here.

        Any acknowledgement proves the cloud is alive, even one for rows this
        tracker no longer holds (sent before a restart).
        """
        self._last_ack = now
        self._probe_wait = self.timeout_s
        self._next_probe = -math.inf
        found = []
        for i in ids:
            self._attempts.pop(i, None)
            if self._sent.pop(i, None) is not None:
                found.append(i)
        self.acknowledged += len(found)
        return found

    def cloud_silent(self, now: float) -> bool:
        return now - self._last_ack >= self.timeout_s

    def overdue(self, now: float) -> list[str]:
        """Rows to send again now (they stop being awaited); see the module docstring."""
        due = [i for i, deadline in self._sent.items() if now >= deadline]
        if not due:
            return []
        if self.cloud_silent(now):
            if now < self._next_probe:
                return []
            due = due[:1]  # the row that has waited longest
            self._next_probe = now + self._probe_wait
            self._probe_wait = min(self._probe_wait * 2, self.probe_max_s)
        for i in due:
            del self._sent[i]
            self._attempts[i] = self._attempts.get(i, 0) + 1
        while len(self._attempts) > 4 * self.max_awaiting:  # rows evicted meanwhile
            del self._attempts[next(iter(self._attempts))]
        self.released += len(due)
        return due

    def next_check(self, now: float) -> float:
        """Seconds until :meth:`overdue` may return something (inf: nothing awaits)."""
        if not self._sent:
            return math.inf
        when = min(self._sent.values())
        if self.cloud_silent(now):
            when = max(when, self._next_probe)
        return max(0.0, when - now)

    def release_all(self) -> list[str]:
        """The broker lost its state: everything awaiting must be sent again."""
        ids = list(self._sent)
        self._sent.clear()
        self.released += len(ids)
        return ids

    def forget(self, ids: Iterable[str]) -> None:
        """These rows are gone from the outbox some other way (evicted): stop awaiting them."""
        for i in ids:
            self._sent.pop(i, None)
            self._attempts.pop(i, None)
