"""The cloud's end-to-end acknowledgement on ``PREFIX/DEVICE/ack``, with a real mosquitto.

A stand-in device subscribes to the ack topics and records every
:class:`~edge.event.CloudAck`; each test checks what the notifier acknowledged,
to whom, and that it had committed it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from cloud.config import NotifierConfig, load_config
from cloud.errors import StoreError
from cloud.notifier import Notifier
from cloud.store import Store
from edge.event import (
    MAX_ACK_IDS,
    Series,
    TelemetryBatch,
    decode_ack,
    encode,
    encode_telemetry,
    events_topic,
    new_event_id,
    telemetry_topic,
)
from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox
from tests.cloud.conftest import (
    SITE,
    Publisher,
    config_text,
    mails,
    make_event,
    running,
    wait_subscribed,
)
from tests.support.waiting import until

PREFIX = "satoyama/v1"


class AckListener:
    """A device's side of the ack topic: every ack message, by the device it was sent to."""

    def __init__(self, client: aiomqtt.Client, config: NotifierConfig | None) -> None:
        self.client = client
        self.config = config
        self.received: list[tuple[str, list[str]]] = []
        self.not_stored: list[str] = []
        """Ids acknowledged before they were in the store (must stay empty)."""
        self.qos: list[int] = []
        """The QoS each ack message arrived with (the listener subscribes at QoS 1)."""

    def ids(self, device: str | None = None) -> list[str]:
        return [i for d, ids in self.received if device in (None, d) for i in ids]

    async def listen(self) -> None:
        async for message in self.client.messages:
            device = message.topic.value.split("/")[-2]
            assert isinstance(message.payload, bytes)
            ack = decode_ack(message.payload)
            assert not message.retain
            if self.config is not None:
                async with await Store.open(self.config.store, readonly=True) as store:
                    for i in ack.ids:
                        if i.startswith("batch-"):
                            continue  # telemetry: checked by its readings
                        if not await store.has_event(i):
                            self.not_stored.append(i)
            self.received.append((device, list(ack.ids)))
            self.qos.append(message.qos)


@contextlib.asynccontextmanager
async def ack_listener(
    broker: Mosquitto, config: NotifierConfig | None = None
) -> AsyncIterator[AckListener]:
    async with aiomqtt.Client(broker.host, broker.port, identifier="ack-listener") as client:
        await client.subscribe(f"{PREFIX}/+/ack", qos=1)
        listener = AckListener(client, config)
        task = asyncio.create_task(listener.listen())
        try:
            yield listener
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert listener.not_stored == [], "acknowledged before the commit"


def write_config(tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, mqtt: str) -> NotifierConfig:
    path = tmp_path / "acks.toml"
    path.write_text(
        config_text(
            mqtt_port=broker.port, smtp_port=mailbox.port, store=tmp_path / "n.sqlite3", mqtt=mqtt
        ),
        encoding="utf-8",
    )
    return load_config(path)


def batch(device: str = "pi-east-01", batch_id: str = "", seq: int = 1) -> TelemetryBatch:
    return TelemetryBatch(
        id=batch_id, device=device, site=SITE, boot="b", seq=seq, t0=1.7e9,
        clock_synced=True, series={"level_east.level_cm": Series([0.0, 60.0], [40.0, 41.0])},
    )  # fmt: skip


async def test_stored_events_and_telemetry_are_acknowledged_to_their_device(
    config: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    events = [make_event(seq=n) for n in range(3)]
    with_id, without_id = batch(batch_id="batch-" + new_event_id()), batch(seq=2)
    async with ack_listener(broker, config) as device, running(config) as notifier:
        for event in events:
            await publisher.event(event)
        topic = telemetry_topic(PREFIX, "pi-east-01")
        await publisher.client.publish(topic, encode_telemetry(with_id), qos=1)
        await publisher.client.publish(topic, encode_telemetry(without_id), qos=1)
        wanted = {e.id for e in events} | {with_id.id}
        await until(lambda: set(device.ids()) >= wanted, 5, "acks of 3 events and 1 batch")
        await until(lambda: notifier.stats.telemetry == 2, 5, "both batches stored")
        assert notifier.acks is not None
        await until(lambda: notifier.acks is not None and notifier.acks.waiting == 0, 5, "acks")
    assert sorted(device.ids()) == sorted(wanted)  # the batch without an id: nothing to ack
    assert {d for d, _ in device.received} == {"pi-east-01"}
    # Batched: the three events arrived within the 0.2 s delay, so few messages.
    assert len(device.received) <= 3


async def test_acks_are_published_at_qos_0_so_the_device_owes_no_puback(
    config: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    """Every ack at QoS 0, even to a subscriber asking for QoS 1: a PUBACK per ack costs
    a device 184 B over mutual TLS; a lost ack only costs the row's resend."""
    events = [make_event("heartbeat", "info", seq=n, data={"interval_s": 60}) for n in range(3)]
    async with ack_listener(broker, config) as device, running(config):
        for event in events:
            await publisher.event(event)
        await until(lambda: set(device.ids()) >= {e.id for e in events}, 5, "three acks")
    assert device.qos and set(device.qos) == {0}


async def test_a_duplicate_is_acknowledged_again_and_not_mailed_again(
    config: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    event = make_event()
    async with ack_listener(broker, config) as device, running(config) as notifier:
        await publisher.event(event)
        await until(lambda: device.ids().count(event.id) == 1, 5, "the first ack")
        await publisher.event(event)  # the device's resend: it never got that ack
        await until(lambda: device.ids().count(event.id) == 2, 5, "the ack of the duplicate")
        assert notifier.stats.duplicates == 1
        assert notifier.stats.accepted == 1
        await mails(mailbox, 2)
    assert len(mailbox.mails) == 2


async def test_acks_go_to_the_device_named_in_the_topic(
    config: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    east = make_event("heartbeat", "info", device="pi-east-01", data={"interval_s": 60})
    west = make_event("heartbeat", "info", device="pi-west-02", data={"interval_s": 60})
    # The envelope names another device than the topic the broker vouches for: refused
    # (not stored), but acknowledged to the topic's device, which would resend it forever.
    stray = make_event("heartbeat", "info", device="pi-east-01", data={"interval_s": 60})
    async with ack_listener(broker) as device, running(config) as notifier:
        await publisher.event(east)
        await publisher.event(west)
        await publisher.client.publish(events_topic(PREFIX, "pi-west-02"), encode(stray), qos=1)
        await until(lambda: len(device.ids()) == 3, 5, "three acks")
        assert notifier.stats.spoofed == 1
    assert device.ids("pi-east-01") == [east.id]
    assert sorted(device.ids("pi-west-02")) == sorted([west.id, stray.id])
    async with await Store.open(config.store, readonly=True) as store:
        assert not await store.has_event(stray.id)


async def test_a_message_refused_for_good_is_acknowledged_by_its_id_if_it_has_one(
    config: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    wrong_schema = msgspec.json.encode({"id": "bad-1", "kind": "animal_detected"})
    bad_batch = msgspec.msgpack.encode({"id": "bad-2", "series": 7})
    sentinel = make_event("heartbeat", "info", data={"interval_s": 60})
    async with ack_listener(broker) as device, running(config) as notifier:
        await publisher.raw(b"\xff\xfe garbage \x00")  # no id to read: nothing to ack
        await publisher.raw(wrong_schema)
        topic = telemetry_topic(PREFIX, "pi-east-01")
        await publisher.client.publish(topic, bad_batch, qos=1)
        await publisher.event(sentinel)
        await until(lambda: sentinel.id in device.ids(), 5, "the sentinel's ack")
        await until(lambda: len(device.ids()) >= 3, 5, "the refused messages' acks")
        assert notifier.stats.invalid == 2
        assert notifier.stats.refused_acked == 2
    assert sorted(device.ids()) == sorted(["bad-1", "bad-2", sentinel.id])


async def test_an_event_whose_commit_failed_is_not_acknowledged(
    config: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    """SQLite refuses one event (a trigger, as a failing disk would): no ack until stored."""
    event, before = make_event(seq=2), make_event("heartbeat", "info", seq=1)
    path = config.store.path
    assert path is not None
    async with await Store.open(path):
        pass  # create the schema
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER disk_on_fire BEFORE INSERT ON events"
        f" WHEN NEW.id = '{event.id}' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )
    conn.close()
    async with ack_listener(broker, config) as device:
        notifier = Notifier(config)
        task = asyncio.create_task(notifier.run())
        await wait_subscribed(notifier, task)
        await publisher.event(before)
        await until(lambda: before.id in device.ids(), 5, "the ack of the event before")
        await publisher.event(event)
        with pytest.raises(StoreError, match="disk I/O error"):
            await asyncio.wait_for(task, 10)
        assert event.id not in device.ids()

        conn = sqlite3.connect(path)
        conn.execute("DROP TRIGGER disk_on_fire")
        conn.close()
        async with running(config):
            await until(lambda: event.id in device.ids(), 5, "the ack once it is stored")


async def test_acks_not_yet_sent_when_the_broker_goes_are_sent_after_the_reconnect(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    config = write_config(tmp_path, broker, mailbox, "ack_delay_s = 30")
    event = make_event("heartbeat", "info", data={"interval_s": 60})
    async with running(config) as notifier:
        await publisher.event(event)
        await until(lambda: notifier.stats.accepted == 1, 5, "the event stored")
        assert notifier.acks is not None and notifier.acks.waiting == 1
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)
        await until(
            lambda: notifier.stats.connections >= 2 and notifier.subscribed.is_set(),
            10,
            "the notifier to reconnect",
        )
        async with ack_listener(broker) as device:
            # Still waiting for its 30 s delay: the id survived the reconnect.
            assert notifier.acks.waiting == 1
            full = [make_event("heartbeat", "info", seq=n) for n in range(MAX_ACK_IDS - 1)]
            async with aiomqtt.Client(broker.host, broker.port) as again:
                for e in full:
                    await again.publish(events_topic(PREFIX, e.device), encode(e), qos=1)
                # The 256th id fills the message: it goes at once, kept id first.
                await until(lambda: len(device.ids()) == MAX_ACK_IDS, 20, "a full ack message")
    assert device.received[0][1][0] == event.id
    assert len(device.received) == 1


async def test_ids_are_batched_up_to_the_most_one_message_carries(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox
) -> None:
    config = write_config(tmp_path, broker, mailbox, "ack_delay_s = 0.5")
    events = [make_event("heartbeat", "info", seq=n) for n in range(MAX_ACK_IDS + 44)]
    async with ack_listener(broker) as device, running(config):
        async with aiomqtt.Client(broker.host, broker.port) as client:
            for e in events:
                await client.publish(events_topic(PREFIX, e.device), encode(e), qos=1)
            await until(lambda: len(device.ids()) == len(events), 20, "every id acknowledged")
    assert sorted(device.ids()) == sorted(e.id for e in events)
    assert all(len(ids) <= MAX_ACK_IDS for _, ids in device.received)
    assert len(device.received) <= 4  # 300 ids in 2 messages, allowing for timing


async def test_with_acks_off_nothing_is_published(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    config = write_config(tmp_path, broker, mailbox, "device_acks = false\nack_delay_s = 0")
    event = make_event()
    async with ack_listener(broker) as device, running(config) as notifier:
        assert notifier.acks is None
        await publisher.event(event)
        await mails(mailbox, 2)
        await publisher.event(event)
        await until(lambda: notifier.stats.duplicates == 1, 5, "the duplicate handled")
    assert device.received == []


async def test_two_instances_on_a_shared_subscription_each_acknowledge_what_they_stored(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher, pg_dsn: str
) -> None:
    from tests.cloud.test_cluster import instance, instance_config

    one = instance_config(tmp_path, broker, mailbox, pg_dsn, "notifier-1")
    two = instance_config(tmp_path, broker, mailbox, pg_dsn, "notifier-2")
    events = [make_event("heartbeat", "info", seq=n, data={"interval_s": 60}) for n in range(40)]
    async with ack_listener(broker) as device, instance(one) as first, instance(two) as second:
        for event in events:
            await publisher.event(event)
        await until(lambda: len(set(device.ids())) == len(events), 20, "every event acked")
    assert set(device.ids()) == {e.id for e in events}
    for proc in (first, second):  # both did part of the work, and acked it
        log = "".join(proc.log)  # type: ignore[attr-defined]
        assert "event accepted" in log


async def test_a_backlog_is_committed_in_groups_each_event_once_and_acknowledged(
    config: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    """Events queued while the notifier was away arrive together: stored in a few
    transactions, a duplicate inside one group still stored once, all acked."""
    first = make_event("trap_triggered", seq=0, data={"sensor": "box_trap_1"})
    routine = [make_event("heartbeat", "info", seq=n, data={"interval_s": 60})
               for n in range(1, 200)]  # fmt: skip
    async with running(config):  # creates the persistent session
        pass
    await publisher.event(first)
    for n, event in enumerate(routine):
        await publisher.event(event)
        if n == 100:
            await publisher.event(routine[50])  # a resend, likely in the same group
            await publisher.raw(b"not json")
    async with ack_listener(broker, config) as device, running(config) as notifier:
        wanted = {first.id} | {e.id for e in routine}
        await until(lambda: set(device.ids()) >= wanted, 20, "every event acknowledged")
        await mails(mailbox, 2)
        assert notifier.stats.accepted == 200
        assert notifier.stats.duplicates == 1
        assert notifier.stats.invalid == 1
        assert 0 < notifier.stats.group_commits < 100
    async with await Store.open(config.store, readonly=True) as store:
        assert (await store.counts()).events == 200
    assert len(mailbox.mails) == 2
