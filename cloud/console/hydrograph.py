"""A water gauge's hydrograph as an inline SVG for the console's device page.

The same picture 川の水位情報 gives municipal staff: the level over the last
24 hours (or 7 days), every stage line of the gauge dashed in its stage's
colour with its name and level, hours (or days) in Japan time along the
bottom and centimetres up the side.  The stage lines are always inside the
view, even when the river is far below them, so a reader sees how far the
water is from each.  Readings further apart than an hour (or one and a half
times the usual spacing, whichever is longer) are not joined: a gap in the
data is a gap in the line, never a straight line across hours nobody measured.

Accessible by construction: ``role="img"`` with a ``<title>`` and a
``<desc>`` that say the latest level and the highest stage reached in the
window, so a screen reader hears what the line shows.  Every text is
escaped.  A pure function (no I/O, no clock: ``now`` is passed in); the
stage colours and their names come from :mod:`cloud.chart` and
:mod:`cloud.templates`, so the console and the notifier's mail chart agree.
"""

# Japanese labels use full-width brackets, as Japanese typography wants.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
import statistics
from collections.abc import Sequence
from html import escape
from typing import Final

from cloud.chart import StageLine
from cloud.console.model import Hydrograph, Point, WaterStage
from cloud.templates import PHRASES

JST: Final = dt.timezone(dt.timedelta(hours=9), "JST")
DAY_S: Final = 86400.0
WINDOW_24H_S: Final = DAY_S
WINDOW_7D_S: Final = 7 * DAY_S
#: Readings further apart than this (or 1.5 x the median spacing, if longer) are not joined.
MIN_GAP_S: Final = 3600.0
LINE_COLOUR: Final = "#1f64b4"
TEXT_COLOUR: Final = "#222222"
GRID_COLOUR: Final = "#d8d8d8"
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 24, 12, 30
_FONT: Final = "'Noto Sans CJK JP','Noto Sans JP','Hiragino Sans','Yu Gothic',sans-serif"

_TEXT: Final = {
    "ja": {
        "title_24h": "{series} の水位（過去24時間）",
        "title_7d": "{series} の水位（過去7日間）",
        "latest": "最新の水位は {value}cm（{time}）。",
        "reached": "期間中の最高は {high}cm で、{stage}（{level}cm）に達しました。",
        "not_reached": "期間中の最高は {high}cm で、どの基準水位にも達していません。",
        "none": "この期間の測定値はありません。",
        "no_readings": "測定値がありません",
        "unit": "cm",
        "stages": "基準水位: {stages}。",
    },
    "en": {
        "title_24h": "Water level at {series}, last 24 hours",
        "title_7d": "Water level at {series}, last 7 days",
        "latest": "Latest level {value} cm ({time}).",
        "reached": "Highest {high} cm in this period, at or above {stage} ({level} cm).",
        "not_reached": "Highest {high} cm in this period, below every stage.",
        "none": "No readings in this period.",
        "no_readings": "No readings",
        "unit": "cm",
        "stages": "Stages: {stages}.",
    },
}


def svg(
    h: Hydrograph,
    *,
    language: str = "ja",
    width: int = 640,
    height: int = 240,
    now: float | None = None,
    window_s: float | None = None,
) -> str:
    """The hydrograph ``h`` as an ``<svg>`` element (a string to put in a page as it is).

    ``now``: the right edge of the time axis (Unix seconds); without it, the
    latest reading.  ``window_s``: how much time the axis shows; without it,
    7 days when the readings span more than 26 hours, else 24 hours.  Hours
    are labelled for a window up to a day, days (JST midnights) beyond.
    ``language``: ``ja`` or ``en`` (anything else is shown in Japanese).
    """
    text = _TEXT.get(language, _TEXT["ja"])
    points = sorted((p for p in h.points if math.isfinite(p.t) and math.isfinite(p.v)),
                    key=lambda p: p.t)  # fmt: skip
    end = now if now is not None else (points[-1].t if points else 0.0)
    if window_s is None:
        window_s = WINDOW_7D_S if points and end - points[0].t > 26 * 3600 else WINDOW_24H_S
    start = end - window_s
    points = [p for p in points if start <= p.t <= end]
    stages = sorted((s for s in h.stages if math.isfinite(s.level_cm)), key=lambda s: s.level_cm)
    series = h.series.removesuffix(".level_cm")
    ident = "hg-" + re.sub(r"[^A-Za-z0-9_-]", "_", series) + f"-{int(window_s)}"
    title = text["title_7d" if window_s > DAY_S else "title_24h"].format(series=series)
    desc = _describe(points, stages, text, language)

    x0, y0 = _LEFT, _TOP
    pw, ph = max(width - _LEFT - _RIGHT, 10), max(height - _TOP - _BOTTOM, 10)
    bottom, top = _value_range([p.v for p in points], [s.level_cm for s in stages])

    def x(t: float) -> float:
        return x0 + (t - start) / window_s * pw

    def y(v: float) -> float:
        return y0 + (top - v) / (top - bottom) * ph

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="hydrograph" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-labelledby="{ident}-title {ident}-desc" '
        f'font-family="{escape(_FONT)}" font-size="12" data-series="{escape(h.series)}">',
        f'<title id="{ident}-title">{escape(title)}</title>',
        f'<desc id="{ident}-desc">{escape(desc)}</desc>',
        f'<rect class="frame" x="{x0}" y="{y0}" width="{pw}" height="{ph}" '
        f'fill="#ffffff" stroke="#888888"/>',
    ]
    # y axis: centimetres, a tick every "nice" step
    for v in _ticks(bottom, top):
        yy = y(v)
        out.append(f'<line class="grid" x1="{x0}" y1="{yy:.1f}" x2="{x0 + pw}" y2="{yy:.1f}" '
                   f'stroke="{GRID_COLOUR}" stroke-width="1"/>')  # fmt: skip
        out.append(f'<text class="ytick" x="{x0 - 4}" y="{yy:.1f}" text-anchor="end" '
                   f'dominant-baseline="middle" fill="{TEXT_COLOUR}">{v:g}</text>')  # fmt: skip
    out.append(f'<text class="unit" x="4" y="{y0 + 10}" fill="{TEXT_COLOUR}">'
               f"{escape(text['unit'])}</text>")  # fmt: skip
    # x axis: JST hours (24 h) or days (7 d)
    for t, label in _time_ticks(start, end, window_s) if points or now is not None else ():
        xx = x(t)
        out.append(f'<line class="grid" x1="{xx:.1f}" y1="{y0}" x2="{xx:.1f}" y2="{y0 + ph}" '
                   f'stroke="{GRID_COLOUR}" stroke-width="1"/>')  # fmt: skip
        out.append(f'<text class="xtick" x="{xx:.1f}" y="{y0 + ph + 18}" text-anchor="middle" '
                   f'fill="{TEXT_COLOUR}" data-t="{t:.0f}">{escape(label)}</text>')  # fmt: skip
    # stage lines, dashed, each in its stage's colour, named at the left
    for stage in stages:
        line = StageLine(stage.name, stage.level_cm, stage.label)
        colour = "#{:02x}{:02x}{:02x}".format(*line.colour)
        yy = y(stage.level_cm)
        name = _stage_name(stage, language)
        out.append(
            f'<g class="stage" data-stage="{escape(stage.name)}" data-level="{stage.level_cm:g}">'
            f'<line x1="{x0}" y1="{yy:.1f}" x2="{x0 + pw}" y2="{yy:.1f}" stroke="{colour}" '
            f'stroke-width="2.5" stroke-dasharray="8 5"/>'
            f'<rect x="{x0 + 4}" y="{yy - 15:.1f}" width="10" height="10" fill="{colour}" '
            f'stroke="{TEXT_COLOUR}" stroke-width="0.8"/>'
            f'<text x="{x0 + 18}" y="{yy - 6:.1f}" fill="{TEXT_COLOUR}" stroke="#ffffff" '
            f'stroke-width="3" paint-order="stroke">'
            f"{escape(name)} {stage.level_cm:g}{escape(text['unit'])}</text></g>"
        )
    if not points:
        out.append(f'<text class="no-readings" x="{x0 + pw / 2:.1f}" y="{y0 + ph / 2:.1f}" '
                   f'text-anchor="middle" dominant-baseline="middle" font-size="18" '
                   f'fill="{TEXT_COLOUR}">{escape(text["no_readings"])}</text>')  # fmt: skip
    for run in _runs(points):
        if len(run) == 1:
            p = run[0]
            out.append(f'<circle class="level" cx="{x(p.t):.1f}" cy="{y(p.v):.1f}" r="2.5" '
                       f'fill="{LINE_COLOUR}"/>')  # fmt: skip
            continue
        coords = " ".join(f"{x(p.t):.1f},{y(p.v):.1f}" for p in run)
        out.append(f'<polyline class="level" points="{coords}" fill="none" stroke="{LINE_COLOUR}" '
                   f'stroke-width="2.5" stroke-linejoin="round"/>')  # fmt: skip
    if points:
        last = points[-1]
        out.append(f'<circle class="latest" cx="{x(last.t):.1f}" cy="{y(last.v):.1f}" r="4" '
                   f'fill="{LINE_COLOUR}" stroke="#ffffff" stroke-width="1.5"/>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def _describe(
    points: Sequence[Point], stages: Sequence[WaterStage], text: dict[str, str], language: str
) -> str:
    """The ``<desc>``: the latest level, the highest reached and the stage it reached."""
    parts: list[str] = []
    if not points:
        parts.append(text["none"])
    else:
        last = points[-1]
        when = dt.datetime.fromtimestamp(last.t, JST).strftime("%m/%d %H:%M")
        parts.append(text["latest"].format(value=f"{last.v:g}", time=when))
        high = max(p.v for p in points)
        reached = [s for s in stages if high >= s.level_cm]
        if reached:
            top = reached[-1]
            parts.append(
                text["reached"].format(
                    high=f"{high:g}", stage=_stage_name(top, language), level=f"{top.level_cm:g}"
                )
            )
        else:
            parts.append(text["not_reached"].format(high=f"{high:g}"))
    if stages:
        sep = ", " if language == "en" else "、"
        names = sep.join(f"{_stage_name(s, language)} {s.level_cm:g}cm" for s in stages)
        parts.append(text["stages"].format(stages=names))
    return (" " if language == "en" else "").join(parts)


def _stage_name(stage: WaterStage, language: str) -> str:
    """The gauge's own label, else the standard name of a river stage, else its name."""
    if stage.label:
        return stage.label
    phrases = PHRASES.get(language, PHRASES["ja"])
    return phrases.values.get(stage.name, stage.name)


def _value_range(values: Sequence[float], stages: Sequence[float]) -> tuple[float, float]:
    """Bottom and top of the y axis: every reading and every stage line inside, padded."""
    every = [*values, *stages]
    if not every:
        return 0.0, 100.0
    low, high = min(every), max(every)
    span = high - low
    pad = max(span * 0.12, 5.0)
    low, high = low - pad, high + pad
    step = _step(high - low)
    return math.floor(low / step) * step, math.ceil(high / step) * step


def _step(span: float) -> float:
    """A round tick step that gives about five ticks over ``span``."""
    raw = span / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return float(factor * magnitude)
    return float(10 * magnitude)


def _ticks(bottom: float, top: float) -> list[float]:
    step = _step(top - bottom)
    first = math.ceil(bottom / step) * step
    count = round((top - first) / step) + 1
    return [round(first + i * step, 6) for i in range(count) if first + i * step <= top + 1e-9]


def _time_ticks(start: float, end: float, window_s: float) -> list[tuple[float, str]]:
    """Ticks on JST boundaries: every 3 hours up to a day, midnights beyond."""
    if window_s <= DAY_S:
        every = 3 * 3600 if window_s > 6 * 3600 else 3600
        fmt = "%H:%M"
    else:
        every = int(DAY_S) * max(1, int(window_s // (8 * DAY_S)) + 1)
        fmt = "%m/%d"
    offset = 9 * 3600  # JST has no daylight saving time
    first = math.ceil((start + offset) / every) * every - offset
    ticks = []
    t = float(first)
    while t <= end + 1e-6:
        label = dt.datetime.fromtimestamp(t, JST).strftime(fmt)
        if fmt == "%m/%d":
            month, day = label.split("/")
            label = f"{int(month)}/{int(day)}"
        ticks.append((t, label))
        t += every
    return ticks


def _runs(points: Sequence[Point]) -> list[list[Point]]:
    """The readings cut where two neighbours are further apart than the gap limit."""
    if not points:
        return []
    steps = [b.t - a.t for a, b in itertools.pairwise(points)]
    limit = max(MIN_GAP_S, 1.5 * statistics.median(steps)) if steps else MIN_GAP_S
    runs: list[list[Point]] = [[points[0]]]
    for previous, point in itertools.pairwise(points):
        if point.t - previous.t > limit:
            runs.append([point])
        else:
            runs[-1].append(point)
    return runs
