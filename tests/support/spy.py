"""A cloud-side MQTT subscriber for tests: what did the devices really publish?"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiomqtt

from edge.event import (
    MAX_ACK_IDS,
    Event,
    Status,
    TelemetryBatch,
    ack_topic,
    decode,
    decode_status,
    decode_telemetry,
    encode_ack,
    topic_device,
)
from tests.support.waiting import until


@dataclass
class Spy:
    events: list[Event] = field(default_factory=list)
    telemetry: list[TelemetryBatch] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    raw: list[tuple[str, bytes]] = field(default_factory=list)
    client: aiomqtt.Client | None = None

    def ids(self) -> list[str]:
        return [e.id for e in self.events]

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    async def wait(
        self,
        predicate: Callable[[], bool],
        timeout: float,  # noqa: ASYNC109 - a deadline that names what it waited for
        what: str,
    ) -> None:
        await until(predicate, timeout, what)


@contextlib.asynccontextmanager
async def spy_on(
    host: str,
    port: int,
    topic: str = "satoyama/v1/#",
    *,
    identifier: str = "test-spy",
    acknowledge: bool = True,
    **client_args: object,
) -> AsyncIterator[Spy]:
    """Subscribe (persistent session, QoS 1) and collect everything under ``topic``.

    ``acknowledge``: answer each event and telemetry batch on the device's ack
    topic, as the cloud notifier does once it has stored it (without that, a
    device with ``uplink.delivery = "cloud_ack"`` keeps every row).
    """
    spy = Spy()
    async with aiomqtt.Client(
        host, port, identifier=identifier, clean_session=False, **client_args  # type: ignore[arg-type]
    ) as client:
        spy.client = client
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for msg in client.messages:
                payload = msg.payload if isinstance(msg.payload, bytes) else b""
                name = msg.topic.value
                spy.raw.append((name, payload))
                acked = ""
                if name.endswith("/events"):
                    spy.events.append(decode(payload))
                    acked = spy.events[-1].id
                elif name.endswith("/telemetry"):
                    spy.telemetry.append(decode_telemetry(payload))
                    acked = spy.telemetry[-1].id
                elif name.endswith("/status"):
                    spy.statuses.append(decode_status(payload))
                if acknowledge and acked:
                    to_ack.setdefault(name.rsplit("/", 2)[0], {}).setdefault(
                        topic_device(name)[0], []
                    ).append(acked)
                    ack_now.set()

        async def acknowledge_forever() -> None:
            # Whatever arrived while the last acknowledgements went out goes in the next
            # message: batches form by themselves, as in the notifier.
            while True:
                await ack_now.wait()
                ack_now.clear()
                batch = dict(to_ack)
                to_ack.clear()
                for prefix, devices in batch.items():
                    for device, ids in devices.items():
                        for start in range(0, len(ids), MAX_ACK_IDS):
                            chunk = ids[start : start + MAX_ACK_IDS]
                            topic = ack_topic(prefix, device)
                            await client.publish(topic, encode_ack(chunk), qos=1)

        to_ack: dict[str, dict[str, list[str]]] = {}
        ack_now = asyncio.Event()
        tasks = [asyncio.create_task(collect()), asyncio.create_task(acknowledge_forever())]
        try:
            yield spy
        finally:
            # Again until they end: aiomqtt's publish can swallow a cancellation on
            # Python 3.11 (asyncio.wait_for, see edge/timed_wait.py).
            pending = set(tasks)
            while pending:
                for task in pending:
                    task.cancel()
                _, pending = await asyncio.wait(pending, timeout=0.5)
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task
