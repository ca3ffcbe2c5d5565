"""The store: de-duplication across restarts, one mail per recipient, the queue's states,
claims, and the compare-and-set behind summaries, reminders and offline notices.

Tests taking ``store_config`` run on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloud.config import StoreConfig
from cloud.database import SQLITE_MIGRATIONS
from cloud.errors import StoreError
from cloud.store import SCHEMA_VERSION, CoalescePlan, Notice, OutgoingMail, Store, TrapPlan
from tests.cloud.conftest import make_event

REPO = Path(__file__).resolve().parents[2]



#: A store the notifier wrote at schema v3 (SQLite), dumped with ``iterdump()``: two events,
#: a mail sent, one claimed by an instance that then died, one due.  Made by that
#: notifier's own Store (the commit before messages moved to ``mail_bodies``).
V3_STORE_DUMP = """\
BEGIN TRANSACTION;
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
INSERT INTO "devices" VALUES('pi-east-01','kataoka-east','online','event',1000.0,'',1001.0,
NULL,0,0,'[]',36.0794321,137.9543219);
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
INSERT INTO "events" VALUES('0192f0c0-0000-7000-8000-000000000001','pi-east-01','kataoka-east',
'animal_detected','alarm','2025-11-24T04:05:12+00:00',1000.0,
X'7B226964223A2230313932663063302D303030302D373030302D383030302D303030303030303030303031222C22646576696365223A2270692D656173742D3031222C2273697465223A226B6174616F6B612D65617374222C226B696E64223A22616E696D616C5F6465746563746564222C227365766572697479223A22616C61726D222C227473223A22323032352D31312D32345430343A30353A31325A222C22636C6F636B5F73796E636564223A747275652C22736571223A312C22626F6F74223A2234663063326539612D626F6F74222C226C6F636174696F6E223A7B226C6174223A33362E303739343332312C226C6F6E223A3133372E393534333231397D2C2264617461223A7B226465746563746F72223A227069722D31222C22736972656E223A747275652C227374726F6265223A66616C73657D2C2276223A317D'
);
INSERT INTO "events" VALUES('0192f0c0-0000-7000-8000-000000000002','pi-east-01','kataoka-east',
'animal_detected','alarm','2025-11-24T04:05:12+00:00',1001.0,
X'7B226964223A2230313932663063302D303030302D373030302D383030302D303030303030303030303032222C22646576696365223A2270692D656173742D3031222C2273697465223A226B6174616F6B612D65617374222C226B696E64223A22616E696D616C5F6465746563746564222C227365766572697479223A22616C61726D222C227473223A22323032352D31312D32345430343A30353A31325A222C22636C6F636B5F73796E636564223A747275652C22736571223A322C22626F6F74223A2234663063326539612D626F6F74222C226C6F636174696F6E223A7B226C6174223A33362E303739343332312C226C6F6E223A3133372E393534333231397D2C2264617461223A7B226465746563746F72223A227069722D31222C22736972656E223A747275652C227374726F6265223A66616C73657D2C2276223A317D'
);
CREATE TABLE instances (
        id         TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        last_seen  REAL NOT NULL,
        host       TEXT NOT NULL,
        pid        INTEGER NOT NULL
    );
CREATE TABLE "mails" (
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
INSERT INTO "mails" VALUES(1,'0192f0c0-0000-7000-8000-000000000001','animal_detected',
'kataoka-east','pi-east-01','a@example.jp',0,'sent',1,1000.0,NULL,1000.0,1003.0,
X'5375626A6563743A206F6E6520610D0A0D0A626F64792031610D0A'
,NULL,NULL);
INSERT INTO "mails" VALUES(2,'0192f0c0-0000-7000-8000-000000000001','animal_detected',
'kataoka-east','pi-east-01','b@example.jp',0,'pending',0,1000.0,NULL,1000.0,NULL,
X'5375626A6563743A206F6E6520620D0A0D0A626F64792031620D0A'
,'notifier-old',1064.0);
INSERT INTO "mails" VALUES(3,'0192f0c0-0000-7000-8000-000000000002','animal_detected',
'kataoka-east','pi-east-01','a@example.jp',0,'pending',0,1001.0,NULL,1001.0,NULL,
X'5375626A6563743A2074776F20610D0A0D0A626F64792032610D0A'
,NULL,NULL);
CREATE TABLE telemetry (
        device TEXT NOT NULL,
        series TEXT NOT NULL,
        ts     REAL NOT NULL,
        value  REAL NOT NULL,
        PRIMARY KEY (device, series, ts)
    );
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
CREATE INDEX events_received_at ON events (received_at);
CREATE INDEX mails_due ON mails (status, next_attempt);
CREATE INDEX mails_finished ON mails (finished_at);
CREATE UNIQUE INDEX episodes_open ON episodes (key) WHERE open = 1;
CREATE INDEX telemetry_ts ON telemetry (ts);
CREATE INDEX mails_created ON mails (created_at);
COMMIT;
PRAGMA user_version = 3
"""

def mails(*recipients: str) -> list[OutgoingMail]:
    return [
        OutgoingMail(recipient=r, message=f"To: {r}\r\n\r\nhi\r\n".encode()) for r in recipients
    ]


async def test_an_event_is_accepted_once_also_after_reopening(store_config: StoreConfig) -> None:
    path = store_config
    event = make_event()
    async with await Store.open(path) as store:
        assert await store.accept(event, mails("a@example.jp", "b@example.jp"))
        assert not await store.accept(event, mails("a@example.jp", "b@example.jp"))
        assert (await store.counts()).pending == 2
    async with await Store.open(path) as store:
        assert await store.has_event(event.id)
        assert not await store.accept(event, mails("a@example.jp"))
        counts = await store.counts()
        assert (counts.events, counts.pending) == (1, 2)


async def test_one_mail_per_event_and_recipient(store_config: StoreConfig) -> None:
    event = make_event()
    async with await Store.open(store_config) as store:
        result = await store.accept(event, mails("a@example.jp", "a@example.jp"))
        assert result.accepted and result.queued == 1
        assert (await store.counts()).pending == 1


async def test_an_event_without_mails_is_still_remembered(store_config: StoreConfig) -> None:
    event = make_event(site="unknown-site")
    async with await Store.open(store_config) as store:
        assert await store.accept(event, [])
        assert not await store.accept(event, [])
        assert (await store.counts()).events == 1


async def test_due_mails_alarms_first_and_only_when_due(store_config: StoreConfig) -> None:
    now = time.time()
    info = make_event("heartbeat", "info")
    alarm = make_event("trap_triggered", "alarm")
    async with await Store.open(store_config) as store:
        await store.accept(info, mails("a@example.jp"), now=now)
        await store.accept(alarm, mails("a@example.jp"), now=now + 0.001)
        due = await store.due_mails(now + 1)
        assert [m.event_id for m in due] == [alarm.id, info.id]
        assert due[0].kind == "trap_triggered"
        assert due[0].message.startswith(b"To: a@example.jp")
        # Rescheduled into the future: not due now, but next_due says when.
        await store.reschedule(due[0].id, now + 60, "451 4.3.0 try again")
        assert [m.event_id for m in await store.due_mails(now + 1)] == [info.id]
        assert await store.next_due() == pytest.approx(now, abs=0.01)
        [pending] = await store.mails("pending", event_id=alarm.id)
        assert (pending.attempts, pending.last_error) == (1, "451 4.3.0 try again")


async def test_sent_and_failed_are_final_and_counted(store_config: StoreConfig) -> None:
    event = make_event()
    async with await Store.open(store_config) as store:
        await store.accept(event, mails("a@example.jp", "b@example.jp", "c@example.jp"))
        a, b, _c = await store.due_mails()
        await store.mark_sent(a.id)
        await store.mark_failed(b.id, "550 5.1.1 no such user")
        counts = await store.counts()
        assert (counts.pending, counts.sent, counts.failed) == (1, 1, 1)
        [failed] = await store.mails("failed")
        assert failed.recipient == "b@example.jp"
        assert failed.last_error == "550 5.1.1 no such user"
        assert failed.finished_at is not None
        # A final state does not go back to pending.
        await store.reschedule(b.id, time.time(), "late retry")
        assert (await store.counts()).failed == 1
        assert [m.recipient for m in await store.due_mails()] == ["c@example.jp"]
        assert await store.next_due() is not None


async def test_store_is_wal_with_a_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite3"
    async with await Store.open(path):
        pass
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite3"
    path.write_bytes(b"this is not an SQLite file" * 100)
    with pytest.raises(StoreError, match="cannot open store"):
        await Store.open(path)


async def test_a_corrupt_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite3"
    async with await Store.open(path) as store:
        for _ in range(200):
            await store.accept(make_event(), mails("a@example.jp"))
    # Scribble over the middle of the file, past the header.
    data = bytearray(path.read_bytes())
    assert len(data) > 16384
    data[8192:12288] = b"\xa5" * 4096
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError):
        await Store.open(path)


async def test_a_store_from_a_newer_notifier_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite3"
    async with await Store.open(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await Store.open(path)


async def test_readonly_open_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store"):
        await Store.open(tmp_path / "absent.sqlite3", readonly=True)
    assert not (tmp_path / "absent.sqlite3").exists()


async def test_readonly_reader_sees_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite3"
    async with await Store.open(path) as writer:
        await writer.accept(make_event(), mails("a@example.jp"))
        async with await Store.open(path, readonly=True) as reader:
            assert (await reader.counts()).pending == 1


async def test_prune_forgets_old_events_but_never_pending_mails(
    store_config: StoreConfig,
) -> None:
    now = time.time()
    old_sent, old_pending, recent = make_event(), make_event(), make_event()
    async with await Store.open(store_config) as store:
        await store.accept(old_sent, mails("a@example.jp"), now=now - 1000)
        await store.accept(old_pending, mails("a@example.jp"), now=now - 1000)
        await store.accept(recent, mails("a@example.jp"), now=now)
        [sent] = await store.mails(event_id=old_sent.id)
        await store.mark_sent(sent.id)
        assert (await store.prune(now - 500)).events == 1
        assert not await store.has_event(old_sent.id)
        assert await store.has_event(old_pending.id)
        assert await store.has_event(recent.id)
        assert (await store.counts()).sent == 0  # its mail went with it


async def test_closed_store_refuses_calls(store_config: StoreConfig) -> None:
    store = await Store.open(store_config)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.counts()


async def test_a_claimed_mail_is_not_claimed_again_until_the_claim_runs_out(
    store_config: StoreConfig,
) -> None:
    now = time.time()
    async with await Store.open(store_config) as store:
        await store.accept(make_event(), mails("a@example.jp", "b@example.jp"), now=now)
        first = await store.claim_due("n1", now=now, lease_s=30, limit=1)
        second = await store.claim_due("n2", now=now, lease_s=100)
        assert len(first) == 1 and len(second) == 1
        assert first[0].recipient != second[0].recipient
        assert await store.claim_due("n2", now=now, lease_s=30) == []
        # n1 died holding its claim: n2 gets the mail once the claim has run out ...
        [late] = await store.claim_due("n2", now=now + 31, lease_s=30)
        assert late.id == first[0].id
        # ... or at once, when n1 restarts and gives back what it held.
        await store.release_claims("n2")
        assert len(await store.claim_due("n1", now=now + 31, lease_s=30)) == 2


async def test_a_burst_folds_into_one_mail_until_it_goes_quiet(store_config: StoreConfig) -> None:
    plan = CoalescePlan(
        "site|dev|animal_detected|", quiet_s=600, summary_every_s=3600, sensor="pir"
    )
    now = 1_000_000.0
    async with await Store.open(store_config) as store:
        first = await store.accept(make_event(), mails("a@example.jp"), now=now, coalesce=plan)
        assert not first.folded and first.queued == 1
        for minute in range(1, 6):
            later = await store.accept(
                make_event(data={"sensor": "pir", "deterrent": "resting"}),
                mails("a@example.jp"), now=now + 60 * minute, coalesce=plan,
            )  # fmt: skip
            assert later.folded and later.queued == 0
        assert await store.due_episodes(now + 300 + 599) == []
        [episode] = await store.due_episodes(now + 300 + 600)
        assert (episode.folded, episode.stats["by_sensor"]) == (5, {"pir": 5})
        notice = Notice(f"{episode.id}.s1", "animal_detected_summary", "info", "site", "dev")
        summary = mails("a@example.jp")
        assert await store.episode_summarised(episode, notice, summary, now=now + 900, close=True)
        # The same decision taken again (another instance, a retry) does nothing.
        assert not await store.episode_summarised(episode, notice, summary, now=now + 900,
                                                  close=True)  # fmt: skip
        assert len(await store.mails(event_id=notice.id)) == 1
        assert await store.episodes() == []
        # After the quiet spell the next detection is news again.
        again = await store.accept(make_event(), mails("a@example.jp"), now=now + 2000,
                                   coalesce=plan)  # fmt: skip
        assert not again.folded


async def test_trap_reminders_are_queued_once_each_and_stop_at_reset(
    store_config: StoreConfig,
) -> None:
    now = 1_000_000.0
    trigger = make_event("trap_triggered", data={"sensor": "box"})
    opened = TrapPlan("open", "site|dev|box", "box", now - 5, reminder_every_s=3600)
    async with await Store.open(store_config) as store:
        assert (await store.accept(trigger, mails("h@example.jp"), now=now, trap=opened)).queued
        assert await store.due_traps(now + 3599) == []
        [trap] = await store.due_traps(now + 3600)
        notice = Notice(f"{trigger.id}.r1", "trap_reminder", "alarm", "site", "dev")
        assert await store.trap_reminded(trap, notice, mails("h@example.jp"), now=now + 3600,
                                         every_s=3600)  # fmt: skip
        assert not await store.trap_reminded(trap, notice, mails("h@example.jp"),
                                             now=now + 3600, every_s=3600)  # fmt: skip
        [trap] = await store.open_traps()
        assert (trap.reminders, trap.next_reminder_at) == (1, now + 7200)
        reset = TrapPlan("close", "site|dev|box", "box", now, 0)
        await store.accept(make_event("trap_reset", data={"sensor": "box"}), [], now=now + 4000,
                           trap=reset)  # fmt: skip
        assert await store.due_traps(now + 99999) == []


async def test_device_offline_and_back_are_each_decided_once(store_config: StoreConfig) -> None:
    now = 1_000_000.0
    async with await Store.open(store_config) as store:
        await store.accept(make_event("heartbeat", "info", data={}), [], now=now,
                           heartbeat_interval=60)  # fmt: skip
        row = await store.record_status("pi-east-01", "offline", "connection lost", now=now + 1)
        assert (row.state, row.cause, row.notified) == ("offline", "status", False)
        assert row.version == "", "no status said a version yet"
        assert await store.overdue_devices(now=now + 100, grace_s=300,
                                           heartbeat_timeout_s=900) == []  # fmt: skip
        [(due, by_heartbeat)] = await store.overdue_devices(
            now=now + 301, grace_s=300, heartbeat_timeout_s=900
        )
        assert not by_heartbeat
        off = Notice("pi-east-01.off1", "device_offline", "warning", "kataoka-east", "pi-east-01")
        assert await store.device_offline_notified(due, off, mails("op@example.jp"),
                                                   now=now + 301, by_heartbeat=False)
        assert not await store.device_offline_notified(due, off, mails("op@example.jp"),
                                                       now=now + 301, by_heartbeat=False)
        row = await store.record_status("pi-east-01", "online", "", now=now + 400,
                                        version="1.4.2")  # fmt: skip
        assert row.version == "1.4.2"
        on = Notice("pi-east-01.on2", "device_online", "info", "kataoka-east", "pi-east-01")
        assert row.recipients == (("op@example.jp", "ja"),)
        assert await store.device_back_online(row, on, mails("op@example.jp"), now=now + 400)
        assert not await store.device_back_online(row, on, mails("op@example.jp"), now=now + 400)
        # Silent past max(timeout, 2 x interval): offline by heartbeat.
        [(quiet, by_heartbeat)] = await store.overdue_devices(
            now=now + 400 + 901, grace_s=300, heartbeat_timeout_s=900
        )
        assert by_heartbeat and quiet.state == "online"
        assert len(await store.mails()) == 2


async def test_telemetry_keeps_each_reading_once(store_config: StoreConfig) -> None:
    points = [("level_east.level_cm", 100.0 + i * 300, 10.0 + i) for i in range(5)]
    async with await Store.open(store_config) as store:
        assert await store.add_telemetry("pi", "site", points, now=2000) == 5
        assert await store.add_telemetry("pi", "site", points, now=2000) == 0  # redelivered
        got = await store.series("pi", "level_east.level_cm", 300, 900)
        assert got == [(400.0, 11.0), (700.0, 12.0)]
        await store.prune(0, telemetry_before=1000)
        assert await store.series("pi", "level_east.level_cm", 0, 9999) == [
            (1000.0, 13.0), (1300.0, 14.0),
        ]  # fmt: skip


async def test_a_version_1_store_is_migrated_with_its_mails(tmp_path: Path) -> None:
    """A store written by the first notifier opens, keeps its queue and sends it."""
    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(SQLITE_MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    conn.execute(
        "INSERT INTO events VALUES ('e1', 'pi', 'site', 'trap_triggered', 'alarm',"
        " '2025-11-24T04:05:12+00:00', 1.0, x'00')"
    )
    conn.execute(
        "INSERT INTO mails (event_id, recipient, priority, next_attempt, created_at, message)"
        " VALUES ('e1', 'a@example.jp', 0, 1.0, 1.0, x'41')"
    )
    conn.commit()
    conn.close()
    async with await Store.open(path) as store:
        [mail] = await store.due_mails(now=2.0)
        assert (mail.event_id, mail.kind, mail.site, mail.message) == (
            "e1", "trap_triggered", "site", b"A",
        )  # fmt: skip
        assert not await store.accept(make_event(event_id="e1"), [])


async def test_a_version_3_store_with_messages_in_its_mails_rows_is_migrated(
    tmp_path: Path,
) -> None:
    """A store the notifier wrote before messages had a table of their own: its queue
    goes out once (the mail a dead instance had claimed too, once its claim ran out),
    with the messages it was given; the mail sent before is not sent again."""
    path = tmp_path / "v3.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(V3_STORE_DUMP)
    conn.close()
    e1, e2 = "0192f0c0-0000-7000-8000-000000000001", "0192f0c0-0000-7000-8000-000000000002"
    async with await Store.open(path) as store:
        assert [(m.id, m.status, m.message) for m in await store.mails()] == [
            (1, "sent", b"Subject: one a\r\n\r\nbody 1a\r\n"),
            (2, "pending", b"Subject: one b\r\n\r\nbody 1b\r\n"),
            (3, "pending", b"Subject: two a\r\n\r\nbody 2a\r\n"),
        ]
        # Mail 2 is claimed by notifier-old until 1064: not before.
        assert [m.id for m in await store.claim_due("n", now=1050.0, lease_s=60.0)] == [3]
        [again] = await store.claim_due("n", now=1065.0, lease_s=60.0)
        assert (again.id, again.event_id, again.recipient) == (2, e1, "b@example.jp")
        assert again.message == b"Subject: one b\r\n\r\nbody 1b\r\n"
        await store.mark_sent_many([(2, 1066.0), (3, 1066.0)])
        assert await store.claim_due("n", now=99999.0, lease_s=60.0) == []
        assert not await store.accept(make_event(event_id=e2), [])
        counts = await store.counts()
        assert (counts.events, counts.pending, counts.sent) == (2, 0, 3)
    conn = sqlite3.connect(path)
    try:
        # The pending mails' messages moved; the finished one's stays in its row.
        assert conn.execute("SELECT id FROM mail_bodies ORDER BY id").fetchall() == [(2,), (3,)]
        lengths = conn.execute("SELECT id, length(message) FROM mails ORDER BY id").fetchall()
        assert lengths == [(1, 27), (2, 0), (3, 0)]
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


async def test_a_postgresql_store_of_version_2_is_migrated_with_its_queue(
    pg_dsn: str,
) -> None:
    """PostgreSQL at v2 (messages in the ``mails`` rows): after the migration the queue
    keeps its messages and is claimed once."""
    import psycopg

    from cloud.config import Secret
    from cloud.database import POSTGRES_MIGRATIONS

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for number, script in enumerate(POSTGRES_MIGRATIONS[:2], start=1):
            conn.execute(script)
            conn.execute("INSERT INTO schema_version VALUES (%s)", (number,))
        conn.execute(
            "INSERT INTO mails (event_id, kind, site, device, recipient, priority, status,"
            " next_attempt, created_at, finished_at, message) VALUES"
            " ('e1', 'trap_triggered', 's', 'pi', 'a@example.jp', 0, 'sent', 1, 1, 2, 'A'),"
            " ('e1', 'trap_triggered', 's', 'pi', 'b@example.jp', 0, 'pending', 1, 1, NULL, 'B')"
        )
    config = StoreConfig(backend="postgresql", dsn=Secret(pg_dsn))
    async with await Store.open(config) as store:
        assert [(m.recipient, m.status, m.message) for m in await store.mails()] == [
            ("a@example.jp", "sent", b"A"), ("b@example.jp", "pending", b"B"),
        ]  # fmt: skip
        [mail] = await store.claim_due("n", now=5.0, lease_s=60.0)
        assert (mail.recipient, mail.message) == ("b@example.jp", b"B")
        assert await store.claim_due("m", now=6.0, lease_s=60.0) == []
        await store.mark_sent(mail.id, now=7.0)
        assert [(m.status, m.message) for m in await store.mails()] == [
            ("sent", b"A"), ("sent", b"B"),
        ]  # fmt: skip


async def test_pruning_a_mail_removes_its_message(store_config: StoreConfig) -> None:
    """Messages live in ``mail_bodies``: a pruned mail takes its message with it."""
    from cloud.database import Tx

    async with await Store.open(store_config) as store:
        for n in range(3):
            await store.accept(make_event(seq=n), mails("a@example.jp"), now=1000.0 + n)
        for mail in await store.mails("pending"):
            await store.mark_sent(mail.id, now=2000.0)
        assert (await store.prune(1001.5)).mails == 2

        def bodies(tx: Tx) -> int:
            return int(tx.query("SELECT COUNT(*) FROM mail_bodies")[0][0])

        assert await store._run(bodies, write=False) == 1


async def test_prune_keeps_the_newest_events_and_mails_by_count(
    store_config: StoreConfig,
) -> None:
    events = [make_event(seq=n) for n in range(10)]
    async with await Store.open(store_config) as store:
        for n, event in enumerate(events):
            await store.accept(event, mails("a@example.jp"), now=1000.0 + n)
        for mail in await store.mails("pending"):
            if mail.event_id != events[0].id:  # the oldest event's mail stays pending
                await store.mark_sent(mail.id, now=2000.0)
        pruned = await store.prune(0.0, max_events=4, max_mails=3)
        assert (pruned.events, pruned.mails) == (5, 6)
        # The 4 newest events, and the oldest: its mail is still pending.
        for n, event in enumerate(events):
            assert await store.has_event(event.id) == (n == 0 or n >= 6), n
        counts = await store.counts()
        assert (counts.pending, counts.sent) == (1, 3)
        kept = {m.event_id for m in await store.mails("sent")}
        assert kept == {e.id for e in events[7:]}
        again = await store.prune(0.0, max_events=4, max_mails=3)
        assert (again.events, again.mails) == (0, 0)


async def test_every_pruning_statement_walks_an_index(store_config: StoreConfig) -> None:
    """On both engines; PostgreSQL is told to avoid sequential scans where it can."""
    from cloud.database import Tx
    from cloud.store import PRUNE_SQL

    args = {"events_cutoff": (10,), "mails_cutoff": (10,), "telemetry_by_age": (1.0,)}
    sqlite = store_config.backend == "sqlite"
    async with await Store.open(store_config) as store:
        for name, sql in PRUNE_SQL.items():
            params = args.get(name, (1.0, 10))

            def explain(tx: Tx, sql: str = sql, params: tuple[float, ...] = params) -> list[str]:
                if sqlite:
                    return [str(r[-1]) for r in tx.query(f"EXPLAIN QUERY PLAN {sql}", params)]
                tx.execute("SET LOCAL enable_seqscan = off")
                return [str(r[0]) for r in tx.query(f"EXPLAIN {sql}", params)]

            steps = await store._run(explain)
            for step in steps:
                if sqlite and step.startswith("SCAN"):
                    assert "INDEX" in step or "PRIMARY KEY" in step, (name, steps)
                assert "Seq Scan" not in step, (name, steps)
                # An event's pending mails are found by its id, not by scanning every
                # pending mail (which grows with an SMTP outage).
                assert "mails_due" not in step, (name, steps)


async def test_the_store_thread_runs_the_senders_marks_before_other_waiting_calls() -> None:
    """A mail the SMTP server took is marked sent before queued receiver work runs."""
    import threading

    from cloud.store import StoreThread

    thread = StoreThread()
    busy, release = threading.Event(), threading.Event()
    order: list[str] = []

    def hold() -> None:
        busy.set()
        release.wait(10)

    first = thread.submit(hold)
    assert await asyncio.to_thread(busy.wait, 10)  # the thread is inside a call
    calls = [thread.submit(lambda: order.append("accept")),
             thread.submit(lambda: order.append("mark"), urgent=True)]  # fmt: skip
    release.set()
    await asyncio.wait_for(asyncio.gather(first, *calls), 10)
    thread.shutdown()
    assert order == ["mark", "accept"]


async def test_a_store_call_cancelled_before_it_runs_does_not_run_and_errors_come_back() -> None:
    """The store thread's hand-over: a caller that gave up (cancelled) before its call
    began leaves nothing done; a call's exception is raised to its caller, and the
    calls after it still run, in order."""
    import threading

    from cloud.store import StoreThread

    thread = StoreThread()
    busy, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def hold() -> None:
        busy.set()
        release.wait(10)

    def fail() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    first = thread.submit(hold)
    assert await asyncio.to_thread(busy.wait, 10)
    given_up = thread.submit(lambda: ran.append("given up"))
    failing = thread.submit(fail)
    last = thread.submit(lambda: ran.append("last"))
    given_up.cancel()
    release.set()
    await asyncio.wait_for(first, 10)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        await asyncio.wait_for(failing, 10)
    await asyncio.wait_for(last, 10)
    thread.shutdown()
    assert ran == ["last"]


async def test_marks_of_several_mails_are_one_commit_and_final(store_config: StoreConfig) -> None:
    """The sender's group commit: every mail in it is sent; a sent mail stays sent."""
    async with await Store.open(store_config) as store:
        await store.accept(make_event(), mails("a@example.jp", "b@example.jp", "c@example.jp"))
        queued = await store.due_mails()
        await store.mark_sent_many([(m.id, 1000.0 + n) for n, m in enumerate(queued[:2])])
        await store.sync()
        await store.mark_sent_many([(queued[0].id, 2000.0)])  # again: changes nothing
        sent = await store.mails("sent")
        assert sorted(m.recipient for m in sent) == ["a@example.jp", "b@example.jp"]
        assert all(m.attempts == 1 and m.finished_at in (1000.0, 1001.0) for m in sent)
        assert [m.recipient for m in await store.mails("pending")] == ["c@example.jp"]


MARK_AND_DIE = """
import asyncio, os, signal, sys
from cloud.store import Store

async def main() -> None:
    store = await Store.open(sys.argv[1])
    mail = (await store.due_mails())[0]
    await store.mark_sent_many([(mail.id, 1.0)])  # not synced to disk
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_mark_not_synced_to_disk_survives_a_kill(tmp_path: Path) -> None:
    """``durable=False`` skips the fsync, not the write: a SIGKILL cannot undo it."""
    path = tmp_path / "n.sqlite3"
    async with await Store.open(path) as store:
        await store.accept(make_event(), mails("a@example.jp"))
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", MARK_AND_DIE, str(path)], cwd=REPO, timeout=60
    )
    assert proc.returncode == -9
    async with await Store.open(path) as store:
        assert [m.recipient for m in await store.mails("sent")] == ["a@example.jp"]
        assert await store.mails("pending") == []


async def test_the_sent_journal_marks_what_it_names_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite3"
    first, second = make_event(), make_event()
    async with await Store.open(path) as store:
        assert store.journal is not None
        await store.accept(first, mails("a@example.jp", "b@example.jp"))
        await store.accept(second, mails("a@example.jp"))
        by_key = {(m.event_id, m.recipient): m.id for m in await store.mails("pending")}
        store.journal.record(by_key[first.id, "a@example.jp"], first.id, "a@example.jp")
        # A line whose id now belongs to another mail is not that mail's record.
        store.journal.record(by_key[second.id, "a@example.jp"], first.id, "b@example.jp")
        store.journal.close()
    with store.journal.path.open("ab") as f:
        f.write(b'[99, "torn')  # a kill in the middle of a line
    async with await Store.open(path) as store:
        assert store.journal is not None
        entries = store.journal.read()
        assert len(entries) == 2
        assert await store.apply_sent_journal(entries) == 1
        sent = [(m.event_id, m.recipient) for m in await store.mails("sent")]
        assert sent == [(first.id, "a@example.jp")]
        assert len(await store.mails("pending")) == 2
        store.journal.clear()
        assert store.journal.read() == []


async def test_a_notices_mails_are_queued_once_per_recipient_each_with_its_own_message(
    store_config: StoreConfig,
) -> None:
    """The mails of one notice go in with one statement: each recipient's row gets its
    own message, a recipient named twice gets the first, and queueing the notice again
    adds only the recipients it did not have (on both backends)."""
    notice = Notice("e-multi", "animal_detected", "alarm", "site-a", "pi-1")
    first = [
        OutgoingMail("a@example.jp", b"to a", "ja"),
        OutgoingMail("b@example.jp", b"to b", "en"),
        OutgoingMail("a@example.jp", b"to a, again", "ja"),
    ]
    async with await Store.open(store_config) as store:
        assert await store.queue(notice, first, now=100.0) == 2
        again = [OutgoingMail("b@example.jp", b"to b, again", "en"),
                 OutgoingMail("c@example.jp", b"to c", "ja")]  # fmt: skip
        assert await store.queue(notice, again, now=101.0) == 1
        claimed = await store.claim_due("me", now=200.0, lease_s=60.0, limit=10)
    got = {mail.recipient: mail.message for mail in claimed}
    assert got == {"a@example.jp": b"to a", "b@example.jp": b"to b", "c@example.jp": b"to c"}
    assert len(claimed) == 3


def test_the_sent_journal_reads_back_what_it_recorded_whatever_the_strings(tmp_path: Path) -> None:
    """Each line is JSON that ``read`` takes back exactly, non-ASCII and escapes included;
    an id that no UTF-8 can carry (a lone surrogate) is written all the same."""
    from cloud.store import SentJournal

    journal = SentJournal.beside(tmp_path / "store.sqlite3")
    entries = [(1, "0192f0a0-7c1e-7000-8000-000000000001", "farmer@example.jp"),
               (2, 'pi-01\x1fq"\\\n\t\u2028', "名前@example.jp"),
               (3, "lone \ud800", "office@example.jp")]  # fmt: skip
    for entry in entries:
        journal.record(*entry)
    journal.close()
    assert journal.read() == entries
    assert journal.written == 3


async def test_the_device_row_an_event_returns_is_the_row_the_store_holds(
    store_config: StoreConfig,
) -> None:
    """accept() hands back the device's row as it wrote it (not read back): the same row
    the store then holds, for a new device, a known one, a heartbeat and an offline one."""
    device = "pi-east-07"
    async with await Store.open(store_config) as store:
        first = await store.accept(make_event(device=device, seq=1, lat=36, lon=137), [],
                                   now=1000)  # fmt: skip
        assert first.device is not None and first.device == await store.device(device)
        assert first.device.state == "online" and first.device.cause == "event"
        assert first.device.lat == 36.0 and isinstance(first.device.since, float)
        await store.record_status(device, "offline", "power", now=2000.0)
        heartbeat = make_event("heartbeat", "info", device=device, seq=2,
                               data={"interval_s": 300})  # fmt: skip
        result = await store.accept(heartbeat, [], now=1500.0, heartbeat_interval=300)
        assert result.device is not None and result.device == await store.device(device)
        assert result.device.state == "offline" and result.device.hb_interval == 300.0
        assert result.device.last_seen == 1500.0
        late = await store.accept(make_event(device=device, seq=3), [], now=1200.0)
        assert late.device is not None and late.device == await store.device(device)
        assert late.device.last_seen == 1500.0  # never goes back
