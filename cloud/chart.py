"""The small "last 24 hours" water-level chart embedded in a water alert's HTML part.

Drawn with Pillow (no plotting library, no display, a few milliseconds): the
level as a blue line, every stage line the device has (the four river stages
in the colours 川の水位情報 uses: 水防団待機水位 green, 氾濫注意水位 yellow,
避難判断水位 red, 氾濫危険水位 purple), the moment of the alert as an orange
mark, hours in Japan time along the bottom, the unit on the axis and a legend.
Text is Japanese, in a CJK font found on the host (Debian's fonts-noto-cjk);
without one the labels fall back to ASCII and the log says so.  Sized to be
read on a 390-pixel phone screen (drawn at 640 px, shown scaled to the
screen's width).  The mail's text around the picture says the same in the
reader's language, so nothing is only in the picture.
"""

# Japanese labels use full-width brackets, as Japanese typography wants.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
import functools
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from PIL import ImageDraw

log = logging.getLogger(__name__)

WIDTH: Final = 640
HEIGHT: Final = 440
WINDOW_S: Final = 24 * 3600.0
#: Readings further apart than this are not joined by the line (the device was away).
GAP_S: Final = 3 * 3600.0
_LEFT, _RIGHT, _TOP = 70, 20, 64
_LINE: Final = (31, 100, 180)
_THRESHOLD: Final = (200, 30, 30)
_MARK: Final = (235, 140, 0)
_GRID: Final = (225, 225, 225)
_TEXT: Final = (50, 50, 50)
_FONT_PX: Final = 19
_TITLE_PX: Final = 24

#: The river stages, lowest first: (device stage name, Japanese name, colour in 川の水位情報).
RIVER_STAGES: Final = (
    ("flood_watch", "水防団待機水位", (0, 160, 64)),
    ("flood_warning", "氾濫注意水位", (230, 190, 0)),
    ("evacuation", "避難判断水位", (255, 40, 0)),
    ("danger", "氾濫危険水位", (170, 0, 170)),
)
_STAGE_NAME: Final = {name: ja for name, ja, _ in RIVER_STAGES}
#: Other stage names seen in configurations for the same four stages.
_STAGE_ALIASES: Final = {"standby": 1, "caution": 2, "evacuate": 3, "flood_danger": 4}
_STAGE_RANK: Final = {
    **{name: rank for rank, (name, _, _) in enumerate(RIVER_STAGES, start=1)},
    **_STAGE_ALIASES,
}


def river_rank(name: str, label: str = "") -> int:
    """Which Japanese river stage a device's stage is: 1 (水防団待機水位) .. 4 (氾濫危険水位),
    0 for any other (a paddy's line, a custom one).

    The label decides first: it is the official name people read, and a device's stage
    name may contradict it (a profile once named its 氾濫注意水位 ``flood_watch``).  The
    name decides when the label names none of the four."""
    for rank, (_, ja, _) in enumerate(RIVER_STAGES, start=1):
        if ja.removesuffix("水位") in label:
            return rank
    return _STAGE_RANK.get(name.strip().lower(), 0)


def river_colour(rank: int) -> tuple[int, int, int] | None:
    """The colour of river stage ``rank`` (1..4), None for 0."""
    return RIVER_STAGES[rank - 1][2] if 1 <= rank <= len(RIVER_STAGES) else None

#: Where a Japanese font is looked for first (Debian, Raspberry Pi OS, then other packages).
CJK_FONTS: Final = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKjp-Regular.otf",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
)
_FONT_DIRS: Final = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts")
_FONT_GLOBS: Final = ("NotoSansCJK*Regular*", "NotoSansJP*", "ipaexg*", "ipag*", "*Gothic*.tt*")


@dataclass(frozen=True, slots=True)
class StageLine:
    """One stage of the device's water rule, drawn as a horizontal line."""

    name: str
    """The device's stage name (``flood_watch`` ... ``danger`` are the river stages)."""
    level_cm: float
    label: str = ""
    """The device's own label; the standard Japanese name is used without one."""

    @property
    def title(self) -> str:
        standard = _STAGE_NAME.get(self.name, "")
        return self.label or standard or self.name

    @property
    def colour(self) -> tuple[int, int, int]:
        """Its river stage's colour (:func:`river_rank`: by label, then name), else red."""
        return river_colour(river_rank(self.name, self.label)) or _THRESHOLD


def stage_lines(data: Any) -> tuple[StageLine, ...]:
    """The stages a water alert's ``data`` describes (``stages``, else its own stage)."""
    if not isinstance(data, dict):
        return ()
    found: list[StageLine] = []
    raw = data.get("stages")
    if isinstance(raw, list):
        for item in raw:
            if not isinstance(item, dict):
                continue
            name, level, label = item.get("name"), item.get("level_cm"), item.get("label", "")
            if isinstance(name, str) and isinstance(level, int | float) and _finite(level):
                found.append(StageLine(name, float(level), label if isinstance(label, str) else ""))
    if not found:
        name, level = data.get("stage"), data.get("threshold_cm")
        label = data.get("stage_label")
        if isinstance(name, str) and isinstance(level, int | float) and _finite(level):
            found.append(StageLine(name, float(level), label if isinstance(label, str) else ""))
    return tuple(sorted(found, key=lambda s: s.level_cm)[:8])


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@functools.cache
def cjk_font_path() -> str | None:
    """A font with Japanese glyphs on this host, or ``None`` (logged once, loudly)."""
    for candidate in CJK_FONTS:
        if Path(candidate).is_file():
            return candidate
    for folder in _FONT_DIRS:
        root = Path(folder).expanduser()
        if not root.is_dir():
            continue
        for pattern in _FONT_GLOBS:
            for path in sorted(root.rglob(pattern)):
                if path.suffix.lower() in (".ttc", ".otf", ".ttf"):
                    return str(path)
    log.warning(
        "no Japanese (CJK) font found (looked for %s and under %s): water charts are "
        "labelled in ASCII. Install Debian's fonts-noto-cjk.",
        CJK_FONTS[0],
        ", ".join(_FONT_DIRS),
    )
    return None


@dataclass(frozen=True, slots=True)
class LevelChart:
    """One series over a window, with the PNG drawn from it."""

    series: str
    points: tuple[tuple[float, float], ...]
    """(Unix time, value), oldest first, all inside ``[start, end]``."""
    start: float
    end: float
    threshold: float | None
    png: bytes
    texts: tuple[str, ...] = ()
    """Every text drawn in the picture, in drawing order (title, unit, ticks, legend)."""

    @property
    def low(self) -> tuple[float, float]:
        """(time, value) of the lowest reading."""
        return min(self.points, key=lambda p: (p[1], p[0]))

    @property
    def high(self) -> tuple[float, float]:
        return max(self.points, key=lambda p: (p[1], -p[0]))

    @property
    def last(self) -> tuple[float, float]:
        return self.points[-1]


def level_chart(
    series: str,
    points: Sequence[tuple[float, float]],
    *,
    end: float,
    threshold: float | None = None,
    mark: float | None = None,
    tz: dt.tzinfo = dt.UTC,
    stages: Sequence[StageLine] = (),
) -> LevelChart | None:
    """The chart of ``points`` over the 24 hours up to ``end``; ``None`` if there are none.

    ``stages``: every stage line to draw (see :func:`stage_lines`); ``threshold``
    alone (an older device's alert) is drawn as one dashed red line.
    """
    start = end - WINDOW_S
    kept = tuple(
        (float(t), float(v))
        for t, v in sorted(points)
        if start <= t <= end and math.isfinite(t) and math.isfinite(v)
    )
    if not kept:
        return None
    if threshold is not None and not math.isfinite(threshold):
        threshold = None
    lines = tuple(s for s in stages if math.isfinite(s.level_cm))
    if not lines and threshold is not None:
        lines = (StageLine("", threshold),)
    png, texts = _draw(series, kept, start, end, lines, mark, tz)
    return LevelChart(series, kept, start, end, threshold, png, texts)


def _draw(
    series: str,
    points: tuple[tuple[float, float], ...],
    start: float,
    end: float,
    stages: tuple[StageLine, ...],
    mark: float | None,
    tz: dt.tzinfo,
) -> tuple[bytes, tuple[str, ...]]:
    from PIL import Image, ImageDraw  # here: importing the notifier must not need Pillow

    japanese = cjk_font_path() is not None
    font, title_font = _font(_FONT_PX), _font(_TITLE_PX)
    legend = [(_LINE, "水位" if japanese else "level", False)]
    for stage in stages:
        title = stage.title if japanese else (stage.name or "threshold")
        legend.append((stage.colour, f"{title} {stage.level_cm:g}cm", True))
    columns = 2
    legend_rows = math.ceil(len(legend) / columns)
    bottom = 40 + legend_rows * 28 + 8
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    texts: list[str] = []  # what the picture says, in drawing order

    def write(xy: tuple[float, float], text: str, **kwargs: Any) -> None:
        texts.append(text)
        draw.text(xy, text, fill=_TEXT, **kwargs)

    values = [v for _, v in points] + [s.level_cm for s in stages]
    low, high = _nice_range(min(values), max(values))
    x0, x1, y0, y1 = _LEFT, WIDTH - _RIGHT, HEIGHT - bottom, _TOP

    def x(t: float) -> float:
        return x0 + (t - start) / (end - start) * (x1 - x0)

    def y(v: float) -> float:
        return y0 - (v - low) / (high - low) * (y0 - y1)

    title = "過去24時間の水位（日本時間）" if japanese else f"{series} (last 24 h, JST)"
    write((8, 6), title, font=title_font)
    write((x0 - 8, y1 - 8), "cm", font=font, anchor="rb")  # the unit
    for value in _ticks(low, high):
        draw.line([(x0, y(value)), (x1, y(value))], fill=_GRID)
        write((x0 - 8, y(value)), f"{value:g}", font=font, anchor="rm")
    hour = math.ceil(start / 3600.0) * 3600.0
    while hour <= end:
        local = dt.datetime.fromtimestamp(hour, tz)
        if local.hour % 6 == 0:
            draw.line([(x(hour), y0), (x(hour), y1)], fill=_GRID)
            write((x(hour), y0 + 6), f"{local:%H:%M}", font=font, anchor="mt")
        hour += 3600.0
    draw.rectangle([(x0, y1), (x1, y0)], outline=(150, 150, 150))
    for stage in stages:
        _dashed(draw, x0, x1, y(stage.level_cm), stage.colour)
    if mark is not None and start <= mark <= end:
        draw.line([(x(mark), y0), (x(mark), y1)], fill=_MARK, width=2)
    segment: list[tuple[float, float]] = []
    previous: float | None = None
    for t, v in points:
        if previous is not None and t - previous > GAP_S:
            _polyline(draw, segment)
            segment = []
        segment.append((x(t), y(v)))
        previous = t
    _polyline(draw, segment)
    top = y0 + 40
    width = (WIDTH - 16) // columns
    for i, (colour, text, dashed) in enumerate(legend):
        lx, ly = 8 + (i % columns) * width, top + (i // columns) * 28
        if dashed:
            _dashed(draw, lx, lx + 34, ly + 12, colour, width=4)
        else:
            draw.line([(lx, ly + 12), (lx + 34, ly + 12)], fill=colour, width=4)
        write((lx + 42, ly + 12), text, font=font, anchor="lm")
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue(), tuple(texts)


def _polyline(draw: ImageDraw.ImageDraw, segment: list[tuple[float, float]]) -> None:
    if len(segment) == 1:
        px, py = segment[0]
        draw.ellipse([(px - 3, py - 3), (px + 3, py + 3)], fill=_LINE)
    elif segment:
        draw.line(segment, fill=_LINE, width=3, joint="curve")


def _dashed(
    draw: ImageDraw.ImageDraw,
    x0: float,
    x1: float,
    yy: float,
    colour: tuple[int, int, int],
    *,
    width: int = 3,
) -> None:
    pos = x0
    while pos < x1:
        draw.line([(pos, yy), (min(pos + 10, x1), yy)], fill=colour, width=width)
        pos += 16


def _nice_range(low: float, high: float) -> tuple[float, float]:
    """A y-range a little wider than the data, never empty."""
    if high - low < 1e-9:
        pad = max(abs(high) * 0.1, 1.0)
        return low - pad, high + pad
    pad = (high - low) * 0.1
    return low - pad, high + pad


def _ticks(low: float, high: float) -> list[float]:
    """About five round values between ``low`` and ``high``."""
    raw = (high - low) / 5.0
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    count = int((high - first) / step) + 1
    return [round(first + i * step, 10) for i in range(max(count, 0))]


def _font(size: int) -> Any:
    """The CJK font at ``size`` pixels, else Pillow's own (ASCII only)."""
    from PIL import ImageFont

    path = cjk_font_path()
    if path is not None:
        try:
            return ImageFont.truetype(path, size, index=0)  # index 0 of Noto's .ttc: JP
        except OSError as exc:
            log.warning("cannot load the CJK font %s (%s); charts in ASCII", path, exc)
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()
