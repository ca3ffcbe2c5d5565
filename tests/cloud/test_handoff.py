"""The receiver hands an event's mails to the senders in memory, queued already claimed.

Nothing else may send them while the claim holds; the senders leave a mail whose
claim is half gone to the store's queue, where it is claimed again only once the
claim has run out.  And the idle sender's sync of its marks is an ``fsync`` of the
WAL, only when a commit needs it, not a checkpoint.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from cloud.clock import ManualClock
from cloud.config import StoreConfig, load_config
from cloud.database import SqliteDatabase
from cloud.send import Handoff
from cloud.store import OutgoingMail, QueuedMail, Store
from cloud.timers import wait_or_timeout
from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox
from tests.cloud.conftest import (
    RECIPIENTS,
    Publisher,
    config_text,
    event_ids,
    eventually,
    make_event,
    running,
)
from tests.support.waiting import until


def mails(*recipients: str) -> list[OutgoingMail]:
    return [OutgoingMail(r, f"To: {r}\r\n\r\nhi\r\n".encode()) for r in recipients]


async def test_mails_queued_claimed_are_nobody_elses_until_the_claim_runs_out(
    store_config: StoreConfig,
) -> None:
    now = 1_000_000.0
    async with await Store.open(store_config) as store:
        first, second = make_event(device="pi-a"), make_event(device="pi-b")
        results = await store.accept_many(
            [(first, mails("a@example.jp", "b@example.jp"), None, None, None),
             (second, mails("a@example.jp"), None, None, None)],
            now=now, claim=("n1", now + 60),
        )  # fmt: skip
        assert [r.queued for r in results] == [2, 1]
        handed = [mail_id for r in results for mail_id, _ in r.mails]
        assert [rcpt for r in results for _, rcpt in r.mails] == [
            "a@example.jp", "b@example.jp", "a@example.jp"
        ]  # fmt: skip
        single = await store.accept(
            make_event(device="pi-c"), mails("c@example.jp"), now=now, claim=("n1", now + 60)
        )
        handed += [mail_id for mail_id, _ in single.mails]
        # Pending, and held: neither another instance nor n1's own claims take them.
        assert len(await store.mails("pending")) == 4
        assert await store.claim_due("n2", now=now + 59, lease_s=30, limit=10) == []
        assert await store.claim_due("n1", now=now + 59, lease_s=30, limit=10) == []
        # The claim ran out (the instance died with them in memory): anyone's now.
        late = await store.claim_due("n2", now=now + 61, lease_s=30, limit=10)
        assert sorted(m.id for m in late) == sorted(handed)
        # Unclaimed, as before, without a claim.
        free = await store.accept(make_event(device="pi-d"), mails("d@example.jp"), now=now)
        [mail] = await store.claim_due("n2", now=now, lease_s=30, limit=10)
        assert [mail.id] == [mail_id for mail_id, _ in free.mails]


async def test_given_back_claims_of_handed_mails_are_pending_for_all(
    store_config: StoreConfig,
) -> None:
    now = 1_000_000.0
    async with await Store.open(store_config) as store:
        await store.accept(make_event(), mails("a@example.jp"), now=now, claim=("n1", now + 60))
        assert await store.release_claims("n1") == 1  # a stop, or n1's restart
        assert len(await store.claim_due("n2", now=now, lease_s=30, limit=10)) == 1


def queued(mail_id: int) -> QueuedMail:
    return QueuedMail(
        id=mail_id, event_id=f"e{mail_id}", kind="animal_detected", site="s",
        recipient="a@example.jp", status="pending", attempts=0, next_attempt=0.0,
        last_error=None, created_at=0.0, finished_at=None, message=b"x",
    )  # fmt: skip


def test_a_handed_mail_is_sent_from_memory_only_with_half_its_claim_left() -> None:
    handoff = Handoff(lease_s=100.0, limit=3)
    assert not handoff.ready.is_set() and handoff.room() == 3
    handoff.put([queued(1), queued(2)], claim_until=1100.0)
    assert handoff.ready.is_set() and handoff.room() == 1
    assert [m.id for m in handoff.take(1, now=1000.0)] == [1]
    assert handoff.ready.is_set()
    assert [m.id for m in handoff.take(5, now=1049.0)] == [2]  # 51 s of 100 left
    assert not handoff.ready.is_set() and handoff.dropped() == float("inf")
    handoff.put([queued(3)], claim_until=1100.0)
    handoff.put([queued(4)], claim_until=1120.0)
    # Less than half the claim left for 3: dropped from memory, left to the store's
    # queue, which is to be looked at when its claim runs out.
    assert [m.id for m in handoff.take(5, now=1060.0)] == [4]
    assert handoff.dropped() == 1100.0
    assert handoff.dropped() == float("inf")
    assert not handoff.ready.is_set() and len(handoff) == 0


async def test_waiting_on_two_events_ends_with_either_or_the_time() -> None:
    clock = ManualClock(start=0.0)
    first, second = asyncio.Event(), asyncio.Event()
    waiting = asyncio.create_task(wait_or_timeout((first, second), 10.0, clock))
    await asyncio.sleep(0)
    second.set()
    await asyncio.wait_for(waiting, 5)
    second.clear()
    waiting = asyncio.create_task(wait_or_timeout((first, second), 10.0, clock))
    await asyncio.sleep(0)
    assert not waiting.done()
    clock.advance(10.0)
    await asyncio.wait_for(waiting, 5)


def test_sqlite_sync_fsyncs_the_wal_only_after_a_commit_that_did_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = SqliteDatabase.connect(tmp_path / "n.sqlite3")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    try:
        db.run(lambda tx: tx.execute("CREATE TABLE t (x INTEGER)"))
        monkeypatch.setattr(os, "fsync", fsync)
        # A commit that did not wait for the disk: sync makes it durable, with one
        # fsync of the -wal file (SQLite's own syncs, a checkpoint's, are not seen here).
        db.run(lambda tx: tx.execute("INSERT INTO t VALUES (1)"), durable=False)
        db.sync()
        assert synced == [str(tmp_path / "n.sqlite3-wal")]
        db.sync()  # nothing new
        assert len(synced) == 1
        # A durable commit after it synced its frames too: nothing to do.
        db.run(lambda tx: tx.execute("INSERT INTO t VALUES (2)"), durable=False)
        db.run(lambda tx: tx.execute("INSERT INTO t VALUES (3)"))
        db.sync()
        assert len(synced) == 1
        # A durable commit that changed nothing wrote (and synced) nothing: the
        # earlier one still needs its sync.
        db.run(lambda tx: tx.execute("INSERT INTO t VALUES (4)"), durable=False)
        db.run(lambda tx: tx.execute("UPDATE t SET x = 0 WHERE x < 0"))
        db.sync()
        assert len(synced) == 2
        # Nor does a commit that did not wait for the disk but changed nothing.
        db.run(lambda tx: tx.execute("UPDATE t SET x = 0 WHERE x < 0"), durable=False)
        db.sync()
        assert len(synced) == 2
    finally:
        db.close()


async def test_a_retry_due_after_a_look_at_the_store_that_found_nothing_is_not_forgotten(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    """A sender that finds nothing due looks again when the next retry falls due, not
    only ``poll_s`` later (30 s here; the test allows a few)."""
    path = tmp_path / "notifier.toml"
    path.write_text(
        config_text(mqtt_port=broker.port, smtp_port=mailbox.port, store=tmp_path / "n.sqlite3",
                    retry_initial_s=2, retry_max_s=2, delivery="poll_s = 30"),
        encoding="utf-8",
    )  # fmt: skip
    config = load_config(path)
    store_path = tmp_path / "n.sqlite3"
    event = make_event()
    mailbox.fail_with = "451 4.3.0 try again later"
    async with running(config):
        await publisher.event(event)

        async def both_deferred() -> bool:
            async with await Store.open(store_path, readonly=True) as store:
                queued = await store.mails("pending", event_id=event.id)
            return len(queued) == len(RECIPIENTS) and all(m.attempts == 1 for m in queued)

        await eventually(both_deferred, what="both mails deferred once")
        # One due now, the other in 3 s: the sender takes the first alone, then finds
        # nothing due; the second must still go out when it falls due.
        now = time.time()
        async with await Store.open(store_path) as store:
            first, second = await store.mails("pending", event_id=event.id)
            await store.reschedule(first.id, now, "451")
            await store.reschedule(second.id, now + 3, "451")
        mailbox.fail_with = None
        await until(lambda: len(mailbox.mails) >= 1, 5.0, "the first mail")
        assert time.time() - now < 2.5  # the second was not due yet: sent alone
        await until(lambda: len(mailbox.mails) >= 2, 8.0, "the second mail, when due")
    assert event_ids(mailbox.mails) == [event.id, event.id]
