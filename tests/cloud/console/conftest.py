"""Fixtures for the console's tests: a notifier configuration with two sites, a store seeded
with real envelopes through the notifier's own :class:`~cloud.store.Store`, users of each
site and an operator, and the console served on a real socket.

Nothing of ours is faked: the console reads the SQLite file the store wrote, its
accounts live in that file, and requests go over TCP to aiohttp's server.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cloud.config import NotifierConfig, load_config
from cloud.console.accounts import Accounts, hash_password
from cloud.console.app import Console, NapAck, connect, make_app, open_console
from cloud.store import Store, TrapPlan
from edge.event import Event, Location, new_event_id

SITE_A = "kataoka-east"
SITE_B = "yamane-west"
DEVICE_A = "pi-a-01"
"""Site A: a wildlife detector with a box trap that is closed."""
DEVICE_A_WATER = "pi-a-water"
"""Site A: a water gauge at its second stage (氾濫注意), with a day of readings."""
DEVICE_B = "pi-b-01"
"""Site B: a trap too (closed), and a nap-room device with an active prone alarm."""
DEVICE_B_NAP = "pi-b-nap"
PASSWORD = "correct horse battery"
USERS = {
    "alice": ("farmer", frozenset({SITE_A})),
    "bob": ("hunter", frozenset({SITE_B})),
    "olga": ("operator", frozenset()),
}
"""alice sees site A, bob site B, olga (an operator) everything."""

#: Seconds; the seed's events are this recent.
NOW = time.time()

_HASH = hash_password(PASSWORD)  # once per test run: scrypt is slow on purpose


def console_toml(store: Path, *, extra: str = "") -> str:
    return f"""\
[mqtt]
host = "127.0.0.1"
port = 1883

[smtp]
host = "127.0.0.1"
sender = "alerts@example.jp"

[store]
path = "{store}"

[sites.{SITE_A}]
name = "片丘 東の田"
recipients = ["farmer@example.jp"]

[sites.{SITE_B}]
name = "山根 西の沢"
recipients = ["hunter@example.jp"]

[console]
port = 8080
{extra}
"""


def envelope(
    kind: str,
    severity: str,
    *,
    device: str,
    site: str,
    data: dict[str, Any],
    seq: int,
    at: float = NOW,
) -> Event:
    return Event(
        id=new_event_id(),
        device=device,
        site=site,
        kind=kind,
        severity=severity,  # type: ignore[arg-type]
        ts=dt.datetime.fromtimestamp(at, dt.UTC),
        clock_synced=True,
        seq=seq,
        boot="boot-1",
        location=Location(lat=36.07 if site == SITE_A else 35.5, lon=137.95),
        data=data,
    )


def heartbeat(device: str, site: str, seq: int, at: float = NOW) -> Event:
    return envelope(
        "heartbeat",
        "info",
        device=device,
        site=site,
        seq=seq,
        at=at,
        data={
            "interval_s": 300.0,
            "uptime_s": 3600.0,
            "outbox_depth": 2,
            "sensors": {"trap-1": "ok"},
            "bytes_sent_today": 12345,
            "version": "1.2.3",
        },
    )


def trap_closed(device: str, site: str, seq: int, at: float = NOW) -> Event:
    return envelope(
        "trap_triggered",
        "alarm",
        device=device,
        site=site,
        seq=seq,
        at=at,
        data={
            "sensor": "trap-1",
            "closed_since": dt.datetime.fromtimestamp(at, dt.UTC).isoformat(),
        },
    )


def prone(device: str, site: str, seq: int, at: float = NOW) -> Event:
    return envelope(
        "prone_alarm",
        "alarm",
        device=device,
        site=site,
        seq=seq,
        at=at,
        data={"cot": "cot-1", "posture": "prone", "duration_s": 30.0},
    )


STAGES = [
    {"name": "standby", "label": "水防団待機水位", "level_cm": 80.0},
    {"name": "caution", "label": "氾濫注意水位", "level_cm": 120.0},
    {"name": "evacuate", "label": "避難判断水位", "level_cm": 150.0},
    {"name": "danger", "label": "氾濫危険水位", "level_cm": 180.0},
]


def water_alert(device: str, site: str, seq: int, level: float, at: float = NOW) -> Event:
    return envelope(
        "water_level_alert",
        "warning",
        device=device,
        site=site,
        seq=seq,
        at=at,
        data={
            "sensor": "level",
            "level_cm": level,
            "stage": "caution",
            "stage_label": "氾濫注意水位",
            "threshold_cm": 120.0,
            "direction": "rising",
            "stages": STAGES,
        },
    )


def readings(start: float, end: float, step: float = 600.0) -> list[tuple[str, float, float]]:
    """A river rising from 60 cm to 125 cm between ``start`` and ``end``."""
    n = int((end - start) // step)
    return [("level.level_cm", start + i * step, 60.0 + 65.0 * i / max(n, 1)) for i in range(n + 1)]


async def store_events(store: Store, events: list[Event], *, now: float = NOW) -> None:
    """Each event as the notifier stores it (no mails: the console reads, it never mails)."""
    for event in events:
        trap = None
        if event.kind == "trap_triggered":
            sensor = str(event.data["sensor"])
            trap = TrapPlan("open", f"{event.site}|{event.device}|{sensor}", sensor, now, 7200.0)
        interval = 300.0 if event.kind == "heartbeat" else None
        result = await store.accept(event, [], now=now, trap=trap, heartbeat_interval=interval)
        assert result.accepted


def seed_events() -> list[Event]:
    return [
        heartbeat(DEVICE_A, SITE_A, 1, NOW - 60),
        trap_closed(DEVICE_A, SITE_A, 2, NOW - 30),
        heartbeat(DEVICE_B, SITE_B, 1, NOW - 60),
        trap_closed(DEVICE_B, SITE_B, 2, NOW - 30),
        heartbeat(DEVICE_B_NAP, SITE_B, 1, NOW - 60),
        prone(DEVICE_B_NAP, SITE_B, 2, NOW - 20),
    ]


@pytest.fixture
def console_config(tmp_path: Path) -> NotifierConfig:
    path = tmp_path / "notifier.toml"
    path.write_text(console_toml(tmp_path / "n.sqlite3"), encoding="utf-8")
    return load_config(path)


@pytest.fixture
async def seeded(console_config: NotifierConfig) -> NotifierConfig:
    """The notifier's store with both sites' devices and events, and the three users."""
    async with await Store.open(console_config.store) as store:
        await store_events(store, seed_events())
        await store.add_telemetry(
            DEVICE_A_WATER, SITE_A, readings(NOW - 86400, NOW - 10), now=NOW - 10
        )
        await store_events(store, [water_alert(DEVICE_A_WATER, SITE_A, 1, 125.0, NOW - 10)])
    add_users(console_config)
    return console_config


def add_users(config: NotifierConfig) -> None:
    db = connect(config.store)
    try:
        accounts = Accounts(db)
        accounts.open()
        for name, (role, sites) in USERS.items():
            accounts.add(name, role=role, sites=sites, password_hash=_HASH, now=NOW)
    finally:
        db.close()


_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class Browser:
    """A client that keeps cookies by hand (so ``Secure`` ones work over plain HTTP, and
    a test sees exactly which cookie was set) and never follows redirects."""

    http: aiohttp.ClientSession
    base: str
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""
    set_cookies: list[str] = field(default_factory=list)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    def _keep(self, response: aiohttp.ClientResponse) -> None:
        for raw in response.headers.getall("Set-Cookie", []):
            self.set_cookies.append(raw)
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0].strip('"')
            if "max-age=0" in raw.lower() or value == "":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, aiohttp.typedefs.LooseHeaders, str]:
        async with self.http.request(
            method, self.base + path, headers=self._headers(headers), allow_redirects=False, **kw
        ) as response:
            self._keep(response)
            body = await response.text()
            return response.status, response.headers, body

    async def get(self, path: str, **kw: Any) -> tuple[int, Any, str]:
        status, headers, body = await self.request("GET", path, **kw)
        if m := _CSRF.search(body):
            self.csrf = m.group(1)
        return status, headers, body

    async def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True, **kw: Any
    ) -> tuple[int, Any, str]:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf", self.csrf)
        return await self.request("POST", path, data=form, **kw)

    async def login(self, name: str, password: str = PASSWORD) -> tuple[int, Any, str]:
        await self.get("/login")
        result = await self.post("/login", {"name": name, "password": password})
        if result[0] == 303:
            await self.get("/")  # the session's CSRF token, from a page
        return result


@dataclass
class Served:
    console: Console
    server: TestServer
    http: aiohttp.ClientSession
    clock: list[float]

    @property
    def base(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def browser(self) -> Browser:
        return Browser(self.http, self.base)

    async def as_user(self, name: str) -> Browser:
        b = self.browser()
        status, _, body = await b.login(name)
        assert status == 303, body
        return b


async def serve(
    config: NotifierConfig, *, live_task: bool = True, nap_ack: NapAck | None = None
) -> AsyncIterator[Served]:
    clock = [time.time()]
    console = await open_console(config, clock=lambda: clock[0], nap_ack=nap_ack)
    await console.call(lambda: console.state.catch_up(now=clock[0]))  # pages right at once
    server = TestServer(make_app(console, live_task=live_task), host="127.0.0.1")
    await server.start_server()
    http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    try:
        yield Served(console, server, http, clock)
    finally:
        await http.close()
        await server.close()
        await console.close()


@pytest.fixture
async def served(seeded: NotifierConfig) -> AsyncIterator[Served]:
    """The console over the seeded store, on a real socket (with its live task)."""
    async for s in serve(seeded):
        yield s


Login = Callable[[str], Any]
