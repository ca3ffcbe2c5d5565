"""The posture input's median is ``np.median``'s number, without importing ``numpy.ma``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge.inference.posture_input import median

VALUES = st.one_of(
    hnp.arrays(np.float32, st.integers(1, 600), elements=st.floats(-1e4, 1e4, width=32)),
    hnp.arrays(np.float64, st.integers(1, 600), elements=st.floats(allow_nan=True)),
    hnp.arrays(np.uint8, st.integers(1, 600)),
)


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_the_same_number_as_np_median(a: np.ndarray) -> None:
    want = float(np.median(a))
    got = median(a)
    assert got == want or (np.isnan(want) and np.isnan(got))


def test_a_frame_through_canonical_never_imports_numpy_ma() -> None:
    code = (
        "import sys, numpy as np\n"
        "from edge.inference.posture_input import canonical\n"
        "cells = bytes(range(256)) * 2\n"
        "canonical(cells, None, 16, 32); canonical(cells, np.full(512, 3.0), 16, 32)\n"
        "print('numpy.ma' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
