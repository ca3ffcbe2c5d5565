"""The console's static files: vendored code unchanged, colours that agree and read, and the
map page's script driven in Debian's Chromium.

The browser tests open tests/cloud/console/map_demo.html from a tiny local HTTP
server that serves cloud/console/static as ``/static``, the test tile set
(tests/data/tiles) as ``/tiles``, a fixed ``/api/map`` built from
:class:`~cloud.console.model.DeviceState` records (their state from the real
:func:`~cloud.console.model.marker_state`) and an ``/api/live`` Server-Sent Events
stream the test writes to.  Any request that would leave the machine is refused and
fails the test.  ``SATOYAMA_CONSOLE_SHOTS=DIR`` also keeps the screenshots there.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from cloud.chart import RIVER_STAGES
from cloud.console.i18n import labels
from cloud.console.model import DeviceState, EventRow, marker_state
from tests.support.browser import AXE, CHROMIUM, CHROMIUM_ARGS
from tests.support.waiting import until_sync

REPO = Path(__file__).resolve().parents[3]
STATIC = REPO / "cloud" / "console" / "static"
TILES = REPO / "tests" / "data" / "tiles"
DEMO = Path(__file__).with_name("map_demo.html")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
LAT, LON = 36.0794321, 137.9543219  # the tile set's first place (tests/data/tiles/make_tiles.py)
NOW = 1_764_900_000.0
#: The console's own policy (cloud/console/app.py): no inline script or style, nothing outside.
CSP = ("default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'")  # fmt: skip
STAGES_SEEN = {"flood_watch": 1, "flood_warning": 2, "evacuation": 3, "danger": 4}


# --- vendored files ---------------------------------------------------------------------------


def vendored(folder: Path) -> dict[str, str]:
    """file -> sha256 as the folder's VENDORED.md lists them."""
    table = re.findall(r"^\| ([^|\s]+) \| ([0-9a-f]{64}) \|$",
                       (folder / "VENDORED.md").read_text(), re.MULTILINE)  # fmt: skip
    assert table, f"{folder}/VENDORED.md lists its files"
    return dict(table)


@pytest.mark.parametrize("folder", [STATIC / "vendor" / "leaflet", AXE.parent],
                         ids=["leaflet", "axe-core"])  # fmt: skip
def test_vendored_files_are_the_ones_recorded(folder: Path) -> None:
    listed = vendored(folder)
    present = {str(p.relative_to(folder)) for p in folder.rglob("*")
               if p.is_file() and p.name != "VENDORED.md"}  # fmt: skip
    assert present == set(listed), "every vendored file is listed, and only those"
    for name, digest in listed.items():
        actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert actual == digest, f"{folder.name}/{name} differs from VENDORED.md: edited?"


def test_the_page_loads_only_vendored_scripts_that_exist() -> None:
    html = DEMO.read_text()
    for ref in re.findall(r'(?:src|href)="/static/([^"]+)"', html):
        assert (STATIC / ref).is_file(), ref
    assert "http://" not in html and "https://" not in html


# --- colours ----------------------------------------------------------------------------------


def css_colours() -> dict[str, str]:
    css = (STATIC / "console.css").read_text()
    return {name: value.lower() for name, value in
            re.findall(r"--((?:state|stage)-[a-z_0-9-]+):\s*(#[0-9a-fA-F]{6});", css)}  # fmt: skip


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_stage_colours_are_the_mail_charts_river_colours() -> None:
    colours = css_colours()
    for name, _, rgb in RIVER_STAGES:
        assert colours[f"stage-{STAGES_SEEN[name]}"] == "#{:02x}{:02x}{:02x}".format(*rgb), name


def test_every_glyph_reads_on_its_fill_at_aa_contrast() -> None:
    colours = css_colours()
    fills = [name for name in colours if not name.endswith("-ink")]
    assert len(fills) == 7 + 4, "seven marker states and four river stages"
    for fill in fills:
        ratio = contrast(colours[fill], colours[f"{fill}-ink"])
        assert ratio >= 4.5, f"{fill}: {ratio:.2f}"


# --- the page in Chromium ---------------------------------------------------------------------


def state(device: str, dlat: float, dlon: float, **fields: Any) -> DeviceState:
    base = DeviceState(device=device, site="north", lat=LAT + dlat, lon=LON + dlon, online=True,
                       last_seen=NOW - 60, version="1.4.0", capabilities=["wildlife"])  # fmt: skip
    s = msgspec.structs.replace(base, **fields)
    return msgspec.structs.replace(s, state=marker_state(s))


DEVICES = [
    state("paddy-pir", 0.0, 0.0),
    state("paddy-trap", 0.0, 0.0, capabilities=["trap"]),  # on the same post as paddy-pir
    state("trap-a", 0.0010, -0.0015, capabilities=["trap"], trap_closed=True,
          trap_closed_since=NOW - 600),
    state("gauge-1", -0.0010, 0.0012, capabilities=["water"], water_level_cm=183.0,
          water_stage="flood_warning", water_stage_rank=2),
    state("gauge-2", -0.0012, -0.0008, capabilities=["water"], water_level_cm=244.0,
          water_stage="danger", water_stage_rank=4),
    state("nursery-1", 0.0012, 0.0015, capabilities=["nursery"], nap_alarm="prone_alarm",
          nap_alarm_cot="cot-3"),
    state("old-pi", 0.0005, 0.0005, online=False, last_seen=NOW - 7200),
    state("faulty", -0.0004, -0.0016, faults=["pir_north"]),
    state("no-position", 0.0, 0.0, lat=None, lon=None),
]  # fmt: skip


class Site:
    """The tiny HTTP server the demo page is opened from."""

    def __init__(self, language: str = "ja") -> None:
        self.page = (DEMO.read_text().replace("__LABELS__", json.dumps(labels(language)))
                     .replace('lang="ja"', f'lang="{language}"')
                     .replace('data-language="ja"', f'data-language="{language}"'))  # fmt: skip
        self.map = msgspec.json.encode({"devices": DEVICES,
                                        "tiles": {"url": "/tiles/{z}/{x}/{y}.png",
                                                  "credit": "テスト用タイル"}})  # fmt: skip
        self.streams: list[queue.Queue[bytes]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def send(self, kind: str, record: msgspec.Struct) -> None:
        """One Server-Sent Event to every open stream."""
        frame = f"event: {kind}\ndata: ".encode() + msgspec.json.encode(record) + b"\n\n"
        with self.lock:
            for stream in self.streams:
                stream.put(frame)

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Security-Policy", CSP)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path in ("/", "/map"):
                    self._reply(200, site.page.encode(), "text/html; charset=utf-8")
                elif path == "/api/map":
                    self._reply(200, site.map, "application/json")
                elif path == "/api/live":
                    self._stream()
                elif path.startswith(("/static/", "/tiles/")):
                    base = STATIC if path.startswith("/static/") else TILES
                    file = (base / path.split("/", 2)[2]).resolve()
                    if base.resolve() not in file.parents or not file.is_file():
                        self._reply(404, b"not here", "text/plain")
                        return
                    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
                    self._reply(200, file.read_bytes(),
                                kinds.get(file.suffix, "application/octet-stream"))  # fmt: skip
                else:
                    self._reply(404, b"not here", "text/plain")

            def _stream(self) -> None:
                stream: queue.Queue[bytes] = queue.Queue()
                with site.lock:
                    site.streams.append(stream)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.end_headers()
                    self.wfile.write(b": hello\n\n")
                    self.wfile.flush()
                    while not site.stopping.is_set():
                        try:
                            frame = stream.get(timeout=0.5)
                        except queue.Empty:
                            frame = b": ping\n\n"
                        self.wfile.write(frame)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with site.lock:
                        site.streams.remove(stream)

        return Handler


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    try:
        yield s
    finally:
        s.close()


def open_page(browser: Browser, site: Site, viewport: dict[str, int]) -> tuple[Page, list[str]]:
    """The demo page, loaded with its markers and live stream; and a list of what went wrong:
    a request that tried to leave the machine, a script error, a refusal by the page's
    Content-Security-Policy."""
    problems: list[str] = []
    page = browser.new_page(viewport=viewport)  # type: ignore[arg-type]
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if message.type == "error" and "404" not in message.text else None)  # fmt: skip

    def guard(route: Route) -> None:
        if route.request.url.startswith(site.url):
            route.continue_()
        else:
            problems.append(f"outside: {route.request.url}")
            route.abort()

    page.route("**/*", guard)
    page.goto(site.url + "/")
    page.wait_for_selector("#map[data-loaded='true']")
    page.wait_for_selector("#map[data-live-state='on']")
    return page, problems


def shoot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("SATOYAMA_CONSOLE_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def test_one_marker_per_placed_device_in_its_state_and_a_list_of_all(
    browser: Browser, site: Site
) -> None:
    page, problems = open_page(browser, site, DESKTOP)
    try:
        markers = page.locator(".leaflet-marker-pane [data-testid^='marker-']")
        placed = [d for d in DEVICES if d.lat is not None]
        assert markers.count() == len(placed)
        for d in placed:
            marker = page.locator(f"[data-testid='marker-{d.device}']")
            assert marker.get_attribute("data-state") == d.state
            label = marker.get_attribute("aria-label") or ""
            assert label.startswith(d.device) and labels("ja")[f"state_{d.state}"] in label
        # the marker states the fixture covers: all six a device can be in
        assert {d.state for d in DEVICES} == {"alarm", "trap_closed", "fault", "offline",
                                              "warning", "ok"}  # fmt: skip
        # two devices on one post are both visible, side by side
        one = page.locator("[data-testid='marker-paddy-pir']").bounding_box()
        two = page.locator("[data-testid='marker-paddy-trap']").bounding_box()
        assert one is not None and two is not None
        assert abs(one["x"] - two["x"]) + abs(one["y"] - two["y"]) >= 36, "pins do not cover"
        # water gauges wear their stage: colour class, wave glyph and the rank
        gauge = page.locator("[data-testid='marker-gauge-2']")
        assert "stage-4" in (gauge.get_attribute("class") or "")
        assert gauge.locator(".marker-badge").inner_text() == "4"
        assert page.locator("[data-testid='marker-nursery-1'] .marker-badge").count() == 0
        # every device, placed or not, in the accessible list, worst first
        items = page.locator("#devices li")
        assert items.count() == len(DEVICES)
        order = [items.nth(i).get_attribute("data-state") or "" for i in range(items.count())]
        worst_first = ["alarm", "trap_closed", "fault", "offline", "warning", "ok"]
        assert order == sorted(order, key=worst_first.index)
        unplaced = page.locator("[data-testid='device-no-position']")
        assert labels("ja")["position_unknown"] in unplaced.inner_text()
        assert unplaced.locator("a").get_attribute("href") == "/device/no-position"
        # the legend shows each state and each river stage, in words
        legend = page.locator("#legend li")
        assert legend.count() == 6 + 4
        for rank in range(1, 5):
            assert labels("ja")[f"rank_{rank}"] in page.locator("#legend").inner_text()
        # the map came from the test tile set, nothing from outside
        tiles = page.locator(".leaflet-tile-pane img.leaflet-tile-loaded")
        until_sync(lambda: tiles.count() > 0, 10, "a tile loaded")
        assert all("/tiles/16/" in (tiles.nth(i).get_attribute("src") or "")
                   for i in range(tiles.count()))  # fmt: skip
        assert problems == []
    finally:
        page.close()


def test_the_loaded_map_stands_still_so_a_tap_lands_on_its_marker(
    browser: Browser, site: Site
) -> None:
    """Once the map says it is loaded, nothing moves: a zoom animation from the page's
    default view would carry the markers away from a finger (or a test's click) that
    aimed at them a moment earlier, and the tap would land on the bare map."""
    page, problems = open_page(browser, site, PHONE)
    try:
        marker = page.locator("[data-testid='marker-trap-a']")
        before = marker.bounding_box()
        # two frames later: Leaflet starts a zoom animation on the next frame
        animating = page.evaluate(
            "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() =>"
            " done(document.getElementById('map').classList.contains('leaflet-zoom-anim')))))"
        )
        assert animating is False, "the map is still zooming after it said it was loaded"
        assert marker.bounding_box() == before
        marker.click()
        page.locator(".leaflet-popup a[href='/device/trap-a']").wait_for()
        assert problems == []
    finally:
        page.close()


def test_a_marker_opens_its_popup_from_the_keyboard(browser: Browser, site: Site) -> None:
    page, problems = open_page(browser, site, DESKTOP)
    try:
        marker = page.locator("[data-testid='marker-trap-a']")
        assert marker.get_attribute("tabindex") == "0"
        marker.focus()
        page.keyboard.press("Enter")
        link = page.locator(".leaflet-popup a[href='/device/trap-a']")
        link.wait_for()
        assert labels("ja")["state_trap_closed"] in page.locator(".leaflet-popup").inner_text()
        assert problems == []
    finally:
        page.close()


def test_the_live_stream_recolours_moves_and_adds_events(browser: Browser, site: Site) -> None:
    page, problems = open_page(browser, site, DESKTOP)
    try:
        gauge = next(d for d in DEVICES if d.device == "gauge-1")
        before = page.locator("[data-testid='marker-gauge-1']").bounding_box()
        risen = msgspec.structs.replace(gauge, water_level_cm=215.0, water_stage="evacuation",
                                        water_stage_rank=3, lat=LAT - 0.0005)  # fmt: skip
        site.send("state", msgspec.structs.replace(risen, state=marker_state(risen)))
        marker = page.locator("[data-testid='marker-gauge-1'][data-state='alarm']")
        marker.wait_for()
        assert "stage-3" in (marker.get_attribute("class") or "")
        assert marker.locator(".marker-badge").inner_text() == "3"
        after = marker.bounding_box()
        assert before is not None and after is not None
        assert after["y"] < before["y"], "moved north"
        row = page.locator("[data-testid='device-gauge-1']")
        assert row.get_attribute("data-state") == "alarm"
        # a trap reset: purple to green, still one marker
        trap = next(d for d in DEVICES if d.device == "trap-a")
        reset = msgspec.structs.replace(trap, trap_closed=False, trap_closed_since=None)
        site.send("state", msgspec.structs.replace(reset, state=marker_state(reset)))
        page.locator("[data-testid='marker-trap-a'][data-state='ok']").wait_for()
        assert page.locator("[data-testid='marker-trap-a']").count() == 1
        # a new event is prepended to the list
        event = EventRow(id="ev-1", device="paddy-pir", site="north", kind="animal_detected",
                         severity="alarm", ts="2026-12-05T05:00:00Z", received_at=NOW,
                         summary="北端の柵で動物を検知 <b>")  # fmt: skip
        site.send("event", event)
        first = page.locator("#events li").first
        page.locator("[data-testid='event'][data-kind='animal_detected']").wait_for()
        assert first.get_attribute("data-kind") == "animal_detected"
        assert "北端の柵で動物を検知 <b>" in first.inner_text(), "summary shown as text"
        assert page.locator("#events li.empty").count() == 0
        site.send("event", event)  # the same event again (a reconnect) is not listed twice
        later = msgspec.structs.replace(event, id="ev-2", kind="trap_triggered")
        site.send("event", later)
        page.locator("[data-testid='event'][data-kind='trap_triggered']").wait_for()
        assert page.locator("[data-testid='event']").count() == 2
        assert problems == []
    finally:
        page.close()


def test_phone_and_desktop_layouts_with_screenshots(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    page, _ = open_page(browser, site, PHONE)
    try:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], "nothing wider than the phone's screen"
        box = page.locator("#map").bounding_box()
        devices = page.locator("#devices").bounding_box()
        assert box is not None and devices is not None
        assert box["width"] >= PHONE["width"] - 40, "the map takes the screen's width"
        assert devices["y"] >= box["y"] + box["height"], "the lists come below the map"
        shoot(page, tmp_path / "console-map-phone.png")
    finally:
        page.close()
    page, _ = open_page(browser, site, DESKTOP)
    try:
        box = page.locator("#map").bounding_box()
        devices = page.locator("#devices").bounding_box()
        assert box is not None and devices is not None
        assert devices["x"] >= box["x"] + box["width"], "the lists sit beside the map"
        shoot(page, tmp_path / "console-map-desktop.png")
    finally:
        page.close()
    for name in ("console-map-phone.png", "console-map-desktop.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_axe_core_finds_no_serious_violation(
    browser: Browser, site: Site, viewport: dict[str, int]
) -> None:
    page, _ = open_page(browser, site, viewport)
    try:
        # with a popup open, too (opened from the keyboard: the tap is the test above)
        page.locator("[data-testid='marker-trap-a']").focus()
        page.keyboard.press("Enter")
        page.locator(".leaflet-popup").wait_for()
        # evaluated through the DevTools protocol: the page's policy refuses inline scripts
        page.evaluate(AXE.read_text())
        result = page.evaluate("async () => await axe.run(document)")
    finally:
        page.close()
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == []
    assert len(result["passes"]) > 10, "axe ran its rules"


def test_english_labels_come_from_the_page_not_the_script(browser: Browser) -> None:
    english = Site(language="en")
    try:
        page, problems = open_page(browser, english, DESKTOP)
        try:
            words = labels("en")
            marker = page.locator("[data-testid='marker-gauge-2']")
            assert marker.get_attribute("aria-label") == (
                f"gauge-2: {words['state_alarm']}, {words['rank_4']} 4"
            )
            legend = page.locator("#legend").inner_text()
            assert words["state_trap_closed"] in legend and words["rank_1"] in legend
            assert "わな" not in page.locator("#devices").inner_text()
            assert problems == []
        finally:
            page.close()
    finally:
        english.close()
