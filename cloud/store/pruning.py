"""Pruning: old events, finished mails and old readings forgotten, a chunk at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from cloud.store.base import StoreBase


@dataclass(frozen=True, slots=True)
class Pruned:
    """What :meth:`Store.prune` removed."""

    events: int
    mails: int
    """Sent or failed mails (pending ones are never removed)."""
    telemetry: int


#: Rows one pruning transaction removes at most.
PRUNE_CHUNK: Final = 5000


#: Every statement pruning uses; each walks an index (tests/cloud/test_store.py
#: checks the query plans on both engines).
PRUNE_SQL: Final = {
    "events_by_age": (
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM mails WHERE mails.event_id = events.id"
        # `|| ''`: look the event's mails up by event_id (unique index), not every
        # pending mail by status, which SQLite's planner would otherwise pick.
        " AND mails.status || '' = 'pending') ORDER BY received_at LIMIT ?)"
    ),
    "events_cutoff": "SELECT received_at FROM events ORDER BY received_at DESC LIMIT 1 OFFSET ?",
    "mails_by_age": (
        "DELETE FROM mails WHERE id IN (SELECT id FROM mails WHERE created_at < ?"
        " AND status <> 'pending' ORDER BY created_at LIMIT ?)"
    ),
    "mails_cutoff": (
        "SELECT created_at FROM mails WHERE status <> 'pending'"
        " ORDER BY created_at DESC LIMIT 1 OFFSET ?"
    ),
    "telemetry_by_age": "DELETE FROM telemetry WHERE ts < ?",
}


class Pruning(StoreBase):
    """Keeps the store from growing without bound."""

    async def prune(
        self,
        before: float,
        *,
        telemetry_before: float | None = None,
        max_events: int | None = None,
        max_mails: int | None = None,
    ) -> Pruned:
        """Forget events received before ``before`` and finished mails made before it,
        then the oldest beyond ``max_events`` events and ``max_mails`` finished mails.

        Keeps the store from growing without bound (heartbeats are recorded
        too); an event id forgotten this way would be mailed again if a device
        re-sent it, so ``before`` should lie far beyond any device's retry span
        and ``max_events`` far above what arrives within it.  An event with a
        pending mail, and pending mails, are never removed.  Rows go in chunks
        of :data:`PRUNE_CHUNK`, each its own transaction, so that events keep
        being stored meanwhile; every statement walks an index.
        """
        events = await self._delete_chunks(PRUNE_SQL["events_by_age"], before)
        mails = await self._delete_chunks(PRUNE_SQL["mails_by_age"], before)
        if max_events is not None:
            cutoff = await self._read(PRUNE_SQL["events_cutoff"], (max_events,))
            if cutoff:  # more than max_events: forget those as old as the first extra one
                at = math.nextafter(float(cutoff[0][0]), math.inf)
                events += await self._delete_chunks(PRUNE_SQL["events_by_age"], at)
        if max_mails is not None:
            cutoff = await self._read(PRUNE_SQL["mails_cutoff"], (max_mails,))
            if cutoff:
                at = math.nextafter(float(cutoff[0][0]), math.inf)
                mails += await self._delete_chunks(PRUNE_SQL["mails_by_age"], at)
        telemetry = 0
        if telemetry_before is not None:
            telemetry = await self._run(
                lambda tx: tx.execute(PRUNE_SQL["telemetry_by_age"], (telemetry_before,))
            )
        return Pruned(events, mails, telemetry)

    async def _delete_chunks(self, sql: str, before: float) -> int:
        removed = 0
        while True:
            n = await self._run(lambda tx: tx.execute(sql, (before, PRUNE_CHUNK)))
            removed += n
            if n < PRUNE_CHUNK:
                return removed
