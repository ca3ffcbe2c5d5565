"""Events (table ``events``): each event id stored once, with everything it causes.

**Each event is mailed once.**  Devices deliver at least once; the ``events``
table remembers every event id, across restarts and across instances, and
:meth:`EventTables.accept` refuses an id it has seen.  **Nothing accepted is
lost.**  An event and all of its mails (and what it does to a burst, a trap or
a device) are written in one transaction *before* the MQTT message is
acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cloud.database import Tx
from cloud.store.base import StoreBase
from cloud.store.devices import DeviceRow, _seen
from cloud.store.episodes import CoalescePlan, TrapPlan, _coalesce, _trap
from cloud.store.mails import Notice, OutgoingMail, _insert_mail_rows
from edge.event import Event, encode


@dataclass(slots=True)
class AcceptResult:
    """What :meth:`Store.accept` did."""

    accepted: bool
    """False: the event id was seen before; nothing was written."""
    folded: bool = False
    """The event joined a burst already mailed: recorded, counted for the summary, no mail."""
    queued: int = 0
    mails: list[tuple[int, str]] = field(default_factory=list)
    """``(mail id, recipient)`` of each mail queued (claimed, where the call said so)."""
    device: DeviceRow | None = None
    """The device's row after the event (for the back-online check)."""
    trap_reopened: bool = False

    def __bool__(self) -> bool:
        return self.accepted


class EventTables(StoreBase):
    """Events: accepted once each (duplicates refused by id), and looked up."""

    async def accept(
        self,
        event: Event,
        mails: Sequence[OutgoingMail],
        *,
        now: float | None = None,
        coalesce: CoalescePlan | None = None,
        trap: TrapPlan | None = None,
        heartbeat_interval: float | None = None,
        track_device: bool = True,
        claim: tuple[str, float] | None = None,
    ) -> AcceptResult:
        """Record ``event``, queue ``mails`` and update what it touches, in one transaction.

        Returns ``accepted=False`` (and writes nothing) if the event id was seen
        before: the caller must then neither send nor queue anything for it.
        ``claim`` ``(instance, until)``: its mails are queued claimed by ``instance``
        (see :class:`cloud.send.Handoff`).
        """
        received = time.time() if now is None else now
        return await self._run(
            lambda tx: _accept(
                tx, event, tuple(mails), received, coalesce, trap, heartbeat_interval,
                track_device, claim,
            )
        )  # fmt: skip

    async def accept_many(
        self,
        items: Sequence[
            tuple[Event, Sequence[OutgoingMail], CoalescePlan | None, TrapPlan | None, float | None]
        ],
        *,
        now: float,
        claim: tuple[str, float] | None = None,
    ) -> list[AcceptResult]:
        """:meth:`accept` for each ``(event, mails, coalesce, trap, heartbeat_interval)``,
        in order, all in one transaction (group commit: one fsync for the lot)."""
        work = [(e, tuple(m), c, t, h) for e, m, c, t, h in items]
        return await self._run(
            lambda tx: [_accept(tx, e, m, now, c, t, h, True, claim) for e, m, c, t, h in work]
        )

    async def known_events(self, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` the store has seen (one indexed look-up for many)."""
        if not event_ids:
            return set()
        marks = ", ".join("?" for _ in event_ids)
        rows = await self._read(f"SELECT id FROM events WHERE id IN ({marks})", tuple(event_ids))
        return {str(r[0]) for r in rows}

    async def has_event(self, event_id: str, device: str | None = None) -> bool:
        """Whether the store holds event ``event_id`` (from ``device``, when given)."""
        rows = await self._read("SELECT device FROM events WHERE id = ?", (event_id,))
        return bool(rows) and (device is None or str(rows[0][0]) == device)

    async def event_owners(self, event_ids: Sequence[str]) -> dict[str, str]:
        """The device of each of ``event_ids`` the store holds (one look-up for many).

        Event ids are unique per device: the same id from another device is not a
        duplicate (the caller must not take it for one).
        """
        if not event_ids:
            return {}
        marks = ", ".join("?" for _ in event_ids)
        rows = await self._read(
            f"SELECT id, device FROM events WHERE id IN ({marks})", tuple(event_ids)
        )
        return {str(r[0]): str(r[1]) for r in rows}


# --- transactions (run on the store's thread) ----------------------------------------------


def _accept(
    tx: Tx,
    event: Event,
    mails: tuple[OutgoingMail, ...],
    now: float,
    coalesce: CoalescePlan | None,
    trap: TrapPlan | None,
    heartbeat_interval: float | None,
    track_device: bool,
    claim: tuple[str, float] | None = None,
) -> AcceptResult:
    inserted = tx.execute(
        "INSERT INTO events (id, device, site, kind, severity, ts, received_at, payload)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (
            event.id,
            event.device,
            event.site,
            event.kind,
            event.severity,
            event.ts.isoformat(),
            now,
            encode(event),
        ),
    )
    if inserted == 0:
        return AcceptResult(accepted=False)
    result = AcceptResult(accepted=True)
    if track_device:
        result.device = _seen(
            tx, event.device, event.site, now, heartbeat_interval,
            event.location.lat, event.location.lon,
        )  # fmt: skip
    if coalesce is not None and mails:
        result.folded = _coalesce(tx, event, coalesce, mails, now)
    if trap is not None:
        result.trap_reopened = _trap(tx, event, trap, mails, now)
    if not result.folded:
        notice = Notice(event.id, event.kind, event.severity, event.site, event.device)
        result.mails = _insert_mail_rows(tx, notice, mails, now, claim)
        result.queued = len(result.mails)
    return result
