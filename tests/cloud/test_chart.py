"""The water chart a person reads on a phone: Japanese, with its unit and every stage line."""

# The chart's Japanese uses full-width brackets, as Japanese typography wants.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
import io
import logging
from pathlib import Path

import pytest
from PIL import Image, ImageFont

import cloud.chart
from cloud.chart import (
    HEIGHT,
    RIVER_STAGES,
    WIDTH,
    StageLine,
    cjk_font_path,
    level_chart,
    river_rank,
    stage_lines,
)

END = dt.datetime(2025, 11, 24, 4, 5, 12, tzinfo=dt.UTC).timestamp()
POINTS = [(END - 86400 + i * 600, 100.0 + (i / 144) ** 3 * 85) for i in range(145)]
FOUR = {
    "stage": "flood_warning", "stage_label": "はん濫注意", "threshold_cm": 180.0,
    "stages": [
        {"name": "flood_watch", "level_cm": 150.0, "label": ""},
        {"name": "flood_warning", "level_cm": 180.0, "label": "はん濫注意"},
        {"name": "evacuation", "level_cm": 210.0, "label": ""},
        {"name": "danger", "level_cm": 240.0, "label": ""},
    ],
}  # fmt: skip


def colours(png: bytes) -> set[tuple[int, int, int]]:
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.size == (WIDTH, HEIGHT)
        return {c for _, c in picture.convert("RGB").getcolors(WIDTH * HEIGHT)}


def test_a_japanese_font_is_found_and_has_japanese_glyphs() -> None:
    path = cjk_font_path()
    assert path is not None, "install Debian's fonts-noto-cjk"
    font = ImageFont.truetype(path, 20, index=0)
    assert "CJK JP" in " ".join(font.getname()) or "JP" in path or "ipa" in path.lower()
    # a real glyph for 水, not the empty box of a missing one
    assert font.getmask("水").getbbox() != font.getmask("\U000f0000").getbbox()


def test_all_four_river_stages_are_drawn_in_their_colours() -> None:
    chart = level_chart("level_east.level_cm", POINTS, end=END, mark=END,
                        stages=stage_lines(FOUR), threshold=180.0)  # fmt: skip
    assert chart is not None
    seen = colours(chart.png)
    for _, _, colour in RIVER_STAGES:
        assert colour in seen, colour
    assert (31, 100, 180) in seen  # the level


def test_the_stage_lines_are_in_range_even_far_above_the_level() -> None:
    low = [(t, 20.0) for t, _ in POINTS]
    chart = level_chart("x.level_cm", low, end=END, stages=stage_lines(FOUR))
    assert chart is not None
    assert (170, 0, 170) in colours(chart.png)  # 氾濫危険水位 at 240 cm over a 20 cm river


def test_an_older_devices_alert_draws_its_own_stage() -> None:
    old = {"stage": "evacuation", "threshold_cm": 210.0, "stage_label": ""}
    assert [(s.name, s.level_cm, s.title) for s in stage_lines(old)] == [
        ("evacuation", 210.0, "避難判断水位")
    ]
    assert stage_lines({"level_cm": 3.0}) == ()


def test_the_title_and_legend_are_japanese_text_not_ascii() -> None:
    # The title region of a CJK chart differs from the one drawn with no CJK font.
    chart = level_chart("level_east.level_cm", POINTS, end=END, stages=stage_lines(FOUR))
    assert chart is not None
    with Image.open(io.BytesIO(chart.png)) as picture:
        title = picture.convert("L").crop((0, 0, WIDTH, 40))
        dark = sum(title.histogram()[:128])
    assert dark > 400  # 14 Japanese characters at 24 px: a title, not a blank strip


def test_without_a_cjk_font_the_log_says_so_and_the_chart_still_draws(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(cloud.chart, "CJK_FONTS", (str(tmp_path / "none.ttc"),))
    monkeypatch.setattr(cloud.chart, "_FONT_DIRS", (str(tmp_path),))
    cjk_font_path.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="cloud.chart"):
            chart = level_chart("x.level_cm", POINTS, end=END, stages=stage_lines(FOUR))
        assert chart is not None
        assert "no Japanese (CJK) font found" in caplog.text
        assert "fonts-noto-cjk" in caplog.text
    finally:
        cjk_font_path.cache_clear()


def test_the_chart_says_in_japanese_what_it_shows_with_its_unit_and_legend() -> None:
    chart = level_chart("level_east.level_cm", POINTS, end=END, stages=stage_lines(FOUR))
    assert chart is not None
    assert chart.texts[0] == "過去24時間の水位（日本時間）"
    assert "cm" in chart.texts  # the unit on the axis
    assert "level_east.level_cm" not in " ".join(chart.texts)  # no machine name
    legend = list(chart.texts[-5:])
    assert legend == [
        "水位", "水防団待機水位 150cm", "はん濫注意 180cm", "避難判断水位 210cm",
        "氾濫危険水位 240cm",
    ]  # fmt: skip


def test_a_stage_is_coloured_by_its_official_name_before_its_device_name() -> None:
    """A profile once named its 氾濫注意水位 ``flood_watch`` (水防団待機's name): the label,
    which people read, decides its colour in the mail chart and the console alike."""
    yellow = RIVER_STAGES[1][2]
    assert StageLine("flood_watch", 120.0, "氾濫注意水位").colour == yellow
    assert StageLine("flood_warning", 120.0, "").colour == yellow
    assert river_rank("flood_watch", "氾濫危険水位") == 4
    assert river_rank("too_high", "上限") == 0
    assert StageLine("too_high", 12.0, "上限").colour not in [c for _, _, c in RIVER_STAGES]
