"""The outbox: events waiting for the broker, durable in SQLite.

An event counts as recorded only once its transaction is committed with
``synchronous=FULL`` in WAL mode (durable across a power cut, not just a
crash).  It is deleted only after the broker's PUBACK.  After a restart
everything still here is sent again; the cloud de-duplicates by event id.

All SQLite work happens on one writer thread that owns the connection.  Jobs
queue up while a commit is in flight and the next transaction takes all of
them at once (group commit), so a burst of events costs one fsync per batch,
not one per event, and nobody waits long.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge.event import SEVERITY_RANK, Event, encode

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    n        INTEGER PRIMARY KEY,      -- insertion order
    id       TEXT NOT NULL UNIQUE,     -- the envelope's event id
    seq      INTEGER NOT NULL,
    rank     INTEGER NOT NULL,         -- 0 alarm, 1 warning, 2 info: alarms leave first
    kind     TEXT NOT NULL,
    payload  BLOB NOT NULL             -- the encoded envelope, sent as is
);
CREATE INDEX IF NOT EXISTS events_by_priority ON events (rank, n);
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be used."""


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    kind: str
    payload: bytes


class _Job:
    __slots__ = ("fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future


def _resolve(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class Outbox:
    """Durable FIFO-by-priority of encoded events, one writer thread."""

    def __init__(self, path: str | Path, *, max_batch: int = 1024) -> None:
        self.path = Path(path)
        self.max_batch = max_batch
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.last_seq = 0
        self.changed = asyncio.Event()
        """Set (in the loop) whenever events were added or removed."""
        self.commits = 0

    # -- lifecycle -----------------------------------------------------------

    def open(self) -> None:
        """Open (creating if needed) and check the file; start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                conn.close()
                raise OutboxError(f"{self.path}: integrity check failed: {ok}")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            row = conn.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{self.path}: {exc}") from exc
        self.last_seq = int(row[0]) if row else 0
        self._conn = conn
        self._thread = threading.Thread(target=self._writer, name="outbox-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Finish queued work, stop the writer and close the file.  Idempotent."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the writer thread ---------------------------------------------------

    def _writer(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._run_batch(conn, batch)
            if stop:
                return

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    results.append((job, job.fn(conn), None))
                    conn.execute("RELEASE job")
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((job, None, OutboxError(f"{self.path}: {exc}")))
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            # The commit itself failed (disk full, I/O error): nothing in the
            # batch is durable, so nobody may be told otherwise.
            if conn.in_transaction:
                conn.rollback()
            err = OutboxError(f"{self.path}: {exc}")
            results = [(job, None, err) for job in batch]
        for job, result, exc in results:
            job.loop.call_soon_threadsafe(_resolve, job.future, result, exc)

    async def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None:
            raise OutboxError("outbox is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, loop, future))
        return await future

    # -- the API -------------------------------------------------------------

    async def put(self, event: Event) -> None:
        """Store one event; returns once it is durable on disk."""
        await self.put_many([event])

    async def put_many(self, events: Iterable[Event]) -> None:
        rows = [
            (e.id, e.seq, SEVERITY_RANK.get(e.severity, 2), e.kind, encode(e)) for e in events
        ]
        top = max((r[1] for r in rows), default=0)

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO events (id, seq, rank, kind, payload) VALUES (?,?,?,?,?)",
                rows,
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('last_seq', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                (top,),
            )

        await self._submit(insert)
        self.changed.set()

    async def pending(self, limit: int, skip: Iterable[str] = ()) -> list[Pending]:
        """The next events to send: alarms first, then oldest first; ``skip`` ids in flight."""
        skip = set(skip)

        def select(conn: sqlite3.Connection) -> list[Pending]:
            cur = conn.execute(
                "SELECT id, kind, payload FROM events ORDER BY rank, n LIMIT ?",
                (limit + len(skip),),
            )
            return [Pending(i, k, bytes(p)) for i, k, p in cur if i not in skip][:limit]

        return await self._submit(select)

    async def ack(self, ids: Iterable[str]) -> None:
        """The broker acknowledged these events: remove them for good."""
        params = [(i,) for i in ids]

        def delete(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM events WHERE id = ?", params)

        await self._submit(delete)
        self.changed.set()

    async def depth(self) -> int:
        return int(await self._submit(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0]))
