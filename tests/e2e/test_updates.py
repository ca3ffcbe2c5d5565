"""The daemon's side of OTA: cmd/update becomes the updater's request; the updater's spool is
sent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from deploy import spool as writer
from edge.config import parse
from edge.daemon import Daemon
from edge.sim.broker import Mosquitto
from edge.sim.site import DEVICE_ID, device_config
from tests.support.spy import spy_on
from tests.support.waiting import until

pytestmark = pytest.mark.slow

UPDATE = {
    "cmd": "update", "id": "r-1", "version": "1.4.2",
    "url": "https://ota.example.jp/satoyama-edge-1.4.2.tar",
    "sha256": "ab" * 32, "size": 12345678, "rollout": "1.4.2-3fa2c1d0",
    "issued": "2026-06-01T03:00:00Z",
}


def config_text(tmp_path: Path, port: int) -> str:
    return device_config(tmp_path / "outbox.sqlite3", port, warmup_s=0) + f"""
[health]
modem = "none"

[updates]
request_path = "{tmp_path / 'requests' / 'request.json'}"
spool_path = "{tmp_path / 'spool' / 'events.jsonl'}"
spool_poll_s = 0.1
"""


async def test_update_command_is_handed_to_the_updater_and_bad_ones_refused(
    tmp_path: Path, broker: Mosquitto
) -> None:
    request = tmp_path / "requests" / "request.json"
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE_ID}/events") as spy:
        async with Daemon(parse(config_text(tmp_path, broker.port))) as daemon:
            assert daemon.uplink is not None
            await asyncio.wait_for(daemon.uplink.connected.wait(), 10)
            async with aiomqtt.Client(broker.host, broker.port) as cloud:
                base = f"satoyama/v1/{DEVICE_ID}/cmd/update"
                await cloud.publish(base, json.dumps({**UPDATE, "sha256": "nope"}), qos=1)
                await cloud.publish(base, json.dumps({**UPDATE, "url": "http://evil/x"}), qos=1)
                await cloud.publish(base, json.dumps(UPDATE), qos=1)
            await until(request.exists, 10, "the request file")
            await spy.wait(lambda: len(spy.of_kind("command_rejected")) == 2, 10, "2 refusals")
    assert json.loads(request.read_text()) == UPDATE
    assert not list(request.parent.glob(".*.tmp"))  # written atomically


async def test_updater_events_in_the_spool_are_sent_with_their_own_ids(
    tmp_path: Path, broker: Mosquitto
) -> None:
    path = tmp_path / "spool" / "events.jsonl"
    failed = writer.append(path, "update_failed", "warning", {"stage": "health"}, source="updater")
    done = writer.append(
        path, "update_installed", "info", {"to_version": "1.4.2"}, source="updater"
    )
    with open(path, "ab") as f:  # noqa: ASYNC230 - a few bytes to a local file, in a test
        f.write(b'{"v":1,"kind":"cut sho')  # a write a power cut left short
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE_ID}/events") as spy:
        async with Daemon(parse(config_text(tmp_path, broker.port))):
            await spy.wait(lambda: bool(spy.of_kind("update_installed")), 10, "the spooled events")
            ack = tmp_path / "requests" / "events.ack"
            await until(lambda: ack.exists() and ack.read_text().strip() == done, 10, "the ack")
            later = writer.append(path, "update_installed", "info", {"to_version": "1.4.3"},
                                  source="updater")
            await spy.wait(lambda: later in spy.ids(), 10, "a later spooled event")
    [f] = spy.of_kind("update_failed")
    assert f.id == failed and f.severity == "warning"
    assert f.data == {"stage": "health", "source": "updater"}
    assert done in spy.ids()
