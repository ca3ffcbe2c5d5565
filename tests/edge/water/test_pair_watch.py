"""What a pair of gauges keeps across restarts, and what it does when it cannot."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge.event import EventData
from edge.water.pair_watch import PairWatch

HOUR = 3600.0


class Recorded:
    """The events a watch hands to the daemon's recorder, in order."""

    def __init__(self) -> None:
        self.events: list[EventData] = []

    async def __call__(self, data: EventData, **_: object) -> None:
        self.events.append(data)


async def feed(watch: PairWatch, hours: float, offset_b: float = 0.0, start: float = 0.0) -> None:
    """Both gauges every 10 min on a still 100 cm from ``start`` (b's datum 5 cm lower, plus
    ``offset_b``)."""
    for i in range(int(hours * 6)):
        t = start + i * 600.0
        await watch.add("a", 100.0, t)
        await watch.add("b", 95.0 + offset_b, t + 120.0)


async def test_what_was_learnt_is_written_once_and_taken_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = Recorded()
    watch = PairWatch("a", "b", 3.0, record=record, state_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="edge.water.pair_watch"):
        await feed(watch, 14)
    assert caplog.text.count("water a and b: usual difference +5.0 cm learnt") == 1
    kept = json.loads((tmp_path / "pair-a-b.json").read_text())
    assert kept == {"version": 1, "first": "a", "second": "b", "usual_cm": 5.0,
                    "noise_cm": 0.0, "active": False}  # fmt: skip
    again = PairWatch("a", "b", 3.0, record=record, state_dir=tmp_path)
    assert again.pair.learnt and again.pair.usual_cm == 5.0
    assert record.events == []


async def test_a_damaged_state_file_is_learnt_again_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pair-a-b.json").write_text('{"version": 1, "first": "a", "sec')
    with caplog.at_level(logging.WARNING):
        watch = PairWatch("a", "b", 3.0, record=Recorded(), state_dir=tmp_path)
    assert not watch.pair.learnt
    assert "kept state" in caplog.text and "not usable" in caplog.text and "learning again" in (
        caplog.text
    )


async def test_a_full_or_unwritable_card_costs_the_kept_state_not_the_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = Recorded()
    watch = PairWatch("a", "b", 3.0, record=record, state_dir=Path("/proc/satoyama-test"))
    with caplog.at_level(logging.WARNING):
        await feed(watch, 13)
        await feed(watch, 7, offset_b=-8.0, start=13 * HOUR)  # b slipped 8 cm
    [event] = record.events
    assert event.kind == "anomaly" and event.tests == ["disagree"]  # type: ignore[attr-defined]
    assert "cannot keep what was learnt in /proc/satoyama-test/pair-a-b.json" in caplog.text
