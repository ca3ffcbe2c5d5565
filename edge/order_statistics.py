"""Medians and quantiles with numpy's own numbers, without ``numpy.ma``.

``np.median`` and ``np.quantile`` import ``numpy.ma`` on their first call: about 1.2 MB
of a daemon's resident memory (a Pi Zero 2 W has 512 MB for everything), for a few
order statistics a second.  These give the same numbers -- the same sort, the same
interpolation (numpy's default ``linear`` method, its ``_lerp`` arithmetic included),
NaN when any value is NaN -- from ``np.sort`` alone.  The tests check them against
numpy itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np


def median(a: Any) -> float:
    """``float(np.median(a))`` over every value (in the array's own dtype, as numpy)."""
    s = np.sort(np.asarray(a), axis=None)
    n = s.size
    if n == 0 or np.isnan(s[-1]):  # NaN sorts last
        return float("nan")
    h = n // 2
    return float(s[h]) if n % 2 else float(np.mean(s[h - 1 : h + 1]))


def median_rows(a: Any) -> np.ndarray:
    """``np.median(a, axis=-1)``: the median of each row (last axis) of a 2-D or N-D array."""
    s = np.sort(np.asarray(a), axis=-1)
    n = s.shape[-1]
    out: np.ndarray = s[..., n // 2] if n % 2 else (s[..., n // 2 - 1] + s[..., n // 2]) / 2
    if n:
        out = np.where(np.isnan(s[..., -1]), np.nan, out)
    return out


@overload
def quantile(a: Any, q: float) -> float: ...
@overload
def quantile(a: Any, q: Sequence[float]) -> list[float]: ...
def quantile(a: Any, q: float | Sequence[float]) -> float | list[float]:
    """``np.quantile(a, q)`` over every value (method ``linear``)."""
    s = np.sort(np.asarray(a, dtype=np.float64), axis=None)
    qs = [float(q)] if isinstance(q, (int, float)) else [float(x) for x in q]
    if s.size == 0:
        raise ValueError("quantile of no values")
    out = [_linear(s, x) for x in qs]
    return out[0] if isinstance(q, (int, float)) else out


def _linear(s: np.ndarray, q: float) -> float:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    if np.isnan(s[-1]):
        return float("nan")
    n = s.size
    index = q * (n - 1)
    lo = int(np.floor(index))
    hi = min(lo + 1, n - 1)
    t = index - lo
    a, b = s[lo], s[hi]
    diff = b - a
    # numpy's _lerp: from below for t < 0.5, from above otherwise (exact at both ends).
    return float(b - diff * (1.0 - t)) if t >= 0.5 else float(a + diff * t)
