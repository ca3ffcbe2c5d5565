"""The daemon's medians and quantiles are numpy's own numbers, and never load numpy.ma."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edge.order_statistics import median, median_rows, quantile

values = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.sampled_from([0.0, 1.5, -2.25]),
    min_size=1, max_size=60,
)  # fmt: skip


@given(values)
def test_median_is_numpys(xs: list[float]) -> None:
    assert median(xs) == float(np.median(xs))


@given(values, st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=4))
def test_quantile_is_numpys(xs: list[float], qs: list[float]) -> None:
    assert quantile(xs, qs) == [float(v) for v in np.quantile(xs, qs)]
    assert quantile(xs, qs[0]) == float(np.quantile(xs, qs[0]))


@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_row_medians_are_numpys(rows: int, cols: int, seed: int) -> None:
    a = np.random.default_rng(seed).normal(size=(rows, cols)).round(1)
    assert np.array_equal(median_rows(a), np.median(a, axis=-1))


def test_a_nan_anywhere_is_a_nan_median() -> None:
    assert np.isnan(median([1.0, float("nan"), 3.0]))
    assert np.isnan(quantile([1.0, float("nan")], 0.5))
    assert np.isnan(median_rows(np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]]))[0])


def test_they_never_load_numpy_ma() -> None:
    code = ("import sys\nfrom edge.order_statistics import median, median_rows, quantile\n"
            "import numpy as np\nx = np.arange(11.0)\nmedian(x); quantile(x, [0.1, 0.9]); "
            "median_rows(x.reshape(1, -1))\nprint('numpy.ma' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
