"""The mail queue (tables ``mails`` and ``mail_bodies``): queueing, claims, sent and failed marks.

Each mail's rendered message is in ``mail_bodies``, written once when the mail is
queued and removed with it: a claim or a mark rewrites the small ``mails`` row only.

A mail leaves the ``pending`` state only when the SMTP server took it (``sent``)
or refused it for good (``failed``).  A sender *claims* a batch of due mails
for ``claim_timeout_s``; another instance takes them over only when the claim
has expired (the claimer died), or when the claimer restarts.  Marks are
committed before any other waiting call (see :class:`~cloud.store.base.StoreThread`);
the :class:`~cloud.store.journal.SentJournal` covers the moment before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from cloud.database import Tx
from cloud.store.base import StoreBase, _on
from edge.event import SEVERITY_RANK

MailStatus = Literal["pending", "sent", "failed"]


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A mail to queue: one recipient, the finished message bytes."""

    recipient: str
    message: bytes
    language: str = "ja"
    ready: bool = False
    """Checked where it was rendered: DATA carries it as it is (see
    :func:`cloud.mailer.ready_for_data`); not stored, the sender in memory only uses it."""


@dataclass(frozen=True, slots=True)
class Notice:
    """What a batch of mails is about (an event, or a notice the notifier made)."""

    id: str
    kind: str
    severity: str
    site: str
    device: str


@dataclass(frozen=True, slots=True)
class QueuedMail:
    """A row of the mail queue."""

    id: int
    event_id: str
    """The event's id, or the id of a notice the notifier made (summary, reminder, offline)."""
    kind: str
    site: str
    recipient: str
    status: MailStatus
    attempts: int
    next_attempt: float
    last_error: str | None
    created_at: float
    finished_at: float | None
    message: bytes
    ready: bool = False
    """``message`` is known to pass :func:`cloud.mailer.ready_for_data` (handed over in
    memory, see :class:`cloud.send.Handoff`); a row read from the store is checked when sent."""


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What ``satoyama-notifier status`` prints first."""

    events: int
    pending: int
    sent: int
    failed: int


_MAIL_COLUMNS: Final = (
    "m.id, m.event_id, m.kind, m.site, m.recipient, m.status, m.attempts, m.next_attempt, "
    "m.last_error, m.created_at, m.finished_at, COALESCE(b.message, m.message)"
)
#: A mail's row with its message, which lives in a table of its own (``mail_bodies``):
#: claiming a mail and marking it sent rewrite the small row, never the message.  A mail
#: that was finished before that table existed keeps its message in ``mails.message``
#: (empty for every other mail).
_MAIL_SELECT: Final = (
    f"SELECT {_MAIL_COLUMNS} FROM mails m LEFT JOIN mail_bodies b ON b.id = m.id"
)


class MailTables(StoreBase):
    """Queued mails: claimed, sent, retried, failed (and how many in each state)."""

    async def queue(
        self, notice: Notice, mails: Sequence[OutgoingMail], *, now: float | None = None
    ) -> int:
        """Queue mails of a notice made outside any timer (idempotent per recipient)."""
        at = time.time() if now is None else now
        return await self._run(lambda tx: _insert_mails(tx, notice, tuple(mails), at))

    async def claim_due(
        self, instance: str, *, now: float, lease_s: float, limit: int = 10
    ) -> list[QueuedMail]:
        """Take up to ``limit`` due pending mails for ``instance`` (alarms first, oldest first).

        Not synced to disk (``durable=False``): a claim is a lease, and one a power
        cut undoes is as if it had run out (or been given back at the restart).
        """
        return await self._run(
            lambda tx: _claim(tx, instance, now, lease_s, limit), durable=False
        )

    async def release_claims(self, instance: str | None) -> int:
        """Give back the claims of ``instance`` (all claims for ``None``), e.g. after a crash."""
        sql = "UPDATE mails SET claimed_by = NULL, claim_until = NULL WHERE claimed_by IS NOT NULL"
        args: tuple[object, ...] = ()
        if instance is not None:
            sql += " AND claimed_by = ?"
            args = (instance,)
        return await self._run(lambda tx: tx.execute(sql, args))

    async def due_mails(self, now: float | None = None, limit: int = 50) -> list[QueuedMail]:
        """Pending mails whose next attempt is due and that nobody holds, alarms first."""
        at = time.time() if now is None else now
        return await self._select(
            f"{_MAIL_SELECT} WHERE m.status = 'pending' AND m.next_attempt <= ?"
            " AND (m.claim_until IS NULL OR m.claim_until < ?)"
            " ORDER BY m.priority, m.next_attempt, m.id LIMIT ?",
            (at, at, limit),
        )

    async def next_due(self) -> float | None:
        """When the earliest pending mail is due or its claim runs out (Unix seconds)."""
        rows = await self._read(
            "SELECT MIN(CASE WHEN claim_until IS NOT NULL AND claim_until > next_attempt"
            " THEN claim_until ELSE next_attempt END) FROM mails WHERE status = 'pending'",
            (),
        )
        value = rows[0][0]
        return None if value is None else float(value)

    async def mark_sent(self, mail_id: int, *, now: float | None = None) -> None:
        """The SMTP server accepted the mail (committed before any other waiting call)."""
        await self._write(
            "UPDATE mails SET status = 'sent', attempts = attempts + 1, last_error = NULL,"
            " finished_at = ?, claimed_by = NULL, claim_until = NULL"
            " WHERE id = ? AND status = 'pending'",
            (time.time() if now is None else now, mail_id),
            urgent=True,
        )

    async def mark_sent_many(self, marks: Sequence[tuple[int, float]]) -> None:
        """Mails the SMTP server accepted, ``(mail id, when)``: one commit for them all.

        Group commit, and before any other waiting call: until it, a kill would
        mail them again after the restart.  Not synced to disk (``durable=False``):
        a kill of the notifier cannot undo it; a power cut can undo the last marks
        (those mails are sent again, as after a kill in the window), never a mail
        or an event, since each durable commit after them syncs them too.  See
        :meth:`sync`.
        """
        rows = [(now, mail_id) for mail_id, now in marks]
        if not rows:
            return
        await self._run(
            lambda tx: tx.executemany(
                "UPDATE mails SET status = 'sent', attempts = attempts + 1, last_error = NULL,"
                " finished_at = ?, claimed_by = NULL, claim_until = NULL"
                " WHERE id = ? AND status = 'pending'",
                rows,
            ),
            urgent=True,
            durable=False,
        )

    async def apply_sent_journal(self, entries: Sequence[tuple[int, str, str]]) -> int:
        """Mark sent the pending mails a :class:`SentJournal` names (at start, before
        sending anything); returns how many it marked.  A line whose mail is no longer
        that mail (event and recipient) is ignored."""
        if not entries:
            return 0
        now = time.time()

        def apply(tx: Tx) -> int:
            marked = 0
            for mail_id, event_id, recipient in entries:
                marked += tx.execute(
                    "UPDATE mails SET status = 'sent', attempts = attempts + 1,"
                    " last_error = NULL, finished_at = ?, claimed_by = NULL, claim_until = NULL"
                    " WHERE id = ? AND event_id = ? AND recipient = ? AND status = 'pending'",
                    (now, mail_id, event_id, recipient),
                )
            return marked

        return await self._run(apply)

    async def sync(self) -> None:
        """Make the marks of :meth:`mark_sent_many` durable now (the sender, when idle)."""
        if self._closed:
            return
        await _on(self._thread, self._db.sync)

    async def reschedule(self, mail_id: int, next_attempt: float, error: str) -> None:
        """A transient failure: try again at ``next_attempt`` (Unix seconds)."""
        await self._write(
            "UPDATE mails SET attempts = attempts + 1, next_attempt = ?, last_error = ?,"
            " claimed_by = NULL, claim_until = NULL WHERE id = ? AND status = 'pending'",
            (next_attempt, error, mail_id),
        )

    async def mark_failed(self, mail_id: int, error: str, *, now: float | None = None) -> None:
        """A permanent failure: the server refused this mail for good."""
        await self._write(
            "UPDATE mails SET status = 'failed', attempts = attempts + 1, last_error = ?,"
            " finished_at = ?, claimed_by = NULL, claim_until = NULL"
            " WHERE id = ? AND status = 'pending'",
            (error, time.time() if now is None else now, mail_id),
        )

    async def mails(
        self, status: MailStatus | None = None, *, event_id: str | None = None, limit: int = 1000
    ) -> list[QueuedMail]:
        """Mails by status and/or notice, oldest first (for ``status`` and tests)."""
        where: list[str] = []
        args: list[object] = []
        if status is not None:
            where.append("m.status = ?")
            args.append(status)
        if event_id is not None:
            where.append("m.event_id = ?")
            args.append(event_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return await self._select(
            f"{_MAIL_SELECT}{clause} ORDER BY m.id LIMIT ?", (*args, limit)
        )

    async def counts(self) -> StoreCounts:
        """How many events are remembered and how many mails are in each state."""
        rows = await self._read(
            "SELECT (SELECT COUNT(*) FROM events),"
            " COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) FROM mails",
            (),
        )
        events, pending, sent, failed = rows[0]
        return StoreCounts(
            events=int(events), pending=int(pending), sent=int(sent), failed=int(failed)
        )

    async def _select(self, sql: str, args: tuple[object, ...]) -> list[QueuedMail]:
        rows = await self._read(sql, args)
        return [_mail_row(r) for r in rows]


# --- transactions and rows (run on the store's thread) -------------------------------------


def _insert_mails(tx: Tx, notice: Notice, mails: tuple[OutgoingMail, ...], now: float) -> int:
    return len(_insert_mail_rows(tx, notice, mails, now))


def _insert_mail_rows(
    tx: Tx,
    notice: Notice,
    mails: tuple[OutgoingMail, ...],
    now: float,
    claim: tuple[str, float] | None = None,
) -> list[tuple[int, str]]:
    """Queue ``mails``: ``(mail id, recipient)`` of each new one, in id order.

    ``claim`` ``(instance, until)``: they are queued claimed by ``instance`` (the
    receiver hands them to its senders in memory, see :class:`cloud.send.Handoff`).
    """
    if not mails:
        return []
    priority = SEVERITY_RANK.get(notice.severity, len(SEVERITY_RANK))
    message: dict[str, bytes] = {}  # a recipient named twice: the first mail, as before
    for m in mails:
        message.setdefault(m.recipient, m.message)
    claimed_by, claim_until = claim if claim is not None else (None, None)
    args: list[object] = []
    for recipient in message:
        args += (notice.id, notice.kind, notice.site, notice.device, recipient, priority, now,
                 now, b"", claimed_by, claim_until)  # fmt: skip
    # One statement for the event's mails (was one each).  RETURNING: the new rows, none
    # where a recipient has the mail already; in no set order, hence the recipient.
    rows = tx.query(
        "INSERT INTO mails (event_id, kind, site, device, recipient, priority, next_attempt,"
        " created_at, message, claimed_by, claim_until) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(message))
        + " ON CONFLICT (event_id, recipient) DO NOTHING RETURNING id, recipient",
        args,
    )
    new = sorted((int(row[0]), str(row[1])) for row in rows)
    tx.executemany(
        "INSERT INTO mail_bodies (id, message) VALUES (?, ?)",
        [(mail_id, message[recipient]) for mail_id, recipient in new],
    )
    return new


def _claim(tx: Tx, instance: str, now: float, lease_s: float, limit: int) -> list[QueuedMail]:
    # The queue's order is the partial index mails_queue (pending mails only): the
    # walk stops at ``limit`` due mails instead of sorting every pending one.
    rows = tx.query(
        "SELECT id FROM mails WHERE status = 'pending' AND next_attempt <= ?"
        " AND (claim_until IS NULL OR claim_until < ?)"
        f" ORDER BY priority, next_attempt, id LIMIT ?{tx.skip_locked}",
        (now, now, limit),
    )
    ids = [int(r[0]) for r in rows]
    if not ids:
        return []
    marks = ", ".join("?" for _ in ids)
    # A small row each: the message (mail_bodies) is only read.
    tx.execute(
        f"UPDATE mails SET claimed_by = ?, claim_until = ? WHERE id IN ({marks})",
        (instance, now + lease_s, *ids),
    )
    got = tx.query(
        f"{_MAIL_SELECT} WHERE m.id IN ({marks}) ORDER BY m.priority, m.next_attempt, m.id",
        ids,
    )
    return [_mail_row(r) for r in got]


def _mail_row(r: tuple[Any, ...]) -> QueuedMail:
    return QueuedMail(
        id=int(r[0]),
        event_id=r[1],
        kind=r[2],
        site=r[3],
        recipient=r[4],
        status=r[5],
        attempts=int(r[6]),
        next_attempt=float(r[7]),
        last_error=r[8],
        created_at=float(r[9]),
        finished_at=None if r[10] is None else float(r[10]),
        message=bytes(r[11]),
    )


def _recipients_json(mails: Sequence[OutgoingMail]) -> str:
    return json.dumps([[m.recipient, m.language] for m in mails])


def _recipients(text: str) -> tuple[tuple[str, str], ...]:
    try:
        return tuple((str(a), str(lang)) for a, lang in json.loads(text or "[]"))
    except (ValueError, TypeError):
        return ()
