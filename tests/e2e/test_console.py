"""The web console end to end, in Debian's Chromium.

Real mosquitto, the real notifier process, the real console process
(``satoyama-console serve``, its users added through ``satoyama-console user add``)
and emulated devices: the daemon, each in a process of its own on the bench's
emulated hardware (the site profiles in edge/sim/sites), publishing to that
mosquitto.  The browser loads map tiles from the test tile set on 127.0.0.1; any
request leaving 127.0.0.1, any script error, any console error and any refusal by
the console's Content-Security-Policy fails the test that saw it.

One cloud side, one console and the four devices are shared by the whole module;
each test drives only its own device (or, for the site test, looks only for what
it made), so the tests do not depend on each other's order.

The screenshots (``console-PAGE-phone.png``, ``console-PAGE-desktop.png``) are kept in
``build/screenshots`` (ignored by git; each run replaces them), or in ``$SATOYAMA_SCREENSHOTS``.
"""

from __future__ import annotations

import datetime as dt
import http.cookiejar
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from edge import __version__ as edge_version
from edge.config import WaterRuleConfig, parse
from edge.nursery.log import NapLog
from edge.nursery.sheet import JST, build_sheet
from edge.sim.site import CloudSide, ConsoleSetup, ConsoleUser
from edge.tools.bench import SCENARIOS, SITES, Scenario, load_scenario
from tests.e2e.console_site import DeviceProcess, TileServer, placed
from tests.support.browser import AXE, CHROMIUM, CHROMIUM_ARGS
from tests.support.waiting import until_sync

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
LIVE_S = 20.0
"""How long a change may take from the emulated pin to the page: the device's outbox,
mosquitto, the notifier's store, the console's once-a-second poll, the stream."""

EAST, WEST, NURSERY = "kataoka-east", "kataoka-west", "hiyoko-hoikuen"
SITE_NAMES = {EAST: "片丘 東の田", WEST: "片丘 西の田", NURSERY: "ひよこ保育園"}
USERS = {
    "ops": ConsoleUser("ops", "operator"),
    "tanaka": ConsoleUser("tanaka", "farmer", (EAST,)),
    "suzuki": ConsoleUser("suzuki", "farmer", (WEST,)),
    "ryoshi": ConsoleUser("ryoshi", "hunter", (EAST,)),
    "hoiku": ConsoleUser("hoiku", "nursery", (NURSERY,)),
    "yakuba": ConsoleUser("yakuba", "municipal", (EAST,)),
}


@dataclass(frozen=True)
class Placement:
    profile: str
    site: str
    lat: float
    lon: float


#: Where each emulated device stands (its configuration says so; the tests compare).
DEVICES = {
    "east-paddy-01": Placement("paddy-edge.toml", EAST, 36.103950, 137.965630),
    "east-river-01": Placement("river.toml", EAST, 36.11, 137.95),
    "west-paddy-01": Placement("paddy-edge.toml", WEST, 36.0794321, 137.9543219),
    "hiyoko-nap-01": Placement("nap-alarms.toml", NURSERY, 35.86, 139.65),
}
COT = "ひよこ-1"
RIVER = load_scenario(SCENARIOS / "river-rising.toml")


# --- the site ----------------------------------------------------------------------------------


@dataclass
class Site:
    cloud: CloudSide
    tiles: TileServer
    devices: dict[str, DeviceProcess]
    configs: dict[str, str]
    shots: Path

    @property
    def url(self) -> str:
        return self.cloud.console_url


def device_text(name: str, where: Placement) -> str:
    text = placed((SITES / where.profile).read_text(encoding="utf-8"), device=name,
                  site=where.site, lat=where.lat, lon=where.lon)  # fmt: skip
    # the detector is ready at once (the profile's 2 s warm-up would swallow an early pass)
    return text.replace("warmup_s = 2\n", "warmup_s = 0\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("console")
    shots = Path(os.environ.get("SATOYAMA_SCREENSHOTS") or ROOT / "build" / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    tiles = TileServer()
    cloud = CloudSide(
        base / "cloud",
        sites=SITE_NAMES,
        console=ConsoleSetup(
            users=tuple(USERS.values()), tile_url=tiles.template, credit="テスト用タイル"
        ),
    )
    devices: dict[str, DeviceProcess] = {}
    try:
        cloud.start()
        configs = {name: device_text(name, where) for name, where in DEVICES.items()}
        for name, text in configs.items():
            initial = list(RIVER.initial) if DEVICES[name].profile == "river.toml" else []
            devices[name] = DeviceProcess(name, text, base / name, cloud.broker.port, initial)
        for device in devices.values():
            device.ready()
        yield Site(cloud, tiles, devices, configs, shots)
    finally:
        try:
            for device in devices.values():
                device.close()
        finally:
            try:
                cloud.close()
            finally:
                tiles.close()


# --- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


_WATCH_POLICY = """
window.__refused = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__refused.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@dataclass
class Visitor:
    """One person's browser: a context of their own, signed in, with guards."""

    user: ConsoleUser
    context: BrowserContext
    page: Page
    problems: list[str] = field(default_factory=list)
    expected_404: set[str] = field(default_factory=set)

    def goto(self, site: Site, path: str, *, status: int = 200) -> None:
        url = site.url + path
        if status == 404:
            self.expected_404.add(url)
        answer = self.page.goto(url)
        assert answer is not None and answer.status == status, (path, answer and answer.status)

    def check(self) -> None:
        refused = self.page.evaluate("window.__refused || []")
        assert refused == [], f"{self.user.name}: refused by the page's policy: {refused}"
        assert self.problems == [], f"{self.user.name}: {self.problems}"


class Browsing:
    def __init__(self, browser: Browser, site: Site) -> None:
        self.browser = browser
        self.site = site
        self.visitors: list[Visitor] = []

    def open(self, user: ConsoleUser | None, viewport: dict[str, int] = DESKTOP) -> Visitor:
        """A fresh context; signed in as ``user`` through the login form (None: anonymous)."""
        context = self.browser.new_context(viewport=viewport, reduced_motion="reduce",  # type: ignore[arg-type]
                                           locale="ja-JP", timezone_id="Asia/Tokyo")  # fmt: skip
        context.add_init_script(_WATCH_POLICY)
        page = context.new_page()
        visitor = Visitor(user or ConsoleUser("anonymous", "none"), context, page)
        self.visitors.append(visitor)

        def guard(route: Route) -> None:
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                visitor.problems.append(f"request leaving the machine: {route.request.url}")
                route.abort()

        def console(message: ConsoleMessage) -> None:
            if message.type != "error":
                return
            where = message.location.get("url", "")
            if "404" in message.text and where in visitor.expected_404:
                return  # the page the test asked for, and expected to be refused
            visitor.problems.append(f"console error: {message.text} ({where})")

        context.route("**/*", guard)
        page.on("console", console)
        page.on("pageerror", lambda error: visitor.problems.append(f"script error: {error}"))
        page.set_default_timeout(LIVE_S * 1000)
        if user is not None:
            page.goto(self.site.url + "/login")
            page.get_by_test_id("login-name").fill(user.name)
            page.get_by_test_id("login-password").fill(user.password)
            page.get_by_test_id("login-submit").click()
            page.wait_for_url(self.site.url + "/")
        return visitor

    def close(self) -> None:
        for visitor in self.visitors:
            visitor.context.close()


@pytest.fixture(autouse=True)
def _live_deadline() -> Iterator[None]:
    """``expect`` waits as long as a live change may take (its default is 5 s)."""
    expect.set_options(timeout=LIVE_S * 1000)
    try:
        yield
    finally:
        expect.set_options(timeout=5_000)


@pytest.fixture
def browsing(browser: Browser, site: Site) -> Iterator[Browsing]:
    b = Browsing(browser, site)
    try:
        yield b
        for visitor in b.visitors:
            visitor.check()
    finally:
        b.close()


def on_map(visitor: Visitor) -> Page:
    """The map page loaded, its markers drawn and its live stream open."""
    page = visitor.page
    expect(page.locator("#map")).to_have_attribute("data-loaded", "true")
    expect(page.locator("#map")).to_have_attribute("data-live-state", "on")
    return page


def marker(page: Page, device: str) -> Any:
    return page.locator(f".leaflet-marker-pane [data-testid='marker-{device}']")


def fill_colour(page: Page, device: str) -> str:
    colour: str = (
        marker(page, device)
        .locator(".marker-pin")
        .evaluate("el => getComputedStyle(el).backgroundColor")
    )
    return colour


def coloured(page: Page, device: str, colour: str) -> Callable[[], bool]:
    return lambda: fill_colour(page, device) == colour


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def remember_page(page: Page) -> None:
    """A mark that a reload would wipe out: the page is still the one loaded before."""
    page.evaluate("window.__same_page = true")


def same_page(page: Page) -> bool:
    return bool(page.evaluate("window.__same_page === true"))


# --- 0. the guards themselves ------------------------------------------------------------------


def test_the_guards_catch_a_request_leaving_the_machine_and_a_policy_refusal(
    browsing: Browsing, site: Site
) -> None:
    """What every other test relies on to fail: a request to another host is stopped and
    recorded; an inline script is refused by the console's policy and recorded."""
    visitor = browsing.open(None)
    visitor.goto(site, "/login")
    page = visitor.page
    # the page's own requests elsewhere are refused by its policy before they leave ...
    page.evaluate("fetch('https://cyberjapandata.gsi.go.jp/xyz/std/0/0/0.png').catch(() => 0)")
    page.wait_for_function("window.__refused.some(r => r.startsWith('connect-src'))")
    # ... an inline script too ...
    page.evaluate("""() => { const s = document.createElement("script");
                             s.textContent = "window.__ran = true"; document.body.append(s); }""")
    page.wait_for_function("window.__refused.some(r => r.startsWith('script-src'))")
    assert page.evaluate("window.__ran === undefined"), "the inline script ran"
    until_sync(lambda: sum("console error" in p for p in visitor.problems) >= 2, LIVE_S,
               "both refusals as console errors")  # fmt: skip
    # ... and what the policy does not govern (a navigation) is stopped by the guard
    stray = visitor.context.new_page()
    with pytest.raises(PlaywrightError):
        stray.goto("https://maps.gsi.go.jp/")
    stray.close()
    assert any("leaving the machine: https://maps.gsi.go.jp/" in p for p in visitor.problems)
    visitor.problems.clear()  # all seen: what remains for the fixture's check is nothing
    page.evaluate("window.__refused = []")


# --- 1. markers where the configuration puts them ----------------------------------------------


def mercator_px(lat: float, lon: float, zoom: float) -> tuple[float, float]:
    """Web Mercator world pixel of (lat, lon) at ``zoom`` (256-px tiles), worked out here,
    not by Leaflet."""
    scale = 256 * 2**zoom
    x = (lon + 180) / 360 * scale
    s = math.sin(math.radians(lat))
    y = (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * scale
    return x, y


_MARKERS_NOW = """names => ({
  zoom: window.satoyamaConsole.map.getZoom(),
  moving: document.getElementById("map").classList.contains("leaflet-zoom-anim")
    || document.getAnimations().some(a => a.playState === "running"),
  at: names.map(n => {
    const r = document.querySelector(`.leaflet-marker-pane [data-testid='marker-${n}']`)
      .getBoundingClientRect();
    return [r.x + r.width / 2, r.y + r.height / 2];
  })
})"""


#: The Leaflet marker's own position (``markers`` is the map script's device -> marker map).
_MARKER_LATLNG = """d => {
  const markers = window.satoyamaConsole.markers;
  return (markers instanceof Map ? markers.get(d) : markers[d]).getLatLng();
}"""


def settled_markers(page: Page, names: list[str]) -> dict[str, Any]:
    """The map's zoom and each marker's centre on the screen, once the map has stopped
    moving (fitting the markers animates the zoom: mid-way, pins stand between two zooms)."""
    samples: list[dict[str, Any]] = [{}]

    def still() -> bool:
        now: dict[str, Any] = page.evaluate(_MARKERS_NOW, names)
        before = samples[-1]
        samples.append(now)
        return not now["moving"] and now == before

    until_sync(still, LIVE_S, "the map to stop moving")
    return samples[-1]


def test_markers_stand_where_each_device_is_configured(browsing: Browsing, site: Site) -> None:
    ops = browsing.open(USERS["ops"])
    page = on_map(ops)
    for name in DEVICES:
        expect(marker(page, name)).to_be_visible()
    assert page.locator(".leaflet-marker-pane [data-testid^='marker-']").count() == len(DEVICES)
    names = list(DEVICES)
    settled = settled_markers(page, names)
    zoom = settled["zoom"]
    centres = dict(zip(names, settled["at"], strict=True))
    for name in names:
        device = parse(site.configs[name]).device
        latlng = page.evaluate(_MARKER_LATLNG, name)
        assert (latlng["lat"], latlng["lng"]) == (device.latitude, device.longitude), name
    # On the screen, each marker is offset from the first by what the configured
    # coordinates give in Web Mercator at the map's zoom (within 1.5 px).
    first, *others = DEVICES
    f = parse(site.configs[first]).device
    fx, fy = mercator_px(f.latitude, f.longitude, zoom)
    for name in others:
        d = parse(site.configs[name]).device
        x, y = mercator_px(d.latitude, d.longitude, zoom)
        got = (centres[name][0] - centres[first][0], centres[name][1] - centres[first][1])
        assert abs(got[0] - (x - fx)) <= 1.5 and abs(got[1] - (y - fy)) <= 1.5, (name, got)
    # and the map's picture came from the test tile set on this machine
    assert site.tiles.served, "no tile was loaded"


# --- 2. a detection, live ----------------------------------------------------------------------


def test_a_detection_and_a_closed_trap_appear_live(browsing: Browsing, site: Site) -> None:
    """The farmer's map is open; the boar passes the east paddy's detector (its pin driven
    in the device's process): the event is listed without a reload.  The trap closes:
    the marker turns to a closed trap, live."""
    device = "east-paddy-01"
    tanaka = browsing.open(USERS["tanaka"])
    page = on_map(tanaka)
    expect(marker(page, device)).to_have_attribute("data-state", "ok")
    remember_page(page)
    listed = set(page.locator("#events li[data-id]").evaluate_all(
        "items => items.map(i => i.getAttribute('data-id'))"))  # fmt: skip

    site.devices[device].apply("pir_north", "motion", 0.3)
    detections = page.locator("#events li[data-kind='animal_detected']").filter(
        has=page.locator(f"a[href='/device/{device}']")
    )

    def new_rows() -> list[str]:
        ids = detections.evaluate_all("items => items.map(i => i.getAttribute('data-id'))")
        return [i for i in ids if i not in listed]

    until_sync(lambda: bool(new_rows()), LIVE_S, "the detection in the event list")
    row = page.locator(f"#events li[data-id='{new_rows()[0]}']")
    expect(row).to_be_visible()
    assert row.get_attribute("data-severity") == "alarm"

    site.devices[device].apply("trap_a", "close")
    expect(marker(page, device)).to_have_attribute("data-state", "trap_closed")
    expect(page.locator(f"#devices li[data-device='{device}']")).to_have_attribute(
        "data-state", "trap_closed"
    )
    expect(page.locator("#events li[data-kind='trap_triggered']").first).to_be_visible()
    assert same_page(page), "the page was reloaded"
    # the device page says so too (loaded now)
    tanaka.goto(site, f"/device/{device}")
    expect(page.get_by_test_id("device-state")).to_have_attribute("data-state", "trap_closed")
    expect(page.get_by_test_id("trap-state")).to_have_attribute("data-closed", "true")
    # the hunter of the same site goes to look, and marks the capture checked
    ryoshi = browsing.open(USERS["ryoshi"], PHONE)
    ryoshi.goto(site, f"/device/{device}")
    capture = ryoshi.page.locator("[data-testid='capture'][data-sensor='trap_a']")
    expect(capture).to_be_visible()
    ryoshi.page.get_by_test_id("trap-checked-trap_a").click()
    expect(capture).to_contain_text("ryoshi")
    expect(
        ryoshi.page.locator("[data-testid='action'][data-action='trap_checked']")
    ).to_contain_text("ryoshi")


# --- 3. a water gauge's colour as the river rises -----------------------------------------------


#: The four Japanese river stages by their official names, and the colour the console
#: gives each (docs/console.md's table), as css says them.
RIVER_RANKS = {"水防団待機水位": 1, "氾濫注意水位": 2, "避難判断水位": 3, "氾濫危険水位": 4}
STAGE_COLOURS = {1: "#00a040", 2: "#e6be00", 3: "#ff2800", 4: "#aa00aa"}

#: Every change of the gauge's marker: its stage and the pin's colour at that moment.
_RECORD_GAUGE = """device => {
  window.__gauge = [];
  const el = document.querySelector(`.leaflet-marker-pane [data-testid='marker-${device}']`);
  const note = () => window.__gauge.push([el.getAttribute("data-stage"),
    getComputedStyle(el.querySelector(".marker-pin")).backgroundColor]);
  new MutationObserver(note).observe(el, {attributes: true, attributeFilter: ["data-stage"]});
}"""


def highest_stage(config: str, scenario: Scenario) -> tuple[int, str]:
    """The highest river stage the scenario says its gauge reaches (its expected
    ``water_level_alert`` events), as (rank, label), from the device's configuration."""
    rules = parse(config).rules.values()
    lines = {(r.sensor, s.name): s.label for r in rules if isinstance(r, WaterRuleConfig)
             for s in r.stages}  # fmt: skip
    reached = [lines[e.data["sensor"], e.data["stage"]] for e in scenario.expect
               if e.event == "water_level_alert" and not e.absent]  # fmt: skip
    return max((RIVER_RANKS[label], label) for label in reached)


def test_a_gauge_takes_the_colour_of_the_highest_stage_the_river_scenario_reaches(
    browsing: Browsing, site: Site
) -> None:
    """The river-rising bench scenario played on the gauge on its own timeline (both
    probes, the cut cable, the unplugged ranger); the municipal officer's open map follows
    it live, each stage in its colour, and ends in the colour of the highest river stage
    the scenario reaches (the bridge's 氾濫危険水位), without a reload."""
    device = "east-river-01"
    yakuba = browsing.open(USERS["yakuba"])
    page = on_map(yakuba)
    remember_page(page)
    gauge = marker(page, device)
    expect(gauge).to_have_attribute("data-stage", "0")
    page.evaluate(_RECORD_GAUGE, device)
    rank, label = highest_stage(site.configs[device], RIVER)
    assert (rank, label) == (4, "氾濫危険水位"), "the scenario's highest stage"

    played = site.devices[device].play(SCENARIOS / "river-rising.toml")
    alerts = {(e["data"]["sensor"], e["data"]["stage"]) for e in played
              if e["kind"] == "water_level_alert"}  # fmt: skip
    assert ("level_bridge", "danger") in alerts, played
    assert ("level_probe", "danger") not in alerts, played

    expect(gauge).to_have_attribute("data-stage", str(rank))
    expect(gauge).to_have_attribute("data-state", "alarm")
    expect(gauge.locator(".marker-badge")).to_have_text(str(rank))
    until_sync(coloured(page, device, rgb(STAGE_COLOURS[rank])), LIVE_S,
               f"the gauge in {label}'s colour")  # fmt: skip
    expect(page.locator(f"#devices li[data-device='{device}']")).to_have_attribute(
        "data-stage", str(rank)
    )
    # each stage the map showed on the way, in its own colour, never falling back
    seen = page.evaluate("window.__gauge")
    stages = [int(stage) for stage, _ in seen]
    assert stages == sorted(stages) and stages[-1] == rank, seen
    for stage, colour in seen:
        assert colour == rgb(STAGE_COLOURS[int(stage)]), seen
    assert same_page(page), "the page was reloaded"

    yakuba.goto(site, f"/device/{device}")
    expect(page.get_by_test_id("water-stage")).to_have_attribute("data-rank", str(rank))
    expect(page.get_by_test_id("hydrograph-24h").first).to_be_visible()
    # the software its status message says it runs (the notifier's devices.version)
    expect(page.get_by_test_id("version")).to_have_text(edge_version)


# --- 4. a nap alarm, acknowledged remotely -----------------------------------------------------


def device_sheet_remote_acks(device: DeviceProcess) -> list[tuple[float, str]]:
    """The remote acknowledgements on the device's own check sheet (its nap log)."""
    log = NapLog(device.state / "naps.sqlite3")
    try:
        today = dt.datetime.now(JST).date()
        entries = log.day(today, JST) + log.day(today - dt.timedelta(days=1), JST)
    finally:
        log.close()
    sheet = build_sheet(entries, {COT: ""}, date=today)
    return [ack for row in sheet.rows for alarm in row.alarms for ack in alarm.remote_acks]


def test_a_nap_alarm_is_acknowledged_remotely_and_the_device_still_sounds(
    browsing: Browsing, site: Site
) -> None:
    device = "hiyoko-nap-01"
    nap = site.devices[device]
    hoiku = browsing.open(USERS["hoiku"], PHONE)
    page = on_map(hoiku)
    remember_page(page)
    expect(marker(page, device)).to_have_attribute("data-state", "ok")

    nap.apply("mat_1", "lie_down", "supine")
    until_sync(lambda: "posture_check" in nap.kinds(), LIVE_S, "a posture check")
    nap.apply("mat_1", "roll_to", "prone")
    # the map turns to an alarm without a reload ...
    expect(marker(page, device)).to_have_attribute("data-state", "alarm")
    expect(page.locator("#events li[data-kind='prone_alarm']").first).to_be_visible()
    assert same_page(page)
    assert nap.actuators()["buzzer"] is True

    # ... the device page lists the cot's alarm with its button
    hoiku.goto(site, f"/device/{quote(device)}")
    cot = page.locator(f"[data-testid='cot'][data-cot='{COT}']")
    expect(cot).to_have_attribute("data-alarm", "prone_alarm")
    page.get_by_test_id(f"cot-ack-{COT}").click()
    expect(page.get_by_test_id("cot-acknowledged")).to_contain_text("hoiku")
    expect(page.get_by_test_id("ack-unsent")).to_have_count(0)

    # the device wrote it on its own sheet as a remote acknowledgement, by the user ...
    until_sync(lambda: [by for _, by in device_sheet_remote_acks(nap)] == ["hoiku"], LIVE_S,
               "the remote acknowledgement on the device's sheet")  # fmt: skip
    # ... and still sounds: only turning the infant ends the alarm
    assert nap.actuators()["buzzer"] is True
    assert "alarm_cleared" not in nap.kinds()

    # the console's sheet lists it as remote (遠隔確認), by the user
    page.get_by_test_id("sheet-link").click()
    expect(page.get_by_role("cell", name="遠隔確認 (remote) by hoiku")).to_be_visible()

    # a staff member in the room presses the cot's button and turns the infant onto the
    # back: the device ends the alarm, the buzzer stops, the map calms
    hoiku.goto(site, "/")
    on_map(hoiku)
    expect(marker(page, device)).to_have_attribute("data-state", "alarm")
    nap.apply("naps", "acknowledge")
    nap.apply("mat_1", "roll_to", "supine")
    until_sync(lambda: nap.actuators()["buzzer"] is False, LIVE_S, "the buzzer to stop")
    expect(marker(page, device)).to_have_attribute("data-state", "ok")
    assert "alarm_cleared" in nap.kinds()


# --- 5. sites apart ----------------------------------------------------------------------------


_RECORD_STREAM = """
() => {
  window.__heard = [];
  const source = window.satoyamaConsole.source;
  for (const kind of ["state", "event"]) {
    source.addEventListener(kind, m => window.__heard.push(JSON.parse(m.data).device));
  }
}
"""


def test_a_farmer_never_sees_another_sites_devices(browsing: Browsing, site: Site) -> None:
    east = [d for d, p in DEVICES.items() if p.site != WEST]
    suzuki = browsing.open(USERS["suzuki"])  # farmer of the west paddy only
    page = on_map(suzuki)
    page.evaluate(_RECORD_STREAM)
    expect(marker(page, "west-paddy-01")).to_be_visible()
    assert page.locator(".leaflet-marker-pane [data-testid^='marker-']").count() == 1
    assert page.locator("#devices li[data-device]").count() == 1

    # an east detection, seen live on the east farmer's map ...
    tanaka = browsing.open(USERS["tanaka"])
    east_page = on_map(tanaka)
    site.devices["east-paddy-01"].apply("pir_north", "motion", 0.3)
    east_ids = "items => items.map(i => i.getAttribute('data-id'))"
    before = set(east_page.locator("#events li[data-id]").evaluate_all(east_ids))
    until_sync(lambda: set(east_page.locator("#events li[data-id]").evaluate_all(east_ids))
               - before != set(), LIVE_S, "the east detection on the east map")  # fmt: skip
    # ... then a west one: once the west farmer has it, the stream (in order) has passed
    # the east one, and never carried it
    site.devices["west-paddy-01"].apply("pir_north", "motion", 0.3)
    expect(page.locator("#events li[data-kind='animal_detected']").first).to_be_visible()
    heard = page.evaluate("window.__heard")
    assert "west-paddy-01" in heard and not set(heard) & set(east), heard
    for row in page.locator("#events li[data-id]").all():
        assert row.locator("a").first.get_attribute("href") == "/device/west-paddy-01"

    # the east devices' pages, sheets and data: not found, as for a device that does not exist
    for device in [*east, "no-such-device"]:
        suzuki.goto(site, f"/device/{quote(device)}", status=404)
        expect(page.get_by_test_id("error-title")).to_have_text("ページが見つかりません")
        assert device not in page.locator("main").inner_text()
        suzuki.goto(site, f"/device/{quote(device)}/sheet", status=404)
        api = page.request.get(f"{site.url}/api/device/{quote(device)}")
        assert api.status == 404
    state = page.request.get(f"{site.url}/api/map").json()
    assert [d["device"] for d in state["devices"]] == ["west-paddy-01"]


# --- 6. every page, phone and desktop: screenshots and axe-core --------------------------------


PAGES = [
    ("login", None, "/login"),
    ("map", "ops", "/"),
    ("device-paddy", "ops", "/device/east-paddy-01"),
    ("device-river", "ops", "/device/east-river-01"),
    ("device-nap", "ops", "/device/hiyoko-nap-01"),
    ("sheet", "ops", "/device/hiyoko-nap-01/sheet"),
    ("fleet", "ops", "/fleet"),
    ("not-found", "ops", "/device/no-such-device"),
]


def axe_problems(page: Page) -> list[str]:
    # evaluated through the DevTools protocol: the page's policy refuses inline scripts
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate("async () => await axe.run(document)")
    assert len(result["passes"]) > 10, "axe ran its rules"
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("width", ["phone", "desktop"])
def test_every_page_at_phone_and_desktop_width_passes_axe(
    browsing: Browsing, site: Site, width: str
) -> None:
    viewport = PHONE if width == "phone" else DESKTOP
    visitors = {None: browsing.open(None, viewport), "ops": browsing.open(USERS["ops"], viewport)}
    found: dict[str, list[str]] = {}
    for name, who, path in PAGES:
        visitor = visitors[who]
        visitor.goto(site, path, status=404 if name == "not-found" else 200)
        page = visitor.page
        if name == "map":
            on_map(visitor)
            expect(page.locator(".leaflet-tile-loaded").first).to_be_visible()
        page.wait_for_load_state("load")
        shot = site.shots / f"console-{name}-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 5_000, shot
        bad = axe_problems(page)
        if bad:
            found[name] = bad
    assert found == {}, json.dumps(found, ensure_ascii=False, indent=1)


# --- 7. the demo's console ---------------------------------------------------------------------


def test_edge_demo_prints_its_console_and_logins_that_work(tmp_path: Path) -> None:
    """``edge demo`` from a terminal: it prints the console's address and two logins, and
    keeps the console open after the scene until Enter; the farmer's login opens the map's
    data, which holds the demo's device."""
    main, side = os.openpty()
    demo = subprocess.Popen(
        [sys.executable, "-m", "edge", "demo", "--speed", "100", "--output", str(tmp_path)],
        stdin=side, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )  # fmt: skip
    os.close(side)
    try:
        assert demo.stdout is not None
        out = []
        for line in demo.stdout:  # up to the end of the scene; then it waits for Enter
            out.append(line)
            if line.startswith("Done in"):
                break
        text = "".join(out)
        url = re.search(r"web console on (http://127\.0\.0\.1:\d+)/", text)
        logins = dict(re.findall(r"console login \((\w+)\): (\S+ / \S+)", text))
        assert url is not None and set(logins) == {"operator", "farmer"}, text
        name, password = logins["farmer"].split(" / ")
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = browser.open(url.group(1) + "/login", timeout=10).read().decode()
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        fields = {"csrf": csrf.group(1), "name": name, "password": password, "lang": "ja"}
        browser.open(url.group(1) + "/login", urllib.parse.urlencode(fields).encode(), timeout=10)

        def on_the_map() -> list[str]:
            data = json.loads(browser.open(url.group(1) + "/api/map", timeout=10).read())
            return [d["device"] for d in data["devices"]]

        until_sync(lambda: on_the_map() == ["shiojiri-kataoka-01"], LIVE_S, "the demo's device")
        os.write(main, b"\n")
        assert demo.wait(timeout=60) == 0
    finally:
        os.close(main)
        if demo.poll() is None:  # Ctrl-C: the demo stops its broker, notifier and console
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()


def test_a_console_that_cannot_listen_stops_the_cloud_side(tmp_path: Path) -> None:
    """The console's port is taken: starting the simulated cloud side fails with the
    console's own words, and the notifier, the SMTP server and mosquitto are stopped."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        side = CloudSide(tmp_path / "cloud", console=ConsoleSetup(users=(USERS["ops"],)))
        side.console_port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=r"cannot listen on 127\.0\.0\.1"):
            side.start()
    assert side.console is None and side.notifier is None
    assert not side.broker.running
    # the user was added before: the console's own command line wrote it to the store
    listed = subprocess.run(
        [sys.executable, "-c", "import sys; from cloud.console.cli import main; sys.exit(main())",
         "--config", str(side.notifier_config), "user", "list"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert listed.split("\t")[:3] == ["ops", "operator", "*"]
