"""The outbox: durable in a real SQLite file, removed only on acknowledgement."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from edge.event import Event, Location, decode, new_event_id
from edge.link.outbox import Outbox


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


async def test_locked_file_keeps_events_in_memory_until_the_disk_works(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    box.open()
    try:
        assert box._conn is not None
        box._conn.execute("PRAGMA busy_timeout=20")
        # Another process holds the write lock: the event cannot be made durable.
        blocker = sqlite3.connect(path, timeout=0, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        event = make_event(1)
        assert await box.put(event) is False  # kept, but honestly not durable
        assert box.fault is not None and box.fault.code == "locked"
        assert box.health_changed.is_set()
        # Still handed to the uplink from memory.
        assert [p.id for p in await box.pending(10)] == [event.id]
        assert (await box.stats()).buffered_in_memory == 1
        assert await box.retry() is False
        blocker.execute("ROLLBACK")
        blocker.close()
        assert await box.retry() is True
        assert box.fault is None
    finally:
        box.close()
    with sqlite3.connect(path) as conn:  # durable now, as another process sees it
        assert conn.execute("SELECT id FROM events").fetchall() == [(event.id,)]


async def test_full_database_spills_and_acks_in_memory(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    box.open()
    try:
        assert box._conn is not None
        pages = box._conn.execute("PRAGMA page_count").fetchone()[0]
        box._conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own SQLITE_FULL
        big = [make_event(i) for i in range(1, 40)]
        assert await box.put_many(big) is False
        assert box.fault is not None and box.fault.code == "disk_full"
        sent = [p.id for p in await box.pending(5)]
        await box.ack(sent)  # published from memory while the disk is full
        assert sent[0] not in [p.id for p in await box.pending(100)]
        box._conn.execute("PRAGMA max_page_count=1073741823")
        assert await box.retry() is True
        remaining = [p.id for p in await box.pending(100)]
        assert remaining == [e.id for e in big[5:]]
        assert await box.depth() == len(big) - 5
    finally:
        box.close()


async def test_memory_buffer_is_bounded_lowest_priority_first(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "nodir" / "outbox.sqlite3", memory_max_events=3)
    (tmp_path / "nodir").write_text("a file where the folder should be")  # cannot open
    box.open()
    try:
        assert box.fault is not None
        info = make_event(1, "info", "heartbeat")
        alarms = [make_event(i) for i in range(2, 5)]
        assert await box.put(info) is False
        for a in alarms:
            await box.put(a)
        assert [p.id for p in await box.pending(10)] == [a.id for a in alarms]
        assert (await box.stats()).evicted == {"heartbeat": 1}
    finally:
        box.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
async def test_corrupt_file_is_moved_aside_and_a_fresh_one_started(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "outbox.sqlite3"
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        good = Outbox(path)
        good.open()
        stored = [make_event(i) for i in range(1, 300)]
        await good.put_many(stored)
        good.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE photos (name TEXT)")
    box = Outbox(path)
    box.open()
    try:
        assert box.fault is None
        assert len(box.moved_aside) == 1
        moved, reason = box.moved_aside[0]
        assert moved.exists() and moved.name.startswith("outbox.sqlite3.corrupt-")
        assert reason
        e = make_event(1)
        assert await box.put(e) is True
        ids = [p.id for p in await box.pending(1000)]
        if damage == "truncated":  # the readable half is salvaged, ids and all
            assert e.id in ids and len(ids) > 50
            assert set(ids) - {e.id} <= {s.id for s in stored}
        else:
            assert ids == [e.id]
    finally:
        box.close()


async def test_cap_evicts_oldest_lowest_priority_first_and_counts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3", max_events=5)
    box.open()
    try:
        alarm1 = make_event(1, "alarm")
        infos = [make_event(i, "info", "heartbeat") for i in range(2, 5)]
        warn = make_event(5, "warning", "sensor_fault")
        alarm2 = make_event(6, "alarm")
        alarm3 = make_event(7, "alarm")
        for e in [alarm1, *infos, warn, alarm2, alarm3]:
            await box.put(e)
        # Two over the cap: the two oldest infos went.
        ids = [p.id for p in await box.pending(10)]
        assert ids == [alarm1.id, alarm2.id, alarm3.id, warn.id, infos[2].id]
        for i in range(8, 11):
            await box.put(make_event(i, "alarm"))
        stats = await box.stats()
        assert stats.depth == 5
        assert stats.evicted == {"heartbeat": 3, "sensor_fault": 1, "animal_detected": 1}
        # Alarms went last, and then the oldest alarm first.
        assert alarm1.id not in [p.id for p in await box.pending(10)]
        await box.forget_evictions({"heartbeat": 3, "animal_detected": 1})
        assert (await box.stats()).evicted == {"sensor_fault": 1}
    finally:
        box.close()


async def test_stats_report_depth_and_oldest(tmp_path: Path) -> None:
    now = [1000.0]
    box = Outbox(tmp_path / "outbox.sqlite3", clock=lambda: now[0])
    box.open()
    try:
        assert (await box.stats()).oldest_created is None
        await box.put(make_event(1))
        now[0] = 1500.0
        await box.put(make_event(2))
        stats = await box.stats()
        assert (stats.depth, stats.oldest_created) == (2, 1000.0)
    finally:
        box.close()
