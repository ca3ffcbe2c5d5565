"""A cloud-side MQTT subscriber for tests: what did the devices really publish?"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiomqtt

from edge.event import Event, Status, TelemetryBatch, decode, decode_status, decode_telemetry
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

    async def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        await until(predicate, timeout, what)


@contextlib.asynccontextmanager
async def spy_on(
    host: str,
    port: int,
    topic: str = "satoyama/v1/#",
    *,
    identifier: str = "test-spy",
    **client_args: object,
) -> AsyncIterator[Spy]:
    """Subscribe (persistent session, QoS 1) and collect everything under ``topic``."""
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
                if name.endswith("/events"):
                    spy.events.append(decode(payload))
                elif name.endswith("/telemetry"):
                    spy.telemetry.append(decode_telemetry(payload))
                elif name.endswith("/status"):
                    spy.statuses.append(decode_status(payload))

        task = asyncio.create_task(collect())
        try:
            yield spy
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
