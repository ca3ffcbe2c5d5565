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
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

from cloud.config import StoreConfig, describe_dsn
from cloud.database import (
    POSTGRES_SCHEMA_VERSION,
    SQLITE_SCHEMA_VERSION,
    Database,
    PostgresDatabase,
    SqliteDatabase,
    Tx,
)
from cloud.errors import StoreError
from edge.event import SEVERITY_RANK, Event, encode

_T = TypeVar("_T")
log = logging.getLogger(__name__)

MailStatus = Literal["pending", "sent", "failed"]
SCHEMA_VERSION: Final = SQLITE_SCHEMA_VERSION
__all__ = ["POSTGRES_SCHEMA_VERSION", "SCHEMA_VERSION"]


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A mail to queue: one recipient, the finished message bytes."""

    recipient: str
    message: bytes
    language: str = "ja"


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


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What ``satoyama-notifier status`` prints first."""

    events: int
    pending: int
    sent: int
    failed: int


@dataclass(frozen=True, slots=True)
class CoalescePlan:
    """The event may fold into a burst with this key (see ``[[coalesce]]``)."""

    key: str
    quiet_s: float
    summary_every_s: float
    sensor: str


@dataclass(frozen=True, slots=True)
class TrapPlan:
    """``open``: a trap closed (reminders start); ``close``: it was reset (they stop)."""

    action: Literal["open", "close"]
    key: str
    sensor: str
    closed_since: float
    reminder_every_s: float


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """What the store knows of one device's connection."""

    device: str
    site: str
    state: Literal["online", "offline"]
    cause: str
    since: float
    reason: str
    last_seen: float
    hb_interval: float | None
    notified: bool
    transitions: int
    recipients: tuple[tuple[str, str], ...]
    lat: float | None
    lon: float | None


@dataclass(frozen=True, slots=True)
class EpisodeRow:
    """A burst of events folded into one mail, with what the summary will say."""

    id: str
    key: str
    open: bool
    site: str
    device: str
    kind: str
    started_at: float
    last_at: float
    quiet_s: float
    summary_every_s: float
    next_summary_at: float
    folded: int
    folded_total: int
    summaries: int
    stats: dict[str, Any]
    recipients: tuple[tuple[str, str], ...]
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class TrapRow:
    """A closed trap and its reminders."""

    key: str
    open: bool
    site: str
    device: str
    sensor: str
    trigger_id: str
    closed_since: float
    next_reminder_at: float
    reminders: int
    recipients: tuple[tuple[str, str], ...]
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class InstanceRow:
    id: str
    started_at: float
    last_seen: float
    host: str
    pid: int


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


@dataclass(slots=True)
class AcceptResult:
    """What :meth:`Store.accept` did."""

    accepted: bool
    """False: the event id was seen before; nothing was written."""
    folded: bool = False
    """The event joined a burst already mailed: recorded, counted for the summary, no mail."""
    queued: int = 0
    device: DeviceRow | None = None
    """The device's row after the event (for the back-online check)."""
    trap_reopened: bool = False

    def __bool__(self) -> bool:
        return self.accepted


_MAIL_COLUMNS: Final = (
    "id, event_id, kind, site, recipient, status, attempts, next_attempt, "
    "last_error, created_at, finished_at, message"
)
_DEVICE_COLUMNS: Final = (
    "device, site, state, cause, since, reason, last_seen, hb_interval, notified, "
    "transitions, recipients, lat, lon"
)
_EPISODE_COLUMNS: Final = (
    "id, key, open, site, device, kind, started_at, last_at, quiet_s, summary_every_s, "
    "next_summary_at, folded, folded_total, summaries, stats, recipients, lat, lon"
)
_TRAP_COLUMNS: Final = (
    "key, open, site, device, sensor, trigger_id, closed_since, next_reminder_at, reminders, "
    "recipients, lat, lon"
)


class SentJournal:
    """An append-only file of the mails the SMTP server accepted, written the moment
    its reply is read: the notifier's record of "sent" that no queue can delay.

    The store's own mark (:meth:`Store.mark_sent_many`) follows a little later, on
    the store's thread, possibly behind a commit of new events; a kill in between
    would mail it again after the restart.  One ``write(2)`` to this file closes
    that gap within the same callback that read the server's ``250``: a SIGKILL
    cannot undo it (the kernel has it), and at the next start
    :meth:`Store.apply_sent_journal` marks every mail it names sent before
    anything is sent.  Not synced to disk: a power cut can lose its last lines, and
    those mails are sent again, as before.  Emptied once the store's marks have
    caught up.  SQLite only (the file lies beside the store); with PostgreSQL
    several instances share the queue and the marks stay the store's alone.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.written = 0
        """Lines written since the last :meth:`clear`."""
        self.unmarked = 0
        """Lines whose mail the store has not yet marked sent (see :meth:`marked`)."""

    @classmethod
    def beside(cls, store: Path) -> SentJournal:
        return cls(store.with_name(store.name + "-sent"))

    def read(self) -> list[tuple[int, str, str]]:
        """``(mail id, event id, recipient)`` of every whole line (a torn last one is not)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        entries = []
        for line in data.split(b"\n")[:-1]:
            try:
                mail_id, event_id, recipient = json.loads(line)
                entries.append((int(mail_id), str(event_id), str(recipient)))
            except (ValueError, TypeError):
                continue  # not ours, or torn: that mail is sent again, never lost
        return entries

    def record(self, mail_id: int, event_id: str, recipient: str) -> None:
        """One mail the server accepted (a single ``write(2)``; errors are logged only)."""
        line = json.dumps([mail_id, event_id, recipient], ensure_ascii=False) + "\n"
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._fd, line.encode("utf-8", "surrogateescape"))
            self.written += 1
            self.unmarked += 1
        except OSError as exc:
            log.warning("cannot write the sent journal %s (%s): the store's mark follows",
                        self.path, exc)  # fmt: skip

    def marked(self, count: int) -> None:
        """The store has committed the marks of ``count`` mails recorded here."""
        self.unmarked = max(0, self.unmarked - count)

    def clear(self) -> None:
        """Empty the file (every mail in it is marked sent in the store)."""
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.ftruncate(self._fd, 0)
            self.written = self.unmarked = 0
        except OSError as exc:
            log.warning("cannot empty the sent journal %s: %s", self.path, exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class StoreThread:
    """The store's one thread: calls run one at a time, in order, the urgent ones first.

    Urgent are the sender's marks (a mail the SMTP server has just taken is
    "sent"): until that commit, a kill would mail it again after the restart,
    so it must not queue behind the receiver's and the timekeeper's work.
    """

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[
            tuple[int, int, Callable[[], Any] | None, Future[Any] | None]
        ] = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._work, name="notifier-store", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], _T], *, urgent: bool = False) -> Future[_T]:
        future: Future[_T] = Future()
        self._queue.put((0 if urgent else 1, next(self._order), fn, future))
        return future

    def shutdown(self) -> None:
        """End the thread once the calls already submitted have run."""
        self._queue.put((2, next(self._order), None, None))

    def _work(self) -> None:
        while True:
            _, _, fn, future = self._queue.get()
            if fn is None or future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)


async def _on(thread: StoreThread, fn: Callable[[], _T], *, urgent: bool = False) -> _T:
    return await asyncio.wrap_future(thread.submit(fn, urgent=urgent))


class Store:
    """The store; open with ``await Store.open(config)`` (an async context manager)."""

    def __init__(
        self, db: Database, thread: StoreThread, journal: SentJournal | None = None
    ) -> None:
        self._db = db
        self._thread = thread
        self._closed = False
        self.where = db.where
        self.shared = db.shared
        self.journal = journal
        """Beside an SQLite store: the mails accepted but maybe not yet marked sent."""

    # --- life cycle ---------------------------------------------------------

    @classmethod
    async def open(cls, where: StoreConfig | str | Path, *, readonly: bool = False) -> Store:
        """Open (creating and migrating unless ``readonly``) the configured store.

        ``where`` is the ``[store]`` configuration, or the path of an SQLite file.
        """
        thread = StoreThread()
        connect: Callable[[], Database]
        journal: SentJournal | None = None
        if isinstance(where, StoreConfig) and where.backend == "postgresql":
            assert where.dsn is not None  # checked with the configuration
            dsn, label = where.dsn.reveal(), describe_dsn(where.dsn)

            def connect() -> Database:
                return PostgresDatabase.connect(dsn, label, readonly=readonly)

        else:
            path = Path(where.path or "" if isinstance(where, StoreConfig) else where)
            journal = None if readonly else SentJournal.beside(path)

            def connect() -> Database:
                return SqliteDatabase.connect(path, readonly=readonly)

        try:
            db = await _on(thread, connect)
        except BaseException:
            thread.shutdown()
            raise
        return cls(db, thread, journal)

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.journal is not None:
            self.journal.close()
        try:
            await _on(self._thread, self._db.close)
        finally:
            self._thread.shutdown()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- events ---------------------------------------------------------------

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
    ) -> AcceptResult:
        """Record ``event``, queue ``mails`` and update what it touches, in one transaction.

        Returns ``accepted=False`` (and writes nothing) if the event id was seen
        before: the caller must then neither send nor queue anything for it.
        """
        received = time.time() if now is None else now
        return await self._run(
            lambda tx: _accept(
                tx, event, tuple(mails), received, coalesce, trap, heartbeat_interval, track_device
            )
        )

    async def accept_many(
        self,
        items: Sequence[
            tuple[Event, Sequence[OutgoingMail], CoalescePlan | None, TrapPlan | None, float | None]
        ],
        *,
        now: float,
    ) -> list[AcceptResult]:
        """:meth:`accept` for each ``(event, mails, coalesce, trap, heartbeat_interval)``,
        in order, all in one transaction (group commit: one fsync for the lot)."""
        work = [(e, tuple(m), c, t, h) for e, m, c, t, h in items]
        return await self._run(
            lambda tx: [_accept(tx, e, m, now, c, t, h, True) for e, m, c, t, h in work]
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

    async def queue(
        self, notice: Notice, mails: Sequence[OutgoingMail], *, now: float | None = None
    ) -> int:
        """Queue mails of a notice made outside any timer (idempotent per recipient)."""
        at = time.time() if now is None else now
        return await self._run(lambda tx: _insert_mails(tx, notice, tuple(mails), at))

    # --- mail queue -------------------------------------------------------------

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
            f"SELECT {_MAIL_COLUMNS} FROM mails WHERE status = 'pending' AND next_attempt <= ?"
            " AND (claim_until IS NULL OR claim_until < ?)"
            " ORDER BY priority, next_attempt, id LIMIT ?",
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
            where.append("status = ?")
            args.append(status)
        if event_id is not None:
            where.append("event_id = ?")
            args.append(event_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return await self._select(
            f"SELECT {_MAIL_COLUMNS} FROM mails{clause} ORDER BY id LIMIT ?", (*args, limit)
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

    # --- devices ----------------------------------------------------------------

    async def device(self, device: str) -> DeviceRow | None:
        rows = await self._read(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device = ?", (device,)
        )
        return _device_row(rows[0]) if rows else None

    async def devices(self) -> list[DeviceRow]:
        rows = await self._read(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY device", ())
        return [_device_row(r) for r in rows]

    async def record_status(self, device: str, state: str, reason: str, *, now: float) -> DeviceRow:
        """A status message: an ``offline`` one starts the grace period (no mail yet).

        An ``online`` one only records that the device is seen; bringing a
        device back is :meth:`device_back_online` (it needs the mails).
        """
        return await self._run(lambda tx: _record_status(tx, device, state, reason, now))

    async def device_offline_notified(
        self,
        row: DeviceRow,
        notice: Notice,
        mails: Sequence[OutgoingMail],
        *,
        now: float,
        by_heartbeat: bool,
    ) -> bool:
        """Compare-and-set: the device in ``row``'s state goes offline-notified; queue ``mails``.

        ``by_heartbeat``: ``row`` is online and silent past its deadline.
        Returns False if the row changed meanwhile (another instance did it,
        or the device spoke): nothing is written.
        """
        return await self._run(
            lambda tx: _device_offline(tx, row, notice, tuple(mails), now, by_heartbeat)
        )

    async def device_back_online(
        self, row: DeviceRow, notice: Notice, mails: Sequence[OutgoingMail], *, now: float
    ) -> bool:
        """Compare-and-set: the offline device in ``row`` is online again; queue ``mails``."""
        return await self._run(lambda tx: _device_online(tx, row, notice, tuple(mails), now))

    async def overdue_devices(
        self, *, now: float, grace_s: float, heartbeat_timeout_s: float
    ) -> list[tuple[DeviceRow, bool]]:
        """Devices to mail about now: (row, by_heartbeat).

        Offline by their status for ``grace_s`` without a mail yet; or online
        with no message for ``max(heartbeat_timeout_s, 2 x interval)``.
        """
        rows = await self._read(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE"
            " (state = 'offline' AND notified = 0 AND since + ? <= ?)"
            " OR (state = 'online' AND hb_interval IS NOT NULL AND last_seen +"
            " (CASE WHEN 2 * hb_interval > ? THEN 2 * hb_interval ELSE ? END) <= ?)",
            (grace_s, now, heartbeat_timeout_s, heartbeat_timeout_s, now),
        )
        return [(r, r.state == "online") for r in map(_device_row, rows)]

    async def returned_devices(self) -> list[DeviceRow]:
        """Devices offline by a missed heartbeat that have spoken since (crash recovery)."""
        rows = await self._read(
            f"SELECT {_DEVICE_COLUMNS} FROM devices"
            " WHERE state = 'offline' AND cause = 'heartbeat' AND last_seen > since",
            (),
        )
        return [_device_row(r) for r in rows]

    # --- bursts and traps ------------------------------------------------------------

    async def due_episodes(self, now: float) -> list[EpisodeRow]:
        """Bursts whose summary is due: ended (quiet), or open past their summary time."""
        rows = await self._read(
            f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE (open = 0)"
            " OR (last_at + quiet_s <= ?) OR (folded > 0 AND next_summary_at <= ?)",
            (now, now),
        )
        return [_episode_row(r) for r in rows]

    async def episode_summarised(
        self,
        row: EpisodeRow,
        notice: Notice | None,
        mails: Sequence[OutgoingMail],
        *,
        now: float,
        close: bool,
    ) -> bool:
        """Compare-and-set on ``row``: queue the summary, and end the burst if ``close``."""
        return await self._run(
            lambda tx: _episode_summarised(tx, row, notice, tuple(mails), now, close)
        )

    async def episodes(self) -> list[EpisodeRow]:
        rows = await self._read(f"SELECT {_EPISODE_COLUMNS} FROM episodes ORDER BY started_at", ())
        return [_episode_row(r) for r in rows]

    async def due_traps(self, now: float) -> list[TrapRow]:
        rows = await self._read(
            f"SELECT {_TRAP_COLUMNS} FROM traps WHERE open = 1 AND next_reminder_at <= ?", (now,)
        )
        return [_trap_row(r) for r in rows]

    async def open_traps(self) -> list[TrapRow]:
        rows = await self._read(
            f"SELECT {_TRAP_COLUMNS} FROM traps WHERE open = 1 ORDER BY closed_since", ()
        )
        return [_trap_row(r) for r in rows]

    async def trap_reminded(
        self,
        row: TrapRow,
        notice: Notice,
        mails: Sequence[OutgoingMail],
        *,
        now: float,
        every_s: float,
    ) -> bool:
        """Compare-and-set on ``row``: queue reminder number ``row.reminders + 1``."""
        return await self._run(
            lambda tx: _trap_reminded(tx, row, notice, tuple(mails), now, every_s)
        )

    async def next_timer(self, *, grace_s: float, heartbeat_timeout_s: float) -> float | None:
        """When the earliest summary, reminder or offline deadline falls (Unix seconds)."""
        rows = await self._read(
            "SELECT MIN(t) FROM ("
            " SELECT CASE WHEN open = 0 THEN 0"
            "  WHEN folded > 0 AND next_summary_at < last_at + quiet_s THEN next_summary_at"
            "  ELSE last_at + quiet_s END AS t FROM episodes"
            " UNION ALL SELECT next_reminder_at FROM traps WHERE open = 1"
            " UNION ALL SELECT since + ? FROM devices WHERE state = 'offline' AND notified = 0"
            " UNION ALL SELECT last_seen + (CASE WHEN 2 * hb_interval > ? THEN 2 * hb_interval"
            "  ELSE ? END) FROM devices WHERE state = 'online' AND hb_interval IS NOT NULL"
            ") AS timers",
            (grace_s, heartbeat_timeout_s, heartbeat_timeout_s),
        )
        value = rows[0][0]
        return None if value is None else float(value)

    # --- telemetry ----------------------------------------------------------------------

    async def add_telemetry(
        self, device: str, site: str, points: Sequence[tuple[str, float, float]], *, now: float
    ) -> int:
        """Keep readings ``(series, ts, value)`` (duplicates ignored); the device is seen."""
        return await self._run(lambda tx: _add_telemetry(tx, device, site, tuple(points), now))

    async def series(
        self, device: str, name: str, since: float, until: float
    ) -> list[tuple[float, float]]:
        rows = await self._read(
            "SELECT ts, value FROM telemetry WHERE device = ? AND series = ?"
            " AND ts >= ? AND ts <= ? ORDER BY ts",
            (device, name, since, until),
        )
        return [(float(t), float(v)) for t, v in rows]

    # --- instances -----------------------------------------------------------------------

    async def instance_alive(
        self, instance: str, *, now: float, host: str, pid: int, starting: bool = False
    ) -> None:
        """Record that ``instance`` is running (for ``status`` and session takeover)."""
        await self._run(lambda tx: _instance_alive(tx, instance, now, host, pid, starting))

    async def instances(self) -> list[InstanceRow]:
        rows = await self._read(
            "SELECT id, started_at, last_seen, host, pid FROM instances ORDER BY id", ()
        )
        return [InstanceRow(r[0], float(r[1]), float(r[2]), r[3], int(r[4])) for r in rows]

    # --- housekeeping ----------------------------------------------------------------------

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

    # --- plumbing ---------------------------------------------------------------------

    async def _run(
        self,
        work: Callable[[Tx], _T],
        *,
        write: bool = True,
        urgent: bool = False,
        durable: bool = True,
    ) -> _T:
        if self._closed:
            raise StoreError(f"store {self.where} is closed")
        return await _on(
            self._thread, lambda: self._db.run(work, write=write, durable=durable), urgent=urgent
        )

    async def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return await self._run(lambda tx: tx.query(sql, args), write=False)

    async def _write(self, sql: str, args: tuple[object, ...], *, urgent: bool = False) -> None:
        await self._run(lambda tx: tx.execute(sql, args), urgent=urgent)

    async def _select(self, sql: str, args: tuple[object, ...]) -> list[QueuedMail]:
        rows = await self._read(sql, args)
        return [_mail_row(r) for r in rows]


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
        result.queued = _insert_mails(tx, notice, mails, now)
    return result


def _insert_mails(tx: Tx, notice: Notice, mails: tuple[OutgoingMail, ...], now: float) -> int:
    if not mails:
        return 0
    priority = SEVERITY_RANK.get(notice.severity, len(SEVERITY_RANK))
    before = tx.query("SELECT COUNT(*) FROM mails WHERE event_id = ?", (notice.id,))[0][0]
    tx.executemany(
        "INSERT INTO mails (event_id, kind, site, device, recipient, priority, next_attempt,"
        " created_at, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (event_id, recipient) DO NOTHING",
        [
            (notice.id, notice.kind, notice.site, notice.device, m.recipient, priority, now, now,
             m.message)
            for m in mails
        ],
    )  # fmt: skip
    after = tx.query("SELECT COUNT(*) FROM mails WHERE event_id = ?", (notice.id,))[0][0]
    return int(after) - int(before)


def _seen(
    tx: Tx,
    device: str,
    site: str,
    now: float,
    hb_interval: float | None,
    lat: float | None,
    lon: float | None,
) -> DeviceRow:
    """A message came from ``device``: it is alive (a state change is the caller's)."""
    rows = tx.query(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device = ?{tx.for_update}", (device,)
    )
    if not rows:
        tx.execute(
            "INSERT INTO devices (device, site, state, cause, since, last_seen, hb_interval,"
            " lat, lon) VALUES (?, ?, 'online', 'event', ?, ?, ?, ?, ?)",
            (device, site, now, now, hb_interval, lat, lon),
        )
    else:
        row = _device_row(rows[0])
        tx.execute(
            "UPDATE devices SET site = ?, last_seen = ?, hb_interval = ?, lat = ?, lon = ?"
            " WHERE device = ?",
            (
                site or row.site,
                max(now, row.last_seen),
                hb_interval if hb_interval is not None else row.hb_interval,
                lat if lat is not None else row.lat,
                lon if lon is not None else row.lon,
                device,
            ),
        )
    rows = tx.query(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device = ?", (device,))
    return _device_row(rows[0])


def _record_status(tx: Tx, device: str, state: str, reason: str, now: float) -> DeviceRow:
    rows = tx.query(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device = ?{tx.for_update}", (device,)
    )
    if not rows:
        tx.execute(
            "INSERT INTO devices (device, site, state, cause, since, reason, last_seen,"
            " transitions) VALUES (?, '', ?, 'status', ?, ?, ?, ?)",
            (device, state, now, reason, now, 1 if state == "offline" else 0),
        )
    else:
        row = _device_row(rows[0])
        if state == "offline" and row.state == "online":
            tx.execute(
                "UPDATE devices SET state = 'offline', cause = 'status', since = ?, reason = ?,"
                " notified = 0, transitions = transitions + 1 WHERE device = ?",
                (now, reason, device),
            )
        elif state == "offline":
            # Already offline (a missed heartbeat said so first): the broker's word is
            # better, but one offline mail is enough.
            tx.execute(
                "UPDATE devices SET cause = 'status', reason = ? WHERE device = ?",
                (reason, device),
            )
        else:
            tx.execute(
                "UPDATE devices SET last_seen = ? WHERE device = ? AND last_seen < ?",
                (now, device, now),
            )
    rows = tx.query(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device = ?", (device,))
    return _device_row(rows[0])


def _device_offline(
    tx: Tx,
    row: DeviceRow,
    notice: Notice,
    mails: tuple[OutgoingMail, ...],
    now: float,
    by_heartbeat: bool,
) -> bool:
    recipients = _recipients_json(mails)
    if by_heartbeat:
        changed = tx.execute(
            "UPDATE devices SET state = 'offline', cause = 'heartbeat', since = ?,"
            " reason = 'no heartbeat', notified = 1, transitions = transitions + 1,"
            " recipients = ? WHERE device = ? AND state = 'online' AND last_seen = ?"
            " AND transitions = ?",
            (now, recipients, row.device, row.last_seen, row.transitions),
        )
    else:
        changed = tx.execute(
            "UPDATE devices SET notified = 1, recipients = ?"
            " WHERE device = ? AND state = 'offline' AND notified = 0 AND transitions = ?",
            (recipients, row.device, row.transitions),
        )
    if changed != 1:
        return False
    _insert_mails(tx, notice, mails, now)
    return True


def _device_online(
    tx: Tx, row: DeviceRow, notice: Notice, mails: tuple[OutgoingMail, ...], now: float
) -> bool:
    changed = tx.execute(
        "UPDATE devices SET state = 'online', cause = 'status', since = ?, reason = '',"
        " notified = 0, transitions = transitions + 1, recipients = '[]', last_seen = ?"
        " WHERE device = ? AND state = 'offline' AND transitions = ?",
        (now, max(now, row.last_seen), row.device, row.transitions),
    )
    if changed != 1:
        return False
    _insert_mails(tx, notice, mails, now)
    return True


def _coalesce(
    tx: Tx, event: Event, plan: CoalescePlan, mails: tuple[OutgoingMail, ...], now: float
) -> bool:
    """Fold the event into the open burst of its key, or open one; True if folded."""
    rows = tx.query(
        f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE key = ? AND open = 1{tx.for_update}",
        (plan.key,),
    )
    if rows:
        episode = _episode_row(rows[0])
        if now < episode.last_at + episode.quiet_s:
            stats = _fold_stats(episode.stats, event, plan.sensor, now)
            tx.execute(
                "UPDATE episodes SET last_at = ?, folded = folded + 1,"
                " folded_total = folded_total + 1, stats = ? WHERE id = ?",
                (max(now, episode.last_at), json.dumps(stats, ensure_ascii=False), episode.id),
            )
            return True
        # The burst is over (its summary, if any, is the timers' job): start a new one.
        tx.execute("UPDATE episodes SET open = 0 WHERE id = ?", (episode.id,))
    tx.execute(
        "INSERT INTO episodes (id, key, open, site, device, kind, started_at, last_at, quiet_s,"
        " summary_every_s, next_summary_at, stats, recipients, lat, lon)"
        " VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.id, plan.key, event.site, event.device, event.kind, now, now, plan.quiet_s,
            plan.summary_every_s, now + plan.summary_every_s,
            json.dumps(_first_stats(event, plan.sensor, now), ensure_ascii=False),
            _recipients_json(mails), event.location.lat, event.location.lon,
        ),
    )  # fmt: skip
    return False


def _first_stats(event: Event, sensor: str, now: float) -> dict[str, Any]:
    return {
        "first": {"kind": event.kind, "sensor": sensor, "at": now},
        "severity": event.severity,
        "by_sensor": {},
        "by_kind": {},
        "sounded": 0,
        "from": None,
        "to": None,
        "last_kind": event.kind,
        "last_data": _small(event.data),
    }


def _fold_stats(stats: dict[str, Any], event: Event, sensor: str, now: float) -> dict[str, Any]:
    """What a summary says, updated with one more folded event."""
    out = dict(stats)
    by_sensor = dict(out.get("by_sensor") or {})
    by_sensor[sensor] = int(by_sensor.get(sensor, 0)) + 1
    by_kind = dict(out.get("by_kind") or {})
    by_kind[event.kind] = int(by_kind.get(event.kind, 0)) + 1
    out["by_sensor"], out["by_kind"] = by_sensor, by_kind
    if event.data.get("deterrent") == "sounded":
        out["sounded"] = int(out.get("sounded") or 0) + 1
    out["from"] = now if out.get("from") is None else out["from"]
    out["to"] = now
    out["last_kind"] = event.kind
    out["last_data"] = _small(event.data)
    return out


def _small(data: dict[str, Any]) -> dict[str, Any]:
    """A device's data, JSON-safe and bounded, for a summary's "last seen" line."""
    out: dict[str, Any] = {}
    for key, value in list(data.items())[:20]:
        if isinstance(value, str | int | float | bool) or value is None:
            out[str(key)[:64]] = value if not isinstance(value, str) else value[:300]
    return out


def _episode_summarised(
    tx: Tx,
    row: EpisodeRow,
    notice: Notice | None,
    mails: tuple[OutgoingMail, ...],
    now: float,
    close: bool,
) -> bool:
    guard = " AND folded = ? AND summaries = ? AND last_at = ? AND open = ?"
    guard_args = (row.folded, row.summaries, row.last_at, 1 if row.open else 0)
    if close:
        changed = tx.execute(f"DELETE FROM episodes WHERE id = ?{guard}", (row.id, *guard_args))
    else:
        stats = dict(row.stats, by_sensor={}, by_kind={}, sounded=0, **{"from": None, "to": None})
        changed = tx.execute(
            "UPDATE episodes SET folded = 0, summaries = summaries + 1, next_summary_at = ?,"
            f" stats = ? WHERE id = ?{guard}",
            (
                now + row.summary_every_s,
                json.dumps(stats, ensure_ascii=False),
                row.id,
                *guard_args,
            ),
        )
    if changed != 1:
        return False
    if notice is not None:
        _insert_mails(tx, notice, mails, now)
    return True


def _trap(
    tx: Tx, event: Event, plan: TrapPlan, mails: tuple[OutgoingMail, ...], now: float
) -> bool:
    rows = tx.query(f"SELECT {_TRAP_COLUMNS} FROM traps WHERE key = ?{tx.for_update}", (plan.key,))
    current = _trap_row(rows[0]) if rows else None
    if plan.action == "close":
        if current is not None and current.open:
            tx.execute("UPDATE traps SET open = 0 WHERE key = ?", (plan.key,))
        return False
    if current is not None and current.open:
        return False  # closed already: reminders go on as they were
    values = (
        event.site, event.device, plan.sensor, event.id, plan.closed_since,
        now + plan.reminder_every_s, _recipients_json(mails), event.location.lat,
        event.location.lon,
    )  # fmt: skip
    if current is None:
        tx.execute(
            "INSERT INTO traps (open, site, device, sensor, trigger_id, closed_since,"
            " next_reminder_at, recipients, lat, lon, key) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, plan.key),
        )
    else:
        tx.execute(
            "UPDATE traps SET open = 1, site = ?, device = ?, sensor = ?, trigger_id = ?,"
            " closed_since = ?, next_reminder_at = ?, reminders = 0, recipients = ?, lat = ?,"
            " lon = ? WHERE key = ?",
            (*values, plan.key),
        )
    return True


def _trap_reminded(
    tx: Tx,
    row: TrapRow,
    notice: Notice,
    mails: tuple[OutgoingMail, ...],
    now: float,
    every_s: float,
) -> bool:
    # After a long outage, one reminder now and the next a full interval later,
    # rather than a burst of the reminders that were missed.
    following = max(row.next_reminder_at + every_s, now + every_s / 2)
    changed = tx.execute(
        "UPDATE traps SET reminders = reminders + 1, next_reminder_at = ?"
        " WHERE key = ? AND open = 1 AND trigger_id = ? AND reminders = ?",
        (following, row.key, row.trigger_id, row.reminders),
    )
    if changed != 1:
        return False
    _insert_mails(tx, notice, mails, now)
    return True


def _claim(tx: Tx, instance: str, now: float, lease_s: float, limit: int) -> list[QueuedMail]:
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
    tx.execute(
        f"UPDATE mails SET claimed_by = ?, claim_until = ? WHERE id IN ({marks})",
        (instance, now + lease_s, *ids),
    )
    got = tx.query(
        f"SELECT {_MAIL_COLUMNS} FROM mails WHERE id IN ({marks})"
        " ORDER BY priority, next_attempt, id",
        ids,
    )
    return [_mail_row(r) for r in got]


def _add_telemetry(
    tx: Tx, device: str, site: str, points: tuple[tuple[str, float, float], ...], now: float
) -> int:
    before = tx.query("SELECT COUNT(*) FROM telemetry WHERE device = ?", (device,))[0][0]
    tx.executemany(
        "INSERT INTO telemetry (device, series, ts, value) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (device, series, ts) DO NOTHING",
        [(device, name, ts, value) for name, ts, value in points],
    )
    after = tx.query("SELECT COUNT(*) FROM telemetry WHERE device = ?", (device,))[0][0]
    _seen(tx, device, site, now, None, None, None)
    return int(after) - int(before)


def _instance_alive(tx: Tx, instance: str, now: float, host: str, pid: int, starting: bool) -> None:
    changed = tx.execute(
        "UPDATE instances SET last_seen = ?, host = ?, pid = ?"
        + (", started_at = ?" if starting else "")
        + " WHERE id = ?",
        (now, host, pid, now, instance) if starting else (now, host, pid, instance),
    )
    if changed == 0:
        tx.execute(
            "INSERT INTO instances (id, started_at, last_seen, host, pid) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (instance, now, now, host, pid),
        )


# --- rows ------------------------------------------------------------------------------------


def _recipients_json(mails: Sequence[OutgoingMail]) -> str:
    return json.dumps([[m.recipient, m.language] for m in mails])


def _recipients(text: str) -> tuple[tuple[str, str], ...]:
    try:
        return tuple((str(a), str(lang)) for a, lang in json.loads(text or "[]"))
    except (ValueError, TypeError):
        return ()


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


def _device_row(r: tuple[Any, ...]) -> DeviceRow:
    return DeviceRow(
        device=r[0],
        site=r[1],
        state=r[2],
        cause=r[3],
        since=float(r[4]),
        reason=r[5],
        last_seen=float(r[6]),
        hb_interval=None if r[7] is None else float(r[7]),
        notified=bool(r[8]),
        transitions=int(r[9]),
        recipients=_recipients(r[10]),
        lat=None if r[11] is None else float(r[11]),
        lon=None if r[12] is None else float(r[12]),
    )


def _episode_row(r: tuple[Any, ...]) -> EpisodeRow:
    try:
        stats = json.loads(r[14] or "{}")
    except ValueError:
        stats = {}
    return EpisodeRow(
        id=r[0], key=r[1], open=bool(r[2]), site=r[3], device=r[4], kind=r[5],
        started_at=float(r[6]), last_at=float(r[7]), quiet_s=float(r[8]),
        summary_every_s=float(r[9]), next_summary_at=float(r[10]), folded=int(r[11]),
        folded_total=int(r[12]), summaries=int(r[13]), stats=stats,
        recipients=_recipients(r[15]), lat=float(r[16]), lon=float(r[17]),
    )  # fmt: skip


def _trap_row(r: tuple[Any, ...]) -> TrapRow:
    return TrapRow(
        key=r[0], open=bool(r[1]), site=r[2], device=r[3], sensor=r[4], trigger_id=r[5],
        closed_since=float(r[6]), next_reminder_at=float(r[7]), reminders=int(r[8]),
        recipients=_recipients(r[9]), lat=float(r[10]), lon=float(r[11]),
    )  # fmt: skip
