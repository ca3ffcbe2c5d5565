"""The device page's hydrograph: read back as a person reads it, from its axes.

Each check maps the drawing back to centimetres and times through the axis
labels the picture prints (the y ticks' numbers, the x ticks' JST times,
computed here independently), never through the function's own scale, so a
wrong scale, a shifted axis or a line drawn across a gap is caught.  One test
renders the SVG in Chromium and looks at the pixels.
"""

# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Browser, sync_playwright

from cloud.chart import RIVER_STAGES
from cloud.console.hydrograph import LINE_COLOUR, svg
from cloud.console.model import Hydrograph, Point, WaterStage
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

NS = {"s": "http://www.w3.org/2000/svg"}
JST = dt.timezone(dt.timedelta(hours=9))
END = dt.datetime(2026, 12, 5, 14, 0, tzinfo=JST).timestamp()
STAGES = [
    WaterStage(name="flood_watch", label="", level_cm=150.0),
    WaterStage(name="flood_warning", label="", level_cm=180.0),
    WaterStage(name="evacuation", label="", level_cm=210.0),
    WaterStage(name="danger", label="", level_cm=240.0),
]


def rising(step_s: float = 600.0, skip: range = range(0)) -> list[Point]:
    """24 h of readings every ``step_s`` up to END, rising from 100 to 190 cm."""
    n = int(86400 // step_s)
    return [Point(END - 86400 + i * step_s, 100.0 + 90.0 * i / n) for i in range(n + 1)
            if i not in skip]  # fmt: skip


def parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def y_scale(root: ET.Element) -> tuple[float, float]:
    """(cm per pixel, cm at y=0) from the two outermost y tick labels."""
    ticks = [(float(t.get("y", "nan")), float(t.text or "nan"))
             for t in root.iterfind(".//s:text[@class='ytick']", NS)]  # fmt: skip
    assert len(ticks) >= 3, "the y axis has at least three numbered ticks"
    (ya, va), (yb, vb) = ticks[0], ticks[-1]
    slope = (vb - va) / (yb - ya)
    return slope, va - slope * ya


def x_scale(root: ET.Element, day: dt.date) -> tuple[float, float]:
    """(seconds per pixel, time at x=0) from the x tick labels read as JST times on ``day``
    or the day before (the labels say HH:MM only)."""
    found = []
    for t in root.iterfind(".//s:text[@class='xtick']", NS):
        hour, minute = (int(part) for part in (t.text or "").split(":"))
        when = dt.datetime.combine(day, dt.time(hour, minute), JST).timestamp()
        if when > END:
            when -= 86400
        found.append((float(t.get("x", "nan")), when))
    found.sort()
    assert len(found) >= 4
    (xa, ta), (xb, tb) = found[0], found[-1]
    slope = (tb - ta) / (xb - xa)
    return slope, ta - slope * xa


def polylines(root: ET.Element) -> list[list[tuple[float, float]]]:
    lines = []
    for p in root.iterfind(".//s:polyline[@class='level']", NS):
        pairs = (pair.split(",") for pair in (p.get("points") or "").split())
        lines.append([(float(a), float(b)) for a, b in pairs])
    return lines


def test_the_line_reads_back_as_the_readings_through_the_printed_axes() -> None:
    points = rising()
    root = parse(svg(Hydrograph(series="level_probe.level_cm", points=points, stages=STAGES),
                     now=END))  # fmt: skip
    cm_per_px, cm0 = y_scale(root)
    s_per_px, t0 = x_scale(root, dt.datetime.fromtimestamp(END, JST).date())
    [line] = polylines(root)
    assert len(line) == len(points)
    for (x, y), p in zip(line, points, strict=True):
        assert abs((t0 + s_per_px * x) - p.t) < 90, "x within 90 s (0.1 px rounding)"
        assert abs((cm0 + cm_per_px * y) - p.v) < 0.5, "y within 0.5 cm"
    assert cm_per_px < 0, "higher water is drawn higher up"


def test_every_stage_line_at_its_level_in_its_river_colour_and_inside_the_view() -> None:
    low = [Point(END - 3600 * i, 20.0) for i in range(5)]  # far below every stage
    text = svg(Hydrograph(series="p.level_cm", points=low, stages=STAGES), now=END)
    root = parse(text)
    cm_per_px, cm0 = y_scale(root)
    frame = root.find(".//s:rect[@class='frame']", NS)
    assert frame is not None
    top = float(frame.get("y", "nan"))
    bottom = top + float(frame.get("height", "nan"))
    colours = {name: "#{:02x}{:02x}{:02x}".format(*rgb) for name, _, rgb in RIVER_STAGES}
    groups = root.findall(".//s:g[@class='stage']", NS)
    assert [g.get("data-stage") for g in groups] == [s.name for s in STAGES]
    for group, stage in zip(groups, STAGES, strict=True):
        line = group.find("s:line", NS)
        assert line is not None
        y = float(line.get("y1", "nan"))
        assert line.get("y1") == line.get("y2"), "horizontal"
        assert top <= y <= bottom, f"{stage.name} is inside the plot"
        assert abs((cm0 + cm_per_px * y) - stage.level_cm) < 0.5
        assert line.get("stroke") == colours[stage.name]
        assert line.get("stroke-dasharray"), "dashed"
        label = "".join(group.itertext())
        assert f"{stage.level_cm:g}cm" in label
    names = ["水防団待機水位", "氾濫注意水位", "避難判断水位", "氾濫危険水位"]
    assert [("".join(g.itertext())).split()[0] for g in groups] == names


def test_a_missing_stretch_is_a_gap_not_a_line_across_it() -> None:
    # 10-minute readings with 2 hours (12 readings) missing in the middle
    points = rising(skip=range(60, 72))
    root = parse(svg(Hydrograph(series="p.level_cm", points=points, stages=STAGES), now=END))
    lines = polylines(root)
    assert [len(line) for line in lines] == [60, len(points) - 60]
    assert lines[0][-1][0] < lines[1][0][0]
    # one reading missing (20 minutes apart) is not a gap
    root = parse(svg(Hydrograph(series="p.level_cm", points=rising(skip=range(30, 31)),
                                stages=[]), now=END))  # fmt: skip
    assert len(polylines(root)) == 1


def test_seven_days_of_hourly_readings_show_days_and_break_at_a_missing_hour() -> None:
    hourly = [Point(END - 7 * 86400 + i * 3600, 120.0) for i in range(7 * 24 + 1) if i != 100]
    text = svg(Hydrograph(series="p.level_cm", points=hourly, stages=STAGES), now=END)
    root = parse(text)
    labels = [t.text for t in root.iterfind(".//s:text[@class='xtick']", NS)]
    assert labels == ["11/29", "11/30", "12/1", "12/2", "12/3", "12/4", "12/5"]
    assert len(polylines(root)) == 2
    title = root.find("s:title", NS)
    assert title is not None and "7日間" in (title.text or "")


def test_title_and_description_say_the_latest_level_and_the_highest_stage_reached() -> None:
    root = parse(svg(Hydrograph(series="level_probe.level_cm", points=rising(), stages=STAGES),
                     now=END))  # fmt: skip
    assert root.get("role") == "img"
    title, desc = root.find("s:title", NS), root.find("s:desc", NS)
    assert title is not None and desc is not None
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    assert "level_probe" in (title.text or "") and "24時間" in (title.text or "")
    assert "190cm（12/05 14:00）" in (desc.text or "")
    assert "氾濫注意水位（180cm）に達しました" in (desc.text or "")
    english = parse(svg(Hydrograph(series="level_probe.level_cm", points=rising(),
                                   stages=STAGES), now=END, language="en"))  # fmt: skip
    desc_en = english.find("s:desc", NS)
    assert desc_en is not None
    assert "Latest level 190 cm" in (desc_en.text or "")
    assert "flood warning (caution level) (180 cm)" in (desc_en.text or "")


def test_labels_and_series_names_are_escaped() -> None:
    nasty = '<script>alert("x")</script> & 橋'
    text = svg(Hydrograph(series=f"{nasty}.level_cm", points=rising(),
                          stages=[WaterStage(name="custom", label=nasty, level_cm=170.0)]),
               now=END)  # fmt: skip
    assert "<script" not in text
    root = parse(text)  # well-formed XML despite the markup in the names
    [group] = root.findall(".//s:g[@class='stage']", NS)
    assert nasty in "".join(group.itertext())
    title = root.find("s:title", NS)
    assert title is not None and nasty in (title.text or "")


def test_no_readings_is_a_clear_figure_with_the_stages_still_drawn() -> None:
    text = svg(Hydrograph(series="p.level_cm", points=[], stages=STAGES), now=END)
    root = parse(text)
    assert polylines(root) == []
    empty = root.find(".//s:text[@class='no-readings']", NS)
    assert empty is not None and empty.text == "測定値がありません"
    desc = root.find("s:desc", NS)
    assert desc is not None and "測定値はありません" in (desc.text or "")
    assert len(root.findall(".//s:g[@class='stage']", NS)) == 4
    english = parse(svg(Hydrograph(series="p.level_cm", points=[], stages=[]), language="en"))
    empty_en = english.find(".//s:text[@class='no-readings']", NS)
    assert empty_en is not None and empty_en.text == "No readings"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _near(image: Any, x: float, y: float, colour: tuple[int, int, int], radius: int = 3) -> bool:
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            px = image.getpixel((round(x) + dx, round(y) + dy))[:3]
            if sum(abs(a - b) for a, b in zip(px, colour, strict=True)) < 60:
                return True
    return False


def test_chromium_draws_the_line_where_the_readings_are_and_nothing_in_the_gap(
    browser: Browser,
) -> None:
    points = rising(skip=range(60, 72))
    text = svg(Hydrograph(series="p.level_cm", points=points, stages=STAGES), now=END)
    root = parse(text)
    cm_per_px, cm0 = y_scale(root)
    s_per_px, t0 = x_scale(root, dt.datetime.fromtimestamp(END, JST).date())
    page = browser.new_page(viewport={"width": 700, "height": 300})
    try:
        page.set_content(f'<html lang="ja"><body style="margin:0;background:#fff">{text}</body>'
                         "</html>")  # fmt: skip
        shot = page.locator("svg").screenshot()
    finally:
        page.close()
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    assert image.size == (640, 240)
    blue = _rgb(LINE_COLOUR)

    def where(p: Point) -> tuple[float, float]:
        return (p.t - t0) / s_per_px, (p.v - cm0) / cm_per_px

    for p in points[5:-5:10]:
        assert _near(image, *where(p), blue), f"the line at {p}"
    # halfway through the missing two hours, where a joined line would pass: no line
    before, after = points[59], points[60]
    gap_x, gap_y = where(Point((before.t + after.t) / 2, (before.v + after.v) / 2))
    assert not _near(image, gap_x, gap_y, blue, radius=2), "nothing drawn across the gap"
    # each stage line shows in its colour at its level
    for name, _, rgb in RIVER_STAGES:
        level = next(s.level_cm for s in STAGES if s.name == name)
        assert _near(image, 500, (level - cm0) / cm_per_px, rgb, radius=3), name
