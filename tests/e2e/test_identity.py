"""The client id is the certificate's identity: the shipped broker config, real mosquitto.

An attacker holding one device's certificate (device A) asks for another
client's id.  With the configuration in deploy/broker/ the broker ignores the
id A asks for and uses A's certificate CN instead, so A cannot take B's queued
commands, the notifier's session, nor kick B off and fire B's last will.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from deploy.broker import render
from tests.support.shipped_broker import ShippedBroker, shipped_broker
from tests.support.waiting import until

pytestmark = pytest.mark.slow

CLOUD = "satoyama-cloud"  # the notifier's certificate CN (deploy/broker/fleet.acl)


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[ShippedBroker]:
    with shipped_broker(tmp_path) as broker:
        yield broker


def client(sb: ShippedBroker, cn: str, identifier: str, **kw: object) -> aiomqtt.Client:
    """A client holding the certificate for ``cn`` and asking for ``identifier``."""
    ctx = sb.tls(sb.fleet_ca.issue(cn))
    return aiomqtt.Client(
        sb.host, sb.port, identifier=identifier, tls_context=ctx, timeout=10, **kw  # type: ignore[arg-type]
    )


def notifier(sb: ShippedBroker) -> aiomqtt.Client:
    """Connects as the notifier does: MQTT 5, a session kept 7 days, its CN as client id."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 7 * 86400
    return client(
        sb, CLOUD, CLOUD, protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
        properties=props,
    )  # fmt: skip


def connected_as(sb: ShippedBroker) -> list[str]:
    """The client ids the broker logged for each connection, in order."""
    return [
        line.split(" as ", 1)[1].split(" ", 1)[0]
        for line in sb.broker.log.read_text().splitlines()
        if line.startswith("New client connected")
    ]


async def next_message(
    c: aiomqtt.Client, timeout: float = 10  # noqa: ASYNC109 - a test helper's deadline
) -> aiomqtt.Message:
    return await asyncio.wait_for(anext(aiter(c.messages)), timeout)


def test_the_shipped_config_ties_the_client_id_to_the_certificate() -> None:
    """What the tests below run is the shipped file: every listener maps CN to client id."""
    conf = render().conf
    listeners = conf.split("\nlistener ")[1:]
    assert len(listeners) == 2
    for block in listeners:
        for line in (
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "allow_anonymous false",
        ):
            assert f"\n{line}\n" in block + "\n", (line, block)
    assert conf.splitlines().index("per_listener_settings true") < conf.index("listener")


async def test_device_cannot_take_another_devices_queued_command(sb: ShippedBroker) -> None:
    # B has a persistent session subscribed to its commands, and is offline.
    async with client(sb, "device-b", "device-b", clean_session=False) as b:
        await b.subscribe("satoyama/v1/device-b/cmd/#", qos=1)
    async with notifier(sb) as cloud:
        await cloud.publish("satoyama/v1/device-b/cmd/update", b'{"cmd": "update"}', qos=1)
        # A asks for B's client id and a persistent session.
        async with client(sb, "device-a", "device-b", clean_session=False) as a:
            await a.subscribe("satoyama/v1/device-a/cmd/#", qos=1)
            await cloud.publish("satoyama/v1/device-a/cmd/heartbeat", b"{}", qos=1)
            got = await next_message(a)
            # B's session would have replayed B's command before anything else.
            assert got.topic.value == "satoyama/v1/device-a/cmd/heartbeat"
    # B comes back: its command is still queued for it.
    async with client(sb, "device-b", "device-b", clean_session=False) as b:
        got = await next_message(b)
        assert got.topic.value == "satoyama/v1/device-b/cmd/update"
        assert bytes(got.payload) == b'{"cmd": "update"}'
    assert connected_as(sb)[-2] == "device-a"  # the id A asked for was ignored


async def test_device_cannot_take_nor_wipe_the_notifiers_session(sb: ShippedBroker) -> None:
    async with notifier(sb) as cloud:
        await cloud.subscribe("satoyama/v1/+/events", qos=1)
    # While the notifier is away, B reports an event: the broker queues it for the notifier.
    async with client(sb, "device-b", "device-b") as b:
        await b.publish("satoyama/v1/device-b/events", b'{"id": "e1"}', qos=1)
    # A asks for the notifier's id: with a clean session (which would wipe the
    # notifier's session and its queue), then with a persistent one (which would
    # take the queued event).
    async with client(sb, "device-a", CLOUD, clean_session=True):
        pass
    async with client(sb, "device-a", CLOUD, clean_session=False) as a:
        await a.subscribe("satoyama/v1/device-a/cmd/#", qos=1)
    # The notifier comes back to its session, and the event is there.
    async with notifier(sb) as cloud:
        got = await next_message(cloud)
        assert got.topic.value == "satoyama/v1/device-b/events"
        assert bytes(got.payload) == b'{"id": "e1"}'
    assert connected_as(sb)[-3:-1] == ["device-a", "device-a"]


async def test_device_cannot_kick_another_off_nor_fire_its_last_will(sb: ShippedBroker) -> None:
    seen: list[tuple[str, bytes]] = []
    will = aiomqtt.Will("satoyama/v1/device-b/status", b'{"state": "offline"}', qos=1, retain=True)
    async with notifier(sb) as cloud, client(
        sb, "device-b", "device-b", clean_session=False, will=will
    ) as b:
        await cloud.subscribe("satoyama/v1/+/status", qos=1)
        await cloud.subscribe("satoyama/v1/+/events", qos=1)

        async def collect() -> None:
            async for m in cloud.messages:
                seen.append((m.topic.value, bytes(m.payload)))

        task = asyncio.create_task(collect())
        try:
            await b.publish(
                "satoyama/v1/device-b/status", b'{"state": "online"}', qos=1, retain=True
            )
            await until(lambda: len(seen) == 1, 10, "B's online status")
            # A asks for B's id, then for the notifier's, while both are online.
            async with client(sb, "device-a", "device-b", clean_session=False):
                pass
            async with client(sb, "device-a", CLOUD, clean_session=False):
                pass
            # Both are still connected: B publishes, the notifier receives.
            await b.publish("satoyama/v1/device-b/events", b'{"id": "after"}', qos=1)
            await until(
                lambda: ("satoyama/v1/device-b/events", b'{"id": "after"}') in seen,
                10,
                "B's event after A's attempts",
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    # Nothing but B's own online status and its event; no last will.
    assert seen == [
        ("satoyama/v1/device-b/status", b'{"state": "online"}'),
        ("satoyama/v1/device-b/events", b'{"id": "after"}'),
    ]
    assert "already connected" not in sb.broker.log.read_text()
