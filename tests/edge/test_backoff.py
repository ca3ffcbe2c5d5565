"""Backoff: doubling, capped, jittered; the same class paces the uplink and the notifier."""

from __future__ import annotations

import random

import cloud.receive
import cloud.send
from edge.backoff import Backoff


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


def test_counting_failures_in_a_row_as_the_uplink_does() -> None:
    """1, 2, 4, 8 … s ceilings (full jitter under each), capped; a success starts over."""
    backoff = Backoff(1.0, 30.0, rng=random.Random(4))
    for attempt in range(1, 200):
        ceiling = min(30.0, 2.0 ** (attempt - 1))
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling
        assert backoff.attempt == min(attempt, 64)
    late = [backoff.next_delay() for _ in range(200)]
    assert max(late) > 20.0, "after many failures the wait spreads up to the cap"
    backoff.reset()
    assert backoff.attempt == 0
    assert 0.0 <= backoff.next_delay() <= 1.0, "back to the first ceiling"


def test_same_draws_as_before_the_merge() -> None:
    """The uplink's own class drew uniform(0, min(cap, base * 2**n)) with n from 0: same stream."""
    a, b = random.Random(7), random.Random(7)
    backoff = Backoff(0.5, 60.0, rng=a)
    for n in range(20):
        assert backoff.next_delay() == b.uniform(0, min(60.0, 0.5 * 2**n))


def test_the_notifier_uses_this_one_class() -> None:
    """MQTT reconnects (receiver) and mail retries (sender) are paced by edge's class."""
    assert cloud.receive.Backoff is Backoff
    assert cloud.send.Backoff is Backoff
