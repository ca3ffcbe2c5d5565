"""The outbox: durable in a real SQLite file, removed only on acknowledgement."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from edge.event import Event, Location, decode, new_event_id
from edge.outbox import Outbox, OutboxError


def make_event(seq: int, severity: str = "alarm", kind: str = "animal_detected") -> Event:
    return Event(
        id=new_event_id(),
        device="dev-1",
        site="site-1",
        kind=kind,
        severity=severity,  # type: ignore[arg-type]
        ts=dt.datetime.now(dt.UTC),
        clock_synced=True,
        seq=seq,
        boot="boot",
        location=Location(lat=36.1, lon=137.9),
        data={"sensor": "pir_north"},
    )


@pytest.fixture
def outbox(tmp_path: Path):  # type: ignore[no-untyped-def]
    box = Outbox(tmp_path / "outbox.sqlite3")
    box.open()
    yield box
    box.close()


async def test_put_is_durable_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    box.open()
    events = [make_event(i) for i in range(1, 4)]
    for e in events:
        await box.put(e)
    box.close()
    # Another connection (as after a restart) sees them all, in WAL mode.
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3
    again = Outbox(path)
    again.open()
    try:
        assert again.last_seq == 3
        pending = await again.pending(10)
        assert [p.id for p in pending] == [e.id for e in events]
        assert decode(pending[0].payload) == events[0]
    finally:
        again.close()


async def test_removed_only_when_acknowledged(outbox: Outbox) -> None:
    a, b = make_event(1), make_event(2)
    await outbox.put(a)
    await outbox.put(b)
    await outbox.ack([a.id])
    assert [p.id for p in await outbox.pending(10)] == [b.id]
    assert await outbox.depth() == 1


async def test_alarms_leave_first_then_oldest_first(outbox: Outbox) -> None:
    info1 = make_event(1, "info", "heartbeat")
    warn = make_event(2, "warning", "sensor_fault")
    alarm1 = make_event(3, "alarm")
    info2 = make_event(4, "info", "heartbeat")
    alarm2 = make_event(5, "alarm")
    for e in (info1, warn, alarm1, info2, alarm2):
        await outbox.put(e)
    order = [p.id for p in await outbox.pending(10)]
    assert order == [alarm1.id, alarm2.id, warn.id, info1.id, info2.id]
    assert [p.id for p in await outbox.pending(2, skip=[alarm1.id])] == [alarm2.id, warn.id]


async def test_concurrent_puts_share_commits(outbox: Outbox) -> None:
    events = [make_event(i) for i in range(1, 501)]
    before = outbox.commits
    await asyncio.gather(*(outbox.put(e) for e in events))
    assert await outbox.depth() == 500
    assert outbox.commits - before < 100  # group commit, not one fsync per event


async def test_same_event_twice_is_stored_once(outbox: Outbox) -> None:
    e = make_event(1)
    await outbox.put(e)
    await outbox.put(e)
    assert await outbox.depth() == 1


async def test_failed_commit_is_reported_not_swallowed(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    box.open()
    try:
        # Another process holds the write lock: the put must fail loudly
        # (after SQLite's busy timeout), not pretend the event is recorded.
        blocker = sqlite3.connect(path, timeout=0, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        box_conn = box._conn
        assert box_conn is not None
        box_conn.execute("PRAGMA busy_timeout=50")
        with pytest.raises(OutboxError, match="locked"):
            await box.put(make_event(1))
        blocker.execute("ROLLBACK")
        blocker.close()
        await box.put(make_event(2))
        assert await box.depth() == 1
    finally:
        box.close()


def test_garbage_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    box = Outbox(path)
    with pytest.raises(OutboxError, match="outbox.sqlite3"):
        box.open()
    box.close()


async def test_close_is_idempotent(outbox: Outbox) -> None:
    outbox.close()
    outbox.close()
    with pytest.raises(OutboxError, match="not open"):
        await outbox.put(make_event(1))
