"""The nap log's writes never stall the event loop, and a clean stop loses no entry."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

from edge.nursery.log import NapLog
from edge.nursery.sheet import JST


def test_add_returns_at_once_while_the_disk_is_busy_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "naps.sqlite3"
    log = NapLog(path)
    # Another writer holds the database (a slow SD card, the report reading it, ...).
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    t0 = time.monotonic()
    now = time.time()
    for i in range(50):
        log.add("A-1", "posture_check", "supine", now + i)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.2, f"add() waited {elapsed:.2f} s for the disk on the caller's thread"
    other.execute("COMMIT")
    other.close()
    log.close()  # a clean stop writes what was queued
    again = NapLog(path)
    day = dt.datetime.fromtimestamp(now, JST).date()
    entries = again.day(day, JST) + again.day(day + dt.timedelta(days=1), JST)
    again.close()
    assert len(entries) == 50
    assert [e.t for e in entries] == [now + i for i in range(50)]


def test_many_entries_then_close_at_once_keeps_every_one(tmp_path: Path) -> None:
    path = tmp_path / "naps.sqlite3"
    log = NapLog(path)
    base = dt.datetime(2026, 11, 24, 12, 30, tzinfo=JST).timestamp()
    for i in range(2000):
        log.add(f"A-{i % 6}", "posture_check", "supine", base + i, by="")
    log.close()
    log.close()  # idempotent
    again = NapLog(path)
    assert len(again.day(dt.date(2026, 11, 24), JST)) == 2000
    again.close()


def test_a_log_of_the_old_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "naps.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(
        "CREATE TABLE nap_log (t REAL NOT NULL, cot TEXT NOT NULL, kind TEXT NOT NULL,"
        " value TEXT NOT NULL);"
    )
    t = dt.datetime(2026, 11, 24, 12, 30, tzinfo=JST).timestamp()
    old.execute("INSERT INTO nap_log VALUES (?, 'A-1', 'posture_check', 'supine')", (t,))
    old.close()
    log = NapLog(path)
    log.add("A-1", "ack", "prone_alarm", t + 1, by="YT")
    log.close()
    again = NapLog(path)
    entries = again.day(dt.date(2026, 11, 24), JST)
    again.close()
    assert [(e.kind, e.by) for e in entries] == [("posture_check", ""), ("ack", "YT")]
