"""Today's link usage: counted from the socket's counters, kept across restarts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from edge.link.linkstats import DailyUsage, SocketCounters

DAY = dt.date(2026, 11, 24)


def _counted(path: Path | None, day: dt.date = DAY) -> DailyUsage:
    usage = DailyUsage(path, today=lambda: day)
    usage.new_connection()
    usage.sample(SocketCounters(bytes_out=1000, bytes_in=200, segs_out=3, segs_in=2))
    return usage


def test_wire_bytes_count_payload_and_headers() -> None:
    usage = _counted(None)
    assert usage.today == 1000 + 200 + 52 * 5


def test_todays_count_is_taken_back_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "link-usage.json"
    first = _counted(path)
    first.save()
    again = DailyUsage(path, today=lambda: DAY)
    assert again.today == first.today
    again.new_connection()
    again.sample(SocketCounters(100, 0, 1, 0))
    assert again.today == first.today + 100 + 52


def test_yesterdays_count_is_not(tmp_path: Path) -> None:
    path = tmp_path / "link-usage.json"
    _counted(path).save()
    assert DailyUsage(path, today=lambda: DAY + dt.timedelta(days=1)).today == 0


def test_a_day_passing_while_running_starts_a_new_count() -> None:
    day = [DAY]
    usage = DailyUsage(today=lambda: day[0])
    usage.new_connection()
    usage.sample(SocketCounters(500, 0, 0, 0))
    day[0] += dt.timedelta(days=1)
    usage.sample(SocketCounters(600, 0, 0, 0))
    assert usage.today == 100 and usage.total == 600


@pytest.mark.parametrize("content", [b"{not json", b'{"day": "yesterday", "today": 5}', b"[]"])
def test_a_bad_file_counts_from_zero_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "link-usage.json"
    path.write_bytes(content)
    assert DailyUsage(path, today=lambda: DAY).today == 0
    assert "unreadable" in caplog.text and "counting from zero" in caplog.text


def test_an_unwritable_place_only_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    usage = _counted(tmp_path / "missing-dir" / "link-usage.json")
    usage.save()
    assert "cannot keep today's link usage" in caplog.text
