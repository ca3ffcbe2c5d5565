"""The two databases the store can live in: SQLite (one instance) and PostgreSQL (several).

:mod:`cloud.store` writes its SQL once, with ``?`` placeholders, portable
types and ``ON CONFLICT``; a :class:`Database` runs it in a transaction on
whichever engine the configuration names:

* :class:`SqliteDatabase` — the embedded default.  WAL, ``synchronous=FULL``
  (a commit survives a power cut, and the broker is acknowledged only after
  it), ``BEGIN IMMEDIATE`` so that writers queue instead of deadlocking, an
  integrity check and numbered migrations (``PRAGMA user_version``) at open.
* :class:`PostgresDatabase` — for several notifier instances behind an MQTT
  shared subscription (psycopg 3).  Migrations run under an advisory lock
  (two instances starting at once migrate once); a transaction that loses a
  race (unique violation, serialization failure, deadlock) or a dropped
  connection is retried a few times with a fresh connection.

Both are used from one dedicated thread (see :class:`cloud.store.Store`), so a
connection is never shared between threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from cloud.errors import StoreError

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Row = tuple[Any, ...]

# --- schema -----------------------------------------------------------------------

#: SQLite migrations; ``PRAGMA user_version`` is how many are applied.
#: Append, never edit: a store written by an older notifier must still open.
SQLITE_MIGRATIONS: Final[tuple[str, ...]] = (
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
    # v2: mails of notices the notifier makes itself (summaries, reminders,
    # offline), claims for several senders, and the state behind them.
    """
    CREATE TABLE mails_v2 (
        id           INTEGER PRIMARY KEY,
        event_id     TEXT NOT NULL,       -- the event's id, or a notifier-made notice id
        kind         TEXT NOT NULL,
        site         TEXT NOT NULL,
        device       TEXT NOT NULL,
        recipient    TEXT NOT NULL,
        priority     INTEGER NOT NULL,
        status       TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sent', 'failed')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        last_error   TEXT,
        created_at   REAL NOT NULL,
        finished_at  REAL,
        message      BLOB NOT NULL,
        claimed_by   TEXT,                -- the instance sending it now
        claim_until  REAL,
        UNIQUE (event_id, recipient)
    );
    INSERT INTO mails_v2 (id, event_id, kind, site, device, recipient, priority, status,
                          attempts, next_attempt, last_error, created_at, finished_at, message)
        SELECT m.id, m.event_id, e.kind, e.site, e.device, m.recipient, m.priority, m.status,
               m.attempts, m.next_attempt, m.last_error, m.created_at, m.finished_at, m.message
        FROM mails m JOIN events e ON e.id = m.event_id;
    DROP TABLE mails;
    ALTER TABLE mails_v2 RENAME TO mails;
    CREATE INDEX mails_due ON mails (status, next_attempt);
    CREATE INDEX mails_finished ON mails (finished_at);
    CREATE TABLE devices (
        device       TEXT PRIMARY KEY,
        site         TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('online', 'offline')),
        cause        TEXT NOT NULL,       -- of the state: 'status', 'heartbeat' or 'event'
        since        REAL NOT NULL,
        reason       TEXT NOT NULL DEFAULT '',
        last_seen    REAL NOT NULL,       -- any message from it, notifier time
        hb_interval  REAL,                -- its heartbeat interval, once one came
        notified     INTEGER NOT NULL DEFAULT 0,  -- an offline mail went out for this state
        transitions  INTEGER NOT NULL DEFAULT 0,
        recipients   TEXT NOT NULL DEFAULT '[]',  -- who got the offline mail (JSON)
        lat          REAL,
        lon          REAL
    );
    CREATE TABLE episodes (
        id              TEXT PRIMARY KEY, -- the event that was mailed
        key             TEXT NOT NULL,    -- what the burst is about
        open            INTEGER NOT NULL,
        site            TEXT NOT NULL,
        device          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        started_at      REAL NOT NULL,
        last_at         REAL NOT NULL,
        quiet_s         REAL NOT NULL,
        summary_every_s REAL NOT NULL,
        next_summary_at REAL NOT NULL,
        folded          INTEGER NOT NULL DEFAULT 0,   -- since the last summary
        folded_total    INTEGER NOT NULL DEFAULT 0,
        summaries       INTEGER NOT NULL DEFAULT 0,
        stats           TEXT NOT NULL DEFAULT '{}',
        recipients      TEXT NOT NULL,
        lat             REAL NOT NULL,
        lon             REAL NOT NULL
    );
    CREATE UNIQUE INDEX episodes_open ON episodes (key) WHERE open = 1;
    CREATE TABLE traps (
        key              TEXT PRIMARY KEY,
        open             INTEGER NOT NULL,
        site             TEXT NOT NULL,
        device           TEXT NOT NULL,
        sensor           TEXT NOT NULL,
        trigger_id       TEXT NOT NULL,  -- the trap_triggered event
        closed_since     REAL NOT NULL,
        next_reminder_at REAL NOT NULL,
        reminders        INTEGER NOT NULL DEFAULT 0,
        recipients       TEXT NOT NULL,
        lat              REAL NOT NULL,
        lon              REAL NOT NULL
    );
    CREATE TABLE telemetry (
        device TEXT NOT NULL,
        series TEXT NOT NULL,
        ts     REAL NOT NULL,
        value  REAL NOT NULL,
        PRIMARY KEY (device, series, ts)
    );
    CREATE INDEX telemetry_ts ON telemetry (ts);
    CREATE TABLE instances (
        id         TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        last_seen  REAL NOT NULL,
        host       TEXT NOT NULL,
        pid        INTEGER NOT NULL
    );
    """,
    # v3: pruning finished mails by age and by count walks an index, not the table.
    """
    CREATE INDEX mails_created ON mails (created_at);
    """,
    # v4: each mail's message in a table of its own, written once: claiming a mail
    # and marking it sent rewrite a small row, not its ~7 kB message (two WAL
    # pages a mail for each); and the queue in the order senders take it.  New
    # mails leave mails.message empty.  Only the pending mails' messages move (a
    # store holds up to 200,000 finished mails: copying all would take minutes
    # and double the file); a finished mail keeps its message in its row, which
    # nothing rewrites any more, and readers take whichever is there.
    """
    CREATE TABLE mail_bodies (
        id      INTEGER PRIMARY KEY REFERENCES mails (id) ON DELETE CASCADE,
        message BLOB NOT NULL             -- the rendered RFC 5322 message
    );
    INSERT INTO mail_bodies (id, message) SELECT id, message FROM mails WHERE status = 'pending';
    UPDATE mails SET message = x'' WHERE status = 'pending';
    CREATE INDEX mails_queue ON mails (priority, next_attempt, id) WHERE status = 'pending';
    """,
    # v5: the software version each device's status message says it runs (the console
    # shows it; '' until a status with a version came).
    """
    ALTER TABLE devices ADD COLUMN version TEXT NOT NULL DEFAULT '';
    """,
)

#: PostgreSQL migrations (a fresh database starts at the current shape);
#: ``schema_version`` holds how many are applied.  Append, never edit.
POSTGRES_MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE events (
        id          TEXT PRIMARY KEY,
        device      TEXT NOT NULL,
        site        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        severity    TEXT NOT NULL,
        ts          TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        payload     BYTEA NOT NULL
    );
    CREATE INDEX events_received_at ON events (received_at);
    CREATE TABLE mails (
        id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id     TEXT NOT NULL,
        kind         TEXT NOT NULL,
        site         TEXT NOT NULL,
        device       TEXT NOT NULL,
        recipient    TEXT NOT NULL,
        priority     INTEGER NOT NULL,
        status       TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sent', 'failed')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt DOUBLE PRECISION NOT NULL,
        last_error   TEXT,
        created_at   DOUBLE PRECISION NOT NULL,
        finished_at  DOUBLE PRECISION,
        message      BYTEA NOT NULL,
        claimed_by   TEXT,
        claim_until  DOUBLE PRECISION,
        UNIQUE (event_id, recipient)
    );
    CREATE INDEX mails_due ON mails (status, next_attempt);
    CREATE INDEX mails_finished ON mails (finished_at);
    CREATE TABLE devices (
        device       TEXT PRIMARY KEY,
        site         TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('online', 'offline')),
        cause        TEXT NOT NULL,
        since        DOUBLE PRECISION NOT NULL,
        reason       TEXT NOT NULL DEFAULT '',
        last_seen    DOUBLE PRECISION NOT NULL,
        hb_interval  DOUBLE PRECISION,
        notified     INTEGER NOT NULL DEFAULT 0,
        transitions  INTEGER NOT NULL DEFAULT 0,
        recipients   TEXT NOT NULL DEFAULT '[]',
        lat          DOUBLE PRECISION,
        lon          DOUBLE PRECISION
    );
    CREATE TABLE episodes (
        id              TEXT PRIMARY KEY,
        key             TEXT NOT NULL,
        open            INTEGER NOT NULL,
        site            TEXT NOT NULL,
        device          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        started_at      DOUBLE PRECISION NOT NULL,
        last_at         DOUBLE PRECISION NOT NULL,
        quiet_s         DOUBLE PRECISION NOT NULL,
        summary_every_s DOUBLE PRECISION NOT NULL,
        next_summary_at DOUBLE PRECISION NOT NULL,
        folded          INTEGER NOT NULL DEFAULT 0,
        folded_total    INTEGER NOT NULL DEFAULT 0,
        summaries       INTEGER NOT NULL DEFAULT 0,
        stats           TEXT NOT NULL DEFAULT '{}',
        recipients      TEXT NOT NULL,
        lat             DOUBLE PRECISION NOT NULL,
        lon             DOUBLE PRECISION NOT NULL
    );
    CREATE UNIQUE INDEX episodes_open ON episodes (key) WHERE open = 1;
    CREATE TABLE traps (
        key              TEXT PRIMARY KEY,
        open             INTEGER NOT NULL,
        site             TEXT NOT NULL,
        device           TEXT NOT NULL,
        sensor           TEXT NOT NULL,
        trigger_id       TEXT NOT NULL,
        closed_since     DOUBLE PRECISION NOT NULL,
        next_reminder_at DOUBLE PRECISION NOT NULL,
        reminders        INTEGER NOT NULL DEFAULT 0,
        recipients       TEXT NOT NULL,
        lat              DOUBLE PRECISION NOT NULL,
        lon              DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE telemetry (
        device TEXT NOT NULL,
        series TEXT NOT NULL,
        ts     DOUBLE PRECISION NOT NULL,
        value  DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (device, series, ts)
    );
    CREATE INDEX telemetry_ts ON telemetry (ts);
    CREATE TABLE instances (
        id         TEXT PRIMARY KEY,
        started_at DOUBLE PRECISION NOT NULL,
        last_seen  DOUBLE PRECISION NOT NULL,
        host       TEXT NOT NULL,
        pid        INTEGER NOT NULL
    );
    """,
    # v2: as SQLite's v3 (pruning finished mails walks an index).
    """
    CREATE INDEX mails_created ON mails (created_at);
    """,
    # v3: as SQLite's v4 (messages in a table of their own, the pending ones moved,
    # the queue's index).
    """
    CREATE TABLE mail_bodies (
        id      BIGINT PRIMARY KEY REFERENCES mails (id) ON DELETE CASCADE,
        message BYTEA NOT NULL
    );
    INSERT INTO mail_bodies (id, message) SELECT id, message FROM mails WHERE status = 'pending';
    UPDATE mails SET message = '' WHERE status = 'pending';
    CREATE INDEX mails_queue ON mails (priority, next_attempt, id) WHERE status = 'pending';
    """,
    # v4: as SQLite's v5 (devices.version, from their status messages).
    """
    ALTER TABLE devices ADD COLUMN version TEXT NOT NULL DEFAULT '';
    """,
)
SQLITE_SCHEMA_VERSION: Final = len(SQLITE_MIGRATIONS)
POSTGRES_SCHEMA_VERSION: Final = len(POSTGRES_MIGRATIONS)
#: Any number, the same in every instance: serialises their migrations.
_MIGRATION_LOCK: Final = 0x5A7011A


class Tx(Protocol):
    """What :mod:`cloud.store` needs inside one transaction."""

    #: ``" FOR UPDATE"`` where rows can be locked (PostgreSQL), else ``""``.
    for_update: str
    #: ``" FOR UPDATE SKIP LOCKED"`` where supported, else ``""``.
    skip_locked: str

    def execute(self, sql: str, args: Sequence[object] = ()) -> int:
        """Run one statement; return how many rows it changed."""
        ...

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...

    def query(self, sql: str, args: Sequence[object] = ()) -> list[Row]: ...


class Database(Protocol):
    """An open database; every method is called from the store's one thread."""

    name: str
    """``"sqlite"`` or ``"postgresql"``."""
    shared: bool
    """Whether other notifier instances may use it at the same time."""
    where: str
    """Where it is, for messages (never a password)."""

    def run(self, work: Callable[[Tx], _T], *, write: bool = True, durable: bool = True) -> _T:
        """Run ``work`` in one transaction (retried where the engine says so).

        ``durable=False``: the commit does not wait for the disk (SQLite
        ``synchronous=NORMAL`` for it, PostgreSQL ``synchronous_commit=off``): a
        kill of the notifier cannot undo it, a power cut (or a crash of the
        database server) can undo the last such commits, never a durable one
        made after them.  Only for what may be redone (a mail marked sent).
        """
        ...

    def sync(self) -> None:
        """Make the commits made with ``durable=False`` durable too."""
        ...

    def create_index(self, name: str, definition: str) -> None:
        """``CREATE INDEX IF NOT EXISTS name definition`` (``definition``: ``ON table
        (columns) [WHERE ...]``) without holding writers back for the build where the
        engine can (PostgreSQL: ``CONCURRENTLY``; SQLite: one short transaction)."""
        ...

    def close(self) -> None: ...


# --- SQLite -----------------------------------------------------------------------


class _SqliteTx:
    for_update = ""
    skip_locked = ""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[object] = ()) -> int:
        return self._conn.execute(sql, tuple(args)).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._conn.executemany(sql, [tuple(r) for r in rows])

    def query(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        return self._conn.execute(sql, tuple(args)).fetchall()


class SqliteDatabase:
    """One SQLite file (WAL, ``synchronous=FULL``); open with :meth:`connect`."""

    name = "sqlite"
    shared = False

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.where = f"sqlite {path}"
        self._unsynced = False
        """A ``durable=False`` commit is in the WAL that no ``fsync`` has covered yet."""

    @classmethod
    def connect(cls, path: Path, *, readonly: bool = False) -> SqliteDatabase:
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
            if version > SQLITE_SCHEMA_VERSION:
                raise StoreError(
                    f"store {path} has schema v{version}, newer than this notifier's "
                    f"v{SQLITE_SCHEMA_VERSION}"
                )
            if version < SQLITE_SCHEMA_VERSION:
                if readonly:
                    raise StoreError(f"store {path} has schema v{version}; run the notifier once")
                _migrate_sqlite(conn, version)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    def run(self, work: Callable[[Tx], _T], *, write: bool = True, durable: bool = True) -> _T:
        try:
            if not write:
                return work(_SqliteTx(self._conn))
            if not durable:
                # In WAL mode the commit is written to the -wal file but not synced;
                # the next FULL commit (or checkpoint) syncs it, in order.
                self._conn.execute("PRAGMA synchronous = NORMAL")
            changes = self._conn.total_changes
            try:
                # BEGIN IMMEDIATE takes the write lock up front, so a concurrent reader
                # (the `status` command) can never turn this into a deadlock.
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(_SqliteTx(self._conn))
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            finally:
                if not durable:
                    self._conn.execute("PRAGMA synchronous = FULL")
            if self._conn.total_changes != changes:
                # It wrote frames to the WAL.  A durable commit synced the whole file,
                # so the frames of the earlier ones with it.
                self._unsynced = not durable
            return result
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    def sync(self) -> None:
        """Make every commit so far durable (after ``durable=False`` ones).

        What a ``synchronous=FULL`` commit would have done for them: ``fsync`` the
        ``-wal`` file (their frames are in it, written).  Nothing when a durable
        commit has come since (its own sync covered them).  Not a checkpoint: that
        also copies the WAL into the database and syncs both (~5 ms under a burst,
        where this is ~0.3 ms); SQLite's automatic checkpoints do that part.
        """
        if not self._unsynced:
            return
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            fd = os.open(wal, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            pass  # checkpointed and removed: the database file has them, synced
        except OSError as exc:
            raise StoreError(f"store {self.path}: cannot sync {wal.name}: {exc}") from exc
        self._unsynced = False

    def create_index(self, name: str, definition: str) -> None:
        self.run(lambda tx: tx.execute(f"CREATE INDEX IF NOT EXISTS {name} {definition}"))

    def close(self) -> None:
        self._conn.close()


def _migrate_sqlite(conn: sqlite3.Connection, version: int) -> None:
    for number, script in enumerate(SQLITE_MIGRATIONS[version:], start=version + 1):
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


# --- PostgreSQL ---------------------------------------------------------------------

#: How often a transaction that lost a race, or met a dropped connection, is tried.
PG_ATTEMPTS: Final = 5


class _PgTx:
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, args: Sequence[object] = ()) -> int:
        self._cur.execute(_pg(sql), tuple(args))
        return int(self._cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            self._cur.executemany(_pg(sql), [tuple(r) for r in rows])

    def query(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        self._cur.execute(_pg(sql), tuple(args))
        return [tuple(r) for r in self._cur.fetchall()]


def _pg(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the store's SQL has no ``%`` or ``?`` else)."""
    return sql.replace("?", "%s")


class PostgresDatabase:
    """A PostgreSQL database shared by every notifier instance; open with :meth:`connect`."""

    name = "postgresql"
    shared = True

    def __init__(self, dsn: str, where: str, conn: Any) -> None:
        self._dsn = dsn
        self.where = f"postgresql {where}"
        self._conn = conn

    @classmethod
    def connect(cls, dsn: str, where: str, *, readonly: bool = False) -> PostgresDatabase:
        """Connect and migrate (unless ``readonly``); runs on the store's thread."""
        db = cls(dsn, where, _pg_connect(dsn, where))
        try:
            db._migrate(readonly)
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, readonly: bool) -> None:
        import psycopg

        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                if not readonly:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    cur.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
                    )
                cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
                exists = cur.fetchone()[0]
                version = 0
                if exists:
                    cur.execute("SELECT max(version) FROM schema_version")
                    version = cur.fetchone()[0] or 0
                if version > POSTGRES_SCHEMA_VERSION:
                    raise StoreError(
                        f"store {self.where} has schema v{version}, newer than this "
                        f"notifier's v{POSTGRES_SCHEMA_VERSION}"
                    )
                if version < POSTGRES_SCHEMA_VERSION:
                    if readonly:
                        raise StoreError(
                            f"store {self.where} has schema v{version}; run the notifier once"
                        )
                    for number, script in enumerate(
                        POSTGRES_MIGRATIONS[version:], start=version + 1
                    ):
                        cur.execute(script)
                        cur.execute("INSERT INTO schema_version VALUES (%s)", (number,))
                        log.info("store %s: migrated to schema v%d", self.where, number)
        except psycopg.Error as exc:
            raise StoreError(f"store {self.where}: {exc}") from exc

    def run(self, work: Callable[[Tx], _T], *, write: bool = True, durable: bool = True) -> _T:
        import psycopg
        from psycopg import errors

        retryable = (
            errors.UniqueViolation,
            errors.SerializationFailure,
            errors.DeadlockDetected,
        )
        last: Exception | None = None
        for attempt in range(1, PG_ATTEMPTS + 1):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = _pg_connect(self._dsn, self.where)
                with self._conn.transaction(), self._conn.cursor() as cur:
                    if not durable:
                        cur.execute("SET LOCAL synchronous_commit = off")
                    return work(_PgTx(cur))
            except retryable as exc:
                last = exc
                log.debug("store %s: retrying a transaction that lost a race: %s", self.where, exc)
            except psycopg.OperationalError as exc:
                last = exc
                log.warning(
                    "store %s: connection problem (%s); reconnecting (attempt %d of %d)",
                    self.where,
                    str(exc).strip(),
                    attempt,
                    PG_ATTEMPTS,
                )
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
                time.sleep(min(0.2 * 2**attempt, 5.0))  # on the store's thread, not the loop
            except psycopg.Error as exc:
                raise StoreError(f"store {self.where}: {exc}") from exc
        raise StoreError(f"store {self.where}: giving up after {PG_ATTEMPTS} attempts: {last}")

    def sync(self) -> None:
        """Nothing to do: the server flushes ``synchronous_commit=off`` commits within
        3 x ``wal_writer_delay`` (0.6 s by default)."""

    def create_index(self, name: str, definition: str) -> None:
        """Built ``CONCURRENTLY`` (outside a transaction): the notifier's inserts go on
        while a big table is indexed.  A build that failed half-way leaves an invalid
        index, which ``IF NOT EXISTS`` would keep for ever: it is dropped and built again."""
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = _pg_connect(self._dsn, self.where)
            with self._conn.cursor() as cur:  # autocommit: no transaction around it
                cur.execute(
                    "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
                    " WHERE c.relname = %s AND pg_table_is_visible(c.oid)",
                    (name,),
                )
                found = cur.fetchone()
                if found is not None and found[0]:
                    return
                if found is not None:
                    log.warning("store %s: index %s is invalid; building it again",
                                self.where, name)  # fmt: skip
                    cur.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                cur.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}")
        except psycopg.Error as exc:
            raise StoreError(f"store {self.where}: index {name}: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()


def _pg_connect(dsn: str, where: str) -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the cloud extra installs it
        raise StoreError(
            "store backend postgresql needs psycopg 3: pip install 'satoyama-edge[cloud]'"
        ) from exc
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        # psycopg's message names host and database, never the password.
        raise StoreError(f"cannot connect to store postgresql {where}: {exc}") from exc
