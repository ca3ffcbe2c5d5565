"""Only the right device on the right topic: TLS client certificates and a broker ACL."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from edge.config import parse
from edge.daemon import Daemon
from edge.event import Event, Location, decode_ack, encode, encode_ack, new_event_id
from edge.sim.broker import Mosquitto
from edge.sim.site import device_config
from tests.support.pki import FleetCA, Issued
from tests.support.spy import spy_on

pytestmark = pytest.mark.slow

ACL = """\
# Devices (user name = certificate common name = device id): only their own topics.
pattern write satoyama/v1/%u/events
pattern write satoyama/v1/%u/telemetry
pattern write satoyama/v1/%u/status
pattern read satoyama/v1/%u/cmd/#
pattern read satoyama/v1/%u/ack

# The cloud side.
user satoyama-cloud
topic read satoyama/v1/#
topic write satoyama/v1/+/cmd/#
topic write satoyama/v1/+/ack
"""


def tls_ctx(ca: FleetCA, who: Issued | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    if who is not None:
        ctx.load_cert_chain(who.cert, who.key)
    return ctx


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[FleetCA, Mosquitto]]:
    ca = FleetCA(tmp_path / "pki")
    server = ca.issue("broker.local", server=True)
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Mosquitto(workdir=workdir, tls=(ca.ca_file, server.cert, server.key), acl_file=acl)
    broker.start()
    try:
        yield ca, broker
    finally:
        broker.close()


def event_as(device: str) -> bytes:
    import datetime as dt

    return encode(
        Event(
            id=new_event_id(), device=device, site="s", kind="animal_detected",
            severity="alarm", ts=dt.datetime.now(dt.UTC), clock_synced=True, seq=1,
            boot="b", location=Location(lat=0, lon=0),
        )
    )


async def test_device_talks_tls_with_its_own_certificate(
    tmp_path: Path, fleet: tuple[FleetCA, Mosquitto]
) -> None:
    ca, broker = fleet
    dev = ca.issue("shiojiri-kataoka-01")
    cloud = ca.issue("satoyama-cloud")
    text = device_config(tmp_path / "outbox.sqlite3", broker.port, warmup_s=0).replace(
        "[outbox]",
        f'[uplink.tls]\nca_file = "{ca.ca_file}"\ncert_file = "{dev.cert}"\n'
        f'key_file = "{dev.key}"\n\n[outbox]',
    )
    async with spy_on(
        broker.host, broker.port, identifier="satoyama-cloud",
        tls_context=tls_ctx(ca, cloud),
    ) as spy:
        async with Daemon(parse(text)) as daemon:
            await asyncio.to_thread(daemon.pin_factory.pin(17).drive_high)
            await spy.wait(lambda: bool(spy.of_kind("animal_detected")), 15, "the detection")
        assert spy.statuses and spy.statuses[0].device == "shiojiri-kataoka-01"


async def test_device_cannot_publish_as_another_nor_read_its_commands(
    fleet: tuple[FleetCA, Mosquitto],
) -> None:
    ca, broker = fleet
    a = ca.issue("device-a")
    cloud = ca.issue("satoyama-cloud")
    async with spy_on(
        broker.host, broker.port, identifier="satoyama-cloud", tls_context=tls_ctx(ca, cloud)
    ) as spy, aiomqtt.Client(
        broker.host, broker.port, identifier="device-a", tls_context=tls_ctx(ca, a)
    ) as dev_a:
        # A subscribes to B's commands (refused by the ACL) and to its own.
        await dev_a.subscribe("satoyama/v1/device-b/cmd/#", qos=1)
        await dev_a.subscribe("satoyama/v1/device-a/cmd/#", qos=1)
        # A tries to speak as B, then as itself (the sentinel).
        await dev_a.publish("satoyama/v1/device-b/events", event_as("device-b"), qos=1)
        await dev_a.publish("satoyama/v1/device-a/events", event_as("device-a"), qos=1)
        await spy.wait(lambda: any(e.device == "device-a" for e in spy.events), 10, "A's own")
        assert [e.device for e in spy.events] == ["device-a"]

        assert spy.client is not None
        await spy.client.publish("satoyama/v1/device-b/cmd/heartbeat", b"{}", qos=1)
        await spy.client.publish("satoyama/v1/device-a/cmd/heartbeat", b"{}", qos=1)
        got = await asyncio.wait_for(anext(aiter(dev_a.messages)), 10)
        assert got.topic.value == "satoyama/v1/device-a/cmd/heartbeat"  # never B's


async def test_device_cannot_read_nor_forge_another_devices_acknowledgements(
    fleet: tuple[FleetCA, Mosquitto],
) -> None:
    """The cloud's acknowledgements delete rows on the device: only the cloud may send
    them, and only to the device they concern."""
    ca, broker = fleet
    a, b, cloud = ca.issue("device-a"), ca.issue("device-b"), ca.issue("satoyama-cloud")
    async with aiomqtt.Client(
        broker.host, broker.port, identifier="device-a", tls_context=tls_ctx(ca, a)
    ) as dev_a, aiomqtt.Client(
        broker.host, broker.port, identifier="device-b", tls_context=tls_ctx(ca, b)
    ) as dev_b, aiomqtt.Client(
        broker.host, broker.port, identifier="satoyama-cloud", tls_context=tls_ctx(ca, cloud)
    ) as cloud_side:
        await dev_a.subscribe("satoyama/v1/device-b/ack", qos=1)  # refused by the ACL
        await dev_a.subscribe("satoyama/v1/device-a/ack", qos=1)
        await dev_b.subscribe("satoyama/v1/device-b/ack", qos=1)
        # A forges an acknowledgement for B's rows (refused), the cloud acknowledges both.
        await dev_a.publish("satoyama/v1/device-b/ack", encode_ack(["forged"]), qos=1)
        await cloud_side.publish("satoyama/v1/device-b/ack", encode_ack(["for-b"]), qos=1)
        await cloud_side.publish("satoyama/v1/device-a/ack", encode_ack(["for-a"]), qos=1)
        got_b = await asyncio.wait_for(anext(aiter(dev_b.messages)), 10)
        assert decode_ack(bytes(got_b.payload)).ids == ["for-b"]  # type: ignore[arg-type]
        got_a = await asyncio.wait_for(anext(aiter(dev_a.messages)), 10)
        assert got_a.topic.value == "satoyama/v1/device-a/ack"  # never B's
        assert decode_ack(bytes(got_a.payload)).ids == ["for-a"]  # type: ignore[arg-type]


async def test_client_without_a_certificate_is_refused(fleet: tuple[FleetCA, Mosquitto]) -> None:
    ca, broker = fleet
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            broker.host, broker.port, tls_context=tls_ctx(ca, None), timeout=2
        ):
            pass


async def test_broker_with_a_certificate_from_another_ca_is_not_trusted(
    tmp_path: Path, fleet: tuple[FleetCA, Mosquitto]
) -> None:
    ca, broker = fleet
    other = FleetCA(tmp_path / "other", name="Someone else")
    dev = ca.issue("device-a")
    ctx = ssl.create_default_context(cafile=str(other.ca_file))
    ctx.load_cert_chain(dev.cert, dev.key)
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(broker.host, broker.port, tls_context=ctx, timeout=2):
            pass
