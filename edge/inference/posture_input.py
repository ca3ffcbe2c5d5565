"""What the posture model sees: a mat frame with the empty mat removed, scaled by the load,
turned and centred on the body (numpy only; the device and the training code share it).

An independent evaluation found the first posture model keyed on things that
say nothing about posture: the mat's empty level (a bare mat at 10 counts a
cell read as "prone"), the body's heading (a frame turned by 180 deg changed a
quarter of the answers) and its position (a one-cell shift changed 13 %).
So the model never sees raw counts.  :func:`canonical` does, in order:

1. **Empty mat removed**: minus the per-cell empty level the device calibrates
   (:class:`edge.nursery.mat.MatCalibration`'s ``level``; without one, the
   frame's median cell, the same stop-gap the mat uses before it calibrates),
   then minus the median of what is left (a child covers well under half the
   cells, so the median cell is empty: an empty level that crept up with the
   room's temperature since it was calibrated comes off too), and everything
   within ``DEADBAND_COUNTS`` of zero set to zero (cell noise, offsets a rough
   calibration does not know).
2. **Scaled by the load**: divided by the sum of what is left, times
   ``LOAD_SCALE``: a mat's gain, the child's weight and a thin blanket's even
   load no longer change the picture, only how the load is distributed.
3. **Turned and centred**: the load's centroid goes to the middle of the output
   grid and its principal axis along the grid's columns, sampled bilinearly on
   the same 3.75-cm cells (outside the mat: zero).  Which end of the axis is the
   head stays open (a 180-deg turn is the model's to learn: training shows it
   both); a mirror image is never taken, because it turns a child lying on the
   left side into one lying on the right.

4. **Compressed** (only when a card's ``preprocessing.compress`` asks): ``"sqrt"``
   maps each value ``x`` to ``2 sqrt(x)`` (0..CLIP stays 0..CLIP), so the
   model sees the shape of the contact more than how steep the sensor's
   response or the mattress makes its peaks.

Cost on a Pi Zero 2 W: a few hundred microseconds a frame (vectorised numpy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edge.order_statistics import median

DEADBAND_COUNTS = 3.0
"""Cells within this many counts of their empty level carry no load (noise is ~1 count)."""
LOAD_SCALE = 64.0
"""Each output cell is its share of the load times this (a typical body's peak cell is ~1)."""
CLIP = 4.0
"""Output values are clipped to 0..CLIP (the model's int8 input range)."""
COMPRESSIONS: tuple[str, ...] = ("none", "sqrt")
"""What a card's ``preprocessing.compress`` may name (absent: ``none``)."""
MIN_LOAD_COUNTS = 30.0
"""Less than this in all (50 g at the nominal 600 counts/kg): nothing to turn; all zeros."""


def canonical(
    cells: np.ndarray | bytes | Sequence[int],
    empty_level: np.ndarray | Sequence[float] | None,
    rows: int,
    cols: int,
    *,
    out_rows: int | None = None,
    out_cols: int | None = None,
    compress: str = "none",
) -> np.ndarray:
    """One frame as the posture model sees it: ``(out_rows, out_cols)`` float32 in 0..CLIP.

    ``cells``: the frame's counts, row-major (``MatFrame.cells`` or an array);
    ``empty_level``: the calibrated empty mat per cell (row-major), or None;
    ``compress``: one of :data:`COMPRESSIONS` (the model's card says which).
    """
    raw = (
        np.frombuffer(cells, dtype=np.uint8) if isinstance(cells, (bytes, bytearray))
        else np.asarray(cells)
    ).astype(np.float32).reshape(rows, cols)
    if empty_level is None:
        level = np.full((rows, cols), median(raw), dtype=np.float32)
    else:
        level = np.asarray(empty_level, dtype=np.float32).reshape(rows, cols)
    return compressed(
        canonical_load(load_map(raw, level), out_rows=out_rows or rows, out_cols=out_cols or cols),
        compress,
    )


def compressed(x: np.ndarray, compress: str) -> np.ndarray:
    """Step 4: ``x`` (0..CLIP) as the model's card asks (``"none"``: unchanged)."""
    if compress == "none":
        return x
    if compress == "sqrt":
        out: np.ndarray = (np.sqrt(x * np.float32(CLIP))).astype(np.float32, copy=False)
        return out
    raise ValueError(f"unknown compression {compress!r}; known: {', '.join(COMPRESSIONS)}")


def load_map(raw: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Counts above the empty mat per cell (step 1): float32, zero where nobody lies."""
    d = raw.astype(np.float32) - level
    d -= np.float32(median(d))
    d[d < DEADBAND_COUNTS] = 0.0
    out: np.ndarray = d
    return out


def canonical_load(
    load: np.ndarray,
    *,
    out_rows: int,
    out_cols: int,
    angle: float | None = None,
    shift: tuple[float, float] = (0.0, 0.0),
    zoom: float = 1.0,
) -> np.ndarray:
    """A load map (counts above the empty mat, ``rows x cols``) turned, centred and scaled.

    ``angle``: the body axis's direction in radians (default: the load's principal
    axis); ``shift``: (rows, columns) added to the centroid; ``zoom``: mat cells per
    output cell (training draws it around 1 so a smaller or larger child, or a mat
    with other cells, looks familiar).  Training passes a little jitter in each, so
    the model does not depend on their exact values.
    """
    rows, cols = load.shape
    total = float(load.sum())
    if total < MIN_LOAD_COUNTS:
        return np.zeros((out_rows, out_cols), dtype=np.float32)
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy = float((load * ys).sum() / total)
    cx = float((load * xs).sum() / total)
    if angle is None:
        angle = principal_angle(load, cy, cx, total)
    cy, cx = cy + shift[0], cx + shift[1]
    c, s = math.cos(angle), math.sin(angle)
    # Output cell (i, j) -> offsets (v across, u along the body) from the centroid,
    # in cells; the mat position is centroid + u * axis + v * normal.
    u = np.arange(out_cols, dtype=np.float32) - (out_cols - 1) / 2.0
    v = np.arange(out_rows, dtype=np.float32) - (out_rows - 1) / 2.0
    uu, vv = np.meshgrid(u * zoom, v * zoom)
    px = cx + uu * c - vv * s
    py = cy + uu * s + vv * c
    out = _bilinear(load, py, px)
    out *= LOAD_SCALE / total
    np.clip(out, 0.0, CLIP, out=out)
    return out.astype(np.float32, copy=False)


def principal_angle(load: np.ndarray, cy: float, cx: float, total: float) -> float:
    """Direction (radians, -pi/2..pi/2) of the load's major axis, x along the columns."""
    rows, cols = load.shape
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    dx, dy = xs - cx, ys - cy
    sxx = float((load * dx * dx).sum() / total)
    syy = float((load * dy * dy).sum() / total)
    sxy = float((load * dx * dy).sum() / total)
    return 0.5 * math.atan2(2.0 * sxy, sxx - syy)


def _bilinear(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``img`` sampled at (y, x) in cell units (cell centres at integers); outside: 0."""
    rows, cols = img.shape
    padded = np.zeros((rows + 2, cols + 2), dtype=np.float32)
    padded[1:-1, 1:-1] = img
    yp = np.clip(y + 1.0, 0.0, rows + 1.0 - 1e-4)
    xp = np.clip(x + 1.0, 0.0, cols + 1.0 - 1e-4)
    y0 = np.floor(yp).astype(np.intp)
    x0 = np.floor(xp).astype(np.intp)
    fy = (yp - y0).astype(np.float32)
    fx = (xp - x0).astype(np.float32)
    y1 = np.minimum(y0 + 1, rows + 1)
    x1 = np.minimum(x0 + 1, cols + 1)
    top = padded[y0, x0] * (1 - fx) + padded[y0, x1] * fx
    bottom = padded[y1, x0] * (1 - fx) + padded[y1, x1] * fx
    out: np.ndarray = (top * (1 - fy) + bottom * fy).astype(np.float32)
    return out
