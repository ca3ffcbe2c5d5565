"""The small "last 24 hours" water-level chart embedded in a water alert's HTML part.

Drawn with Pillow (no plotting library, no display, a few milliseconds): the
level as a line, the alert's threshold as a dashed red line, the moment of
the alert as an orange mark, hours in Japan time along the bottom.  Labels
are ASCII on purpose (the default font has no Japanese glyphs); the mail's
text around the picture says the same in the reader's language, so nothing
is only in the picture.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from PIL import ImageDraw

WIDTH: Final = 600
HEIGHT: Final = 260
WINDOW_S: Final = 24 * 3600.0
#: Readings further apart than this are not joined by the line (the device was away).
GAP_S: Final = 3 * 3600.0
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 16, 26, 34
_LINE: Final = (31, 100, 180)
_THRESHOLD: Final = (200, 30, 30)
_MARK: Final = (235, 140, 0)
_GRID: Final = (225, 225, 225)
_TEXT: Final = (60, 60, 60)


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
) -> LevelChart | None:
    """The chart of ``points`` over the 24 hours up to ``end``; ``None`` if there are none."""
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
    png = _draw(series, kept, start, end, threshold, mark, tz)
    return LevelChart(series, kept, start, end, threshold, png)


def _draw(
    series: str,
    points: tuple[tuple[float, float], ...],
    start: float,
    end: float,
    threshold: float | None,
    mark: float | None,
    tz: dt.tzinfo,
) -> bytes:
    from PIL import Image, ImageDraw  # here: importing the notifier must not need Pillow

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = _font()
    values = [v for _, v in points] + ([threshold] if threshold is not None else [])
    low, high = _nice_range(min(values), max(values))
    x0, x1, y0, y1 = _LEFT, WIDTH - _RIGHT, HEIGHT - _BOTTOM, _TOP

    def x(t: float) -> float:
        return x0 + (t - start) / (end - start) * (x1 - x0)

    def y(v: float) -> float:
        return y0 - (v - low) / (high - low) * (y0 - y1)

    for value in _ticks(low, high):
        draw.line([(x0, y(value)), (x1, y(value))], fill=_GRID)
        label = f"{value:g}"
        draw.text((x0 - 6, y(value)), label, fill=_TEXT, font=font, anchor="rm")
    first_hour = math.ceil(start / 3600.0) * 3600.0
    hour = first_hour
    while hour <= end:
        local = dt.datetime.fromtimestamp(hour, tz)
        if local.hour % 6 == 0:
            draw.line([(x(hour), y0), (x(hour), y1)], fill=_GRID)
            draw.text((x(hour), y0 + 6), f"{local:%H:%M}", fill=_TEXT, font=font, anchor="mt")
        hour += 3600.0
    draw.rectangle([(x0, y1), (x1, y0)], outline=(150, 150, 150))
    if threshold is not None:
        _dashed(draw, x0, x1, y(threshold), _THRESHOLD)
        draw.text((x1 - 4, y(threshold) - 3), f"{threshold:g}", fill=_THRESHOLD, font=font,
                  anchor="rb")  # fmt: skip
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
    draw.text((x0, 6), f"{series}  (last 24 h, JST)", fill=_TEXT, font=font)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def _polyline(draw: ImageDraw.ImageDraw, segment: list[tuple[float, float]]) -> None:
    if len(segment) == 1:
        px, py = segment[0]
        draw.ellipse([(px - 2, py - 2), (px + 2, py + 2)], fill=_LINE)
    elif segment:
        draw.line(segment, fill=_LINE, width=2, joint="curve")


def _dashed(
    draw: ImageDraw.ImageDraw, x0: float, x1: float, yy: float, colour: tuple[int, int, int]
) -> None:
    pos = x0
    while pos < x1:
        draw.line([(pos, yy), (min(pos + 8, x1), yy)], fill=colour, width=2)
        pos += 14


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


def _font() -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=12)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()
