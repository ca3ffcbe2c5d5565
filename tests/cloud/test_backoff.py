"""Backoff: doubling, capped, jittered."""

from __future__ import annotations

import random

from cloud.backoff import Backoff


def test_full_jitter_stays_below_the_capped_exponential() -> None:
    backoff = Backoff(0.5, 60.0, jitter="full", rng=random.Random(1))
    for attempt in range(1, 40):
        ceiling = min(60.0, 0.5 * 2 ** (attempt - 1))
        for _ in range(50):
            assert 0.0 <= backoff.delay(attempt) <= ceiling


def test_equal_jitter_never_retries_much_sooner_than_planned() -> None:
    backoff = Backoff(5.0, 300.0, jitter="equal", rng=random.Random(2))
    delays = [backoff.delay(1) for _ in range(200)]
    assert all(2.5 <= d <= 5.0 for d in delays)
    assert len(set(delays)) > 100  # actually random: retries of many mails spread out
    assert all(150.0 <= backoff.delay(n) <= 300.0 for n in (7, 20, 10_000))


def test_attempt_zero_or_negative_counts_as_the_first() -> None:
    backoff = Backoff(1.0, 10.0, jitter="equal", rng=random.Random(3))
    assert 0.5 <= backoff.delay(0) <= 1.0
    assert 0.5 <= backoff.delay(-5) <= 1.0
