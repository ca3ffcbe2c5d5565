"""The mails as a person sees them: rendered by Chromium on a 390-pixel phone screen.

The HTML part is opened with its inline pictures resolved (``cid:`` becomes a
``data:`` URL, as a mail client shows them).  What must hold on the first
screen (the top ~700 px): the map (picture and one-tap link) is visible, the
place's name is read before any technical id, and nothing is wider than the
screen.  ``SATOYAMA_MAIL_SHOTS=DIR`` also keeps the screenshots there.
"""

# ruff: noqa: RUF001

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from cloud.chart import level_chart, stage_lines
from cloud.config import SiteConfig
from cloud.mime import Mail
from cloud.render import JST, render_mail
from cloud.staticmap import StaticMaps
from tests.cloud.conftest import PLACE, TS, make_event
from tests.cloud.test_staticmap import TEMPLATE
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

PHONE = {"width": 390, "height": 844}
FIRST_SCREEN = 700
SITE = SiteConfig(name=PLACE, recipients=("farmer@example.jp",))
STAGES = {
    "sensor": "level_probe", "level_cm": 183.0, "stage": "flood_warning",
    "stage_label": "", "threshold_cm": 180.0, "direction": "rising", "place": "片丘橋 上流の護岸",
    "stages": [
        {"name": "flood_watch", "level_cm": 150.0, "label": ""},
        {"name": "flood_warning", "level_cm": 180.0, "label": ""},
        {"name": "evacuation", "level_cm": 210.0, "label": ""},
        {"name": "danger", "level_cm": 240.0, "label": ""},
    ],
}  # fmt: skip


def _mail(kind: str, severity: str, data: dict[str, Any], tmp_path: Path) -> tuple[Mail, str]:
    event = make_event(kind, severity, data=data)
    chart = None
    if kind == "water_level_alert":
        end = TS.timestamp()
        points = [(end - 86400 + i * 600, 100.0 + (i / 144) ** 3 * 83) for i in range(145)]
        chart = level_chart("level_probe.level_cm", points, end=end, mark=end, tz=JST,
                            threshold=180.0, stages=stage_lines(data))  # fmt: skip
    maps = StaticMaps(url_template=TEMPLATE, cache_dir=tmp_path / "tiles")
    mail = render_mail(event, SITE, language="ja", sender="里山エッジ <alerts@example.jp>",
                       recipient="farmer@example.jp", chart=chart, maps=maps,
                       received_at=TS + dt.timedelta(seconds=1))  # fmt: skip
    return mail, event.id


def _as_a_mail_client_shows_it(mail: Mail) -> str:
    html = mail.html
    for image in mail.related:
        url = "data:image/png;base64," + base64.b64encode(image.data).decode()
        html = html.replace(f"cid:{image.cid}", url)
    assert "cid:" not in html
    return html


def _top(page: Page, selector: str) -> float:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, selector
    return box["y"]


def _text_top(page: Page, text: str) -> float:
    """The y of the first element whose own text contains ``text``."""
    y = page.evaluate(
        """(text) => {
            const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            while (walker.nextNode()) {
                if (walker.currentNode.nodeValue.includes(text)) {
                    return walker.currentNode.parentElement.getBoundingClientRect().top;
                }
            }
            return null;
        }""",
        text,
    )
    assert y is not None, f"{text!r} is not on the page"
    return float(y)


CASES = {
    "pir": ("animal_detected", "alarm", {"sensor": "pir_north", "rule": "chase_north",
            "deterrent": "sounded", "siren": True, "strobe": True, "place": "北端の柵"},
            "北端の柵", ["pir_north", "chase_north"]),
    "trap": ("trap_triggered", "alarm", {"sensor": "trap_a",
             "closed_since": "2025-11-24T04:05:00Z", "reminder": False,
             "place": "沢沿いの箱わな"}, "沢沿いの箱わな", ["trap_a"]),
    "water": ("water_level_alert", "warning", STAGES, "片丘橋 上流の護岸", ["level_probe"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Any:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_phone_shows_what_where_and_the_map_on_its_first_screen(
    name: str, browser: Any, tmp_path: Path
) -> None:
    kind, severity, data, place, ids = CASES[name]
    mail, event_id = _mail(kind, severity, data, tmp_path)
    assert any(r.cid.startswith("map.") for r in mail.related), "the map picture is in the mail"
    page = browser.new_page(viewport=PHONE, device_scale_factor=1)
    try:
        page.set_content(_as_a_mail_client_shows_it(mail), wait_until="load")
        # the map: the picture and the one-tap link, both on the first screen
        picture = page.locator('img[src^="data:"]').first
        box = picture.bounding_box()
        assert box is not None and box["height"] > 120, "the map picture is shown"
        assert box["y"] + box["height"] <= FIRST_SCREEN
        link = page.get_by_role("link", name="地図で場所を開く")
        assert link.is_visible()
        link_box = link.bounding_box()
        assert link_box is not None and link_box["y"] + link_box["height"] <= FIRST_SCREEN
        assert link.get_attribute("href", timeout=1000).startswith("https://maps.gsi.go.jp/#")
        assert picture.evaluate("img => img.closest('a').href").startswith(
            "https://maps.gsi.go.jp/#"
        )
        assert _text_top(page, "出典：国土地理院") <= FIRST_SCREEN
        # the place's own name is read before any technical id
        place_y = _text_top(page, place)
        assert place_y < 200
        for technical in [*ids, "kataoka-east", "pi-east-01", event_id]:
            assert place_y < _text_top(page, technical), technical
        # nothing wider than the phone
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page is {width} px wide on a 390 px screen"
        wide = page.evaluate(
            """(limit) => [...document.querySelectorAll('body *')]
                 .filter(e => e.getBoundingClientRect().right > limit + 0.5)
                 .map(e => e.tagName)""",
            PHONE["width"],
        )
        assert wide == []
        shot = tmp_path / f"mail_{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        keep = os.environ.get("SATOYAMA_MAIL_SHOTS")
        if keep:
            shutil.copy(shot, Path(keep) / shot.name)
    finally:
        page.close()


def test_the_water_chart_fits_the_phone_and_is_readable(browser: Any, tmp_path: Path) -> None:
    mail, _ = _mail("water_level_alert", "warning", STAGES, tmp_path)
    page = browser.new_page(viewport=PHONE, device_scale_factor=1)
    try:
        page.set_content(_as_a_mail_client_shows_it(mail), wait_until="load")
        chart = page.locator('img[alt*="過去24時間"]')
        box = chart.bounding_box()
        assert box is not None
        assert box["width"] <= PHONE["width"] and box["width"] >= 340  # scaled to the screen
        natural = chart.evaluate("img => img.naturalWidth")
        # the chart's 19-px labels stay at least 10 px tall on the phone
        assert 19 * box["width"] / natural >= 10
    finally:
        page.close()
