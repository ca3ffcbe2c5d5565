"""Fixtures for the notifier's tests: configs pointing at the real broker and SMTP server,
events, a publisher, and a notifier running as a task in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from cloud.clock import Clock
from cloud.config import NotifierConfig, Secret, StoreConfig, load_config
from cloud.notifier import Notifier
from edge.event import Event, Location, encode, events_topic, new_event_id
from edge.sim.broker import Mosquitto, free_port
from edge.sim.mailbox import Mailbox, ReceivedMail
from tests.support.waiting import until

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
    top: str = "coalesce = []  # most tests publish bursts and want every mail",
    mqtt: str = "",
    store_table: str | None = None,
    delivery: str = "",
) -> str:
    recipients = ", ".join(f'"{r}"' for r in RECIPIENTS)
    store_table = store_table if store_table is not None else f'path = "{store}"'
    return f"""\
{top}

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{client_id}"
keepalive = 30
{mqtt}

[smtp]
host = "127.0.0.1"
port = {smtp_port}
sender = "里山エッジ <alerts@example.jp>"
timeout = 5

[store]
{store_table}

[delivery]
retry_initial_s = {retry_initial_s}
retry_max_s = {retry_max_s}
{delivery}

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
async def running(config: NotifierConfig, clock: Clock | None = None) -> AsyncIterator[Notifier]:
    """A notifier running as a task; subscribed on entry, stopped (gracefully) on exit."""
    notifier = Notifier(config, clock=clock)
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
    await until(check, within, what)


def event_ids(received: list[ReceivedMail]) -> list[str]:
    return [str(m.message["X-Satoyama-Event"]) for m in received]


# --- PostgreSQL ---------------------------------------------------------------------


class PostgresServer:
    """A throw-away PostgreSQL cluster on a free loopback port (Debian's binaries).

    PostgreSQL refuses to run as root, so as root (CI) the cluster is made
    and run as the ``postgres`` user through ``runuser``.
    """

    USER = "satoyama"

    def __init__(self) -> None:
        initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not initdbs:
            raise RuntimeError(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                "run `bash scripts/setup.sh` (Debian package postgresql)"
            )
        self.bindir = Path(initdbs[-1]).parent
        self.base = Path(tempfile.mkdtemp(prefix="satoyama-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self._prefix = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._prefix, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}{tail}")

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.USER,
            "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        # fsync off: a test machine does not lose power; everything else is stock.
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.USER} dbname={dbname}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run.  A missing PostgreSQL fails, loudly."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server."""
    name = postgres.create_database()
    try:
        yield postgres.dsn(name)
    finally:
        postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """The ``[store]`` of each backend: the store's promises hold on both."""
    if request.param == "sqlite":
        return StoreConfig(backend="sqlite", path=str(tmp_path / "n.sqlite3"))
    dsn: str = request.getfixturevalue("pg_dsn")
    return StoreConfig(backend="postgresql", dsn=Secret(dsn))
