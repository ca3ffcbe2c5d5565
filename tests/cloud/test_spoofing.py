"""The topic is the authority: a device speaks only for itself and for its registered site.

Each test is one way device A (publishing only on its own topic, which the
broker's ACL allows) tried to act on site B: a real mosquitto, SMTP server and
SQLite file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from cloud.config import NotifierConfig, load_config
from cloud.store import Store
from edge.event import (
    Series,
    Status,
    TelemetryBatch,
    encode,
    encode_status,
    encode_telemetry,
    new_event_id,
    status_topic,
    telemetry_topic,
)
from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox
from tests.cloud.conftest import (
    RECIPIENTS,
    SITE,
    Publisher,
    config_text,
    event_ids,
    mails,
    make_event,
    running,
)
from tests.cloud.test_device_acks import ack_listener
from tests.support.waiting import until

PREFIX = "satoyama/v1"
SITE_B = "site-b"
NURSERY = "b-nursery@example.jp"
FLEET = f"""
[sites.{SITE_B}]
name = "B の苗場"
recipients = ["{NURSERY}"]

[fleet.dev-a]
site = "{SITE}"

[fleet.dev-b]
site = "{SITE_B}"
"""


def write(tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, extra: str) -> NotifierConfig:
    path = tmp_path / "spoof.toml"
    path.write_text(
        config_text(
            mqtt_port=broker.port, smtp_port=mailbox.port, store=tmp_path / "n.sqlite3",
            extra=extra,
        ),
        encoding="utf-8",
    )
    return load_config(path)


@pytest.fixture
def fleet(tmp_path: Path, broker: Mosquitto, mailbox: Mailbox) -> NotifierConfig:
    text = FLEET + "\n[devices]\noffline_grace_s = 0\n"
    return write(tmp_path, broker, mailbox, text)


async def publish_as(publisher: Publisher, topic_device: str, payload: bytes) -> None:
    await publisher.raw(payload, device=topic_device)


async def test_a_device_cannot_mail_another_sites_recipients(
    fleet: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    # Its own device name with B's site, and B's device name with B's site.
    as_site_b = make_event("prone_alarm", device="dev-a", site=SITE_B)
    as_dev_b = make_event("prone_alarm", device="dev-b", site=SITE_B)
    sentinel = make_event("trap_triggered", device="dev-a", site=SITE)
    async with ack_listener(broker) as acks, running(fleet) as notifier:
        for event in (as_site_b, as_dev_b, sentinel):
            await publish_as(publisher, "dev-a", encode(event))
        received = await mails(mailbox, 2)
        assert notifier.stats.spoofed == 2
        assert notifier.stats.accepted == 1
        # Refused, but acknowledged to the device that sent them: it does not send them again.
        wanted = {as_site_b.id, as_dev_b.id, sentinel.id}
        await until(lambda: set(acks.ids("dev-a")) >= wanted, 5, "acks to dev-a")
        assert acks.ids("dev-b") == []
    assert event_ids(received) == [sentinel.id] * 2
    assert NURSERY not in {r for m in mailbox.mails for r in m.rcpt_tos}
    async with await Store.open(fleet.store, readonly=True) as store:
        assert not await store.has_event(as_site_b.id)
        assert not await store.has_event(as_dev_b.id)
        assert await store.device("dev-b") is None


async def test_a_device_cannot_close_another_sites_trap(
    fleet: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    data = {"trap": "box-1"}
    triggered = make_event("trap_triggered", device="dev-b", site=SITE_B, data=data)
    resets = [
        make_event("trap_reset", "info", device="dev-b", site=SITE_B, data=data),
        make_event("trap_reset", "info", device="dev-a", site=SITE_B, data=data),
    ]
    sentinel = make_event("trap_triggered", device="dev-a", site=SITE)
    async with running(fleet) as notifier:
        await publish_as(publisher, "dev-b", encode(triggered))
        await mails(mailbox, 1)
        for reset in resets:
            await publish_as(publisher, "dev-a", encode(reset))
        await publish_as(publisher, "dev-a", encode(sentinel))
        await mails(mailbox, 3)
        assert notifier.stats.spoofed == 2
    async with await Store.open(fleet.store, readonly=True) as store:
        traps = await store.open_traps()
    assert sorted((t.device, t.site, t.sensor) for t in traps) == [
        ("dev-a", SITE, "pir-1"),
        ("dev-b", SITE_B, "box-1"),
    ]


async def test_a_device_cannot_set_another_devices_heartbeat_interval(
    fleet: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    hb = {"interval_s": 86400.0, "uptime_s": 1.0, "outbox_depth": 0,
          "oldest_undelivered_s": None}  # fmt: skip
    genuine = make_event("heartbeat", "info", device="dev-b", site=SITE_B,
                         data={**hb, "interval_s": 60.0})  # fmt: skip
    spoof = make_event("heartbeat", "info", device="dev-b", site=SITE_B, data=hb)
    async with running(fleet) as notifier:
        await publish_as(publisher, "dev-b", encode(genuine))
        await until(lambda: notifier.stats.accepted == 1, 5, "dev-b's heartbeat")
        await publish_as(publisher, "dev-a", encode(spoof))
        await until(lambda: notifier.stats.spoofed == 1, 5, "the spoof refused")
    async with await Store.open(fleet.store, readonly=True) as store:
        row = await store.device("dev-b")
        assert not await store.has_event(spoof.id)
    assert row is not None and row.hb_interval == 60.0
    assert mailbox.mails == []


async def test_an_event_cannot_take_the_id_of_a_notice_and_suppress_it(
    fleet: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    # The notices the notifier will make for dev-b going offline and back.
    taken = ["dev-b.off1", "notice:dev-b.off1", "dev-b.on1", "notice:dev-b.on1"]
    squatters = [make_event(device="dev-a", site=SITE, event_id=i) for i in taken]
    first = make_event("heartbeat", "info", device="dev-b", site=SITE_B,
                       data={"interval_s": 60.0})  # fmt: skip
    async with running(fleet) as notifier:
        await publish_as(publisher, "dev-b", encode(first))
        for event in squatters:
            await publish_as(publisher, "dev-a", encode(event))
        # The ids without the prefix are ordinary (if odd) event ids of dev-a's own.
        await mails(mailbox, 2 * len(RECIPIENTS))
        assert notifier.stats.spoofed == 2
        offline = Status(device="dev-b", state="offline", reason="lost power")
        await publisher.client.publish(
            status_topic(PREFIX, "dev-b"), encode_status(offline), qos=1
        )
        received = await mails(mailbox, 2 * len(RECIPIENTS) + 1)
    notice = received[-1]
    assert list(notice.rcpt_tos) == [NURSERY]
    assert notice.message["X-Satoyama-Event"] == "notice:dev-b.off1"
    assert sorted(event_ids(received[:-1])) == sorted(["dev-b.off1", "dev-b.on1"] * 2)


async def test_telemetry_cannot_speak_for_another_device(
    fleet: NotifierConfig, broker: Mosquitto, publisher: Publisher
) -> None:
    t0 = time.time() - 120.0  # older readings the housekeeper would prune

    def batch(device: str, site: str) -> TelemetryBatch:
        return TelemetryBatch(
            id="batch-" + new_event_id(), device=device, site=site, boot="b", seq=1, t0=t0,
            clock_synced=True, series={"level_east.level_cm": Series([0.0, 60.0], [40.0, 41.0])},
        )  # fmt: skip

    spoofs = [batch("dev-b", SITE_B), batch("dev-a", SITE_B)]
    own = batch("dev-a", SITE)
    async with ack_listener(broker) as acks, running(fleet) as notifier:
        for b in (*spoofs, own):
            await publisher.client.publish(
                telemetry_topic(PREFIX, "dev-a"), encode_telemetry(b), qos=1
            )
        await until(lambda: notifier.stats.telemetry == 1, 5, "dev-a's own batch")
        await until(lambda: notifier.stats.spoofed == 2, 5, "both spoofs refused")
        wanted = {b.id for b in (*spoofs, own)}
        await until(lambda: set(acks.ids("dev-a")) >= wanted, 5, "acks to dev-a")
    async with await Store.open(fleet.store, readonly=True) as store:
        assert await store.series("dev-b", "level_east.level_cm", 0, 2e9) == []
        assert len(await store.series("dev-a", "level_east.level_cm", 0, 2e9)) == 2
        assert await store.device("dev-b") is None


async def test_the_same_id_from_two_devices_is_two_events(
    fleet: NotifierConfig, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    shared = new_event_id()
    from_b = make_event("trap_triggered", device="dev-b", site=SITE_B, event_id=shared)
    from_a = make_event("trap_triggered", device="dev-a", site=SITE, event_id=shared)
    sentinel = make_event("trap_triggered", device="dev-a", site=SITE)
    async with ack_listener(broker) as acks, running(fleet) as notifier:
        await publish_as(publisher, "dev-b", encode(from_b))
        await mails(mailbox, 1)
        await publish_as(publisher, "dev-a", encode(from_a))
        received = await mails(mailbox, 3)
        assert notifier.stats.id_collisions == 1
        assert notifier.stats.duplicates == 0
        # Each device's resend is a duplicate of its own event, and of nothing else;
        # both at once too (one batch, one look-up).
        await publish_as(publisher, "dev-b", encode(from_b))
        await publish_as(publisher, "dev-a", encode(from_a))
        await publish_as(publisher, "dev-a", encode(sentinel))
        await mails(mailbox, 5)
        assert notifier.stats.duplicates == 2
        await until(lambda: acks.ids("dev-a").count(shared) == 2, 5, "dev-a's acks, by its id")
        # each device's acks are batched on their own: dev-b's may land after dev-a's
        await until(lambda: acks.ids("dev-b").count(shared) == 2, 5, "dev-b's acks, by its id")
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted([NURSERY, *RECIPIENTS])
    assert len(mailbox.mails) == 5
    async with await Store.open(fleet.store, readonly=True) as store:
        assert await store.has_event(shared, "dev-b")
        assert len(await store.open_traps()) == 2


async def test_without_a_fleet_any_site_but_never_another_device(
    tmp_path: Path,
    broker: Mosquitto,
    mailbox: Mailbox,
    publisher: Publisher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = write(tmp_path, broker, mailbox, "")
    assert config.fleet is None
    other_device = make_event(device="dev-b")
    own = make_event(device="dev-a")
    caplog.set_level(logging.WARNING, logger="cloud.notifier")
    async with running(config) as notifier:
        await publish_as(publisher, "dev-a", encode(other_device))
        await publish_as(publisher, "dev-a", encode(own))
        received = await mails(mailbox, 2)
        assert notifier.stats.spoofed == 1
    assert event_ids(received) == [own.id] * 2
    assert any("any device may speak for any site" in r.getMessage() for r in caplog.records)


async def test_a_device_not_in_the_fleet_has_no_say(
    fleet: NotifierConfig, mailbox: Mailbox, publisher: Publisher
) -> None:
    stranger = make_event(device="dev-x", site=SITE)
    offline = Status(device="dev-x", state="offline", reason="gone")
    sentinel = make_event("trap_triggered", device="dev-a", site=SITE)
    async with running(fleet) as notifier:
        await publish_as(publisher, "dev-x", encode(stranger))
        await publisher.client.publish(status_topic(PREFIX, "dev-x"), encode_status(offline), qos=1)
        await publish_as(publisher, "dev-a", encode(sentinel))
        received = await mails(mailbox, 2)
        await until(lambda: notifier.stats.spoofed == 2, 5, "event and status refused")
    assert event_ids(received) == [sentinel.id] * 2
    async with await Store.open(fleet.store, readonly=True) as store:
        assert await store.device("dev-x") is None
        assert not await store.has_event(stranger.id)
