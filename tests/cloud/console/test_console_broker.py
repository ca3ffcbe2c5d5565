"""The console on the broker the project ships: its own certificate may tell a device about
a remote nap acknowledgement (``cmd/nap_ack``) and nothing else (deploy/broker/fleet.acl)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from cloud.config import load_config
from cloud.console.naps import send_nap_ack
from edge.event import command_topic, encode, events_topic
from tests.cloud.conftest import config_text, make_event
from tests.support.shipped_broker import ShippedBroker, shipped_broker
from tests.support.waiting import until

PREFIX = "satoyama/v1"
DEVICE = "pi-nap-01"


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[ShippedBroker]:
    with shipped_broker(tmp_path / "pki") as broker:
        yield broker


async def test_the_console_certificate_tells_a_device_and_reads_nothing(
    tmp_path: Path, shipped: ShippedBroker
) -> None:
    ca = shipped.fleet_ca
    console = ca.issue("satoyama-console")
    cloud = ca.issue("satoyama-cloud")
    acks = ca.issue("satoyama-cloud-acks")
    tls = (
        f'\n[mqtt.tls]\nca_file = "{ca.ca_file}"\ncert_file = "{cloud.cert}"\n'
        f'key_file = "{cloud.key}"\nack_cert_file = "{acks.cert}"\nack_key_file = "{acks.key}"\n'
    )
    path = tmp_path / "notifier.toml"
    path.write_text(
        config_text(mqtt_port=shipped.port, smtp_port=25, store=tmp_path / "n.sqlite3",
                    client_id="satoyama-cloud", mqtt=tls),
        encoding="utf-8",
    )  # fmt: skip
    config = load_config(path)
    device = ca.issue(DEVICE)
    got: list[tuple[str, bytes]] = []
    async with aiomqtt.Client(
        "localhost", shipped.port, identifier=DEVICE, tls_context=shipped.tls(device)
    ) as pi:
        await pi.subscribe(command_topic(PREFIX, DEVICE, "#"), qos=1)

        async def listen() -> None:
            async for message in pi.messages:
                assert isinstance(message.payload, bytes)
                got.append((str(message.topic), message.payload))

        listener = asyncio.create_task(listen())
        try:
            ident = await send_nap_ack(
                config.mqtt, DEVICE, "cot-1", "tanaka",
                cert_file=str(console.cert), key_file=str(console.key),
            )  # fmt: skip
            await until(lambda: len(got) == 1, 10, "cmd/nap_ack at the device")
            topic, payload = got[0]
            assert topic == command_topic(PREFIX, DEVICE, "nap_ack")
            body = msgspec.json.decode(payload)
            assert body["id"] == ident and body["cot"] == "cot-1" and body["by"] == "tanaka"

            # The same certificate may not order an update, nor read what devices send.
            seen: list[str] = []
            async with aiomqtt.Client(
                "localhost", shipped.port, identifier="satoyama-console",
                tls_context=shipped.tls(console),
            ) as rogue:  # fmt: skip
                await rogue.subscribe(events_topic(PREFIX, "+"), qos=1)
                await rogue.publish(
                    command_topic(PREFIX, DEVICE, "update"), b'{"cmd": "update"}', qos=1
                )

                async def snoop() -> None:
                    async for message in rogue.messages:
                        seen.append(str(message.topic))

                snooper = asyncio.create_task(snoop())
                try:
                    # a device's event, and a marker nap_ack after it on the same broker:
                    # once the marker has arrived, the update (sent before it) would have too
                    await pi.publish(events_topic(PREFIX, DEVICE), encode(make_event()), qos=1)
                    await send_nap_ack(
                        config.mqtt, DEVICE, "cot-2", "tanaka",
                        cert_file=str(console.cert), key_file=str(console.key),
                    )  # fmt: skip
                    nap_ack = command_topic(PREFIX, DEVICE, "nap_ack")
                    await until(
                        lambda: sum(t == nap_ack for t, _ in got) == 2, 10, "the second cmd/nap_ack"
                    )
                finally:
                    snooper.cancel()
            assert [t for t, _ in got] == [command_topic(PREFIX, DEVICE, "nap_ack")] * 2
            assert seen == []
        finally:
            listener.cancel()
