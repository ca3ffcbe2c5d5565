"""Who may see and do what: for every route, a user of site A cannot read or act on site B
(404, as for a device that does not exist), the anonymous are sent to /login (pages) or
answered 401 (API), operators alone have the fleet (403 for others), and the live stream
carries only the user's sites.  Real SQLite file, real socket, real envelopes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from cloud.config import NotifierConfig
from cloud.console.accounts import hash_password
from cloud.console.app import SESSION_COOKIE, make_app, routes
from cloud.console.live import PER_SESSION, PER_USER, RELOAD, LiveHub, Subscriber
from cloud.console.model import DeviceState, EventRow
from cloud.store import Store
from edge.sim.broker import Mosquitto
from tests.cloud.console.conftest import (
    DEVICE_A,
    DEVICE_A_WATER,
    DEVICE_B,
    DEVICE_B_NAP,
    NOW,
    SITE_A,
    SITE_B,
    Browser,
    Served,
    heartbeat,
    prone,
    serve,
    store_events,
)
from tests.support.browser import AXE, CHROMIUM, CHROMIUM_ARGS
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(90)

#: Every route of the app, as (method, path with {d} for a device); the first test makes
#: sure a route added later is added here too.
DEVICE_GETS = ["/device/{d}", "/device/{d}/sheet"]
DEVICE_API = ["/api/device/{d}"]
DEVICE_POSTS = [
    "/device/{d}/trap/trap-1/checked",
    "/device/{d}/trap/trap-1/reset",
    "/device/{d}/cot/cot-1/ack",
]
PAGES = ["/", "/fleet"]
API = ["/api/map", "/api/events", "/api/live"]
POSTS = ["/language", "/logout", "/fleet/rollout/r1/start", "/fleet/rollout/r1/pause"]


def test_every_route_is_in_this_file(served: Served) -> None:
    app = make_app(served.console, live_task=False)
    found = {
        (method, path)
        for path, methods in routes(app).items()
        for method in methods
        if method != "HEAD" and not path.startswith("/static")
    }
    listed = {("GET", "/login"), ("POST", "/login")}
    listed |= {("GET", p.replace("{d}", "{id}")) for p in DEVICE_GETS + DEVICE_API + PAGES + API}
    listed |= {
        ("POST", "/device/{id}/trap/{sensor}/checked"),
        ("POST", "/device/{id}/trap/{sensor}/reset"),
        ("POST", "/device/{id}/cot/{cot}/ack"),
        ("POST", "/fleet/rollout/{rollout}/{action}"),
        ("POST", "/language"),
        ("POST", "/logout"),
    }
    assert found == listed


def _state(config: NotifierConfig) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The rows an action would change: the console's action log and the notifier's traps."""
    assert config.store.path is not None
    with contextlib.closing(sqlite3.connect(config.store.path)) as conn:
        actions = conn.execute("SELECT device, action, target FROM console_actions").fetchall()
        traps = conn.execute("SELECT device, sensor, open FROM traps ORDER BY device").fetchall()
    return actions, traps


async def test_the_anonymous_are_sent_to_login_or_refused(served: Served) -> None:
    b = served.browser()
    for path in [*PAGES, *(p.format(d=DEVICE_A) for p in DEVICE_GETS)]:
        status, headers, _ = await b.get(path)
        assert (status, headers.get("Location")) == (303, "/login"), path
    for path in [*API, *(p.format(d=DEVICE_A) for p in DEVICE_API)]:
        status, _, body = await b.get(path)
        assert status == 401 and json.loads(body) == {"error": "login required"}, path
    before = _state(served.console.config)
    for path in [*POSTS, *(p.format(d=DEVICE_A) for p in DEVICE_POSTS)]:
        status, headers, _ = await b.post(path, {"csrf": "x", "language": "en"})
        assert (status, headers.get("Location")) == (303, "/login"), path
    assert _state(served.console.config) == before


async def test_a_user_of_site_a_cannot_read_site_b(served: Served) -> None:
    alice = await served.as_user("alice")
    for device in (DEVICE_B, DEVICE_B_NAP):
        for path in DEVICE_GETS + DEVICE_API:
            status, _, body = await alice.get(path.format(d=device))
            # exactly what a device that does not exist gets: no hint that it does
            missing_status, _, missing = await alice.get(path.format(d="no-such-device"))
            assert status == missing_status == 404, path
            assert body.replace(device, "X") == missing.replace("no-such-device", "X"), path
    status, _, body = await alice.get("/api/map")
    devices = json.loads(body)["devices"]
    assert status == 200 and {d["device"] for d in devices} == {DEVICE_A, DEVICE_A_WATER}
    assert {d["site"] for d in devices} == {SITE_A}
    status, _, body = await alice.get("/api/events")
    events = json.loads(body)["events"]
    assert status == 200 and events and {e["site"] for e in events} == {SITE_A}
    assert all(e["summary"] for e in events)  # in her language
    _, _, page = await alice.get("/")
    assert DEVICE_A in page and DEVICE_B not in page and DEVICE_B_NAP not in page
    assert SITE_B not in page
    # her own device she sees, page and API
    assert (await alice.get(f"/device/{DEVICE_A}"))[0] == 200
    status, _, body = await alice.get(f"/api/device/{DEVICE_A}")
    assert status == 200 and json.loads(body)["state"]["site"] == SITE_A


async def test_a_user_of_site_a_cannot_act_on_site_b(served: Served) -> None:
    alice = await served.as_user("alice")
    before = _state(served.console.config)
    for device in (DEVICE_B, DEVICE_B_NAP):
        for path in DEVICE_POSTS:
            status, _, _ = await alice.post(path.format(d=device))
            assert status == 404, path
    assert _state(served.console.config) == before
    # the same actions on her own site's trap are recorded
    status, headers, _ = await alice.post(f"/device/{DEVICE_A}/trap/trap-1/checked")
    assert status == 303 and headers["Location"] == f"/device/{DEVICE_A}"
    actions, _ = _state(served.console.config)
    assert actions == [(DEVICE_A, "trap_checked", "trap-1")]


async def test_the_fleet_is_for_operators_only(served: Served) -> None:
    for name in ("alice", "bob"):
        b = await served.as_user(name)
        status, _, body = await b.get("/fleet")
        assert status == 403 and 'data-testid="error-title"' in body
        assert 'data-testid="nav-fleet"' not in (await b.get("/"))[2]
        for action in ("start", "pause"):
            status, _, _ = await b.post(f"/fleet/rollout/r1/{action}")
            assert status == 403
    olga = await served.as_user("olga")
    status, _, body = await olga.get("/fleet")
    assert status == 200 and 'data-testid="nav-fleet"' in body
    # without a fleet database there is no rollout to start: 404, nothing run
    assert (await olga.post("/fleet/rollout/r1/start"))[0] == 404


async def test_an_operator_sees_every_site(served: Served) -> None:
    olga = await served.as_user("olga")
    status, _, body = await olga.get("/api/map")
    assert status == 200
    assert {d["device"] for d in json.loads(body)["devices"]} == {
        DEVICE_A,
        DEVICE_A_WATER,
        DEVICE_B,
        DEVICE_B_NAP,
    }
    for device in (DEVICE_A, DEVICE_A_WATER, DEVICE_B, DEVICE_B_NAP):
        for path in DEVICE_GETS + DEVICE_API:
            assert (await olga.get(path.format(d=device)))[0] == 200, (path, device)


async def test_bob_acknowledges_his_nap_alarm_and_marks_his_trap(served: Served) -> None:
    bob = await served.as_user("bob")
    _, _, page = await bob.get(f"/device/{DEVICE_B_NAP}")
    assert 'data-testid="cot-ack-cot-1"' in page and 'data-testid="sheet-link"' in page
    status, _, _ = await bob.post(f"/device/{DEVICE_B_NAP}/cot/cot-1/ack")
    assert status == 303
    _, _, page = await bob.get(f"/device/{DEVICE_B_NAP}")
    assert 'data-testid="cot-acknowledged"' in page and "bob" in page
    status, _, _ = await bob.post(f"/device/{DEVICE_B}/trap/trap-1/reset")
    assert status == 303
    actions, traps = _state(served.console.config)
    assert (DEVICE_B_NAP, "nap_acknowledged", "cot-1") in actions
    assert (DEVICE_B, "trap_reset", "trap-1") in actions
    assert (DEVICE_B, "trap-1", 0) in traps and (DEVICE_A, "trap-1", 1) in traps


async def test_a_nap_acknowledgement_the_device_would_refuse_is_not_recorded(
    seeded: NotifierConfig,
) -> None:
    """A cot name no device can have (over 32 characters: the command's limit) is refused
    like a cot that does not exist, before anything is written; a failure to tell the
    device after the record is written says so on the page, never a failure page."""
    told: list[tuple[str, str, str]] = []

    async def send(device: str, cot: str, by: str, at: float) -> None:
        told.append((device, cot, by))
        if len(told) > 1:
            raise RuntimeError("something the sender did not expect")

    async for s in serve(seeded, live_task=False, nap_ack=send):
        bob = await s.as_user("bob")
        before = _state(s.console.config)
        status, _, _ = await bob.post(f"/device/{DEVICE_B_NAP}/cot/{'c' * 33}/ack")
        assert status == 404 and _state(s.console.config) == before and not told
        page = f"/device/{DEVICE_B_NAP}"
        for note, absent in (("action-done", "ack-unsent"), ("ack-unsent", "action-done")):
            status, headers, _ = await bob.post(f"{page}/cot/cot-1/ack")
            assert (status, headers["Location"]) == (303, page)
            _, _, body = await bob.get(page)
            assert f'data-testid="{note}"' in body and f'data-testid="{absent}"' not in body
        assert told == [(DEVICE_B_NAP, "cot-1", "bob")] * 2
        actions, _ = _state(s.console.config)
        assert actions.count((DEVICE_B_NAP, "nap_acknowledged", "cot-1")) == 2


async def test_each_device_page_shows_what_its_device_watches(served: Served) -> None:
    alice = await served.as_user("alice")
    _, _, page = await alice.get(f"/device/{DEVICE_A_WATER}")
    assert 'data-testid="hydrograph-24h"' in page and 'data-testid="hydrograph-7d"' in page
    assert page.count("<svg") >= 2 and 'data-testid="water-stage" data-rank="2"' in page
    _, _, page = await alice.get(f"/device/{DEVICE_A}")
    assert 'data-testid="trap-checked-trap-1"' in page and 'data-testid="trap-reset-trap-1"' in page
    assert 'data-testid="outbox-depth">2<' in page
    _, _, body = await alice.get("/")
    assert f'data-testid="device-{DEVICE_A_WATER}"' in body and 'data-state="warning"' in body
    assert 'id="labels"' in body and 'data-tiles="https://cyberjapandata.gsi.go.jp/' in body
    status, headers, sheet = await (await served.as_user("bob")).get(
        f"/device/{DEVICE_B_NAP}/sheet"
    )
    assert status == 200 and "cot-1" in sheet
    # the device's printable sheet keeps its inline styles, and still runs nothing
    csp = headers["Content-Security-Policy"]
    assert "style-src 'unsafe-inline'" in csp and "default-src 'none'" in csp
    assert "script-src" not in csp and "<script" not in sheet


async def test_the_version_from_the_status_message_on_the_device_and_fleet_pages(
    seeded: NotifierConfig,
) -> None:
    async with await Store.open(seeded.store) as store:
        await store.record_status(DEVICE_A, "online", "", now=NOW + 1, version="1.4.2")
    async for s in serve(seeded):
        olga = await s.as_user("olga")
        status, _, body = await olga.get(f"/api/device/{DEVICE_A}")
        assert status == 200 and json.loads(body)["state"]["version"] == "1.4.2"
        _, _, page = await olga.get(f"/device/{DEVICE_A}")
        assert 'data-testid="version">1.4.2<' in page
        _, _, page = await olga.get("/fleet")
        row = '<tr data-testid="version-row" data-version="1.4.2"><th scope="row">1.4.2</th>'
        assert row + "<td>1</td>" in page


async def test_each_hydrograph_names_its_sensor_and_data_use_is_the_month_in_japan(
    seeded: NotifierConfig,
) -> None:
    async with await Store.open(seeded.store) as store:  # a second probe on the same gauge
        points = [("bridge.level_cm", NOW - 3600 + 600 * n, 70.0 + n) for n in range(6)]
        await store.add_telemetry(DEVICE_A_WATER, SITE_A, points, now=NOW - 10)
    async for s in serve(seeded):
        japanese = (
            "level の水位グラフ（24時間）",  # noqa: RUF001
            "bridge の水位グラフ（7日間）",  # noqa: RUF001
            "今月（日本時間）の通信量",  # noqa: RUF001
        )
        english = (
            "Hydrograph (24 h): level",
            "Hydrograph (7 days): bridge",
            "Data this month (JST)",
        )
        for name, words in (("alice", japanese), ("olga", english)):
            b = await s.as_user(name)
            if name == "olga":
                await b.post("/language", {"language": "en"})
            _, _, page = await b.get(f"/device/{DEVICE_A_WATER}")
            captions = re.findall(r"<figcaption>([^<]*)</figcaption>", page)
            assert len(captions) == 4 and len(set(captions)) == 4, captions
            for word in words:
                assert word in page, (name, word)




def _axe_serious(html: str, csp: str, width: int) -> tuple[list[str], str]:
    """axe-core in Chromium over ``html`` served with ``csp`` (nothing else is served):
    its serious and critical violations, and the page's title."""
    from playwright.sync_api import Route, sync_playwright

    url = "http://console.test/device/x/sheet"

    def answer(route: Route) -> None:
        if route.request.url != url:
            route.abort()
            return
        headers = {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": csp}
        route.fulfill(status=200, headers=headers, body=html)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 800})
            page.route("**/*", answer)
            page.goto(url)
            # evaluated through the DevTools protocol: the page's policy refuses scripts
            page.evaluate(AXE.read_text(encoding="utf-8"))
            result = page.evaluate("async () => await axe.run(document)")
            title = page.title()
        finally:
            browser.close()
    assert len(result["passes"]) > 10, "axe ran its rules"
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    return bad, title


async def test_the_nap_sheet_is_a_console_page_around_the_devices_sheet(served: Served) -> None:
    from cloud.console import naps

    bob = await served.as_user("bob")
    status, headers, page = await bob.get(f"/device/{DEVICE_B_NAP}/sheet")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "style-src 'unsafe-inline'" in csp and "script-src" not in csp
    # the console's header with the way back, then the sheet in <main>
    header, main = page.index('data-testid="header"'), page.index('<main id="content">')
    back = page.index(f'<a href="/device/{DEVICE_B_NAP}" data-testid="sheet-back">')
    assert header < back < main and page.count("<main") == 1 and "</main>" in page
    # the sheet inside is the device's, untouched: its body whole, its style whole
    db = served.console.db
    sheet = await served.console.call(
        lambda: naps.sheet_html(db, DEVICE_B_NAP, language="ja", now=served.clock[0])
    )
    assert sheet is not None
    body = sheet.partition("<body>")[2].rpartition("</body>")[0]
    style = sheet[sheet.index("<style>") : sheet.index("</style>") + len("</style>")]
    assert body and body in page and style in page
    for width in (390, 1280):
        bad, title = await asyncio.to_thread(_axe_serious, page, csp, width)
        assert bad == [], width
    assert title.startswith("午睡チェック表 ")  # the sheet's own, then the console's
    assert title.endswith(f" | {DEVICE_B_NAP} | 里山エッジ コンソール")


async def test_an_operator_starts_a_rollout_stage(
    seeded: NotifierConfig, broker: Mosquitto, tmp_path: Path
) -> None:
    """The fleet page lists the deploy tools' rollout; "start" runs the real tool against
    the real broker; a farmer can do neither."""
    from deploy.fleet import FleetDB  # the test builds the file with the real tool

    path = tmp_path / "fleet.sqlite3"
    with FleetDB(path) as fleet_db:
        for device in (DEVICE_A, DEVICE_B):
            fleet_db.add_device(device, "s", "1.2.3")
        fleet_db.create_rollout(
            version="1.3.0", url="https://ota.example.jp/b.tar", devices=[DEVICE_A, DEVICE_B],
            percent=50.0, sha256="0" * 64, size=1, rollout_id="r7",
        )  # fmt: skip
    mqtt = msgspec.structs.replace(seeded.mqtt, port=broker.port)
    console_cfg = msgspec.structs.replace(seeded.console, fleet_db=str(path))
    config = msgspec.structs.replace(seeded, mqtt=mqtt, console=console_cfg)
    async for s in serve(config, live_task=False):
        olga = await s.as_user("olga")
        status, _, page = await olga.get("/fleet")
        assert status == 200 and 'data-rollout="r7"' in page
        assert 'data-testid="rollout-start-r7">次の段階を開始</button>' in page
        alice = await s.as_user("alice")
        assert (await alice.post("/fleet/rollout/r7/start"))[0] == 403
        status, headers, _ = await olga.post("/fleet/rollout/r7/start")
        assert status == 303 and headers["Location"] == "/fleet"
        _, _, page = await olga.get("/fleet")
        assert 'data-testid="fleet-message"' in page and "stage first" in page
        _, _, page = await olga.get("/fleet")  # said once
        assert 'data-testid="fleet-message"' not in page
        status, headers, _ = await olga.post("/fleet/rollout/r7/pause")
        assert status == 303
        _, _, page = await olga.get("/fleet")
        assert "rollout r7 paused" in page
        # paused: its button resumes it
        assert 'data-testid="rollout-start-r7">再開</button>' in page
        # a link cannot put words on the page
        _, _, page = await olga.get("/fleet?message=Call+0120-000-000")
        assert "0120" not in page
        assert (await olga.post("/fleet/rollout/nope/start"))[0] == 404
        with contextlib.closing(sqlite3.connect(str(config.store.path))) as conn:
            actions = conn.execute("SELECT action, target, by_user FROM console_actions").fetchall()
        assert actions == [("rollout_start", "r7", "olga"), ("rollout_pause", "r7", "olga")]


async def test_a_device_that_moved_site_shows_each_site_only_its_own_events(
    served: Served,
) -> None:
    """DEVICE_A (site A) is re-provisioned for site B: bob never sees site A's history on
    it, alice never sees site B's."""
    moved = heartbeat(DEVICE_A, SITE_B, 30)
    async with await Store.open(served.console.config.store) as store:
        await store_events(store, [moved], now=served.clock[0])
    await served.console.call(lambda: served.console.state.catch_up(now=served.clock[0]))
    opened = []
    for name in ("alice", "bob"):
        b = await served.as_user(name)
        status, _, body = await b.get(f"/api/device/{DEVICE_A}")
        if status == 404:
            continue
        opened.append(name)
        sites = {e["site"] for e in json.loads(body)["events"]}
        assert sites <= {SITE_A if name == "alice" else SITE_B}, (name, sites)
    assert opened  # the device's site now is one of the two


# --- the live stream --------------------------------------------------------------------


async def _sse(served: Served, b: Browser) -> AsyncIterator[tuple[str, dict[str, object]]]:
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in b.cookies.items())}
    async with served.http.get(served.base + "/api/live", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        name = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                yield name, json.loads(line[6:])


async def test_the_live_stream_carries_only_the_users_sites(served: Served) -> None:
    alice = await served.as_user("alice")
    olga = await served.as_user("olga")
    got: dict[str, list[tuple[str, dict[str, object]]]] = {"alice": [], "olga": []}

    async def read(name: str, b: Browser) -> None:
        async for item in _sse(served, b):
            got[name].append(item)

    readers = [asyncio.create_task(read(n, b)) for n, b in (("alice", alice), ("olga", olga))]
    try:
        await until(lambda: served.console.hub.connections == 2, 10, "two live connections")
        b_event = prone(DEVICE_B_NAP, SITE_B, 10)
        a_event = heartbeat(DEVICE_A, SITE_A, 10)  # stored after B's: seen after it
        async with await Store.open(served.console.config.store) as store:
            await store_events(store, [b_event, a_event], now=served.clock[0])

        def ids(name: str) -> list[object]:
            return [data.get("id") for kind, data in got[name] if kind == "event"]

        await until(lambda: a_event.id in ids("alice"), 15, "alice's event, live")
        await until(lambda: a_event.id in ids("olga"), 15, "the operator's events, live")
        assert b_event.id not in ids("alice") and b_event.id in ids("olga")
        assert all(data.get("site") == SITE_A for _, data in got["alice"])
        event = next(d for k, d in got["alice"] if k == "event" and d["id"] == a_event.id)
        assert event["summary"] == "死活通知"  # in alice's language
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def test_logout_ends_the_users_live_streams(served: Served) -> None:
    alice = await served.as_user("alice")
    ended = asyncio.Event()

    async def read() -> None:
        async for _ in _sse(served, alice):
            pass
        ended.set()

    reader = asyncio.create_task(read())
    try:
        await until(lambda: served.console.hub.connections == 1, 10, "a live connection")
        await alice.post("/logout")
        await until(ended.is_set, 10, "the stream to end at logout")
        assert served.console.hub.connections == 0
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def test_streams_end_with_their_session_and_are_limited_per_session(
    served: Served,
) -> None:
    """A password change (or the user's removal, or expiry) ends the user's open streams at
    the next ping; one session holds at most a few streams."""
    hub = served.console.hub
    bob = await served.as_user("bob")
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in bob.cookies.items())}
    responses = [
        await served.http.get(served.base + "/api/live", headers=headers)
        for _ in range(PER_SESSION)
    ]
    try:
        assert all(r.status == 200 for r in responses)
        await until(lambda: hub.connections == PER_SESSION, 10, "bob's streams")
        async with served.http.get(served.base + "/api/live", headers=headers) as extra:
            assert extra.status == 429
        await served.console.call(
            lambda: served.console.accounts.set_password("bob", hash_password("a new one!!"))
        )
        hub.ping_every_s = 0.0  # the next round checks the sessions
        await until(lambda: hub.connections == 0, 10, "bob's streams to end")
        for r in responses:
            assert await r.content.read() is not None  # each stream came to its end
    finally:
        for r in responses:
            r.close()


def _row(site: str, n: int) -> EventRow:
    return EventRow(
        id=f"e{n}", device=f"d-{site}", site=site, kind="heartbeat", severity="info",
        ts="2026-01-01T00:00:00Z", received_at=float(n),
    )  # fmt: skip


def _taken(sub: Subscriber) -> list[bytes]:
    """What the stream's writer would take now, as the writer takes it."""
    taken: list[bytes] = []
    while not sub.queue.empty():
        entry = sub.queue.get_nowait()
        assert entry is not None
        sub.took(entry, 0.0)
        taken.extend(entry)
    return taken


async def test_a_stream_falls_behind_by_rounds_and_only_a_stalled_one_is_dropped() -> None:
    async def nothing() -> tuple[list[EventRow], list[DeviceState]]:
        return [], []

    clock = [0.0]
    hub = LiveHub(nothing, queue_size=4, stall_s=60.0, clock=lambda: clock[0])
    slow = hub.subscribe(sites=frozenset({"a"}), language="ja", session="s1")
    other_site = hub.subscribe(sites=frozenset({"b"}), language="en", session="s2")
    hub.publish([_row("a", n) for n in range(3)], [])
    assert slow.queue.qsize() == 1 and slow.waiting == 3  # one round, taken whole
    # a round that does not fit behind what waits: one reload in place of everything
    hub.publish([_row("a", n) for n in range(3, 5)], [])
    assert _taken(slow) == [RELOAD] and not slow.dropped
    # a round bigger than the whole queue (a burst): a reload too, never a drop
    hub.publish([_row("a", n) for n in range(5, 15)], [])
    assert _taken(slow) == [RELOAD] and hub.reloads == 2
    # a round that fits arrives as it is, in order
    hub.publish([_row("a", 15), _row("b", 16), _row("a", 17)], [])
    assert [m.count(b'"id":"e15"') + 2 * m.count(b'"id":"e17"') for m in _taken(slow)] == [1, 2]
    assert [b'"id":"e16"' in m for m in _taken(other_site)] == [True]  # site b: its own only
    assert hub.dropped == 0 and hub.connections == 2
    # a stream whose writer takes nothing: still there after 60 s, dropped after more
    hub.publish([_row("a", 18)], [])
    clock[0] = 60.0
    hub.ping()
    assert not slow.dropped and other_site.queue.qsize() == 1  # the idle one is pinged
    _taken(other_site)
    clock[0] = 61.0
    hub.ping()
    assert slow.dropped and hub.dropped == 1 and hub.connections == 1
    assert slow.queue.get_nowait() is None  # its stream ends
    assert not other_site.dropped


async def test_one_user_holds_a_few_streams_however_many_sessions() -> None:
    async def nothing() -> tuple[list[EventRow], list[DeviceState]]:
        return [], []

    hub = LiveHub(nothing)
    subs = []
    for n in range(PER_USER):
        session = f"s{n // PER_SESSION}"
        assert hub.refusal(session, "alice") is None
        subs.append(hub.subscribe(sites=None, language="ja", session=session, user="alice"))
    assert hub.refusal("a-new-session", "alice") is not None  # the user's cap
    assert hub.refusal("s0", "bob") is not None  # the session's cap
    assert hub.refusal("bobs", "bob") is None  # another user is not held back
    hub.unsubscribe(subs[0])
    hub.unsubscribe(subs[0])  # twice: counted once
    assert hub.refusal("a-new-session", "alice") is None
    assert hub.connections == PER_USER - 1


async def test_the_hub_polls_once_per_round_whatever_the_number_of_readers() -> None:
    calls = 0

    async def poll() -> tuple[list[EventRow], list[DeviceState]]:
        nonlocal calls
        calls += 1
        return ([_row("a", calls)], []) if calls == 1 else ([], [])

    hub = LiveHub(poll, interval_s=0.01)
    subs = [hub.subscribe(sites=None, language="ja", session=str(n)) for n in range(1000)]
    task = asyncio.create_task(hub.run())
    try:
        await until(lambda: hub.rounds >= 3, 10, "three rounds")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls == hub.rounds
    first = [s.queue.get_nowait() for s in subs]
    assert all(m is first[0] for m in first)  # one encoding shared by every reader
    assert first[0] is not None and b'"summary":"' in b"".join(first[0])


async def test_a_thousand_live_connections(served: Served) -> None:
    """1,000 open streams on one console (1,000 sessions of 63 operators: a session may
    hold only a few, a user a few more): each gets the next event, the poller stays one."""
    console = served.console
    users = -(-1000 // PER_USER)  # 63
    password = hash_password("not used here")

    def sessions() -> list[str]:
        for u in range(users):
            console.accounts.add(
                f"ops{u:02d}", role="operator", sites=frozenset(), password_hash=password,
                now=served.clock[0],
            )  # fmt: skip
        return [
            console.accounts.start_session(f"ops{n % users:02d}", now=served.clock[0], hours=1)
            for n in range(1000)
        ]

    tokens = await console.call(sessions)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        responses = await asyncio.gather(
            *(
                http.get(served.base + "/api/live", headers={"Cookie": f"{SESSION_COOKIE}={t}"})
                for t in tokens
            )
        )
        try:
            assert all(r.status == 200 for r in responses)
            await until(lambda: served.console.hub.connections == 1000, 30, "1000 streams")
            event = heartbeat(DEVICE_A, SITE_A, 20)
            async with await Store.open(served.console.config.store) as store:
                await store_events(store, [event], now=served.clock[0])
            needle = event.id.encode()

            async def wait_for_event(r: aiohttp.ClientResponse) -> None:
                async for line in r.content:
                    if needle in line:
                        return

            await asyncio.wait_for(asyncio.gather(*(wait_for_event(r) for r in responses)), 60)
            assert served.console.hub.dropped == 0
        finally:
            for r in responses:
                r.close()
