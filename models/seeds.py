"""Sample seeds for the generated data sets: training runs and held-out evaluation never meet.

A training run with seed ``s`` (0-999) draws sample seeds ``TRAIN_BASE * (s + 1) + i``;
held-out evaluation draws ``HELDOUT_BASE + offset + i``.  Both generators
(``models.posture.data``, ``models.anomaly.data``) use these ranges.
"""

from __future__ import annotations

TRAIN_BASE = 1_000_000
HELDOUT_BASE = 2_000_000_000


def train_seeds(seed: int, n: int) -> range:
    """Sample seeds of a training run with ``seed`` (disjoint from held-out seeds)."""
    if not 0 <= seed < 1000:
        raise ValueError(f"training seed must be 0..999, got {seed}")
    start = TRAIN_BASE * (seed + 1)
    return range(start, start + n)


def heldout_seeds(n: int, offset: int = 0) -> range:
    """Sample seeds no training run uses."""
    return range(HELDOUT_BASE + offset, HELDOUT_BASE + offset + n)
