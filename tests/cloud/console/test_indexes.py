"""The indexes the console adds to the notifier's ``events``: built without holding the
notifier's inserts back on PostgreSQL, and rebuilt when a build was cut short."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg

from cloud.console.state import EVENT_INDEXES, ConsoleState
from cloud.database import PostgresDatabase, SqliteDatabase
from tests.support.waiting import until_sync


def _valid(dsn: str) -> dict[str, bool]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_class c JOIN pg_index i"
            " ON i.indexrelid = c.oid WHERE c.relname LIKE 'console_events_%'"
        ).fetchall()
    return {str(name): bool(valid) for name, valid in rows}


def test_postgresql_builds_them_concurrently_and_rebuilds_an_invalid_one(pg_dsn: str) -> None:
    db = PostgresDatabase.connect(pg_dsn, "test")
    try:
        ConsoleState(db, heartbeat_timeout_s=1800.0).open()
        assert _valid(pg_dsn) == {name: True for name, _ in EVENT_INDEXES}
        # A concurrent build that failed half-way leaves an invalid index behind
        # (IF NOT EXISTS alone would keep it unused for ever).
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE pg_index SET indisvalid = false WHERE indexrelid ="
                " 'console_events_site'::regclass"
            )
        assert _valid(pg_dsn)["console_events_site"] is False
        ConsoleState(db, heartbeat_timeout_s=1800.0).open()
        assert _valid(pg_dsn) == {name: True for name, _ in EVENT_INDEXES}
    finally:
        db.close()


def test_postgresql_build_does_not_lock_out_the_notifiers_inserts(pg_dsn: str) -> None:
    """While the console builds an index, a writer holding an open transaction on
    ``events`` is not blocked (a plain CREATE INDEX would take a SHARE lock that conflicts
    with the writer's ROW EXCLUSIVE): the writer inserts again and commits, then the build
    (which waits for that transaction) finishes."""
    db = PostgresDatabase.connect(pg_dsn, "test")
    writer = psycopg.connect(pg_dsn)
    try:
        insert = (
            "INSERT INTO events (id, device, site, kind, severity, ts, received_at, payload)"
            " VALUES (%s, 'd', 's', 'heartbeat', 'info', 't', 1, '\\x00')"
        )
        writer.execute(insert, ("e1",))  # a transaction open on events, as the notifier's
        built = threading.Event()

        def build() -> None:
            ConsoleState(db, heartbeat_timeout_s=1800.0).open()
            built.set()

        builder = threading.Thread(target=build)
        builder.start()
        # The build waits for the writer's transaction; meanwhile the writer goes on.
        with psycopg.connect(pg_dsn, autocommit=True) as probe:

            def building() -> bool:
                row = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%CREATE INDEX%'"
                    " AND pid <> pg_backend_pid() AND state = 'active'"
                    " AND wait_event_type IS NOT NULL"
                ).fetchone()
                return row is not None and row[0] > 0

            until_sync(building, 20, "the index build waiting on the open transaction")
            probe.execute("SET lock_timeout = '5s'")
            probe.execute(insert, ("e2",))  # would time out under a SHARE lock
        assert not built.is_set()
        writer.commit()
        builder.join(30)
        assert built.is_set()
        assert _valid(pg_dsn) == {name: True for name, _ in EVENT_INDEXES}
    finally:
        writer.close()
        db.close()


def test_sqlite_builds_them_in_the_notifiers_file(tmp_path: Path) -> None:
    db = SqliteDatabase.connect(tmp_path / "n.sqlite3")
    try:
        ConsoleState(db, heartbeat_timeout_s=1800.0).open()
        ConsoleState(db, heartbeat_timeout_s=1800.0).open()  # idempotent
        names = db.run(
            lambda tx: tx.query("SELECT name FROM sqlite_master WHERE type = 'index'"),
            write=False,
        )
        assert {n for (n,) in names} >= {name for name, _ in EVENT_INDEXES}
    finally:
        db.close()
