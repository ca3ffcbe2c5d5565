"""The notifier's durable memory: events seen and mails still to send (SQLite).

Two promises rest on this file:

* **Each event is mailed once.**  Devices deliver at least once; the
  ``events`` table remembers every event id, across restarts, and
  :meth:`Store.accept` refuses an id it has seen.
* **Nothing accepted is lost.**  An event and all of its mails are written in
  one transaction (WAL, ``synchronous=FULL``) *before* the MQTT message is
  acknowledged; a mail leaves the ``pending`` state only when the SMTP server
  took it (``sent``) or refused it for good (``failed``).

One connection, used only from one dedicated thread: every blocking SQLite
call runs on that single-thread executor, so the event loop never waits on
``fsync`` and no two calls interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

from cloud.errors import StoreError
from edge.event import SEVERITY_RANK, Event, encode

_T = TypeVar("_T")

MailStatus = Literal["pending", "sent", "failed"]

#: Numbered schema migrations; ``PRAGMA user_version`` is how many are applied.
#: Append, never edit: a store written by an older notifier must still open.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE events (
        id          TEXT PRIMARY KEY,     -- the envelope's id: what de-duplicates
        device      TEXT NOT NULL,
        site        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        severity    TEXT NOT NULL,
        ts          TEXT NOT NULL,        -- device time, RFC 3339
        received_at REAL NOT NULL,        -- notifier time, Unix seconds
        payload     BLOB NOT NULL         -- the envelope as received (re-encoded)
    );
    CREATE INDEX events_received_at ON events (received_at);
    CREATE TABLE mails (
        id           INTEGER PRIMARY KEY,
        event_id     TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
        recipient    TEXT NOT NULL,
        priority     INTEGER NOT NULL,    -- edge.event.SEVERITY_RANK: alarms first
        status       TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sent', 'failed')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,       -- Unix seconds
        last_error   TEXT,
        created_at   REAL NOT NULL,
        finished_at  REAL,                -- when it became sent or failed
        message      BLOB NOT NULL,       -- the rendered RFC 5322 message
        UNIQUE (event_id, recipient)
    );
    CREATE INDEX mails_due ON mails (status, next_attempt);
    """,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A mail to queue with its event: one recipient, the finished message bytes."""

    recipient: str
    message: bytes


@dataclass(frozen=True, slots=True)
class QueuedMail:
    """A row of the mail queue."""

    id: int
    event_id: str
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


_MAIL_COLUMNS = (
    "m.id, m.event_id, e.kind, e.site, m.recipient, m.status, m.attempts, m.next_attempt, "
    "m.last_error, m.created_at, m.finished_at, m.message"
)


class Store:
    """The SQLite store; open with ``await Store.open(path)`` (an async context manager)."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, path: Path) -> None:
        self._conn = conn
        self._executor = executor
        self.path = path
        self._closed = False

    # --- life cycle ---------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, *, readonly: bool = False) -> Store:
        """Open (creating and migrating unless ``readonly``) and integrity-check the store."""
        path = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifier-store")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(
                executor, _connect, path, readonly
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, executor, path)

    async def close(self) -> None:
        """Close the connection (idempotent); a WAL checkpoint happens on close."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- writes ---------------------------------------------------------------

    async def accept(
        self, event: Event, mails: Sequence[OutgoingMail], *, now: float | None = None
    ) -> bool:
        """Record ``event`` and queue ``mails`` in one transaction.

        Returns ``False`` (and writes nothing) if the event id was seen before:
        the caller must then neither send nor queue anything for it.
        """
        received = time.time() if now is None else now
        return await self._run(self._accept, event, tuple(mails), received)

    def _accept(self, event: Event, mails: tuple[OutgoingMail, ...], now: float) -> bool:
        with self._transaction():
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO events"
                " (id, device, site, kind, severity, ts, received_at, payload)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            if cur.rowcount == 0:
                return False
            priority = SEVERITY_RANK.get(event.severity, len(SEVERITY_RANK))
            self._conn.executemany(
                "INSERT INTO mails"
                " (event_id, recipient, priority, next_attempt, created_at, message)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(event.id, m.recipient, priority, now, now, m.message) for m in mails],
            )
        return True

    async def mark_sent(self, mail_id: int, *, now: float | None = None) -> None:
        """The SMTP server accepted the mail."""
        await self._update(
            "UPDATE mails SET status = 'sent', attempts = attempts + 1, last_error = NULL,"
            " finished_at = ? WHERE id = ? AND status = 'pending'",
            (time.time() if now is None else now, mail_id),
        )

    async def reschedule(self, mail_id: int, next_attempt: float, error: str) -> None:
        """A transient failure: try again at ``next_attempt`` (Unix seconds)."""
        await self._update(
            "UPDATE mails SET attempts = attempts + 1, next_attempt = ?, last_error = ?"
            " WHERE id = ? AND status = 'pending'",
            (next_attempt, error, mail_id),
        )

    async def mark_failed(self, mail_id: int, error: str, *, now: float | None = None) -> None:
        """A permanent failure: the server refused this mail for good."""
        await self._update(
            "UPDATE mails SET status = 'failed', attempts = attempts + 1, last_error = ?,"
            " finished_at = ? WHERE id = ? AND status = 'pending'",
            (error, time.time() if now is None else now, mail_id),
        )

    async def prune(self, before: float) -> int:
        """Forget events received before ``before`` that have no mail still pending.

        Keeps the file from growing without bound (heartbeats are recorded
        too); an event id forgotten this way would be mailed again if a device
        re-sent it, so ``before`` should lie far beyond any device's retry span.
        Returns the number of events removed.
        """
        return await self._run(self._prune, before)

    def _prune(self, before: float) -> int:
        with self._transaction():
            cur = self._conn.execute(
                "DELETE FROM events WHERE received_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM mails WHERE mails.event_id = events.id"
                "  AND mails.status = 'pending')",
                (before,),
            )
            return cur.rowcount

    # --- reads ----------------------------------------------------------------

    async def due_mails(self, now: float | None = None, limit: int = 50) -> list[QueuedMail]:
        """Pending mails whose next attempt is due, alarms first, oldest first."""
        return await self._select(
            f"SELECT {_MAIL_COLUMNS} FROM mails m JOIN events e ON e.id = m.event_id"
            " WHERE m.status = 'pending' AND m.next_attempt <= ?"
            " ORDER BY m.priority, m.next_attempt, m.id LIMIT ?",
            (time.time() if now is None else now, limit),
        )

    async def next_due(self) -> float | None:
        """When the earliest pending mail is due (Unix seconds), or ``None`` if none is."""
        rows = await self._run(
            self._query, "SELECT MIN(next_attempt) FROM mails WHERE status = 'pending'", ()
        )
        value = rows[0][0]
        return None if value is None else float(value)

    async def mails(
        self, status: MailStatus | None = None, *, event_id: str | None = None, limit: int = 1000
    ) -> list[QueuedMail]:
        """Mails by status and/or event, oldest first (for ``status`` and tests)."""
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
            f"SELECT {_MAIL_COLUMNS} FROM mails m JOIN events e ON e.id = m.event_id"
            f"{clause} ORDER BY m.id LIMIT ?",
            (*args, limit),
        )

    async def has_event(self, event_id: str) -> bool:
        rows = await self._run(self._query, "SELECT 1 FROM events WHERE id = ?", (event_id,))
        return bool(rows)

    async def counts(self) -> StoreCounts:
        """How many events are remembered and how many mails are in each state."""
        rows = await self._run(
            self._query,
            "SELECT (SELECT COUNT(*) FROM events),"
            " COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'sent'), 0),"
            " COALESCE(SUM(status = 'failed'), 0) FROM mails",
            (),
        )
        events, pending, sent, failed = rows[0]
        return StoreCounts(events=events, pending=pending, sent=sent, failed=failed)

    # --- plumbing -------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    async def _update(self, sql: str, args: tuple[object, ...]) -> None:
        await self._run(self._execute_in_transaction, sql, args)

    def _execute_in_transaction(self, sql: str, args: tuple[object, ...]) -> None:
        with self._transaction():
            self._conn.execute(sql, args)

    def _query(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, args).fetchall()

    async def _select(self, sql: str, args: tuple[object, ...]) -> list[QueuedMail]:
        rows = await self._run(self._query, sql, args)
        return [QueuedMail(*row) for row in rows]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock up front, so a concurrent reader
        # (the `status` command) can never turn this into a deadlock.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """Open, configure, integrity-check and migrate; runs on the store's thread."""
    if readonly and not path.exists():
        raise StoreError(f"no store at {path}")
    try:
        if readonly:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"store {path}: cannot switch to WAL (journal_mode={mode})")
            # FULL: a commit survives a power cut, and we ack the broker only after it.
            conn.execute("PRAGMA synchronous = FULL")
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
        if problems != ["ok"]:
            raise StoreError(f"store {path} is corrupt: {'; '.join(map(str, problems[:5]))}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {path} has schema v{version}, newer than this notifier's v{SCHEMA_VERSION}"
            )
        if version < SCHEMA_VERSION:
            if readonly:
                raise StoreError(f"store {path} has schema v{version}; run the notifier once")
            _migrate(conn, version)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot open store {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
