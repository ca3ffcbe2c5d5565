"""Events a test records by hand: an ``anomaly`` numbered by its ``score``."""

from __future__ import annotations

from edge.event import Anomaly


def numbered(n: int, sensor: str = "test") -> Anomaly:
    """An ``anomaly`` (severity ``warning`` unless the recorder is told otherwise) whose
    ``score`` is ``n``: tests that need many distinguishable events record these."""
    return Anomaly(
        sensor=sensor, series="water", score=float(n), threshold=0.0, tests=[], pattern="stuck"
    )
