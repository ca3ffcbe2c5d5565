"""The outbox against damage: flipped bits in rows and pages, a damaged or foreign
``-wal``, a 0-byte file, a disk that refuses writes, counts that must not drift.

Every test damages a real SQLite file the way a dying SD card or a power cut
would (bytes written into the file on disk, or values SQLite stores without
checking), then checks that nothing is lost silently and the queue goes on.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from edge.event import Series, TelemetryBatch, encode, encode_telemetry, new_event_id
from edge.link.outbox import Notice, Outbox, Row, salvaged_marker
from tests.edge.link.test_outbox import make_event


def files(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern))


def copy_files(path: Path, folder: Path) -> None:
    """The outbox file and its -wal, copied as they are this instant (a power cut)."""
    folder.mkdir(exist_ok=True)
    for suffix in ("", "-wal"):
        shutil.copyfile(path.with_name(path.name + suffix), folder / (path.name + suffix))


def notices_of(box: Outbox, kind: str, seen: list[Notice]) -> list[Notice]:
    seen.extend(box.take_notices())
    return [n for n in seen if n.kind == kind]


async def drain(box: Outbox, rounds: int = 200) -> dict[str, bytes]:
    """Take everything the outbox hands out, acknowledging as the cloud would."""
    got: dict[str, bytes] = {}
    for _ in range(rounds):
        batch = await box.pending(50)
        if not batch:
            return got
        for p in batch:
            assert p.id not in got, f"{p.id} handed out again after its ack"
            got[p.id] = p.payload
        await box.ack([p.id for p in batch])
    raise AssertionError("the outbox never drained")


async def filled(path: Path, n: int = 300) -> dict[str, bytes]:
    """An outbox file holding ``n`` events of every severity, checkpointed and closed."""
    box = Outbox(path)
    box.open()
    events = [make_event(i, ("alarm", "warning", "info")[i % 3]) for i in range(1, n + 1)]
    assert await box.put_many(events)
    box.close()
    return {e.id: encode(e) for e in events}


# -- 1. one damaged row never stops the queue ---------------------------------------


async def test_invalid_utf8_in_an_id_is_quarantined_once_and_alarms_still_leave(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    box.open()
    bad, alarm, info = make_event(1), make_event(2), make_event(3, "info", "heartbeat")
    for e in (bad, alarm, info):
        await box.put(e)
    box.close()
    with sqlite3.connect(path) as conn:  # one flipped bit: no longer UTF-8
        raw = bytearray(bad.id.encode())
        raw[3] |= 0x80
        conn.execute("UPDATE events SET id = CAST(? AS TEXT) WHERE id = ?", (bytes(raw), bad.id))
    box = Outbox(path)
    box.open()
    seen: list[Notice] = []
    try:
        assert [p.id for p in await box.pending(10)] == [alarm.id, info.id]
        assert [p.id for p in await box.pending(10)] == [alarm.id, info.id]
        quarantined = notices_of(box, "quarantined", seen)
        assert len(quarantined) == 1 and quarantined[0].data["rows"] == 1  # reported once
        stats = await box.stats()
        assert (stats.depth, stats.quarantined) == (2, 1)
    finally:
        box.close()
    with sqlite3.connect(path) as conn:  # kept, bytes and all, for a person to look at
        kept = conn.execute("SELECT id, payload, reason FROM quarantine").fetchall()
        assert kept[0][0] == bytes(raw) and kept[0][1] == encode(bad)
        assert "unreadable text" in kept[0][2]
        assert conn.execute("SELECT value FROM meta WHERE key='count'").fetchone() == (2,)


async def test_rows_whose_payload_does_not_parse_are_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    box.open()
    events = [make_event(i) for i in range(1, 5)]
    batch = TelemetryBatch(device="d", site="s", boot="b", seq=1, t0=0.0, clock_synced=True,
                           series={"x.cm": Series(t=[0.0], v=[1.0])}, id=new_event_id())
    tele = Row(batch.id, 0, 3, "telemetry", "telemetry", 0.0, encode_telemetry(batch))
    await box.put_many(events)
    await box.put_rows([tele])
    box.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE events SET payload = x'7b2269' WHERE id = ?", (events[1].id,))
        conn.execute("UPDATE events SET payload = x'c1c1' WHERE channel = 'telemetry'")
        other = make_event(99)  # a well-formed envelope, but another row's
        conn.execute("UPDATE events SET payload = ? WHERE id = ?", (encode(other), events[2].id))
    box = Outbox(path)
    box.open()
    try:
        got = await drain(box)
        assert set(got) == {events[0].id, events[3].id}
        assert (await box.stats()).quarantined == 3
        assert await box.depth() == 0
    finally:
        box.close()


def _pages(path: Path, names: set[str], types: set[str]) -> tuple[int, list[int]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        rows = conn.execute("SELECT name, pageno, pagetype FROM dbstat").fetchall()
    return size, [p for name, p, kind in rows if name in names and kind in types]


def _damage(path: Path, page_size: int, page: int, rng: random.Random, n: int) -> None:
    """Write ``n`` random bytes at random places of one page, in the file on disk."""
    with path.open("r+b") as f:
        for _ in range(n):
            f.seek((page - 1) * page_size + rng.randrange(8, page_size))
            f.write(bytes([rng.randrange(256)]))


@pytest.mark.parametrize("seed", range(12))
async def test_random_damage_to_index_pages_loses_nothing(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "outbox.sqlite3"
    sent = await filled(path)
    size, pages = _pages(path, {"events_by_priority", "sqlite_autoindex_events_1"},
                         {"leaf", "internal"})
    rng = random.Random(seed)
    for page in rng.sample(pages, min(2, len(pages))):
        _damage(path, size, page, rng, 16)
    box = Outbox(path)
    box.open()
    try:
        if seed % 2:
            await box.check_integrity()  # the daemon's background check, after READY
        got = await drain(box)
    finally:
        box.close()
    assert got == sent  # the table itself was intact: every row, unchanged


@pytest.mark.parametrize("seed", range(12))
async def test_random_damage_to_row_pages_costs_only_those_rows_and_is_reported(
    tmp_path: Path, seed: int
) -> None:
    path = tmp_path / "outbox.sqlite3"
    sent = await filled(path)
    size, pages = _pages(path, {"events"}, {"leaf"})
    rng = random.Random(seed)
    hit = rng.sample(pages, 2)
    data = path.read_bytes()  # before the damage: which rows live on those pages
    for page in hit:
        _damage(path, size, page, rng, rng.choice((1, 4, 40)))
    on_hit = {
        i for i in sent
        if any(i.encode() in data[(p - 1) * size : p * size] for p in hit)
    }
    box = Outbox(path)
    box.open()
    seen: list[Notice] = []
    try:
        if seed % 2:
            await box.check_integrity()
        got = await drain(box)
        notices = notices_of(box, "quarantined", seen) + notices_of(box, "corrupt", seen)
    finally:
        box.close()
    for i, payload in got.items():
        assert sent.get(i) == payload, "an event was invented or altered"
    assert set(sent) - on_hit <= set(got), "rows on undamaged pages were lost"
    if set(got) != set(sent):
        assert notices, "rows were lost without a report"


# -- 4. corruption: the file is set aside, and every readable row salvaged ---------


async def test_corrupt_file_found_while_running_is_salvaged_into_a_fresh_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite3"
    sent = await filled(path)
    size, pages = _pages(path, {"events"}, {"leaf"})
    with path.open("r+b") as f:  # a leaf page's header destroyed: SQLite calls it corrupt
        f.seek((pages[len(pages) // 2] - 1) * size)
        f.write(b"\xff" * 12)
    box = Outbox(path)
    box.open()
    seen: list[Notice] = []
    try:
        got = await drain(box)
        corrupt = notices_of(box, "corrupt", seen)
        assert len(corrupt) == 1
        data = corrupt[0].data
        # (rows handed out and acknowledged before the damage was met are not counted)
        assert data["unreadable"] == len(sent) - len(got) and data["salvaged"] <= len(got)
        assert 0 < len(sent) - len(got) < 60  # one page's rows
        e = make_event(1000)
        assert await box.put(e) is True
        assert [p.id for p in await box.pending(5)] == [e.id]
    finally:
        box.close()
    assert all(sent[i] == p for i, p in got.items())  # ids kept: the cloud de-duplicates
    (aside,) = [p for p in files(tmp_path, "outbox.sqlite3.corrupt-*") if p.name[-4:] != "-wal"]
    assert salvaged_marker(aside).exists()


async def test_a_file_set_aside_earlier_is_salvaged_at_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    sent = await filled(path, 50)
    path.rename(tmp_path / "outbox.sqlite3.corrupt-20260101T000000Z")  # as the old code did
    box = Outbox(path)
    box.open()
    seen: list[Notice] = []
    try:
        assert await drain(box) == sent
        assert len(notices_of(box, "corrupt", seen)) == 1
    finally:
        box.close()
    again = Outbox(path)
    again.open()
    try:
        assert await again.pending(10) == []  # salvaged once, not at every start
    finally:
        again.close()


# -- 5. the -wal is checked before SQLite may discard it ---------------------------


async def _crash_image(path: Path, copy_to: Path, events: int) -> dict[str, bytes]:
    """Events committed to the -wal of an open outbox; its files copied as a power cut
    would leave them (the main file checkpointed before, the -wal not)."""
    box = Outbox(path)
    box.open()
    box.close()  # the schema and the outbox id reach the main file
    box = Outbox(path)
    box.open()
    sent: dict[str, bytes] = {}
    try:
        for start in range(0, events, 10):  # many small transactions
            batch = [make_event(i) for i in range(start + 1, start + 11)]
            await box.put_many(batch)
            sent.update({e.id: encode(e) for e in batch})
        copy_files(path, copy_to)
    finally:
        box.close()
    return sent


async def test_truncated_wal_is_kept_aside_and_reported(tmp_path: Path) -> None:
    sent = await _crash_image(tmp_path / "a" / "outbox.sqlite3", tmp_path / "b", 200)
    path = tmp_path / "b" / "outbox.sqlite3"
    wal = path.with_name(path.name + "-wal")
    whole = wal.read_bytes()
    wal.write_bytes(whole[: len(whole) // 2 + 1000])  # cut in the middle of a frame
    box = Outbox(path)
    box.open()
    seen: list[Notice] = []
    try:
        (notice,) = notices_of(box, "wal", seen)
        assert notice.code == "truncated"
        kept = path.with_name(notice.data["kept"])
        assert kept.read_bytes() == whole[: len(whole) // 2 + 1000]  # as found
        got = await drain(box)
        assert got and all(sent[i] == p for i, p in got.items())  # what SQLite could use
    finally:
        box.close()


async def test_wal_damaged_in_the_middle_reports_the_committed_transactions_dropped(
    tmp_path: Path,
) -> None:
    await _crash_image(tmp_path / "a" / "outbox.sqlite3", tmp_path / "b", 200)
    path = tmp_path / "b" / "outbox.sqlite3"
    wal = path.with_name(path.name + "-wal")
    data = bytearray(wal.read_bytes())
    data[len(data) // 3] ^= 0x01  # one bit, in a frame SQLite then stops at
    wal.write_bytes(bytes(data))
    box = Outbox(path)
    box.open()
    seen: list[Notice] = []
    try:
        (notice,) = notices_of(box, "wal", seen)
        assert notice.code == "damaged"
        assert "committed transaction(s) after them are lost" in notice.message
    finally:
        box.close()


async def test_foreign_wal_is_set_aside_unused(tmp_path: Path) -> None:
    mine = await _crash_image(tmp_path / "a" / "outbox.sqlite3", tmp_path / "a2", 30)
    theirs = await _crash_image(tmp_path / "b" / "outbox.sqlite3", tmp_path / "b2", 30)
    path = tmp_path / "a2" / "outbox.sqlite3"
    shutil.copyfile(tmp_path / "b2" / "outbox.sqlite3-wal", path.with_name(path.name + "-wal"))
    box = Outbox(path)
    box.open()
    seen: list[Notice] = []
    try:
        (notice,) = notices_of(box, "wal", seen)
        assert notice.code == "foreign"
        assert path.with_name(notice.data["kept"]).exists()
        got = await drain(box)
    finally:
        box.close()
    assert not set(got) & set(theirs), "another outbox's events were published"
    assert set(got) <= set(mine)


async def test_zero_byte_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"")
    box = Outbox(path)
    box.open()
    seen: list[Notice] = []
    try:
        (notice,) = notices_of(box, "empty_file", seen)
        assert "0 bytes" in notice.message
        e = make_event(1)
        assert await box.put(e) is True
    finally:
        box.close()


async def test_zero_byte_file_with_a_wal_keeps_the_wal_and_salvages_it(tmp_path: Path) -> None:
    sent = await _crash_image(tmp_path / "a" / "outbox.sqlite3", tmp_path / "b", 100)
    path = tmp_path / "b" / "outbox.sqlite3"
    wal = path.with_name(path.name + "-wal")
    original = wal.read_bytes()
    path.write_bytes(b"")  # SQLite would delete the -wal of a 0-byte file, silently
    box = Outbox(path)
    box.open()
    seen: list[Notice] = []
    try:
        (notice,) = notices_of(box, "empty_file", seen)
        assert "-wal is kept" in notice.message
        kept = files(tmp_path / "b", "outbox.sqlite3.wal-empty-*")
        assert len(kept) == 1 and kept[0].read_bytes() == original
        got = await drain(box)
        salvage = notices_of(box, "corrupt", seen)
        assert len(salvage) == 1 and salvage[0].data["salvaged"] == len(got)
    finally:
        box.close()
    assert got == sent  # rebuilt from the -wal's committed frames: every event


# -- 2 and 3. counts that cannot drift; a fault reported once, recovered once -------


async def test_a_full_disk_is_one_fault_and_one_recovery_however_busy(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    box.open()
    seen: list[Notice] = []
    try:
        assert box._conn is not None
        await box.put_many([make_event(i) for i in range(1, 20)])
        pages = box._conn.execute("PRAGMA page_count").fetchone()[0]
        box._conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own SQLITE_FULL
        i = 20
        while box.fault is None:  # until the last free page is taken
            await box.put(make_event(i))
            i += 1
            assert i < 1000
        first = i
        for i in range(first, first + 100):
            await box.put(make_event(i))
            await box.pending(10)  # reads commit nothing: no verdict on the disk
            if i % 10 == 0:
                assert await box.retry() is False
            assert box.fault is not None
        assert len(notices_of(box, "fault", seen)) == 1
        assert notices_of(box, "recovered", seen) == []
        box._conn.execute("PRAGMA max_page_count=1073741823")
        await box.pending(10)
        assert box.fault is not None  # still no write: still the same fault
        assert await box.retry() is True
        assert len(notices_of(box, "fault", seen)) == 1
        assert len(notices_of(box, "recovered", seen)) == 1
        assert await box.depth() == first + 99
    finally:
        box.close()


async def test_kept_count_matches_the_rows_after_failed_batches(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path, max_events=150)
    box.open()
    try:
        assert box._conn is not None
        durable = [make_event(i) for i in range(1, 101)]
        assert await box.put_many(durable)
        pages = box._conn.execute("PRAGMA page_count").fetchone()[0]
        box._conn.execute(f"PRAGMA max_page_count={pages + 1}")
        for i in range(101, 141):
            await box.put(make_event(i))
        for _ in range(5):
            await box.retry()
        box._conn.execute("PRAGMA max_page_count=1073741823")
        assert await box.retry() is True
        stats = await box.stats()
        assert (stats.depth, stats.evicted) == (140, {})  # never over the cap: none evicted
    finally:
        box.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        kept = conn.execute("SELECT value FROM meta WHERE key='count'").fetchone()[0]
        assert rows == kept == 140
        ids = {r[0] for r in conn.execute("SELECT id FROM events")}
    assert {e.id for e in durable} <= ids


async def test_background_check_recounts_a_count_that_drifted(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    await filled(path, 30)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = 98736 WHERE key = 'count'")
    box = Outbox(path)
    box.open()
    try:
        assert await box.check_integrity() == "recounted"
        assert await box.depth() == 30
    finally:
        box.close()


# -- 6 and 7. cheap at the cap, cheap to open, and the file shrinks ----------------


async def test_a_drained_outbox_gives_its_space_back(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    box.open()
    try:
        events = [make_event(i) for i in range(1, 3001)]
        await box.put_many(events)
        assert box._conn is not None
        full = box._conn.execute("PRAGMA page_count").fetchone()[0]
        for start in range(0, 3000, 500):
            await box.ack([e.id for e in events[start : start + 500]])
        after = box._conn.execute("PRAGMA page_count").fetchone()[0]
        assert after < full / 4
    finally:
        box.close()


async def test_a_version_1_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    events = [make_event(i) for i in range(1, 40)]
    with sqlite3.connect(path) as conn:  # as the first release wrote it
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
            "CREATE TABLE events (n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, seq INTEGER NOT"
            " NULL, rank INTEGER NOT NULL, kind TEXT NOT NULL, channel TEXT NOT NULL, created REAL"
            " NOT NULL, payload BLOB NOT NULL);"
            "CREATE INDEX events_by_priority ON events (rank, n);"
            "PRAGMA user_version=1;"
        )
        conn.executemany(
            "INSERT INTO events (id, seq, rank, kind, channel, created, payload) "
            "VALUES (?,?,?,?,?,?,?)",
            [Row.of(e, 1.0) for e in events],
        )
        conn.execute("INSERT INTO meta VALUES ('last_seq', 39)")
    box = Outbox(path)
    box.open()
    try:
        assert box.last_seq == 39
        assert await box.depth() == 39
        assert [p.id for p in await box.pending(100)] == [e.id for e in events]
        assert box._conn is not None
        assert box._conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert box._conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    finally:
        box.close()


async def _steps_per_put_at_the_cap(path: Path, cap: int) -> int:
    """SQLite VM instructions for one put into an outbox holding ``cap`` rows."""
    box = Outbox(path, max_events=cap)
    box.open()
    try:
        await box.put_many([make_event(i, "info", "heartbeat") for i in range(1, cap + 1)])
        await box.put(make_event(cap + 1, "info", "heartbeat"))  # evicting from now on
        assert box._conn is not None
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        box._conn.set_progress_handler(count, 1)  # the writer is idle between puts
        await box.put(make_event(cap + 2, "info", "heartbeat"))
        box._conn.set_progress_handler(None, 1)
        assert await box.depth() == cap
        return steps[0]
    finally:
        box.close()


async def test_a_put_at_the_cap_costs_the_same_however_big_the_backlog(tmp_path: Path) -> None:
    small = await _steps_per_put_at_the_cap(tmp_path / "small.sqlite3", 500)
    big = await _steps_per_put_at_the_cap(tmp_path / "big.sqlite3", 10_000)
    assert big < 2 * small, (small, big)  # through the (rank, n) index, not a sort of all rows


async def test_evicting_is_noticed_once_when_it_starts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3", max_events=100)
    box.open()
    seen: list[Notice] = []
    try:
        for i in range(1, 160):
            await box.put(make_event(i, "info", "heartbeat"))
        (notice,) = notices_of(box, "evicting", seen)
        assert notice.code == "full"
        assert (await box.stats()).evicted == {"heartbeat": 59}
    finally:
        box.close()
