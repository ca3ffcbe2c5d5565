"""End-to-end acknowledgement: a row leaves the device only when the cloud has it durably.

Real mosquitto, the notifier as its own process, the daemon's real outbox file.
A PUBACK only means the broker holds a message in memory; these tests kill the
broker, keep the notifier away, and check that the device neither loses what
the broker acknowledged nor floods the link while the cloud is silent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from edge.config import parse
from edge.daemon import Daemon
from edge.event import (
    AnimalDetected,
    Event,
    Location,
    ack_topic,
    encode_ack,
    events_topic,
    new_event_id,
)
from edge.link.outbox import Outbox, Pending
from edge.sim.broker import Mosquitto
from edge.sim.cellular import CellularLink
from edge.sim.site import DEVICE_ID, CloudSide, device_config
from tests.support.waiting import until

pytestmark = pytest.mark.slow
PREFIX = "satoyama/v1"


def backlog_event(seq: int) -> Event:
    """An event of a site the notifier does not mail (recorded only: no SMTP cost)."""
    return Event(
        id=new_event_id(),
        device=DEVICE_ID,
        site="not-mailed-site",
        kind="anomaly",
        severity="warning",
        ts=dt.datetime.now(dt.UTC),
        clock_synced=True,
        seq=seq,
        boot="3f0b6a1e-2c55-4d7e-9a51-0b7f1f2c9d10",
        location=Location(lat=36.10395, lon=137.96563),
        data={"sensor": "level_east", "n": seq},
    )


async def preload(outbox_path: Path, n: int) -> set[str]:
    """Events waiting in the device's outbox before the daemon starts (a long outage)."""
    box = Outbox(outbox_path, max_events=1_000_000)
    box.open()
    try:
        events = [backlog_event(i + 1) for i in range(n)]
        assert await box.put_many(events)
    finally:
        box.close()
    return {e.id for e in events}


def stored_ids(cloud: CloudSide) -> set[str]:
    """Event ids the notifier has committed (its own SQLite store, read directly)."""
    path = cloud.workdir / "notifier" / "notifier.sqlite3"
    if not path.exists():
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM events WHERE device = ?", (DEVICE_ID,))}
    except sqlite3.OperationalError:  # not created yet
        return set()
    finally:
        conn.close()


def config(tmp_path: Path, port: int, **uplink: str) -> str:
    text = device_config(tmp_path / "device" / "outbox.sqlite3", port, warmup_s=0, on_s=0.2,
                         max_on_s=0.2, cooldown_s=0, reconnect_max_s=0.5)  # fmt: skip
    extra = "".join(f"{k} = {v}\n" for k, v in uplink.items())
    return text.replace("[uplink]\n", "[uplink]\nconnect_timeout_s = 2\n" + extra)


@pytest.fixture
def cloud_no_persistence(tmp_path: Path) -> Iterator[CloudSide]:
    side = CloudSide(tmp_path / "cloud", broker_persistence=False)
    side.start()
    try:
        yield side
    finally:
        side.close()


async def test_broker_killed_mid_drain_without_persistence_loses_nothing(
    tmp_path: Path, cloud_no_persistence: CloudSide
) -> None:
    """SIGKILL mosquitto (persistence off) while 6,000 events drain: all reach the notifier.

    With the PUBACK as the end of the device's duty (``delivery = "puback"``),
    everything the broker acknowledged but had not yet handed to the notifier
    died with it (5,970 of 10,002 lost in the evaluation).
    """
    cloud = cloud_no_persistence
    n = 6000
    ids = await preload(tmp_path / "device" / "outbox.sqlite3", n)
    text = config(tmp_path, cloud.broker.port, ack_timeout_s="3", ack_probe_max_s="6")
    async with Daemon(parse(text)) as daemon:
        await until(lambda: daemon.uplink.published >= n // 4, 60, "a quarter published")
        # Mid-drain, the broker must hold rows it acknowledged that the notifier has not
        # stored.  A notifier that keeps pace can have acknowledged every one of them at
        # the moment of the kill, so hold it still (SIGSTOP, as a stalled host would) until
        # the device waits on some.
        assert cloud.notifier is not None
        os.kill(cloud.notifier.pid, signal.SIGSTOP)
        try:
            await until(lambda: len(daemon.uplink.awaiting) >= 10, 30,
                        "rows the broker acknowledged and the cloud did not")  # fmt: skip
            seen = len(stored_ids(cloud))
            assert seen < n, "the drain finished before the kill: make the backlog larger"
            cloud.broker.kill()
            await asyncio.to_thread(cloud.broker.start)
        finally:
            os.kill(cloud.notifier.pid, signal.SIGCONT)

        async def all_stored() -> bool:
            return await asyncio.to_thread(stored_ids, cloud) >= ids

        await until(all_stored, 120, f"all {n} events stored by the notifier after the crash")

        async def outbox_empty() -> bool:
            # Only what the daemon itself recorded meanwhile may still wait.
            return await daemon.outbox.depth() <= 2

        await until(outbox_empty, 60, "the cloud's acknowledgements to empty the outbox")
        assert daemon.uplink.delivered >= n
        assert daemon.uplink.awaiting.released > 0  # the crash made it send rows again


async def test_a_puback_alone_keeps_the_row_and_the_silent_cloud_gets_only_probes(
    tmp_path: Path,
) -> None:
    """No notifier at all: the broker acknowledges every row, yet none leaves the outbox;
    the device sends at most ``unacked_max`` rows and then single probes, and a later
    acknowledgement (as the cloud would send it) deletes exactly those rows."""
    with Mosquitto(workdir=tmp_path / "broker") as broker:
        ids = await preload(tmp_path / "device" / "outbox.sqlite3", 300)
        seen: list[str] = []
        text = config(tmp_path, broker.port, unacked_max="50", ack_timeout_s="1",
                      ack_probe_max_s="2")  # fmt: skip
        async with aiomqtt.Client(broker.host, broker.port) as watcher:
            await watcher.subscribe(events_topic(PREFIX, DEVICE_ID), qos=1)

            async def watch() -> None:
                async for message in watcher.messages:
                    assert isinstance(message.payload, bytes)
                    seen.append(message.payload.decode())

            task = asyncio.create_task(watch())
            try:
                async with Daemon(parse(text)) as daemon:
                    await until(lambda: daemon.uplink.published >= 50, 20, "50 rows published")
                    await until(lambda: daemon.uplink.awaiting.released >= 3, 20, "three probes")
                    # Acknowledged by the broker, never by the cloud: all still stored.
                    assert await daemon.outbox.depth() >= 300
                    assert len(daemon.uplink.awaiting) <= 50
                    # The first 50, then one probe each time: nowhere near 300 sends.
                    assert len(seen) <= 50 + daemon.uplink.awaiting.released + 2

                    # The cloud comes back and acknowledges the first 120 (as the
                    # notifier does after its commit).
                    first = sorted(ids)[:120]
                    async with aiomqtt.Client(broker.host, broker.port) as cloud:
                        await cloud.publish(ack_topic(PREFIX, DEVICE_ID), encode_ack(first),
                                            qos=1)  # fmt: skip

                    async def gone() -> bool:
                        return await daemon.outbox.depth() <= 300 - 120 + 2

                    await until(gone, 20, "the acknowledged rows to leave the outbox")
                    assert daemon.uplink.delivered == 120
            finally:
                task.cancel()


async def test_delivery_puback_works_with_a_cloud_side_that_never_acknowledges(
    tmp_path: Path,
) -> None:
    """An older notifier sends no acknowledgement: ``delivery = "puback"`` drains as before."""
    with Mosquitto(workdir=tmp_path / "broker") as broker:
        await preload(tmp_path / "device" / "outbox.sqlite3", 200)
        text = config(tmp_path, broker.port, delivery='"puback"')
        async with Daemon(parse(text)) as daemon:

            async def empty() -> bool:
                return await daemon.outbox.depth() == 0

            await until(empty, 30, "the outbox to drain on PUBACKs alone")
            assert daemon.uplink.delivered >= 200
            assert len(daemon.uplink.awaiting) == 0


async def test_a_lost_acknowledgement_costs_a_resend_and_still_one_mail(
    tmp_path: Path, cloud: CloudSide
) -> None:
    """The cloud's acks are QoS 0: the link drops between the broker's PUBACK and the
    cloud's ack, and the broker does not keep a QoS 0 message for a device that is
    away.  The device sends the detection again after ack_timeout_s; the notifier
    recognises it by its id, acknowledges it again, and mails nobody twice."""
    with CellularLink(cloud.broker.host, cloud.broker.port, delay_s=0.3) as link:
        text = config(tmp_path, link.port, ack_timeout_s="2")
        sends: list[str] = []
        async with Daemon(parse(text)) as daemon:
            up = daemon.uplink
            assert up is not None and daemon.recorder is not None
            await until(up.connected.is_set, 20, "connected")

            def on_published(item: Pending) -> None:
                if item.kind != "animal_detected":
                    return
                sends.append(item.id)
                if len(sends) == 1:
                    # PUBACK in: the cloud's ack is at most on its way down: lose it.
                    link.cut()

            up.on_published = on_published
            event = await daemon.recorder.record(
                AnimalDetected(
                    sensor="pir_north", rule="chase", deterrent="sounded", siren=True, strobe=False
                )
            )
            await until(lambda: bool(sends), 20, "the detection published")

            async def stored() -> bool:
                return event.id in await asyncio.to_thread(stored_ids, cloud)

            await until(stored, 20, "the detection stored by the notifier")
            await asyncio.to_thread(cloud.mailbox.wait_for, 1, 20)
            link.restore()

            async def delivered() -> bool:
                return event.id not in {r.id for r in await daemon.outbox.pending(100)}

            await until(delivered, 30, "the resent detection acknowledged")
            assert sends.count(event.id) >= 2, "the lost ack did not cost a resend"
            assert up.awaiting.released >= 1
    subjects = [str(m.message["Subject"]) for m in cloud.mailbox.mails]
    assert len(subjects) == 1 and "動物" in subjects[0], subjects
