"""Fixtures for the notifier's tests: configs pointing at the real broker and SMTP server,
events, a publisher, and a notifier running as a task in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from cloud.config import NotifierConfig, load_config
from cloud.notifier import Notifier
from edge.event import Event, Location, encode, events_topic, new_event_id
from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox, ReceivedMail

SITE = "kataoka-east"
PLACE = "片丘 東の田"
RECIPIENTS = ("farmer@example.jp", "ryoyukai@example.jp")
#: 2025-11-24 13:05:12 in Japan.
TS = dt.datetime(2025, 11, 24, 4, 5, 12, tzinfo=dt.UTC)
LAT, LON = 36.0794321, 137.9543219


def make_event(
    kind: str = "animal_detected",
    severity: str = "alarm",
    *,
    site: str = SITE,
    device: str = "pi-east-01",
    ts: dt.datetime = TS,
    clock_synced: bool = True,
    seq: int = 1,
    lat: float = LAT,
    lon: float = LON,
    data: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> Event:
    return Event(
        id=event_id or new_event_id(),
        device=device,
        site=site,
        kind=kind,
        severity=severity,  # type: ignore[arg-type]
        ts=ts,
        clock_synced=clock_synced,
        seq=seq,
        boot="4f0c2e9a-boot",
        location=Location(lat=lat, lon=lon),
        data={"detector": "pir-1", "siren": True, "strobe": False} if data is None else data,
    )


def config_text(
    *,
    mqtt_port: int,
    smtp_port: int,
    store: Path,
    client_id: str = "satoyama-notifier-test",
    retry_initial_s: float = 0.05,
    retry_max_s: float = 0.2,
    extra: str = "",
) -> str:
    recipients = ", ".join(f'"{r}"' for r in RECIPIENTS)
    return f"""\
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{client_id}"
keepalive = 30

[smtp]
host = "127.0.0.1"
port = {smtp_port}
sender = "里山エッジ <alerts@example.jp>"
timeout = 5

[store]
path = "{store}"

[delivery]
retry_initial_s = {retry_initial_s}
retry_max_s = {retry_max_s}

[sites.{SITE}]
name = "{PLACE}"
recipients = [{recipients}]
{extra}"""


@pytest.fixture
def config_path(tmp_path: Path, broker: Mosquitto, mailbox: Mailbox) -> Path:
    """A notifier.toml pointing at this test's broker, SMTP server and store."""
    path = tmp_path / "notifier.toml"
    path.write_text(
        config_text(mqtt_port=broker.port, smtp_port=mailbox.port, store=tmp_path / "n.sqlite3"),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def config(config_path: Path) -> NotifierConfig:
    return load_config(config_path)


@pytest.fixture
async def publisher(broker: Mosquitto) -> AsyncIterator[Publisher]:
    async with aiomqtt.Client(broker.host, broker.port, identifier="test-device") as client:
        yield Publisher(client)


class Publisher:
    """Publishes as a device would: one event per message, QoS 1."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.published_at: dict[str, float] = {}

    async def event(self, event: Event) -> None:
        self.published_at[event.id] = time.time()
        await self.raw(encode(event), device=event.device)

    async def raw(self, payload: bytes, device: str = "pi-east-01") -> None:
        await self.client.publish(events_topic("satoyama/v1", device), payload, qos=1)


@contextlib.asynccontextmanager
async def running(config: NotifierConfig) -> AsyncIterator[Notifier]:
    """A notifier running as a task; subscribed on entry, stopped (gracefully) on exit."""
    notifier = Notifier(config)
    task = asyncio.create_task(notifier.run(), name="notifier")
    try:
        await wait_subscribed(notifier, task)
        yield notifier
    finally:
        notifier.stop()
        await asyncio.wait_for(task, 15)


async def wait_subscribed(
    notifier: Notifier, task: asyncio.Task[None], within: float = 10.0
) -> None:
    """Wait until ``notifier`` is subscribed; fail at once if its task dies first."""
    waiter = asyncio.create_task(notifier.subscribed.wait())
    done, _ = await asyncio.wait(
        {task, waiter}, timeout=within, return_when=asyncio.FIRST_COMPLETED
    )
    waiter.cancel()
    if task in done:
        task.result()  # raises what the notifier died of
        raise AssertionError("notifier returned before subscribing")
    if waiter not in done:
        raise AssertionError(f"notifier not subscribed within {within}s")


async def mails(mailbox: Mailbox, count: int, within: float = 5.0) -> list[ReceivedMail]:
    """Wait (in a thread: the SMTP server has its own) until ``count`` mails arrived."""
    return await asyncio.to_thread(mailbox.wait_for, count, within)


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds, or fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


def event_ids(received: list[ReceivedMail]) -> list[str]:
    return [str(m.message["X-Satoyama-Event"]) for m in received]
