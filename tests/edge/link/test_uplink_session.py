"""The uplink and the broker's persistent session (real mosquitto, the daemon in-process)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiomqtt
import pytest

from edge.config import parse
from edge.daemon import Daemon
from edge.sim.broker import Mosquitto
from edge.sim.cellular import CellularLink
from edge.sim.site import DEVICE_ID, device_config
from tests.support.events import numbered
from tests.support.spy import Spy, spy_on
from tests.support.waiting import until

CMD = f"satoyama/v1/{DEVICE_ID}/cmd/#"


@pytest.fixture
def volatile_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that forgets every session when it restarts (persistence off)."""
    b = Mosquitto(workdir=tmp_path / "mosquitto", persistence=False)
    b.start()
    try:
        yield b
    finally:
        b.close()


def subscribes(broker: Mosquitto) -> int:
    """SUBSCRIBEs of the device to its command topic, as the broker logged them."""
    text = broker.log.read_text(errors="replace") if broker.log.exists() else ""
    return sum(1 for line in text.splitlines()
               if line.startswith(f"{DEVICE_ID} ") and line.endswith(f" {CMD}"))  # fmt: skip


async def test_a_kept_session_is_not_subscribed_again_and_a_lost_one_is(
    tmp_path: Path, volatile_broker: Mosquitto
) -> None:
    broker = volatile_broker
    text = device_config(tmp_path / "device" / "outbox.sqlite3", 0, warmup_s=0,
                         reconnect_max_s=0.5)  # fmt: skip
    text = text.replace("reconnect_min_s", "connect_timeout_s = 1\nreconnect_min_s")
    text += '\n[health]\nmodem = "none"\n'
    with CellularLink(broker.host, broker.port) as link:
        text = text.replace("port = 0", f"port = {link.port}")
        async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE_ID}/events") as spy:
            async with Daemon(parse(text)) as daemon:
                up = daemon.uplink
                assert up is not None
                await spy.wait(lambda: len(spy.of_kind("heartbeat")) == 1, 10, "a heartbeat")

                async def acked() -> bool:
                    return await daemon.outbox.depth() == 0

                await until(acked, 10, "the heartbeat acknowledged")
                assert subscribes(broker) == 1

                # The link drops; the broker keeps the session, and its subscriptions.
                link.cut()
                await until(lambda: not up.connected.is_set(), 10, "the link to drop")
                link.restore()
                await until(lambda: up.connected.is_set() and up.connections == 2, 20,
                            "the reconnect")  # fmt: skip
                assert up.session_present is True
                assert subscribes(broker) == 1  # not asked again: ~230 B saved
                async with aiomqtt.Client(broker.host, broker.port) as cloud:
                    await cloud.publish(f"satoyama/v1/{DEVICE_ID}/cmd/heartbeat", b"{}", qos=1)
                await spy.wait(lambda: len(spy.of_kind("heartbeat")) == 2, 10,
                               "the command, through the kept subscription")  # fmt: skip
                await until(acked, 10, "the acknowledgements, through the kept subscription")

                # The broker restarts without its sessions: the device must subscribe again.
                await asyncio.to_thread(broker.stop)
                await asyncio.to_thread(broker.start)
                await until(lambda: up.connected.is_set() and up.connections >= 3, 20,
                            "the reconnect to the fresh broker")  # fmt: skip
                assert up.session_present is False
                assert subscribes(broker) == 2
        # A restarted daemon does not know what its session holds: it subscribes.
        async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE_ID}/events",
                          identifier="second-spy") as spy2:  # fmt: skip
            async with Daemon(parse(text)) as daemon:
                assert daemon.uplink is not None
                await spy2.wait(lambda: bool(spy2.of_kind("heartbeat")), 10, "a heartbeat")
                assert daemon.uplink.session_present is True
                assert subscribes(broker) == 3
                async with aiomqtt.Client(broker.host, broker.port) as cloud:
                    await cloud.publish(f"satoyama/v1/{DEVICE_ID}/cmd/heartbeat", b"{}", qos=1)
                await spy2.wait(lambda: len(spy2.of_kind("heartbeat")) >= 2, 10,
                                "a command after the restart")  # fmt: skip


def arrived(spy: Spy, event_id: str) -> Callable[[], bool]:
    return lambda: event_id in spy.ids()


async def test_publishes_count_as_traffic_so_a_busy_link_sends_no_pings(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """MQTT's keepalive bounds the silence between the client's packets: a link that
    publishes more often than its keepalive needs no ping (paho alone pings anyway:
    8 pings a day more at the defaults).  paho logs its PINGREQs through aiomqtt's
    logger ("mqtt")."""
    caplog.set_level(logging.DEBUG, logger="mqtt")
    text = device_config(tmp_path / "device" / "outbox.sqlite3", broker.port, warmup_s=0)
    text = text.replace("reconnect_min_s", "keepalive_s = 5\nkeepalive_min_s = 5\nreconnect_min_s")
    text += '\n[health]\nmodem = "none"\n'

    def pings() -> int:
        return sum("Sending PINGREQ" in r.getMessage() for r in caplog.records)

    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE_ID}/events") as spy:
        async with Daemon(parse(text)) as daemon:
            assert daemon.recorder is not None and daemon.uplink is not None
            await spy.wait(lambda: bool(spy.of_kind("heartbeat")), 10, "the heartbeat")
            busy_until = time.monotonic() + 12  # more than two keepalives
            n = 0
            while time.monotonic() < busy_until:
                event = await daemon.recorder.record(numbered(n))
                await spy.wait(arrived(spy, event.id), 5, "the event")
                n += 1
                await asyncio.sleep(1.0)  # the workload's rhythm: an event a second
            assert pings() == 0, f"{pings()} pings on a link busy every second"
            # Idle now: the keepalive pings (and the log capture works).
            await until(lambda: pings() >= 1, 12, "a ping on the idle link")
            assert daemon.uplink.connections == 1
