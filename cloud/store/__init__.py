"""The notifier's durable memory: events seen, mails still to send, and the state of timers.

Promises that rest on this file:

* **Each event is mailed once.**  Devices deliver at least once; the
  ``events`` table remembers every event id, across restarts and across
  instances, and :meth:`Store.accept` refuses an id it has seen.
* **Nothing accepted is lost.**  An event and all of its mails (and what it
  does to a burst, a trap or a device) are written in one transaction
  *before* the MQTT message is acknowledged; a mail leaves the ``pending``
  state only when the SMTP server took it (``sent``) or refused it for good
  (``failed``).
* **Each notice the notifier makes itself is made once.**  Summaries,
  trap reminders and offline / back-online mails are queued by a
  compare-and-set on the row they come from, so several instances looking at
  the same timer queue one set of mails between them.
* **One sender per mail.**  A sender *claims* a batch of due mails for
  ``claim_timeout_s``; another instance takes them over only when the claim
  has expired (the claimer died), or when the claimer restarts.

The engine is SQLite (one instance) or PostgreSQL (several); see
:mod:`cloud.database`.  All calls run on one dedicated thread, so the event
loop never waits on ``fsync`` and no two calls interleave.

One module per table family, each a part of :class:`Store`:
:mod:`~cloud.store.events` (events, duplicates refused),
:mod:`~cloud.store.mails` (the queue, claims, sent marks) with
:mod:`~cloud.store.journal` (the sent journal), :mod:`~cloud.store.devices`
(devices and instances), :mod:`~cloud.store.episodes` (bursts and traps),
:mod:`~cloud.store.telemetry` (readings), :mod:`~cloud.store.pruning`;
:mod:`~cloud.store.base` holds the thread and the transaction plumbing.
"""

from __future__ import annotations

from typing import Final

from cloud.database import POSTGRES_SCHEMA_VERSION, SQLITE_SCHEMA_VERSION
from cloud.store.base import StoreBase, StoreThread
from cloud.store.devices import DeviceRow, DeviceTables, InstanceRow
from cloud.store.episodes import CoalescePlan, EpisodeRow, EpisodeTables, TrapPlan, TrapRow
from cloud.store.events import AcceptResult, EventTables
from cloud.store.journal import SentJournal
from cloud.store.mails import (
    MailStatus,
    MailTables,
    Notice,
    OutgoingMail,
    QueuedMail,
    StoreCounts,
)
from cloud.store.pruning import PRUNE_CHUNK, PRUNE_SQL, Pruned, Pruning
from cloud.store.telemetry import TelemetryTables

SCHEMA_VERSION: Final = SQLITE_SCHEMA_VERSION

__all__ = [
    "POSTGRES_SCHEMA_VERSION",
    "PRUNE_CHUNK",
    "PRUNE_SQL",
    "SCHEMA_VERSION",
    "AcceptResult",
    "CoalescePlan",
    "DeviceRow",
    "EpisodeRow",
    "InstanceRow",
    "MailStatus",
    "Notice",
    "OutgoingMail",
    "Pruned",
    "QueuedMail",
    "SentJournal",
    "Store",
    "StoreBase",
    "StoreCounts",
    "StoreThread",
    "TrapPlan",
    "TrapRow",
]


class Store(EventTables, MailTables, DeviceTables, EpisodeTables, TelemetryTables, Pruning):
    """The store; open with ``await Store.open(config)`` (an async context manager).

    Every call of every table family (see the modules of this package), on one thread.
    """
