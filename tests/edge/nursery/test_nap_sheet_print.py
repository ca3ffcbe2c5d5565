"""The nap check sheet printed: a full nap period for six cots on one A4 landscape page,
every check column on the page, rendered by real headless Chromium (Playwright)."""

# ruff: noqa: RUF001  (Japanese text: full-width parentheses are right there)

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from playwright.sync_api import sync_playwright

from edge.nursery.log import NapEntry
from edge.nursery.sheet import JST, build_sheet, render_html
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

DAY = dt.date(2026, 11, 24)
MM = 96 / 25.4  # CSS px per mm
MARGIN_MM = 8
PRINTABLE_W = (297 - 2 * MARGIN_MM) * MM
PRINTABLE_H = (210 - 2 * MARGIN_MM) * MM
PNG = Path("/tmp/h/nap_sheet.png")

CLIPPED = """() => [...document.querySelectorAll('th.slot, td.slot, td.slot-x')]
  .filter(el => el.scrollWidth > el.clientWidth || el.scrollHeight > el.clientHeight + 2)
  .map(el => el.getAttribute('data-slot') || el.title || el.textContent)"""
"""Cells whose content does not fit them (the browser squeezes a too-wide table to the page
and hides what overflows: a cut column in all but name)."""


def at(hour: int, minute: int, second: int = 0) -> float:
    return dt.datetime(2026, 11, 24, hour, minute, second, tzinfo=JST).timestamp()


def a_busy_afternoon(cots: list[str]) -> list[NapEntry]:
    """Six cots asleep 12:30-15:00, checked every 5 min, with alarms, acks, a missed
    check (a restart) and a mat that read zero for ten minutes."""
    out: list[NapEntry] = []
    for i, cot in enumerate(cots):
        out.append(NapEntry(at(12, 30, 3), cot, "nap_start", ""))
        for k in range(31):
            t = at(12, 30, 3) + 300 * k
            if cot == cots[1] and k == 14:
                continue  # 13:40: the daemon was restarting
            if cot == cots[2] and 6 <= k <= 7:
                continue  # mat fault: by hand
            out.append(NapEntry(t, cot, "posture_check", ["supine", "left", "right"][(i + k) % 3]))
        out.append(NapEntry(at(15, 0, 40), cot, "wake", ""))
    a = cots[0]
    out += [
        NapEntry(at(13, 12, 30), a, "prone_alarm", "prone"),
        NapEntry(at(13, 12, 50), a, "ack", "prone_alarm", "button"),
        NapEntry(at(13, 13, 10), a, "ack", "prone_alarm", "YT"),
        NapEntry(at(13, 13, 12), a, "alarm_cleared", "prone_alarm", "button"),
        NapEntry(at(14, 21), cots[3], "apnea_alarm", "supine"),
        NapEntry(at(14, 21, 30), cots[3], "ack", "apnea_alarm", "KS"),
        NapEntry(at(14, 21, 31), cots[3], "alarm_cleared", "apnea_alarm", "KS"),
        NapEntry(at(13, 0, 20), cots[2], "by_hand", "all_zero"),
        NapEntry(at(13, 9, 50), cots[2], "by_hand_end", "all_zero"),
        NapEntry(at(12, 45), "", "staff_check", "", "MA"),
        NapEntry(at(12, 31), "", "climate", "22.5/48", "MA"),
        NapEntry(at(14, 1), "", "climate", "23.0/45", "KS"),
    ]
    return sorted(out, key=lambda x: x.t)


def test_a_full_nap_period_for_six_cots_prints_on_one_a4_landscape_page(tmp_path: Path) -> None:
    cots = [f"ひよこ-{i}" for i in range(1, 7)]
    names = ["さくら", "はると", "ゆい", "そうた", "ひまり", "れん"]
    children = dict(zip(cots, names, strict=True))
    sheet = build_sheet(a_busy_afternoon(cots), children, date=DAY, period=("12:30", "15:00"),
                        facility="さとやま保育園", class_name="ひよこ組（0歳児）")
    assert len(sheet.slots) == 31
    page_html = tmp_path / "sheet.html"
    page_html.write_text(render_html(sheet), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": round(PRINTABLE_W),
                                              "height": round(PRINTABLE_H)})
            page.goto(page_html.as_uri())
            page.emulate_media(media="print")
            pdf = page.pdf(prefer_css_page_size=True, print_background=True)
            # Every check column lies inside the printable width of the page.
            heads = page.locator("th.slot").all()
            assert len(heads) == 31
            for head in heads:
                box = head.bounding_box()
                assert box is not None
                assert box["x"] >= 0 and box["x"] + box["width"] <= PRINTABLE_W, head.inner_text()
            for cell in page.locator("td.slot").all():
                box = cell.bounding_box()
                assert box is not None and box["x"] + box["width"] <= PRINTABLE_W
            assert page.evaluate(CLIPPED) == []  # and nothing in them is cut
            # ... and the whole sheet within the printable height: one page.
            body = page.locator("body").bounding_box()
            assert body is not None and body["height"] <= PRINTABLE_H
            # What a director must see on it.
            text = page.locator("body").inner_text()
            for must in ("午睡チェック表", "さとやま保育園", "ひよこ組", "施設長", "担当",
                         "室温", "湿度", "欠測", "手で確認", "入眠", "起床",
                         "うつぶせ寝警報", "無呼吸警報", "YT", "KS"):
                assert must in text, must
            assert page.locator("td.slot.missed").count() == 1
            assert page.locator("td.slot.alarm").count() == 2
            PNG.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(PNG), full_page=True)
        finally:
            browser.close()
    assert pdf.startswith(b"%PDF")
    counts = [int(n) for n in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", pdf)]
    counts += [int(n) for n in re.findall(rb"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", pdf)]
    assert counts and max(counts) == 1, counts


def test_a_whole_day_is_split_into_pages_with_the_header_repeated(tmp_path: Path) -> None:
    cots = ["A-1", "A-2"]
    entries = [NapEntry(at(8, 0), "A-1", "nap_start", ""),
               NapEntry(at(8, 0), "A-1", "posture_check", "supine"),
               NapEntry(at(17, 55), "A-1", "posture_check", "supine")]
    sheet = build_sheet(entries, dict.fromkeys(cots, ""), date=DAY)
    assert len(sheet.slots) == 12 * 10  # 08:00 .. 17:55
    page_html = tmp_path / "day.html"
    page_html.write_text(render_html(sheet), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": round(PRINTABLE_W), "height": 600})
            page.goto(page_html.as_uri())
            page.emulate_media(media="print")
            pdf = page.pdf(prefer_css_page_size=True, print_background=True)
            tables = page.locator("table.grid").all()
            assert len(tables) >= 3
            seen: list[str] = []
            for table in tables:
                assert table.locator("th.cot-head").count() == 1  # header repeated per page
                for head in table.locator("th.slot").all():
                    box = head.bounding_box()
                    assert box is not None and box["x"] + box["width"] <= PRINTABLE_W
                    seen.append(head.get_attribute("data-slot") or "")
            assert seen == sheet.slots  # no column lost or repeated between pages
            assert page.evaluate(CLIPPED) == []
        finally:
            browser.close()
    counts = [int(n) for n in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", pdf)]
    counts += [int(n) for n in re.findall(rb"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", pdf)]
    assert counts and max(counts) == len(tables), counts


def test_long_labels_two_naps_and_long_initials_are_never_cut(tmp_path: Path) -> None:
    cots = ["nursery-room-2-cot-12", "ひよこ-2"]
    entries = []
    for cot in cots:
        entries += [NapEntry(at(9, 30), cot, "nap_start", ""),
                    NapEntry(at(9, 30), cot, "posture_check", "supine"),
                    NapEntry(at(10, 10), cot, "wake", ""),
                    NapEntry(at(12, 0), cot, "nap_start", ""),
                    NapEntry(at(12, 1), cot, "prone_alarm", "prone"),
                    NapEntry(at(12, 2), cot, "apnea_alarm", "prone"),
                    NapEntry(at(12, 2, 30), cot, "by_hand", "no_answer"),
                    NapEntry(at(12, 20), cot, "by_hand_end", "no_answer"),
                    NapEntry(at(12, 25), cot, "wake", "")]
    entries += [NapEntry(at(12, 1, 20), "", "staff_check", "", who)
                for who in ("ABCDEFGH", "IJKLMNOP", "QRSTUVWX")]
    entries.append(NapEntry(at(12, 5), "", "climate", "22.25/48.5", "ABCDEFGH"))
    sheet = build_sheet(sorted(entries, key=lambda x: x.t),
                        {cots[0]: "ながいなまえのこどもさん", cots[1]: ""}, date=DAY)
    assert len(sheet.slots) == 36  # 09:30 .. 12:25: one full page of columns
    page_html = tmp_path / "long.html"
    page_html.write_text(render_html(sheet), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": round(PRINTABLE_W),
                                              "height": round(PRINTABLE_H)})
            page.goto(page_html.as_uri())
            page.emulate_media(media="print")
            assert page.evaluate(CLIPPED) == []
            assert page.evaluate("""() => [
              ...document.querySelectorAll('table.grid td, table.grid th')]
              .filter(el => el.scrollWidth > el.clientWidth)
              .map(el => el.textContent)""") == []
            for head in page.locator("th.slot").all():
                box = head.bounding_box()
                assert box is not None and box["x"] + box["width"] <= PRINTABLE_W
        finally:
            browser.close()
