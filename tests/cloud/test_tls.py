"""Mutual TLS to the broker the project ships (deploy/broker/: CN = client id, fleet.acl)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from cloud.config import NotifierConfig, load_config
from cloud.errors import ConfigError
from edge.event import ack_topic, decode_ack, encode, events_topic
from edge.sim.mailbox import Mailbox
from tests.cloud.conftest import config_text, mails, make_event, running
from tests.support.pki import FleetCA, Issued
from tests.support.shipped_broker import ShippedBroker, shipped_broker
from tests.support.waiting import until

PREFIX = "satoyama/v1"


def tls_table(ca: Path, main: Issued, acks: Issued | None) -> str:
    text = f'\n[mqtt.tls]\nca_file = "{ca}"\ncert_file = "{main.cert}"\nkey_file = "{main.key}"\n'
    if acks is not None:
        text += f'ack_cert_file = "{acks.cert}"\nack_key_file = "{acks.key}"\n'
    return text


def write(tmp_path: Path, port: int, smtp_port: int, client_id: str, tls: str) -> Path:
    path = tmp_path / "tls.toml"
    path.write_text(
        config_text(mqtt_port=port, smtp_port=smtp_port, store=tmp_path / "n.sqlite3",
                    client_id=client_id, mqtt=tls),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[ShippedBroker]:
    with shipped_broker(tmp_path / "pki") as broker:
        yield broker


async def test_the_notifier_and_its_acks_connect_with_their_own_certificates(
    tmp_path: Path, shipped: ShippedBroker, mailbox: Mailbox
) -> None:
    ca = shipped.fleet_ca
    cloud, acks = ca.issue("satoyama-cloud"), ca.issue("satoyama-cloud-acks")
    tls = tls_table(ca.ca_file, cloud, acks)
    config = load_config(write(tmp_path, shipped.port, mailbox.port, "satoyama-cloud", tls))
    device = ca.issue("pi-east-01")
    event = make_event()
    async with (
        aiomqtt.Client(
            "localhost", shipped.port, identifier="pi-east-01", tls_context=shipped.tls(device)
        ) as pi,
        running(config) as notifier,
    ):
        await pi.subscribe(ack_topic(PREFIX, "pi-east-01"), qos=1)
        await pi.publish(events_topic(PREFIX, "pi-east-01"), encode(event), qos=1)
        await mails(mailbox, 2)
        # The ack comes over the second connection (CN satoyama-cloud-acks), which
        # the shipped fleet.acl lets publish on the devices' ack topics.
        got: list[str] = []

        async def listen() -> None:
            async for message in pi.messages:
                assert isinstance(message.payload, bytes)
                got.extend(decode_ack(message.payload).ids)

        listener = asyncio.create_task(listen())
        try:
            await until(lambda: event.id in got, 10, "the event's ack on pi-east-01/ack")
        finally:
            listener.cancel()
        # Two certificates, two client ids: neither connection took over the other.
        assert notifier.stats.connections == 1


def test_mqtt_tls_is_checked_at_load(tmp_path: Path) -> None:
    ca = FleetCA(tmp_path / "ca")
    cloud, acks = ca.issue("satoyama-cloud"), ca.issue("satoyama-cloud-acks")

    def error(client_id: str, tls: str) -> ConfigError:
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, 8883, 25, client_id, tls))
        return info.value

    good = tls_table(ca.ca_file, cloud, acks)
    config: NotifierConfig = load_config(write(tmp_path, 8883, 25, "satoyama-cloud", good))
    assert config.mqtt.tls is not None and config.mqtt.tls.key_file == str(cloud.key)

    wrong_id = error("satoyama-notifier", good)
    assert wrong_id.key == "mqtt.tls.cert_file"
    assert "'satoyama-cloud'" in str(wrong_id) and "'satoyama-notifier'" in str(wrong_id)

    no_acks = error("satoyama-cloud", tls_table(ca.ca_file, cloud, None))
    assert no_acks.key == "mqtt.tls.ack_cert_file"
    assert "satoyama-cloud-acks" in str(no_acks)

    wrong_acks = error("satoyama-cloud", tls_table(ca.ca_file, cloud, ca.issue("other")))
    assert wrong_acks.key == "mqtt.tls.ack_cert_file"

    cloud.key.chmod(0o644)
    loose = error("satoyama-cloud", good)
    assert loose.key == "mqtt.tls.key_file"
    assert "0644" in str(loose) and str(cloud.key) in str(loose)
    cloud.key.chmod(0o600)

    acks.key.chmod(0o640)
    assert error("satoyama-cloud", good).key == "mqtt.tls.ack_key_file"
    acks.key.chmod(0o600)

    assert error("satoyama-cloud", good.replace(str(ca.ca_file), "/nonexistent/ca.pem")).key == (
        "mqtt.tls.ca_file"
    )
