"""The store: de-duplication across restarts, one mail per recipient, the queue's states."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from cloud.errors import StoreError
from cloud.store import SCHEMA_VERSION, OutgoingMail, Store
from tests.cloud.conftest import make_event


def mails(*recipients: str) -> list[OutgoingMail]:
    return [
        OutgoingMail(recipient=r, message=f"To: {r}\r\n\r\nhi\r\n".encode()) for r in recipients
    ]


async def test_an_event_is_accepted_once_also_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite3"
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


async def test_one_mail_per_event_and_recipient(tmp_path: Path) -> None:
    event = make_event()
    async with await Store.open(tmp_path / "n.sqlite3") as store:
        with pytest.raises(StoreError):
            await store.accept(event, mails("a@example.jp", "a@example.jp"))
        # The transaction is all or nothing: not even the event was recorded.
        assert not await store.has_event(event.id)
        assert (await store.counts()).pending == 0
        assert await store.accept(event, mails("a@example.jp"))


async def test_an_event_without_mails_is_still_remembered(tmp_path: Path) -> None:
    event = make_event(site="unknown-site")
    async with await Store.open(tmp_path / "n.sqlite3") as store:
        assert await store.accept(event, [])
        assert not await store.accept(event, [])
        assert (await store.counts()).events == 1


async def test_due_mails_alarms_first_and_only_when_due(tmp_path: Path) -> None:
    now = time.time()
    info = make_event("heartbeat", "info")
    alarm = make_event("trap_triggered", "alarm")
    async with await Store.open(tmp_path / "n.sqlite3") as store:
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


async def test_sent_and_failed_are_final_and_counted(tmp_path: Path) -> None:
    event = make_event()
    async with await Store.open(tmp_path / "n.sqlite3") as store:
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


async def test_prune_forgets_old_events_but_never_pending_mails(tmp_path: Path) -> None:
    now = time.time()
    old_sent, old_pending, recent = make_event(), make_event(), make_event()
    async with await Store.open(tmp_path / "n.sqlite3") as store:
        await store.accept(old_sent, mails("a@example.jp"), now=now - 1000)
        await store.accept(old_pending, mails("a@example.jp"), now=now - 1000)
        await store.accept(recent, mails("a@example.jp"), now=now)
        [sent] = await store.mails(event_id=old_sent.id)
        await store.mark_sent(sent.id)
        assert await store.prune(now - 500) == 1
        assert not await store.has_event(old_sent.id)
        assert await store.has_event(old_pending.id)
        assert await store.has_event(recent.id)
        assert (await store.counts()).sent == 0  # its mail went with it


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "n.sqlite3")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.counts()
