"""The notifier end to end: a real mosquitto, a real SMTP server, a real SQLite file."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sqlite3
import statistics
import time
from pathlib import Path

import aiomqtt
import msgspec
import paho.mqtt.client as paho
import pytest

from cloud.config import NotifierConfig, load_config
from cloud.errors import StoreError
from cloud.notifier import Notifier
from cloud.store import Store
from edge.event import encode, events_topic
from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox
from tests.cloud.conftest import (
    PLACE,
    RECIPIENTS,
    Publisher,
    config_text,
    event_ids,
    eventually,
    mails,
    make_event,
    running,
    wait_subscribed,
)


async def pending_with_error(config: NotifierConfig, event_id: str, text: str) -> bool:
    async with await Store.open(config.store.path, readonly=True) as store:
        queued = await store.mails("pending", event_id=event_id)
    return len(queued) == len(RECIPIENTS) and all(
        m.attempts >= 1 and text in (m.last_error or "") for m in queued
    )


async def test_one_event_is_one_mail_per_recipient(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    event = make_event()
    async with running(config) as notifier:
        await publisher.event(event)
        received = await mails(mailbox, 2)
        assert sorted(r for m in received for r in m.rcpt_tos) == sorted(RECIPIENTS)
        for index, mail in enumerate(sorted(received, key=lambda m: m.rcpt_tos[0]), start=1):
            msg = mail.message
            assert mail.mail_from == "alerts@example.jp"
            assert msg["To"] == mail.rcpt_tos[0]
            assert msg["Subject"] == f"【緊急】【動物検知】{PLACE} 11月24日 13:05"
            assert msg["X-Satoyama-Event"] == event.id
            # N in the Message-ID is the recipient's place in the site's list.
            assert msg["Message-ID"] == f"<{event.id}.{index}@satoyama-edge>"
            plain = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert "https://maps.gsi.go.jp/#17/36.079432/137.954322/" in plain
        async with await Store.open(config.store.path, readonly=True) as store:
            await eventually(lambda: _sent(store, 2), what="both mails marked sent")
        assert notifier.stats.accepted == 1
    assert len(mailbox.mails) == 2


async def _sent(store: Store, count: int) -> bool:
    return (await store.counts()).sent == count


async def test_publish_to_mail_is_fast(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    latencies = []
    async with running(config):
        for n in range(5):
            event = make_event(seq=n)
            await publisher.event(event)
            received = await mails(mailbox, 2 * (n + 1))
            latencies.append(received[-1].received_at - publisher.published_at[event.id])
    # Both recipients' mails are with the SMTP server within a few tens of ms on loopback;
    # the median keeps one scheduler hiccup on a busy test machine from failing the test.
    assert statistics.median(latencies) < 0.3, latencies


async def test_the_same_event_twice_is_mailed_once(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    event, sentinel = make_event(seq=1), make_event("trap_triggered", seq=2)
    async with running(config) as notifier:
        await publisher.event(event)
        await publisher.event(event)  # the device's retry after a lost PUBACK
        await publisher.event(sentinel)
        # Messages are handled in order: once the sentinel's mails are here, the
        # duplicate has been handled too, and any mail for it would be here before them.
        received = await mails(mailbox, 4)
        assert notifier.stats.duplicates == 1
        # Looked up before rendering: one full rendering per event (the second
        # recipient's mail is readdressed), none for the duplicate.
        assert notifier.stats.rendered == 2
    assert sorted(event_ids(received)) == sorted([event.id] * 2 + [sentinel.id] * 2)
    assert len(mailbox.mails) == 4


async def test_invalid_payloads_are_dropped_and_later_events_still_work(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    good = make_event()
    wrong_schema = msgspec.json.encode({"id": "x", "kind": "animal_detected"})
    bad_severity = encode(good).replace(b'"alarm"', b'"panic"')
    async with running(config) as notifier:
        await publisher.raw(b"\xff\xfe garbage \x00")
        await publisher.raw(b"")
        await publisher.raw(wrong_schema)
        await publisher.raw(bad_severity)
        await publisher.event(good)
        received = await mails(mailbox, 2)
        assert notifier.stats.invalid == 4
        assert notifier.stats.accepted == 1
    assert event_ids(received) == [good.id, good.id]


async def test_unknown_site_is_recorded_but_not_mailed(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    stray, sentinel = make_event(site="somewhere-else"), make_event()
    async with running(config) as notifier:
        await publisher.event(stray)
        await publisher.event(sentinel)
        received = await mails(mailbox, 2)
        assert notifier.stats.unknown_site == 1
    assert event_ids(received) == [sentinel.id, sentinel.id]
    async with await Store.open(config.store.path, readonly=True) as store:
        assert await store.has_event(stray.id)
        assert await store.mails(event_id=stray.id) == []


async def test_routine_kinds_are_recorded_but_not_mailed(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    check = make_event("posture_check", "info", data={"cot": "1", "posture": "supine"})
    sentinel = make_event("prone_alarm", "alarm", data={"cot": "1"})
    async with running(config):
        await publisher.event(check)
        await publisher.event(sentinel)
        received = await mails(mailbox, 2)
    assert event_ids(received) == [sentinel.id, sentinel.id]
    assert "うつぶせ寝警報" in received[0].message["Subject"]


async def test_transient_smtp_failure_is_retried_until_the_mail_is_taken(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    event = make_event()
    mailbox.fail_with = "451 4.3.0 try again later"
    async with running(config) as notifier:
        await publisher.event(event)
        await eventually(
            lambda: pending_with_error(config, event.id, "451 4.3.0 try again later"),
            what="mails pending with the 451 reply",
        )
        assert mailbox.mails == []
        mailbox.fail_with = None
        received = await mails(mailbox, 2)
        assert notifier.stats.deferred >= 2
        assert notifier.stats.failed == 0
    assert event_ids(received) == [event.id, event.id]


async def test_smtp_server_down_then_back(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    event = make_event()
    await asyncio.to_thread(mailbox.stop)
    async with running(config):
        await publisher.event(event)
        await eventually(
            lambda: pending_with_error(config, event.id, "cannot reach"),
            what="mails pending while the SMTP server is down",
        )
        await asyncio.to_thread(mailbox.start)  # same port: the server came back
        received = await mails(mailbox, 2)
    assert event_ids(received) == [event.id, event.id]


async def test_permanent_smtp_failure_marks_the_mail_failed(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    event, later = make_event(), make_event("trap_triggered")
    mailbox.fail_with = "554 5.7.1 message refused"
    async with running(config) as notifier:
        await publisher.event(event)

        async def failed() -> bool:
            async with await Store.open(config.store.path, readonly=True) as store:
                return (await store.counts()).failed == 2

        await eventually(failed, what="both mails failed")
        assert notifier.stats.failed == 2
        # A failed mail does not block the ones after it.
        mailbox.fail_with = None
        await publisher.event(later)
        received = await mails(mailbox, 2)
    assert event_ids(received) == [later.id, later.id]
    async with await Store.open(config.store.path, readonly=True) as store:
        failed_mails = await store.mails("failed")
    assert {m.recipient for m in failed_mails} == set(RECIPIENTS)
    assert all(m.last_error == "message refused: 554 5.7.1 message refused" for m in failed_mails)


async def test_events_published_while_the_notifier_is_down_are_mailed_once(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    before, while_down_1, while_down_2 = make_event(seq=1), make_event(seq=2), make_event(seq=3)
    async with running(config):  # creates the persistent session on the broker
        await publisher.event(before)
        await mails(mailbox, 2)
    await publisher.event(while_down_1)
    await publisher.event(while_down_2)
    async with running(config) as notifier:
        received = await mails(mailbox, 6)
        # Nothing that the first notifier had stored came back: its PUBACKs reached
        # the broker.  (The store would hide such a duplicate; this counter does not.)
        assert notifier.stats.duplicates == 0
        assert notifier.stats.accepted == 2
    assert sorted(event_ids(received)) == sorted(
        [before.id] * 2 + [while_down_1.id] * 2 + [while_down_2.id] * 2
    )


async def test_the_pubacks_of_a_group_commit_all_reach_the_broker(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    """Events that arrive together are committed in groups and their PUBACKs written
    together: after a restart the broker delivers none of them again."""
    burst = [make_event(seq=n) for n in range(1, 41)]
    async with running(config):  # creates the persistent session on the broker
        pass
    for event in burst:  # queued by the broker: they arrive together
        await publisher.event(event)
    async with running(config) as notifier:
        await mails(mailbox, 2 * len(burst))
        assert notifier.stats.accepted == len(burst)
        assert notifier.stats.group_commits < len(burst)  # committed in groups
    last = make_event(seq=len(burst) + 1)
    await publisher.event(last)
    async with running(config) as notifier:
        # The broker delivers what it still holds for the session in order: anything
        # not acknowledged before would come before the new event.
        received = await mails(mailbox, 2 * len(burst) + 2)
        assert notifier.stats.duplicates == 0
        assert notifier.stats.accepted == 1
    assert sorted(event_ids(received)) == sorted([e.id for e in [*burst, last] for _ in "ab"])


def test_the_installed_paho_has_the_packet_queue_that_groups_the_pubacks() -> None:
    """The group's PUBACKs go out in one write through paho's private ``_packet_queue``
    (cloud/receive.py ``_ack_all``); where it is missing the notifier falls back, quietly,
    to one write a message, and loses the throughput that reaches 1,000 events/s
    (docs/notifier.md).  pyproject pins paho below 3; this pins the shape used, so a
    paho release that changes it fails here rather than in the field's figures."""
    params = list(inspect.signature(paho.Client._packet_queue).parameters)
    assert params[:5] == ["self", "command", "packet", "mid", "qos"], params


async def test_a_message_received_but_not_acknowledged_is_delivered_again(
    config: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    """The crash window the manual PUBACK closes.

    A client with the notifier's id receives an event and goes away without
    acknowledging it, as a notifier that crashed before its commit would.  The
    broker keeps the event in the session, and the real notifier gets it.
    """
    event = make_event()
    async with _session(config, broker, manual_ack=True) as stand_in:
        await publisher.event(event)
        message = await anext(aiter(stand_in.messages))
        assert msgspec.json.decode(message.payload)["id"] == event.id
    async with running(config) as notifier:
        received = await mails(mailbox, 2)
        assert notifier.stats.accepted == 1
    assert event_ids(received) == [event.id, event.id]


async def test_without_manual_ack_a_received_message_is_gone(
    config: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    """The control for the test above: why the notifier must not let paho ack on receipt."""
    lost, sentinel = make_event(seq=1), make_event(seq=2)
    async with _session(config, broker, manual_ack=False) as stand_in:
        await publisher.event(lost)
        await anext(aiter(stand_in.messages))  # acknowledged by paho, then "crash"
    await publisher.event(sentinel)
    async with running(config):
        received = await mails(mailbox, 2)
    assert event_ids(received) == [sentinel.id, sentinel.id]


def _session(config: NotifierConfig, broker: Mosquitto, *, manual_ack: bool) -> aiomqtt.Client:
    client = aiomqtt.Client(
        broker.host, broker.port, identifier=config.mqtt.client_id, clean_session=False
    )
    client._client.manual_ack_set(manual_ack)
    return _Subscribed(client, config)  # type: ignore[return-value]


class _Subscribed:
    """``async with``: connected and subscribed like the notifier, then disconnected."""

    def __init__(self, client: aiomqtt.Client, config: NotifierConfig) -> None:
        self.client = client
        self.topic = f"{config.mqtt.topic_prefix}/+/events"

    async def __aenter__(self) -> aiomqtt.Client:
        await self.client.__aenter__()
        await self.client.subscribe(self.topic, qos=1)
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__(None, None, None)


async def test_reconnects_after_the_broker_restarts(
    config: NotifierConfig, broker: Mosquitto, mailbox: Mailbox
) -> None:
    event = make_event()
    async with running(config) as notifier:
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)

        async def reconnected() -> bool:
            return notifier.stats.connections >= 2 and notifier.subscribed.is_set()

        await eventually(reconnected, within=10, what="the notifier to reconnect")
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish(events_topic("satoyama/v1", event.device), encode(event), qos=1)
            received = await mails(mailbox, 2)
    assert event_ids(received) == [event.id, event.id]


async def test_stop_is_clean_and_cancel_is_too(config: NotifierConfig) -> None:
    notifier = Notifier(config)
    task = asyncio.create_task(notifier.run())
    await wait_subscribed(notifier, task)
    notifier.stop()
    await asyncio.wait_for(task, 15)
    assert not notifier.subscribed.is_set()

    notifier = Notifier(config)
    task = asyncio.create_task(notifier.run())
    await wait_subscribed(notifier, task)
    task.cancel()
    try:
        await asyncio.wait_for(task, 15)
    except asyncio.CancelledError:
        pass
    assert task.cancelled()


async def test_pending_mails_from_a_previous_run_are_sent_at_start(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    # A long retry interval: the mail can only go out because a new notifier
    # looks at its queue at start, not because a retry came due.
    path = tmp_path / "slow.toml"
    path.write_text(
        config_text(
            mqtt_port=broker.port,
            smtp_port=mailbox.port,
            store=tmp_path / "n.sqlite3",
            retry_initial_s=3600,
            retry_max_s=3600,
        ),
        encoding="utf-8",
    )
    config = load_config(path)
    event = make_event()
    mailbox.fail_with = "421 4.3.2 shutting down"
    async with running(config):
        await publisher.event(event)
        await eventually(lambda: pending_with_error(config, event.id, "421"), what="deferral")
    mailbox.fail_with = None
    # Make the deferred mails due now, as if the hour had passed while we were down.
    async with await Store.open(config.store.path) as store:
        for mail in await store.mails("pending"):
            await store.reschedule(mail.id, time.time(), mail.last_error or "")
    async with running(config):
        received = await mails(mailbox, 2)
    assert event_ids(received) == [event.id, event.id]


async def test_a_store_written_before_messages_had_their_own_table_sends_its_queue_once(
    config: NotifierConfig, mailbox: Mailbox
) -> None:
    """A store left by the notifier of schema v3 (each message in its ``mails`` row): the
    new notifier migrates it at start and mails what was still queued, once each (the
    mail a dead instance had claimed too); the one sent before is not sent again."""
    from tests.cloud.test_store import V3_STORE_DUMP

    conn = sqlite3.connect(config.store.path)
    conn.executescript(V3_STORE_DUMP)
    conn.close()
    async with running(config) as notifier:
        async with await Store.open(config.store.path, readonly=True) as reader:
            # The mail sent in 1970 is pruned at start (older than the store keeps); the two
            # sent now belong to 1970's events too, so the timekeeper's prune may forget
            # them as soon as they are marked (it did, once, before this poll saw them):
            # the notifier's own count says they were sent, the store that none waits.
            async def queue_sent() -> bool:
                return notifier.stats.sent == 2 and (await reader.counts()).pending == 0

            await eventually(queue_sent, what="the queue sent")
        assert notifier.stats.sent == 2
    got = sorted((m.rcpt_tos, str(m.message["Subject"]), m.message.get_payload())
                 for m in mailbox.mails)  # fmt: skip
    assert got == [
        (("a@example.jp",), "two a", "body 2a\r\n"),
        (("b@example.jp",), "one b", "body 1b\r\n"),
    ]


async def test_a_mail_the_server_took_just_before_a_kill_is_not_sent_again(
    config: NotifierConfig, mailbox: Mailbox
) -> None:
    """The sent journal: a kill after the server's "250" but before the store's mark
    leaves a line there; the next start marks that mail sent instead of resending it."""
    from cloud.store import OutgoingMail

    event = make_event()
    async with await Store.open(config.store.path) as store:
        assert store.journal is not None
        await store.accept(event, [
            OutgoingMail(r, f"To: {r}\r\nX-Satoyama-Event: {event.id}\r\n\r\nhi\r\n".encode())
            for r in RECIPIENTS
        ])  # fmt: skip
        taken = next(m for m in await store.mails("pending") if m.recipient == RECIPIENTS[0])
        store.journal.record(taken.id, event.id, RECIPIENTS[0])
    async with running(config) as notifier:
        async with await Store.open(config.store.path, readonly=True) as reader:
            await eventually(lambda: _sent(reader, 2), what="both mails marked sent")
        assert notifier.stats.sent == 1
    assert [m.rcpt_tos for m in mailbox.mails] == [(RECIPIENTS[1],)]


async def test_a_burst_on_several_smtp_sessions_mails_each_once(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    """A burst on several SMTP sessions at once (their marks group-committed): each mail
    goes once and is marked sent."""
    events = [make_event(seq=n) for n in range(40)]
    async with running(config) as notifier:
        for event in events:
            await publisher.event(event)
        received = await mails(mailbox, 2 * len(events), within=30)
        async with await Store.open(config.store.path, readonly=True) as reader:
            await eventually(lambda: _sent(reader, 2 * len(events)), what="all marked sent")
    pairs = [(m.message["X-Satoyama-Event"], m.rcpt_tos[0]) for m in received]
    assert sorted(pairs) == sorted((e.id, r) for e in events for r in RECIPIENTS)
    assert notifier.stats.sent == 2 * len(events)
    assert config.smtp.connections > 1


async def test_a_failed_commit_is_not_acknowledged_and_the_event_comes_back(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    """Kill the notifier between receipt and commit, for real.

    A trigger makes SQLite refuse to store one event, as a full or failing
    disk would.  The notifier must die without acknowledging the message, and
    the next notifier must get it from the broker and mail it.
    """
    event = make_event()
    async with await Store.open(config.store.path):
        pass  # create the schema
    conn = sqlite3.connect(config.store.path)
    conn.execute(
        "CREATE TRIGGER disk_on_fire BEFORE INSERT ON events"
        f" WHEN NEW.id = '{event.id}' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )
    conn.close()

    notifier = Notifier(config)
    task = asyncio.create_task(notifier.run())
    await wait_subscribed(notifier, task)
    await publisher.event(event)
    with pytest.raises(StoreError, match="disk I/O error"):
        await asyncio.wait_for(task, 10)
    assert notifier.stats.received == 1 and notifier.stats.accepted == 0
    assert mailbox.mails == []

    conn = sqlite3.connect(config.store.path)
    conn.execute("DROP TRIGGER disk_on_fire")
    conn.close()
    async with running(config) as restarted:
        try:
            received = await mails(mailbox, 2)
        except TimeoutError as exc:
            # Seen once in ~23 runs under load (not reproduced in 40 since): say which
            # side stalled -- the broker's redelivery, or the restarted notifier's work.
            s = restarted.stats
            raise AssertionError(
                f"{exc}: the restarted notifier had received {s.received} message(s), "
                f"rendered {s.rendered} mail(s), accepted {s.accepted} event(s), sent {s.sent}"
            ) from exc
        assert restarted.stats.accepted == 1
    assert event_ids(received) == [event.id, event.id]


def test_a_mail_readdressed_for_the_next_recipient_is_the_one_rendered_for_them() -> None:
    """The second recipient's mail is the first one's with its own To and message ids."""
    import datetime as dt
    import email
    import email.policy
    import re

    from cloud.config import Recipient
    from cloud.plan import _readdress
    from cloud.render import as_bytes, render_reminder
    from tests.cloud.conftest import SITE, config_text

    config = load_config_text(config_text(mqtt_port=1, smtp_port=1, store=Path("unused")))
    site = config.sites[SITE]
    now = dt.datetime(2025, 11, 24, 6, 0, tzinfo=dt.UTC)
    one = Recipient("farmer@example.jp", "ja")
    two = Recipient("ryoyukai@example.jp", "ja")

    def reminder(recipient: Recipient, index: int) -> bytes:
        return as_bytes(render_reminder(
            notice_id="e1.r1", trigger_id="e1", site_id=SITE, site=site, device="pi-east-01",
            sensor="box_trap_2", closed_since=now.timestamp() - 7200, number=1, lat=36.0,
            lon=137.9, language=recipient.language, sender=config.smtp.sender,
            recipient=recipient.address, index=index, now=now,
        ))  # fmt: skip

    readdressed = _readdress(reminder(one, 1), one, 1, two, 2)
    assert readdressed is not None
    rendered = reminder(two, 2)

    def normal(raw: bytes) -> list[tuple[str, str]]:
        raw = re.sub(rb"=_(alt|rel)_[0-9a-f]+", b"BOUNDARY", raw)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        return [*msg.items(), *((p.get_content_type(), p.get_content()) for p in msg.walk()
                                if not p.is_multipart())]  # fmt: skip

    assert normal(readdressed) == normal(rendered)
    headers = dict(normal(readdressed)[:20])
    assert headers["To"] == two.address
    assert headers["Message-ID"] == "<e1.r1.2@satoyama-edge>"
    assert headers["In-Reply-To"] == "<e1.2@satoyama-edge>"
    # Another language is rendered in full, never readdressed.
    assert _readdress(reminder(one, 1), one, 1, Recipient("x@example.jp", "en"), 2) is None


def load_config_text(text: str) -> NotifierConfig:
    from cloud.config import parse_config

    return parse_config(text)


def _render_workers() -> list[int]:
    """This process's children running ``python -m cloud.render_workers``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and b"cloud.render_workers" in cmdline:
            found.append(int(entry.name))
    return found


async def test_mails_are_rendered_in_a_worker_process_and_still_go_out_when_it_dies(
    config: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    """``delivery.render_processes`` (default 1): events' mails are rendered in a worker
    process; one killed mid-stream costs no mail (the thread renders instead), and no
    worker outlives the notifier."""
    assert config.delivery.render_processes == 1
    first = [make_event() for _ in range(3)]
    then = [make_event() for _ in range(3)]
    async with running(config) as notifier:
        [worker] = _render_workers()
        for event in first:
            await publisher.event(event)
        await mails(mailbox, 2 * len(first))
        assert notifier.stats.rendered == len(first)  # once per language, readdressed
        os.kill(worker, signal.SIGKILL)
        for event in then:
            await publisher.event(event)
        received = await mails(mailbox, 2 * (len(first) + len(then)))
        assert sorted(event_ids(received)) == sorted(e.id for e in first + then for _ in "ab")
    assert _render_workers() == []


async def test_an_event_rendered_once_in_a_worker_is_each_recipients_own_mail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two recipients in one language: one rendering, in a render worker process (the
    event goes there as msgpack), and each mail parses as a whole message addressed to
    its recipient alone, with its own Message-ID and the same text."""
    import email
    import email.policy

    from cloud.plan import Planner
    from cloud.stats import NotifierStats
    from tests.cloud.conftest import RECIPIENTS, SITE, config_text, make_event

    config = load_config_text(config_text(mqtt_port=1, smtp_port=1, store=tmp_path / "s.db"))
    assert config.delivery.render_processes >= 1
    stats = NotifierStats()
    planner = Planner(config, stats, None)
    event = make_event(data={"sensor": "pir-1", "deterrent": "sounded", "siren": True})
    await planner.start_workers()
    try:
        assert planner._processes is not None, "rendered in a worker process"
        async with await Store.open(config.store) as store:
            mails, _, _ = await planner.plan_event(store, event, config.sites[SITE], 1.7e9)
        assert planner._processes is not None, "the worker is still there: it rendered it"
    finally:
        await planner.close_workers()
        planner.close()
    assert stats.rendered == 1
    assert not [r for r in caplog.records if "render" in r.getMessage()], "not on the thread"
    assert [m.recipient for m in mails] == list(RECIPIENTS)
    parsed = [email.message_from_bytes(m.message, policy=email.policy.default) for m in mails]
    for mail, msg in zip(mails, parsed, strict=True):
        assert not msg.defects, msg.defects
        assert msg["To"] == mail.recipient
        assert msg["X-Satoyama-Event"] == event.id
        assert msg.get_content_type() == "multipart/alternative"
        assert all(not part.defects for part in msg.walk())
    assert [msg["Message-ID"] for msg in parsed] == [
        f"<{event.id}.1@satoyama-edge>",
        f"<{event.id}.2@satoyama-edge>",
    ]
    bodies = [[p.get_content() for p in msg.walk() if not p.is_multipart()] for msg in parsed]
    assert bodies[0] == bodies[1]
    assert "pir-1" in bodies[0][0]


def test_an_event_reaches_a_render_worker_as_the_same_event() -> None:
    """What a render job pickles (msgpack, or the event itself where msgpack would not
    give it back unchanged) unpickles as the same event, its time zone included."""
    import datetime as dt
    import pickle

    from cloud.plan import PackedEvent
    from tests.cloud.conftest import make_event

    plain = make_event(data={"sensor": "pir-1", "n": [1, 2.5, None, {"a": True}]})
    huge = make_event(data={"sensor": "pir-1", "count": 2**70})  # past msgpack's integers
    jst = make_event(ts=dt.datetime(2025, 11, 24, 13, 5, tzinfo=dt.timezone(dt.timedelta(hours=9))))
    for event in (plain, huge, jst):
        back = pickle.loads(pickle.dumps(PackedEvent(event))).event
        assert back == event
        assert back.ts.utcoffset() == event.ts.utcoffset()
        assert back.data == event.data
    assert len(pickle.dumps(PackedEvent(plain))) < len(pickle.dumps(plain))


async def test_rendered_and_readdressed_mails_are_said_ready_for_data_only_when_they_are() -> None:
    """The planner tells the sender which mails SMTP's DATA carries as they are (so that
    the sender does not look at every mail again on the notifier's busy thread): the
    rendered one and the one readdressed from it, each checked here on its own bytes;
    a mail nobody checked (read back from the store) is not said ready."""
    import functools
    import time

    from cloud.config import Recipient
    from cloud.mime import ready_for_data
    from cloud.plan import PackedEvent, Planner, _render_event
    from cloud.stats import NotifierStats
    from tests.cloud.conftest import SITE, config_text

    config = load_config_text(config_text(mqtt_port=1, smtp_port=1, store=Path("unused")))
    site = config.sites[SITE]
    event = make_event()
    planner = Planner(config, NotifierStats(), None)
    planner.start()
    try:
        render = functools.partial(_render_event, PackedEvent(event), site, config.smtp.sender,
                                   time.time(), None, None)  # fmt: skip
        recipients = [Recipient("farmer@example.jp", "ja"), Recipient("hunter@example.jp", "ja"),
                      Recipient("office@example.jp", "en")]  # fmt: skip
        mails = await planner.render_each(recipients, render, event.id)
    finally:
        planner.close()
    assert [m.recipient for m in mails] == [r.address for r in recipients]
    assert planner.stats.rendered == 2  # the second Japanese one was readdressed
    for mail in mails:
        assert mail.ready and ready_for_data(mail.message)
        lines = mail.message.split(b"\r\n")
        assert lines[-1] == b"" and not any(line.startswith(b".") for line in lines)
    from cloud.store import OutgoingMail, QueuedMail

    assert not OutgoingMail("a@example.jp", b"x").ready
    assert not QueuedMail(1, "e", "k", "s", "a@example.jp", "pending", 0, 0.0, None, 0.0, None,
                          b"x").ready  # fmt: skip
