"""The outbox: events and telemetry waiting for the broker, durable in SQLite.

Promises, in order of importance:

1. **Recorded means durable.**  :meth:`Outbox.put` returns ``True`` only once the
   row is committed with ``synchronous=FULL`` in WAL mode (it survives a power
   cut, not just a crash).  A row leaves only when the broker acknowledged it.
2. **Storage trouble never stops the device.**  When the disk is full,
   read-only, failing or locked, rows wait in a bounded memory buffer
   (``put`` returns ``False``: kept, but not durable), are still handed to the
   uplink, and are written to disk as soon as :meth:`Outbox.retry` succeeds.
   A corrupt or foreign file found at open is moved aside with a timestamp and
   a fresh one is started (:attr:`Outbox.moved_aside` says so).
3. **Alarms first, alarms last.**  Rows leave in (priority, age) order.  When
   the configured cap is reached the oldest rows of the lowest priority are
   evicted first; alarms only when nothing else is left.  Every eviction is
   counted by kind until reported (:meth:`Outbox.evictions`).

All SQLite work runs on one writer thread that owns the connection.  Jobs that
queue up while a commit is in flight go into the next transaction together
(group commit): a burst costs one fsync per batch, and an alarm waits at most
for the commit in progress plus its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import functools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from edge.event import SEVERITY_RANK, Event, encode

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
TELEMETRY_RANK = 3
"""Telemetry leaves after every event and is evicted first."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    n        INTEGER PRIMARY KEY,      -- insertion order
    id       TEXT NOT NULL UNIQUE,     -- event id (or telemetry batch id)
    seq      INTEGER NOT NULL,         -- the event's seq (0 for telemetry)
    rank     INTEGER NOT NULL,         -- 0 alarm, 1 warning, 2 info, 3 telemetry
    kind     TEXT NOT NULL,
    channel  TEXT NOT NULL,            -- the topic leaf: 'events' or 'telemetry'
    created  REAL NOT NULL,            -- unix time it was stored
    payload  BLOB NOT NULL             -- sent as is
);
CREATE INDEX IF NOT EXISTS events_by_priority ON events (rank, n);
"""
_COLUMNS = {"n", "id", "seq", "rank", "kind", "channel", "created", "payload"}

# SQLite primary result codes that mean "the storage is in trouble", not "our bug".
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
_STORAGE_CODES = {
    _SQLITE_BUSY: "locked",
    _SQLITE_LOCKED: "locked",
    _SQLITE_READONLY: "read_only",
    _SQLITE_IOERR: "io_error",
    _SQLITE_FULL: "disk_full",
    _SQLITE_CANTOPEN: "cannot_open",
    _SQLITE_CORRUPT: "corrupt",
    _SQLITE_NOTADB: "corrupt",
}


_ROWS_PER_INSERT = 256  # 7 parameters a row: well below SQLite's 32,766 limit


@functools.lru_cache(maxsize=8)
def _insert_sql(n: int) -> str:
    """``INSERT`` of ``n`` rows (Row's fields are the columns, in order)."""
    values = ",".join(["(?,?,?,?,?,?,?)"] * n)
    return (
        "INSERT OR IGNORE INTO events (id, seq, rank, kind, channel, created, payload) "
        f"VALUES {values}"
    )


class OutboxError(RuntimeError):
    """The outbox cannot do what was asked (closed, or a bug in a query)."""


class CorruptOutbox(OutboxError):
    """The file is not a usable outbox (garbage, truncated, another schema)."""


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    kind: str
    rank: int
    channel: str
    payload: bytes


class Row(NamedTuple):
    """One stored message (a tuple: cheap to make on the hot path)."""

    id: str
    seq: int
    rank: int
    kind: str
    channel: str
    created: float
    payload: bytes

    @classmethod
    def of(cls, event: Event, created: float) -> Row:
        return cls(
            event.id,
            event.seq,
            SEVERITY_RANK.get(event.severity, 2),
            event.kind,
            "events",
            created,
            encode(event),
        )


@dataclass(frozen=True)
class StorageFault:
    code: str
    """``disk_full``, ``read_only``, ``io_error``, ``locked``, ``cannot_open``, ``corrupt``."""
    message: str
    since: float


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    oldest_created: float | None
    evicted: dict[str, int] = field(default_factory=dict)
    buffered_in_memory: int = 0


class Health(enum.Enum):
    OK = "ok"
    DEGRADED = "degraded"


# -- jobs for the writer thread ------------------------------------------------


class _Job:
    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self.loop = loop
        self.future = future


class _Put(_Job):
    __slots__ = ("rows",)

    def __init__(self, loop: Any, future: Any, rows: list[Row]) -> None:
        super().__init__(loop, future)
        self.rows = rows


class _Ack(_Job):
    __slots__ = ("ids",)

    def __init__(self, loop: Any, future: Any, ids: list[str]) -> None:
        super().__init__(loop, future)
        self.ids = ids


class _Query(_Job):
    __slots__ = ("fn", "fallback")

    def __init__(
        self,
        loop: Any,
        future: Any,
        fn: Callable[[sqlite3.Connection], Any],
        fallback: Callable[[], Any] | None,
    ) -> None:
        super().__init__(loop, future)
        self.fn = fn
        self.fallback = fallback


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in results:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)


def _storage_code(exc: sqlite3.Error) -> str | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # e.g. raised before reaching SQLite
        text = str(exc).lower()
        if "disk is full" in text:
            return "disk_full"
        if "readonly" in text or "read-only" in text:
            return "read_only"
        if "not a database" in text or "malformed" in text:
            return "corrupt"
        return "io_error" if isinstance(exc, sqlite3.OperationalError) else None
    return _STORAGE_CODES.get(code & 0xFF)


class Outbox:
    """Durable, bounded, priority-ordered queue of encoded events; one writer thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_events: int = 100_000,
        memory_max_events: int = 2_000,
        max_batch: int = 512,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.max_events = max_events
        self.memory_max_events = memory_max_events
        self.max_batch = max_batch
        self.clock = clock
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._count = 0
        # Writer-thread state for storage trouble:
        self._spill: dict[str, Row] = {}
        """Rows kept in memory while the disk refuses them (insertion-ordered)."""
        self._acked_unremoved: set[str] = set()
        """Acknowledged rows we could not delete yet (never handed out again)."""
        self._memory_evicted: dict[str, int] = {}
        self.fault: StorageFault | None = None
        self.moved_aside: list[tuple[Path, str]] = []
        """Corrupt files moved aside (new name, reason), for the daemon to report."""
        self.last_seq = 0
        self.changed = asyncio.Event()
        """Set (in the loop) whenever rows were added or removed."""
        self.health_changed = asyncio.Event()
        """Set (in the loop) when :attr:`fault` appears or clears."""
        self.commits = 0

    # -- lifecycle -----------------------------------------------------------

    def open(self) -> None:
        """Open the file (moving a corrupt one aside) and start the writer thread.

        Never raises for storage trouble: a file that cannot be opened at all
        (read-only or missing disk) leaves the outbox in memory-only mode with
        :attr:`fault` set, and :meth:`retry` tries again.
        """
        if self._thread is not None:
            return
        try:
            self._conn = self._connect()
        except sqlite3.Error as exc:
            self._set_fault(_storage_code(exc) or "io_error", str(exc), notify=False)
        except OSError as exc:
            self._set_fault("cannot_open", str(exc), notify=False)
        self._thread = threading.Thread(target=self._writer, name="outbox-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        """Connect and check; move a corrupt or foreign file aside and start afresh."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect_checked()
        except CorruptOutbox as exc:
            self._move_aside(str(exc))
            return self._connect_checked()

    def _connect_checked(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5)
        try:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                ok = conn.execute("PRAGMA quick_check").fetchone()[0]
                if ok != "ok":
                    raise CorruptOutbox(f"integrity check failed: {ok}")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = {
                    r[0]
                    for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                if tables and version != SCHEMA_VERSION:
                    raise CorruptOutbox(
                        f"schema version {version}, expected {SCHEMA_VERSION} (tables: "
                        f"{', '.join(sorted(tables))})"
                    )
                if "events" in tables:
                    cols = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
                    if cols != _COLUMNS:
                        raise CorruptOutbox(f"unexpected events columns: {sorted(cols)}")
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                row = conn.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
                self._count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                if _storage_code(exc) == "corrupt":
                    raise CorruptOutbox(str(exc)) from exc
                raise
        except BaseException:
            conn.close()
            raise
        self.last_seq = max(self.last_seq, int(row[0]) if row else 0)
        return conn

    def _move_aside(self, reason: str) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        self.path.rename(target)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                if suffix == "-wal":
                    side.rename(target.with_name(target.name + suffix))
                else:
                    side.unlink()
        log.error("outbox %s is unusable (%s): moved aside to %s", self.path, reason, target.name)
        self.moved_aside.append((target, reason))

    def close(self) -> None:
        """Finish queued work, stop the writer and close the file.  Idempotent."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def health(self) -> Health:
        return Health.OK if self.fault is None else Health.DEGRADED

    # -- the writer thread ---------------------------------------------------

    def _writer(self) -> None:
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
            # Alarms first: they get a small transaction of their own rather than
            # waiting for everything else that queued up meanwhile.
            urgent: list[_Job] = [
                j for j in batch if isinstance(j, _Put) and any(r[2] == 0 for r in j.rows)
            ]
            rest = [j for j in batch if j not in urgent] if urgent else batch
            for part in (urgent, rest):
                if not part:
                    continue
                try:
                    self._run_batch(part)
                except BaseException as exc:  # never leave a caller waiting forever
                    log.exception("outbox writer failed")
                    err = OutboxError(f"outbox writer failed: {exc!r}")
                    self._deliver([(j, None, err) for j in part])
            if stop:
                return

    def _deliver(self, results: list[tuple[_Job, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for job, result, exc in results:
            by_loop.setdefault(job.loop, []).append((job.future, result, exc))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_settle, items)

    def _run_batch(self, batch: list[_Job]) -> None:
        if self._conn is None and self.fault is not None:
            try:
                self._conn = self._connect()
            except sqlite3.Error as exc:
                self._set_fault(_storage_code(exc) or "io_error", str(exc))
            except OSError as exc:
                self._set_fault("cannot_open", str(exc))
        conn = self._conn
        if conn is None:
            self._deliver(self._degraded(batch))
            return
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            flushed = self._flush_memory(conn)
            # One statement for all rows of all puts, one for all acks, then reads.
            puts = [j for j in batch if isinstance(j, _Put)]
            acks = [j for j in batch if isinstance(j, _Ack)]
            self._insert(conn, [r for j in puts for r in j.rows])
            self._delete(conn, [i for j in acks for i in j.ids])
            results.extend([(j, True, None) for j in puts])
            results.extend([(j, None, None) for j in acks])
            for job in batch:
                if isinstance(job, _Query):
                    results.append(self._run_query(conn, job))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.rollback()
                except sqlite3.Error:
                    pass
            code = _storage_code(exc)
            if code is None:
                raise
            if code == "corrupt":
                self._conn = None
                conn.close()
                try:
                    self._move_aside(f"corruption found while writing: {exc}")
                except OSError as move_exc:
                    log.error("cannot move the corrupt outbox aside: %s", move_exc)
                self._count = 0
            self._set_fault(code, str(exc))
            self._deliver(self._degraded(batch))
            return
        self.commits += 1
        if flushed:
            self._spill.clear()
            self._acked_unremoved.clear()
        if self.fault is not None:
            log.warning("outbox storage works again (%d buffered rows written)", flushed)
            self.fault = None
            self._notify_health(batch)
        self._deliver(results)

    def _run_query(
        self, conn: sqlite3.Connection, job: _Query
    ) -> tuple[_Job, Any, BaseException | None]:
        conn.execute("SAVEPOINT q")
        try:
            result = job.fn(conn)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO q")
            conn.execute("RELEASE q")
            if _storage_code(exc) is not None:
                raise
            return job, None, OutboxError(f"{self.path}: {exc}")
        conn.execute("RELEASE q")
        return job, result, None

    def _insert(self, conn: sqlite3.Connection, rows: Iterable[Row]) -> int:
        rows = [r for r in rows if r.id not in self._acked_unremoved]
        if not rows:
            return 0
        # Many rows per statement: the sqlite3 module releases the GIL around each
        # step, so one statement per row would hand the GIL back and forth with
        # the event loop thousands of times per commit.
        before = conn.total_changes
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            conn.execute(_insert_sql(len(chunk)), [v for r in chunk for v in r])
        self._count += conn.total_changes - before
        top = max(r[1] for r in rows)
        if top > 0:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('last_seq', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                (top,),
            )
        if self._count > self.max_events:
            self._evict(conn, self._count - self.max_events)
        return len(rows)

    def _evict(self, conn: sqlite3.Connection, n: int) -> None:
        """Drop ``n`` rows: lowest priority first, oldest first within it; count them."""
        victims = conn.execute(
            "SELECT n, kind FROM events ORDER BY rank DESC, n ASC LIMIT ?", (n,)
        ).fetchall()
        conn.executemany("DELETE FROM events WHERE n = ?", [(v[0],) for v in victims])
        self._count -= len(victims)
        counts: dict[str, int] = {}
        for _, kind in victims:
            counts[kind] = counts.get(kind, 0) + 1
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            [(f"evicted:{k}", c) for k, c in counts.items()],
        )
        log.warning("outbox full (%d events): evicted %s", self.max_events, counts)

    def _delete(self, conn: sqlite3.Connection, ids: Iterable[str]) -> None:
        params = [(i,) for i in ids]
        if not params:
            return
        before = conn.total_changes
        conn.executemany("DELETE FROM events WHERE id = ?", params)
        self._count -= conn.total_changes - before

    def _flush_memory(self, conn: sqlite3.Connection) -> int:
        """Write rows kept in memory (storage trouble) now that the disk takes them."""
        if not self._spill and not self._acked_unremoved:
            return 0
        if self._acked_unremoved:
            self._delete(conn, self._acked_unremoved)
        rows = list(self._spill.values())
        if rows:
            self._insert(conn, rows)
        return len(rows) + len(self._acked_unremoved)

    def _degraded(self, batch: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        """Serve a batch from memory while the disk refuses writes."""
        results: list[tuple[_Job, Any, BaseException | None]] = []
        for job in batch:
            if isinstance(job, _Put):
                for row in job.rows:
                    if row.id not in self._acked_unremoved:
                        self._spill[row.id] = row
                self._bound_memory()
                results.append((job, False, None))
            elif isinstance(job, _Ack):
                for i in job.ids:
                    if self._spill.pop(i, None) is None:
                        self._acked_unremoved.add(i)
                results.append((job, None, None))
            else:
                assert isinstance(job, _Query)
                result: Any = None
                exc: BaseException | None = None
                conn = self._conn
                try:
                    if conn is None:
                        raise sqlite3.OperationalError("no database")
                    result = job.fn(conn)  # reads usually still work on a full disk
                except sqlite3.Error:
                    if job.fallback is not None:
                        result = job.fallback()
                    else:
                        exc = OutboxError(f"{self.path}: storage unavailable")
                results.append((job, result, exc))
        return results

    def _bound_memory(self) -> None:
        excess = len(self._spill) - self.memory_max_events
        if excess <= 0:
            return
        victims = sorted(self._spill.values(), key=lambda r: -r.rank)[:excess]
        # sorted() is stable: within one rank the oldest (inserted first) goes first.
        for row in victims:
            del self._spill[row.id]
            self._memory_evicted[row.kind] = self._memory_evicted.get(row.kind, 0) + 1

    def _set_fault(self, code: str, message: str, *, notify: bool = True) -> None:
        if self.fault is None or self.fault.code != code:
            log.error("outbox storage failing (%s): %s", code, message)
            self.fault = StorageFault(code, message, self.clock())
            if notify:
                self._notify_health([])

    def _notify_health(self, batch: list[_Job]) -> None:
        loops = {j.loop for j in batch} or ({self._loop} if self._loop else set())
        for loop in loops:
            loop.call_soon_threadsafe(self.health_changed.set)

    _loop: asyncio.AbstractEventLoop | None = None

    async def _submit(self, job_factory: Callable[[Any, Any], _Job]) -> Any:
        if self._thread is None:
            raise OutboxError("outbox is not open")
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put(job_factory(loop, future))
        return await future

    # -- the API -------------------------------------------------------------

    async def put(self, event: Event) -> bool:
        """Store one event.  True once durable on disk; False if only kept in memory."""
        if self._thread is None:
            raise OutboxError("outbox is not open")
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[bool] = loop.create_future()
        self._jobs.put(_Put(loop, future, [Row.of(event, self.clock())]))
        durable = await future
        self.changed.set()
        return durable

    async def put_many(self, events: Iterable[Event]) -> bool:
        now = self.clock()
        return await self.put_rows([Row.of(e, now) for e in events])

    async def put_rows(self, rows: list[Row]) -> bool:
        durable = bool(await self._submit(lambda loop, fut: _Put(loop, fut, rows)))
        self.changed.set()
        return durable

    async def retry(self) -> bool:
        """Try to write what waits in memory; True when the disk works again."""
        await self._submit(lambda loop, fut: _Put(loop, fut, []))
        return self.fault is None

    async def pending(self, limit: int, skip: Iterable[str] = ()) -> list[Pending]:
        """The next rows to send (alarms first, then oldest first), except ``skip``."""
        skip = set(skip)

        def from_memory() -> list[tuple[int, int, Pending]]:
            return [
                (r.rank, 1, Pending(r.id, r.kind, r.rank, r.channel, r.payload))
                for r in self._spill.values()
                if r.id not in skip
            ]

        def select(conn: sqlite3.Connection) -> list[Pending]:
            hidden = skip | self._acked_unremoved
            cur = conn.execute(
                "SELECT id, kind, rank, channel, payload FROM events ORDER BY rank, n LIMIT ?",
                (limit + len(hidden),),
            )
            rows = [
                (rank, 0, Pending(i, k, rank, ch, bytes(p)))
                for i, k, rank, ch, p in cur
                if i not in hidden
            ][:limit]
            return merge(rows + from_memory())

        def merge(rows: list[tuple[int, int, Pending]]) -> list[Pending]:
            rows.sort(key=lambda t: (t[0], t[1]))  # stable: keeps age order inside
            return [p for _, _, p in rows[:limit]]

        return list(
            await self._submit(
                lambda loop, fut: _Query(loop, fut, select, lambda: merge(from_memory()))
            )
        )

    async def ack(self, ids: Iterable[str]) -> None:
        """The broker acknowledged these rows: remove them for good."""
        ids = list(ids)
        await self._submit(lambda loop, fut: _Ack(loop, fut, ids))
        self.changed.set()

    async def depth(self) -> int:
        return (await self.stats()).depth

    async def stats(self) -> OutboxStats:
        def read(conn: sqlite3.Connection) -> OutboxStats:
            oldest = conn.execute("SELECT min(created) FROM events").fetchone()[0]
            evicted = dict(self._memory_evicted)
            for key, value in conn.execute("SELECT key, value FROM meta WHERE key LIKE 'evicted:%'"):
                kind = key.removeprefix("evicted:")
                evicted[kind] = evicted.get(kind, 0) + int(value)
            mem_oldest = min((r.created for r in self._spill.values()), default=None)
            if oldest is None or (mem_oldest is not None and mem_oldest < oldest):
                oldest = mem_oldest
            return OutboxStats(
                depth=self._count + len(self._spill) - len(self._acked_unremoved),
                oldest_created=oldest,
                evicted={k: v for k, v in evicted.items() if v},
                buffered_in_memory=len(self._spill),
            )

        def fallback() -> OutboxStats:
            return OutboxStats(
                depth=len(self._spill),
                oldest_created=min((r.created for r in self._spill.values()), default=None),
                evicted=dict(self._memory_evicted),
                buffered_in_memory=len(self._spill),
            )

        return await self._submit(lambda loop, fut: _Query(loop, fut, read, fallback))  # type: ignore[no-any-return]

    async def forget_evictions(self, reported: dict[str, int]) -> None:
        """Subtract counts that a stored heartbeat has reported."""

        def sub(conn: sqlite3.Connection) -> None:
            for kind, n in reported.items():
                mem = min(n, self._memory_evicted.get(kind, 0))
                if mem:
                    self._memory_evicted[kind] -= mem
                if n - mem:
                    conn.execute(
                        "UPDATE meta SET value = max(0, value - ?) WHERE key = ?",
                        (n - mem, f"evicted:{kind}"),
                    )

        await self._submit(lambda loop, fut: _Query(loop, fut, sub, None))
