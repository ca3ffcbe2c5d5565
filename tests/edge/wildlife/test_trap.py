"""The trap rule: one alarm per closure however the door bounces, reminders, daily proof of life."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from drivers.trap_switch import TrapSwitch
from edge.wildlife.trap import TrapRule


def rule(closed: bool = False, now: float = 0.0) -> TrapRule:
    return TrapRule(
        "trap_a", debounce_s=0.2, reminder_s=3600, armed_report_s=86400, closed_now=closed, now=now
    )


def kinds(outcomes: list) -> list[str]:  # type: ignore[type-arg]
    return [o.kind + (" (reminder)" if o.reminder else "") for o in outcomes]


def test_start_open_reports_armed_at_once_then_daily() -> None:
    r = rule()
    assert kinds(r.tick(0)) == ["trap_armed"]
    assert r.next_deadline() == 86400
    assert r.tick(86399) == []
    assert kinds(r.tick(86400)) == ["trap_armed"]


def test_a_bouncing_door_is_one_closure() -> None:
    r = rule()
    r.tick(0)
    t = 100.0
    for i in range(12):  # the door rattles as it falls: 12 edges within 60 ms
        r.edge(i % 2 == 0, t + i * 0.005)
    r.edge(True, t + 0.06)
    assert r.tick(t + 0.1) == []  # not stable for debounce_s yet
    assert r.next_deadline() == pytest.approx(t + 0.26)
    [closed] = r.tick(t + 0.3)
    assert closed.kind == "trap_triggered" and not closed.reminder
    assert closed.closed_since == pytest.approx(t + 0.06)
    assert r.tick(t + 10) == []


def test_reminders_while_closed_then_reset() -> None:
    r = rule()
    r.tick(0)
    r.edge(True, 1000)
    r.tick(1000.5)
    assert kinds(r.tick(1000 + 3600)) == ["trap_triggered (reminder)"]
    [second] = r.tick(1000 + 7200.5)
    assert second.reminder and second.closed_s == pytest.approx(7200.5)
    r.edge(False, 9000)
    [reset] = r.tick(9000.3)
    assert reset.kind == "trap_reset"
    assert reset.closed_s == pytest.approx(8000)
    assert r.next_deadline() == pytest.approx(9000 + 86400)  # armed again: daily report


def test_a_glitch_shorter_than_the_debounce_is_nothing() -> None:
    r = rule()
    r.tick(0)
    r.edge(True, 50)
    r.edge(False, 50.1)
    assert r.tick(51) == []
    assert not r.closed


def test_closed_at_start_is_a_reminder_at_once() -> None:
    r = rule(closed=True, now=5)
    [o] = r.tick(5)
    assert o.kind == "trap_triggered" and o.reminder


@pytest.mark.parametrize(
    ("closed_level", "pull", "closed_pin_level"),
    [("low", "up", False), ("high", "down", True)],
)
def test_switch_wiring_normally_open_and_normally_closed(
    pins: MockFactory, closed_level: str, pull: str, closed_pin_level: bool
) -> None:
    edges: list[bool] = []
    with TrapSwitch(
        5, pin_factory=pins, closed_level=closed_level, pull=pull,  # type: ignore[arg-type]
        on_edge=lambda closed, t: edges.append(closed),
    ) as sw:
        assert not sw.closed
        pin = pins.pin(5)
        (pin.drive_high if closed_pin_level else pin.drive_low)()
        assert sw.closed and edges == [True]
        (pin.drive_low if closed_pin_level else pin.drive_high)()
        assert not sw.closed and edges == [True, False]


def test_contradictory_wiring_is_refused(pins: MockFactory) -> None:
    with pytest.raises(ValueError, match="would read 'closed' with the switch disconnected"):
        TrapSwitch(5, pin_factory=pins, closed_level="high", pull="up")
