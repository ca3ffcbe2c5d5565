"""Console read model at fleet scale: map and device page latency on PostgreSQL.

Builds a fleet in a throw-away PostgreSQL cluster (Debian's binaries, as the tests
start it): by default 10,000 devices — 4,000 wildlife/trap devices, 3,000 water
gauges reading every 10 minutes, 3,000 nursery mats — with 30 days of gauge
telemetry (loaded with COPY) and events in proportion (heartbeats every
``--heartbeat-hours``, detections, trap closures and resets, water alerts on the
gauges a flood reached, posture checks and nap alarms).  Then it opens a
:class:`~cloud.console.state.ConsoleState` over it, lets it catch up from nothing
(the cold start), and measures, each ``--runs`` times:

* ``map()`` for an operator (every device) and for a farmer (one site);
* ``device_page()`` of a water gauge (a different one each run);
* ``events()``; a ``catch_up()`` with nothing new, and one with 100 new events;
* the same map without the console's table (the naive way: each device's newest
  event of each kind from ``events``, folded per request) as a baseline;
* with ``--http`` and the console app present, ``GET /api/map`` and
  ``GET /api/device/ID`` through aiohttp with a logged-in operator.

With ``--only live`` (or after the fleet, by default): the real ``satoyama-console
serve`` process over a small SQLite store holding ``--live`` (1,000) open ``/api/live``
streams against a ``--live-baseline`` (10) in the same run: the time to open them, the
console's RSS and idle CPU (``/proc``), and the fan-out latency of events stored through
:class:`cloud.store.Store` (:func:`live_figures`).

Prints figures; asserts nothing.  ``python benchmarks/console.py --devices 1000
--days 7`` for a quick run.  :func:`build_fleet` and :func:`open_state` are the
hooks a connection-count benchmark can reuse.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloud.console import fold
from cloud.console.model import DeviceState
from cloud.console.state import ConsoleState
from cloud.database import PostgresDatabase
from edge.event import Event, Location, encode, new_event_id
from tests.cloud.conftest import PostgresServer

STAGES: list[dict[str, Any]] = [
    {"name": "standby", "label": "水防団待機水位", "level_cm": 150.0},
    {"name": "caution", "label": "氾濫注意水位", "level_cm": 200.0},
    {"name": "evacuate", "label": "避難判断水位", "level_cm": 250.0},
    {"name": "danger", "label": "氾濫危険水位", "level_cm": 300.0},
]
PER_SITE = 10
COTS = 5


@dataclass
class Fleet:
    """What :func:`build_fleet` made (names a benchmark can pick from)."""

    now: float
    devices: list[tuple[str, str, str]] = field(default_factory=list)
    """(device, site, kind) with kind ``trap``, ``water`` or ``nursery``."""
    events: int = 0
    readings: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def of(self, kind: str) -> list[str]:
        return [d for d, _, k in self.devices if k == kind]

    def sites(self, kind: str) -> list[str]:
        return sorted({s for _, s, k in self.devices if k == kind})


def _layout(devices: int) -> list[tuple[str, str, str]]:
    traps, water = devices * 4 // 10, devices * 3 // 10
    out = []
    for n in range(devices):
        kind, site = (
            ("trap", f"farm-{n // PER_SITE:04d}")
            if n < traps
            else ("water", f"river-{(n - traps) // PER_SITE:04d}")
            if n < traps + water
            else ("nursery", f"hoikuen-{(n - traps - water) // PER_SITE:04d}")
        )
        out.append((f"{kind}-{n:05d}", site, kind))
    return out


def _event(
    device: str,
    site: str,
    kind: str,
    severity: str,
    at: float,
    seq: int,
    data: dict[str, Any],
    lat: float,
    lon: float,
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
        boot="bench",
        location=Location(lat=lat, lon=lon),
        data=data,
    )


def _device_events(
    device: str, site: str, kind: str, now: float, days: int, hb_hours: float, rng: random.Random
) -> Iterator[Event]:
    lat, lon = 35.0 + rng.random() * 3, 136.0 + rng.random() * 4
    start = now - days * 86400.0
    plan: list[tuple[float, str, str, dict[str, Any]]] = []
    t = start + rng.random() * hb_hours * 3600
    sent = 0
    while t < now - 300:
        sent = int((t % 86400) / 86400 * 2_000_000)
        plan.append(
            (
                t,
                "heartbeat",
                "info",
                {
                    "interval_s": 300.0,
                    "uptime_s": t - start,
                    "outbox_depth": rng.randrange(3),
                    "sensors": {"main": "ok"},
                    "bytes_sent_today": sent,
                },
            )
        )
        t += hb_hours * 3600
    plan.append(
        (
            now - rng.random() * 290,
            "heartbeat",
            "info",
            {
                "interval_s": 300.0,
                "uptime_s": 99.0,
                "outbox_depth": 0,
                "sensors": {"main": "ok"},
                "bytes_sent_today": sent,
            },
        )
    )
    if kind == "trap":
        for day in range(days):
            at = start + day * 86400 + rng.random() * 86400
            plan.append(
                (
                    at,
                    "animal_detected",
                    "alarm",
                    {
                        "sensor": "pir",
                        "rule": "r",
                        "deterrent": "sounded",
                        "siren": True,
                        "strobe": True,
                    },
                )
            )
            if day % 3 == 0:
                plan.append(
                    (at + 60, "trap_triggered", "alarm", {"sensor": "box", "closed_s": 1.0})
                )
                if day < days - 3 or rng.random() > 0.3:
                    plan.append((at + 7200, "trap_reset", "info", {"sensor": "box"}))
    elif kind == "water" and rng.random() < 0.05:
        crest = now - 3 * 86400
        for n, stage in enumerate(STAGES[:3]):
            plan.append(
                (
                    crest - (3 - n) * 1800,
                    "water_level_alert",
                    "warning",
                    {
                        "sensor": "level",
                        "level_cm": stage["level_cm"] + 1,
                        "stage": stage["name"],
                        "stage_label": stage["label"],
                        "threshold_cm": stage["level_cm"],
                        "direction": "rising",
                        "stages": STAGES,
                    },
                )
            )
    elif kind == "nursery":
        for day in range(days):
            nap = start + day * 86400 + 4 * 3600
            for cot in range(COTS):
                plan.append(
                    (
                        nap + cot,
                        "posture_check",
                        "info",
                        {"cot": f"cot-{cot}", "posture": "supine", "probability": 0.9},
                    )
                )
        if rng.random() < 0.01:
            plan.append(
                (
                    now - 600,
                    "prone_alarm",
                    "alarm",
                    {"cot": "cot-1", "posture": "prone", "duration_s": 60.0},
                )
            )
    plan = sorted((p for p in plan if p[0] < now - 10), key=lambda p: p[0])  # none ahead
    for seq, (at, k, severity, data) in enumerate(plan, start=1):
        yield _event(device, site, k, severity, at, seq, data, lat, lon)


def _level(t: float, crest: float | None, rng: random.Random) -> float:
    base = 80.0 + 10.0 * ((t / 86400.0) % 1.0) + rng.random()
    if crest is not None and abs(t - crest) < 12 * 3600:
        base += 240.0 * (1 - abs(t - crest) / (12 * 3600))
    return round(base, 1)


def build_fleet(dsn: str, *, devices: int, days: int, hb_hours: float, seed: int = 7) -> Fleet:
    """Fill the (migrated, empty) database at ``dsn``: the notifier's tables, as it writes them."""
    import psycopg

    rng = random.Random(seed)
    fleet = Fleet(now=time.time(), devices=_layout(devices))
    now = fleet.now
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY devices (device, site, state, cause, since, last_seen, hb_interval, lat, lon)"
                " FROM STDIN"
            ) as copy,
        ):
            for device, site, _ in fleet.devices:
                seen = now - rng.random() * 290
                copy.write_row(
                    (
                        device,
                        site,
                        "online",
                        "event",
                        now - rng.random() * days * 86400,  # when it last came online
                        seen,
                        300.0,
                        35.0 + rng.random() * 3,
                        136.0 + rng.random() * 4,
                    )
                )
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY events (id, device, site, kind, severity, ts, received_at, payload)"
                " FROM STDIN"
            ) as copy,
        ):
            for device, site, kind in fleet.devices:
                for e in _device_events(device, site, kind, now, days, hb_hours, rng):
                    received = e.ts.timestamp() + rng.random() * 5
                    copy.write_row(
                        (
                            e.id,
                            e.device,
                            e.site,
                            e.kind,
                            e.severity,
                            e.ts.isoformat(),
                            received,
                            encode(e),
                        )
                    )
                    fleet.events += 1
        fleet.seconds["events"] = time.perf_counter() - started
        started = time.perf_counter()
        first = now - days * 86400.0
        steps = int(days * 86400 // 600)
        with (
            conn.cursor() as cur,
            cur.copy("COPY telemetry (device, series, ts, value) FROM STDIN") as copy,
        ):
            for n, device in enumerate(fleet.of("water")):
                crest = now - 3 * 86400 if n % 20 == 0 else None
                lines = []
                for step in range(steps):
                    t = first + step * 600.0
                    lines.append(f"{device}\tlevel.level_cm\t{t!r}\t{_level(t, crest, rng)!r}\n")
                copy.write("".join(lines))
                fleet.readings += steps
        fleet.seconds["telemetry"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("ANALYZE")
        fleet.seconds["analyze"] = time.perf_counter() - started
    return fleet


def open_state(dsn: str, *, batch: int = 20000) -> ConsoleState:
    """A console over the fleet, with its tables and indexes created (not caught up)."""
    state = ConsoleState(
        PostgresDatabase.connect(dsn, "bench"), heartbeat_timeout_s=1800.0, batch=batch
    )
    state.open()
    return state


def timed(fn: Callable[[int], object], runs: int) -> list[float]:
    out = []
    for n in range(runs):
        started = time.perf_counter()
        fn(n)
        out.append((time.perf_counter() - started) * 1000)
    return out


def line(name: str, ms: list[float], extra: str = "") -> None:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    print(
        f"  {name:<44} p50 {statistics.median(ms):8.1f} ms   p95 {p95:8.1f} ms   "
        f"max {ms[-1]:8.1f} ms  (n={len(ms)}){extra}"
    )


def naive_map(dsn: str, sites: list[str] | None, now: float) -> list[DeviceState]:
    """The baseline: no console table; each device's newest event of each kind (and its
    newest level) read from the notifier's tables and folded for this one request."""
    import psycopg

    where = "" if sites is None else "WHERE site = ANY(%s)"
    args: tuple[object, ...] = () if sites is None else (sites,)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (device, kind) device, received_at, payload FROM events "
            f"{where} ORDER BY device, kind, received_at DESC",
            args,
        ).fetchall()
        devices = conn.execute(
            f"SELECT device, state, last_seen, hb_interval FROM devices {where}", args
        ).fetchall()
        levels = conn.execute(
            "SELECT d.device, t.ts, t.value FROM devices d CROSS JOIN LATERAL (SELECT ts, value"
            " FROM telemetry WHERE device = d.device AND series = 'level.level_cm'"
            f" ORDER BY ts DESC LIMIT 1) t {where.replace('site', 'd.site')}",
            args,
        ).fetchall()
    from edge.event import decode

    per: dict[str, list[tuple[Event, float]]] = {}
    for device, received, payload in rows:
        per.setdefault(device, []).append((decode(bytes(payload)), float(received)))
    level = {d: (float(t), float(v)) for d, t, v in levels}
    out = []
    for device, state, last_seen, hb in devices:
        events = sorted(per.get(device, []), key=lambda x: x[0].seq)
        memory = fold.fold_all(None, events) or fold.new_memory(device, "")
        if device in level:
            memory = fold.fold_reading(memory, "level", *level[device])
        online = state == "online" and now <= last_seen + max(1800.0, 2 * (hb or 0))
        out.append(fold.view(memory, online=online, last_seen=last_seen))
    return out


async def http_figures(dsn: str, fleet: Fleet, runs: int) -> None:
    """``GET /api/map`` and ``GET /api/device/ID`` through the console app, if it is there."""
    try:
        from aiohttp import web
        from aiohttp.test_utils import TestClient, TestServer

        from cloud.config import load_config
        from cloud.console import accounts as accounts_mod
        from cloud.console.app import make_app, open_console
    except ImportError as exc:
        print(f"  (HTTP figures skipped: {exc})")
        return
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="console-bench-"))
    config_path = folder / "notifier.toml"
    config_path.write_text(
        '[mqtt]\nhost = "127.0.0.1"\n[smtp]\nhost = "127.0.0.1"\nsender = "a@example.jp"\n'
        f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n'
        "[console]\ncookie_secure = false\n"
        '[sites.farm-0000]\nname = "bench"\nrecipients = ["a@example.jp"]\n',
        encoding="utf-8",
    )
    config = load_config(config_path)
    console = await open_console(config)
    password = "bench-password-長い-1234"
    hashed = accounts_mod.hash_password(password)
    await console.call(
        lambda: console.accounts.add(
            "op", role="operator", sites=frozenset(), password_hash=hashed, now=time.time()
        )
    )
    app: web.Application = make_app(console, live_task=False)
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/login")
        text = await page.text()
        import re

        token = re.search(r'name="csrf" value="([^"]+)"', text)
        form = {"name": "op", "password": password, "csrf": token.group(1) if token else ""}
        resp = await client.post("/login", data=form, allow_redirects=False)
        if resp.status not in (302, 303):
            print(f"  (HTTP figures skipped: login answered {resp.status})")
            return
        gauges = fleet.of("water")

        async def get(path: str) -> float:
            started = time.perf_counter()
            r = await client.get(path)
            await r.read()
            assert r.status == 200, (path, r.status)
            return (time.perf_counter() - started) * 1000

        line("GET /api/map (operator, all devices)", [await get("/api/map") for _ in range(runs)])
        line(
            "GET /api/device/ID (water gauge)",
            [await get(f"/api/device/{gauges[n % len(gauges)]}") for n in range(runs)],
        )
        line(
            "GET /device/ID (water gauge, HTML page)",
            [await get(f"/device/{gauges[n % len(gauges)]}") for n in range(runs)],
        )
    await console.close()


# --- open live connections -----------------------------------------------------------------------

LIVE_SITES = 4
"""Sites of the live benchmark's store; the fan-out event is on the first (every user sees it)."""
STREAMS_PER_SESSION = 8
"""As many ``/api/live`` streams as the console lets one session hold (``live.PER_SESSION``)."""
SESSIONS_PER_USER = 2
"""Two sessions of eight: the console's cap of 16 streams per user."""


@dataclass
class Proc:
    """CPU time and memory of a process, read from ``/proc``."""

    pid: int

    def cpu_s(self) -> float:
        """User + system CPU seconds so far (``/proc/PID/stat`` fields 14 and 15)."""
        text = Path(f"/proc/{self.pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self, key: str = "VmRSS") -> int:
        for row in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if row.startswith(key + ":"):
                return int(row.split()[1])
        raise LookupError(key)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@dataclass
class LiveConsole:
    """The real ``satoyama-console serve`` over a small SQLite store, and its users."""

    folder: Path
    users: list[tuple[str, str]]
    """(name, password) of each user created through ``satoyama-console user add``."""
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.folder / "notifier.toml"

    @property
    def store(self) -> Path:
        return self.folder / "notifier.sqlite3"

    def write_config(self, port: int) -> None:
        sites = "".join(
            f'[sites.live-{n:02d}]\nname = "bench {n}"\nrecipients = ["a@example.jp"]\n'
            for n in range(LIVE_SITES)
        )
        self.config.write_text(
            '[mqtt]\nhost = "127.0.0.1"\n[smtp]\nhost = "127.0.0.1"\nsender = "a@example.jp"\n'
            f'[store]\npath = "{self.store}"\n'
            f'[console]\nhost = "127.0.0.1"\nport = {port}\ncookie_secure = false\n{sites}',
            encoding="utf-8",
        )
        self.url = f"http://127.0.0.1:{port}"

    def add_users(self, parallel: int = 4) -> float:
        """Each user through ``satoyama-console user add`` (password on standard input),
        ``parallel`` at a time: half operators, half farmers of the first site, half of
        each in English.  Returns the seconds it took."""
        from edge.sim.site import console_command

        started = time.perf_counter()
        todo = list(enumerate(self.users))
        while todo:
            batch, todo = todo[:parallel], todo[parallel:]
            running = []
            for n, (name, password) in batch:
                role = (
                    ["--role", "operator"] if n % 2 else ["--role", "farmer", "--site", "live-00"]
                )
                language = ["--language", "en" if n % 4 >= 2 else "ja"]
                proc = subprocess.Popen(
                    [*console_command(), "--config", str(self.config), "user", "add", name,
                     *role, *language],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True,
                )  # fmt: skip
                running.append((name, proc, password))
            for name, proc, password in running:
                _, err = proc.communicate(password + "\n", timeout=120)
                if proc.returncode != 0:
                    raise RuntimeError(f"user add {name}: exit {proc.returncode}: {err.strip()}")
        return time.perf_counter() - started

    def start(self, timeout: float = 60.0) -> None:
        import urllib.request

        from edge.sim.site import console_command

        log = (self.folder / "console.log").open("ab")
        self.proc = subprocess.Popen(
            [*console_command(), "--config", str(self.config), "serve"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/login", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)  # polling a starting process's port
        tail = (self.folder / "console.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"the console did not answer; its log ends:\n{tail}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _seed(store_path: Path, devices: int) -> list[tuple[str, str]]:
    """A few devices, each with a heartbeat, through the notifier's own :class:`Store`."""
    from cloud.store import Store

    out = []
    store = await Store.open(store_path)
    try:
        now = time.time()
        for n in range(devices):
            device, site = f"live-dev-{n:02d}", f"live-{n % LIVE_SITES:02d}"
            beat = _event(device, site, "heartbeat", "info", now, 1,
                          {"interval_s": 300.0, "uptime_s": 1.0, "outbox_depth": 0},
                          36.0 + n / 100, 138.0)  # fmt: skip
            await store.accept(beat, [], now=now, heartbeat_interval=300.0)
            out.append((device, site))
    finally:
        await store.close()
    return out


class Streams:
    """Open ``/api/live`` streams (aiohttp client, this process), each read line by line;
    when an event arrives, the time it arrived at each stream."""

    def __init__(self, url: str, users: list[tuple[str, str]]) -> None:
        self.url = url
        self.users = users
        self.sessions: list[Any] = []  # aiohttp.ClientSession, one per console session
        self.tasks: list[asyncio.Task[None]] = []
        self.responses: list[Any] = []
        self.arrivals: dict[str, list[float]] = {}
        self.pings = 0
        self.ended = 0

    async def login(self, count: int) -> None:
        """``count`` console sessions: each user logs in twice (two cookie jars)."""
        import re

        import aiohttp

        async def one(name: str, password: str) -> Any:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies of 127.0.0.1
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            )
            async with session.get(self.url + "/login") as page:
                token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
            form = {"name": name, "password": password, "csrf": token.group(1) if token else ""}
            async with session.post(self.url + "/login", data=form, allow_redirects=False) as r:
                if r.status not in (302, 303):
                    raise RuntimeError(f"login {name}: HTTP {r.status}")
            return session

        wanted = [self.users[n // SESSIONS_PER_USER] for n in range(count)]
        for start in range(0, len(wanted), 8):  # scrypt on the console's side: a few at a time
            self.sessions += await asyncio.gather(*(one(*u) for u in wanted[start : start + 8]))

    async def open(self, count: int) -> None:
        """``count`` more streams, each open once the console's hello line arrived."""
        ready: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        for n in range(len(self.tasks), len(self.tasks) + count):
            session = self.sessions[n // STREAMS_PER_SESSION]
            future: asyncio.Future[None] = loop.create_future()
            ready.append(future)
            self.tasks.append(asyncio.create_task(self._read(session, future)))
        await asyncio.gather(*ready)

    async def _read(self, session: Any, ready: asyncio.Future[None]) -> None:
        try:
            response = await session.get(self.url + "/api/live")
            if response.status != 200:
                raise RuntimeError(f"/api/live: HTTP {response.status}: {await response.text()}")
            self.responses.append(response)
            content = response.content
            kind = b""
            while True:
                line = await content.readline()
                if not line:
                    break
                if line.startswith(b": connected") and not ready.done():
                    ready.set_result(None)
                elif line.startswith(b": ping"):
                    self.pings += 1
                elif line.startswith(b"event: "):
                    kind = line[7:].strip()
                elif line.startswith(b"data: ") and kind == b"event":
                    at = time.perf_counter()
                    event_id = json.loads(line[6:])["id"]
                    self.arrivals.setdefault(event_id, []).append(at)
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                raise
        finally:
            self.ended += 1

    @property
    def count(self) -> int:
        return len(self.tasks)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for response in self.responses:
            response.close()
        for session in self.sessions:
            await session.close()
        self.tasks, self.responses, self.sessions = [], [], []


async def _fan_out(
    streams: Streams, store: Any, device: str, site: str, rounds: int, seq: int
) -> tuple[list[float], list[float], int]:
    """``rounds`` detections stored one at a time through :class:`Store` (committed as the
    notifier commits them), a random 0.2 to 1.2 s apart (so the console's once-a-second
    poll meets them at every phase).  Returns the latency (ms, commit started -> arrived)
    of every stream for every event, each event's spread (first to last stream, ms), and
    how many arrivals were missing after 10 s."""
    rng = random.Random(seq)
    latencies: list[float] = []
    spreads: list[float] = []
    missing = 0
    for n in range(rounds):
        data = {"sensor": "pir", "rule": "r", "deterrent": "sounded", "siren": True,
                "strobe": True}  # fmt: skip
        event = _event(device, site, "animal_detected", "alarm", time.time(), seq + n, data,
                       36.0, 138.0)  # fmt: skip
        started = time.perf_counter()
        await store.accept(event, [], now=time.time())
        deadline = started + 10.0
        while len(streams.arrivals.get(event.id, ())) < streams.count:
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.005)  # a measuring loop, not a test's synchronisation
        got = streams.arrivals.pop(event.id, [])
        missing += streams.count - len(got)
        latencies += [(t - started) * 1000 for t in got]
        if got:
            spreads.append((max(got) - min(got)) * 1000)
        await asyncio.sleep(0.2 + rng.random())
    return latencies, spreads, missing


def _pct(ms: list[float], q: float) -> float:
    ms = sorted(ms)
    return ms[min(len(ms) - 1, round(q * (len(ms) - 1)))] if ms else float("nan")


async def live_figures(n: int, baseline: int, rounds: int, idle_s: float) -> None:
    """The real console process holding ``n`` open ``/api/live`` streams, against
    ``baseline`` streams in the same run."""
    import tempfile

    from cloud.store import Store
    from edge.sim.broker import free_port

    users = -(-n // (STREAMS_PER_SESSION * SESSIONS_PER_USER)) + 1
    sessions = -(-n // STREAMS_PER_SESSION)
    console = LiveConsole(
        Path(tempfile.mkdtemp(prefix="console-live-")),
        [(f"live-user-{k:03d}", f"live-bench-password-{k:03d}") for k in range(users)],
    )
    console.write_config(free_port())
    seeded = await _seed(console.store, 8)
    took = console.add_users()
    print(f"store: {len(seeded)} devices in {LIVE_SITES} sites (SQLite, {console.store})")
    print(f"users: {users} through `satoyama-console user add`, {took:.1f} s")
    console.start()
    assert console.proc is not None
    proc = Proc(console.proc.pid)
    device, site = seeded[0]
    store = await Store.open(console.store)
    streams = Streams(console.url, console.users)
    try:
        print(f"console: `satoyama-console serve` pid {proc.pid} on {console.url}")
        rss_start = proc.memory_kib()
        started = time.perf_counter()
        await streams.login(sessions)
        print(
            f"  {sessions} sessions logged in (2 per user): {time.perf_counter() - started:.1f} s"
        )
        rss_before = proc.memory_kib()
        print(f"  RSS: at start {rss_start / 1024:.1f} MiB, after the logins "
              f"{rss_before / 1024:.1f} MiB, 0 streams")  # fmt: skip

        async def phase(count: int, label: str) -> dict[str, float]:
            before = streams.count
            started = time.perf_counter()
            await streams.open(count - before)
            opened = time.perf_counter() - started
            rss = proc.memory_kib()
            fds = proc.fds()
            cpu0, wall0 = proc.cpu_s(), time.perf_counter()
            await asyncio.sleep(idle_s)  # idle: nothing stored; the hub polls and pings
            cpu = (proc.cpu_s() - cpu0) / (time.perf_counter() - wall0) * 100
            latencies, spreads, missing = await _fan_out(
                streams, store, device, site, rounds, seq=100 + count
            )
            print(f"{label}: {count} open streams")
            print(f"  {count - before} opened in {opened * 1000:,.0f} ms"
                  f" ({before} open before); console RSS {rss / 1024:.1f} MiB "
                  f"(+{(rss - rss_before) / 1024:.1f} MiB over 0 streams, "
                  f"{(rss - rss_before) / max(1, count):.1f} KiB a stream), {fds} fds")  # fmt: skip
            print(f"  idle {idle_s:.0f} s: console CPU {cpu:.2f} % of one core "
                  f"({streams.pings} pings read so far)")  # fmt: skip
            print(f"  fan-out, {rounds} events x {count} streams (commit -> each stream):"
                  f" p50 {_pct(latencies, 0.5):.0f} ms  p95 {_pct(latencies, 0.95):.0f} ms"
                  f"  max {_pct(latencies, 1.0):.0f} ms; spread first -> last stream"
                  f" p50 {_pct(spreads, 0.5):.1f} ms  max {_pct(spreads, 1.0):.1f} ms;"
                  f" missing {missing}")  # fmt: skip
            return {"opened": opened, "cpu": cpu, "rss": rss,
                    "p50": _pct(latencies, 0.5), "p95": _pct(latencies, 0.95),
                    "max": _pct(latencies, 1.0), "spread": _pct(spreads, 0.5),
                    "missing": missing}  # fmt: skip

        base = await phase(baseline, "baseline")
        full = await phase(n, "full")
        rss_after = proc.memory_kib()
        print(f"  console RSS after: {rss_after / 1024:.1f} MiB (peak "
              f"{proc.memory_kib('VmHWM') / 1024:.1f} MiB); streams ended early: "
              f"{streams.ended}")  # fmt: skip
        print(
            f"ratio {n} / {baseline} streams: fan-out p50 {full['p50'] / base['p50']:.2f}x, "
            f"p95 {full['p95'] / base['p95']:.2f}x, max {full['max'] / base['max']:.2f}x; "
            f"spread {full['spread'] / max(base['spread'], 0.01):.0f}x; "
            f"idle CPU {full['cpu'] / max(base['cpu'], 0.01):.1f}x"
        )
    finally:
        await streams.close()
        await store.close()
        console.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--heartbeat-hours",
        type=float,
        default=12.0,
        help="one stored heartbeat per device this often (default %(default)s)",
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--baseline-runs", type=int, default=5)
    parser.add_argument("--http", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--only",
        choices=("fleet", "live"),
        help="only the fleet on PostgreSQL, or only the open live connections",
    )
    parser.add_argument(
        "--live", type=int, default=1000, metavar="N", help="open /api/live streams (%(default)s)"
    )
    parser.add_argument(
        "--live-baseline", type=int, default=10, metavar="N", help="the baseline's streams"
    )
    parser.add_argument("--live-rounds", type=int, default=10, help="events fanned out per phase")
    parser.add_argument("--idle-s", type=float, default=30.0, help="idle CPU measured this long")
    args = parser.parse_args()
    if args.only != "live":
        fleet_figures(args)
    if args.only != "fleet":
        print(f"open live connections (the real console process, {args.live} streams):")
        asyncio.run(live_figures(args.live, args.live_baseline, args.live_rounds, args.idle_s))


def fleet_figures(args: argparse.Namespace) -> None:
    server = PostgresServer()
    server.start()
    try:
        name = server.create_database()
        dsn = server.dsn(name)
        PostgresDatabase.connect(dsn, "bench").close()  # the notifier's schema
        started = time.perf_counter()
        fleet = build_fleet(
            dsn, devices=args.devices, days=args.days, hb_hours=args.heartbeat_hours
        )
        print(
            f"fleet: {len(fleet.devices)} devices, {fleet.events} events, "
            f"{fleet.readings} readings over {args.days} days; built in "
            f"{time.perf_counter() - started:.0f} s ("
            + ", ".join(f"{k} {v:.0f} s" for k, v in fleet.seconds.items())
            + ")"
        )
        started = time.perf_counter()
        state = open_state(dsn)
        print(
            f"console open (its tables and 4 indexes on events): "
            f"{time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        folded = calls = 0
        while True:
            got = len(state.catch_up(now=fleet.now))
            calls += 1
            folded += got
            if got == 0:
                break
        took = time.perf_counter() - started
        print(
            f"cold catch-up: {folded} events in {calls} calls, {took:.1f} s "
            f"({folded / took:,.0f} events/s)"
        )
        now = fleet.now
        started = time.perf_counter()
        open_state(dsn).db.close()
        print(
            f"open() of a restarted console (loads its {len(fleet.devices)} rows): "
            f"{(time.perf_counter() - started) * 1000:.0f} ms"
        )
        farm = fleet.sites("trap")[len(fleet.sites("trap")) // 2]
        gauges = fleet.of("water")
        rng = random.Random(3)
        print("direct (ConsoleState on PostgreSQL, one connection):")
        n_all = len(state.map(None, now=now))
        line(
            f"map() operator ({n_all} devices)",
            timed(lambda _: state.map(None, now=now), args.runs),
        )
        line(
            f"map() farmer (site {farm}, {len(state.map(frozenset({farm}), now=now))} devices)",
            timed(lambda _: state.map(frozenset({farm}), now=now), args.runs),
        )
        line(
            "device_page() water gauge (30 d telemetry)",
            timed(
                lambda n: state.device_page(gauges[rng.randrange(len(gauges))], now=now), args.runs
            ),
        )
        page = state.device_page(gauges[0], now=now)
        assert page is not None
        print(
            f"    (a page: {len(page.events)} events, 24 h {len(page.hydrographs_24h[0].points)}"
            f" points, 7 d {len(page.hydrographs_7d[0].points)} points, data this month "
            f"{page.health.bytes_this_month} B)"
            if page.hydrographs_24h
            else ""
        )
        line("events() operator (newest 50)", timed(lambda _: state.events(None), args.runs))
        line(
            "events() farmer (one site)",
            timed(lambda _: state.events(frozenset({farm})), args.runs),
        )
        line("fleet()", timed(lambda _: state.fleet(now=now), max(3, args.runs // 5)))
        state.catch_up(now=now)
        line(
            "catch_up() nothing new (no sweep)", timed(lambda _: state.catch_up(now=now), args.runs)
        )
        line(
            "catch_up() nothing new, with the devices sweep",
            # 20 s on: the rows the cold catch-up wrote are no longer re-read (each sweep
            # re-reads the marks of the rows written in the last 10 s)
            timed(lambda n: state.catch_up(now=now + 20 + 6 * n), max(3, args.runs // 5)),
        )
        _catch_up_with_new(dsn, state, fleet, args.runs)
        print(
            "baseline (no console table: newest event of each kind per device, folded per request):"
        )
        line(
            f"naive map operator ({n_all} devices)",
            timed(lambda _: naive_map(dsn, None, now), args.baseline_runs),
        )
        line("naive map farmer (one site)", timed(lambda _: naive_map(dsn, [farm], now), args.runs))
        if args.http:
            print("through HTTP (aiohttp test server on loopback, logged-in operator):")
            asyncio.run(http_figures(dsn, fleet, args.runs))
    finally:
        server.stop()


def _catch_up_with_new(dsn: str, state: ConsoleState, fleet: Fleet, runs: int) -> None:
    import psycopg

    traps = fleet.of("trap")
    times = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for run in range(max(3, runs // 5)):
            now = time.time()
            rows = []
            for n in range(100):
                device = traps[(run * 100 + n) % len(traps)]
                site = f"farm-{int(device[-5:]) // PER_SITE:04d}"
                e = _event(
                    device,
                    site,
                    "heartbeat",
                    "info",
                    now,
                    10_000 + run,
                    {"interval_s": 300.0, "uptime_s": 1.0, "outbox_depth": 0},
                    36.0,
                    138.0,
                )
                rows.append(
                    (e.id, e.device, site, e.kind, e.severity, e.ts.isoformat(), now, encode(e))
                )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO events (id, device, site, kind, severity, ts, received_at,"
                    " payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    rows,
                )
            started = time.perf_counter()
            got = state.catch_up(now=now)
            times.append((time.perf_counter() - started) * 1000)
            assert len(got) == 100, len(got)
    line("catch_up() with 100 new events", times)


if __name__ == "__main__":
    main()
