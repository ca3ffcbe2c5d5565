"""The nap check sheet's facts: an alarm is never hidden, a missed check is a visible gap,
each child's nap start and wake, and who answered each alarm and when."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from edge.nursery.log import NapEntry
from edge.nursery.sheet import JST, build_sheet, cell_text

DAY = dt.date(2026, 11, 24)


def at(hour: int, minute: int, second: int = 0) -> float:
    return dt.datetime(2026, 11, 24, hour, minute, second, tzinfo=JST).timestamp()


def e(t: float, kind: str, value: str = "", cot: str = "A-1", by: str = "") -> NapEntry:
    return NapEntry(t, cot, kind, value, by)


NAP = [e(at(12, 30, 1), "nap_start"), e(at(14, 0), "wake")]


@pytest.mark.parametrize("alarm_first", [True, False])
def test_a_prone_alarm_is_never_hidden_by_a_later_check_in_its_slot(alarm_first: bool) -> None:
    alarm = e(at(12, 36, 10), "prone_alarm", "prone")
    check = e(at(12, 36, 40), "posture_check", "supine")  # turned over, checked again
    entries = [*NAP, alarm, check] if alarm_first else [*NAP, check, alarm]
    sheet = build_sheet(entries, {"A-1": "さくら"}, date=DAY)
    cell = sheet.rows[0].cells["12:35"]
    assert cell.posture == "prone"  # the worst state in the slot wins
    assert cell.alarms == ("prone_alarm",)
    assert cell_text(cell, "ja") == "うつぶせ うつぶせ寝警報"
    assert cell_text(cell, "ja", short=True) == "う!"


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_an_apnea_alarm_keeps_its_mark_beside_the_posture_whatever_the_order(
    order: tuple[int, ...],
) -> None:
    three = [
        e(at(12, 41), "posture_check", "left"),
        e(at(12, 42), "apnea_alarm", "supine"),
        e(at(12, 44, 59), "posture_check", "supine"),
    ]
    sheet = build_sheet([*NAP, *(three[i] for i in order)], {"A-1": ""}, date=DAY)
    cell = sheet.rows[0].cells["12:40"]
    assert cell.alarms == ("apnea_alarm",)
    assert cell_text(cell, "ja") == "左向き 無呼吸警報"  # on the side is worse than on the back


def test_every_slot_of_the_nap_has_a_column_and_a_missed_check_is_flagged() -> None:
    entries = [
        e(at(13, 30, 2), "nap_start"),
        e(at(13, 30, 2), "posture_check", "supine"),
        e(at(13, 35, 2), "posture_check", "supine"),
        # the daemon restarted: nothing at 13:40
        e(at(13, 45, 7), "nap_start"),
        e(at(13, 45, 7), "posture_check", "right"),
        e(at(13, 51), "wake"),
    ]
    sheet = build_sheet(entries, {"A-1": ""}, date=DAY)
    assert sheet.slots == ["13:30", "13:35", "13:40", "13:45", "13:50"]
    cells = sheet.rows[0].cells
    assert cells["13:40"].missed and cells["13:40"].posture is None
    assert cell_text(cells["13:40"], "ja") == "欠測"
    assert not cells["13:45"].missed
    assert cells["13:50"].missed  # still asleep at 13:50 until 13:51, and no check
    # The restart did not split the nap: one nap, from its first start to the wake.
    [nap] = sheet.rows[0].naps
    assert (nap.start, nap.wake) == (at(13, 30, 2), at(13, 51))


def test_the_configured_nap_period_has_every_column_even_without_data() -> None:
    entries = [e(at(13, 0), "nap_start"), e(at(13, 0), "posture_check", "supine"),
               e(at(13, 3), "wake")]
    sheet = build_sheet(entries, {"A-1": "", "A-2": ""}, date=DAY, period=("12:30", "15:00"))
    assert len(sheet.slots) == 31 and sheet.slots[0] == "12:30" and sheet.slots[-1] == "15:00"
    a1, a2 = sheet.rows
    assert not any(c.missed for c in a2.cells.values())  # A-2 never slept: blank, not missed
    assert a1.cells["13:00"].posture == "supine"
    assert not a1.cells["12:55"].missed and not a1.cells["13:05"].missed  # awake then


def test_an_alarm_outside_the_period_still_gets_its_column() -> None:
    entries = [e(at(15, 20), "nap_start"), e(at(15, 21), "prone_alarm", "prone")]
    sheet = build_sheet(entries, {"A-1": ""}, date=DAY, period=("12:30", "15:00"))
    assert sheet.slots[-1] == "15:20"
    assert sheet.rows[0].cells["15:20"].alarms == ("prone_alarm",)


def test_each_alarm_lists_raised_acknowledged_by_whom_and_cleared() -> None:
    entries = [
        *NAP,
        e(at(12, 50, 0), "prone_alarm", "prone"),
        e(at(12, 50, 20), "ack", "prone_alarm", by="button"),  # pressed before turning: kept
        e(at(12, 50, 40), "ack", "prone_alarm", by="YT"),
        e(at(12, 50, 45), "alarm_cleared", "prone_alarm", by="button"),
    ]
    [alarm] = build_sheet(entries, {"A-1": ""}, date=DAY).rows[0].alarms
    assert alarm.kind == "prone_alarm" and alarm.raised == at(12, 50)
    assert alarm.acks == ((at(12, 50, 20), "button"), (at(12, 50, 40), "YT"))
    assert alarm.cleared == at(12, 50, 45)


def test_an_alarm_still_latched_has_no_cleared_time() -> None:
    entries = [*NAP, e(at(12, 50), "apnea_alarm", "supine")]
    [alarm] = build_sheet(entries, {"A-1": ""}, date=DAY).rows[0].alarms
    assert alarm.cleared is None and alarm.acks == ()


def test_a_mat_fault_reads_check_by_hand_not_empty() -> None:
    entries = [
        e(at(12, 30, 1), "nap_start"),
        e(at(12, 30, 1), "posture_check", "supine"),
        e(at(12, 33), "by_hand", "all_zero"),
        e(at(12, 47), "by_hand_end", "all_zero"),
        e(at(12, 47), "posture_check", "supine"),
        e(at(13, 0), "wake"),
    ]
    row = build_sheet(entries, {"A-1": ""}, date=DAY).rows[0]
    assert [s for s, c in row.cells.items() if c.by_hand] == ["12:30", "12:35", "12:40", "12:45"]
    assert cell_text(row.cells["12:35"], "ja") == "手で確認"
    assert cell_text(row.cells["12:35"], "en") == "check by hand"
    assert row.cells["12:30"].posture == "supine"  # the check before the fault is kept
    assert not row.cells["12:40"].missed  # flagged by hand, which says more than "missed"
    assert row.by_hand == [(at(12, 33), at(12, 47), "all_zero")]


def test_staff_initials_and_room_climate_per_slot() -> None:
    entries = [
        *NAP,
        e(at(12, 40, 5), "staff_check", cot="", by="KS"),
        e(at(12, 41, 5), "staff_check", cot="", by="YT"),
        e(at(12, 52), "prone_alarm", "prone"),
        e(at(12, 53), "ack", "prone_alarm", by="YT"),
        e(at(12, 31), "climate", "22.5/48", cot="", by="KS"),
    ]
    sheet = build_sheet(entries, {"A-1": ""}, date=DAY)
    assert sheet.staff["12:40"] == ("KS", "YT")
    assert sheet.staff["12:50"] == ("YT",)
    assert sheet.climate["12:30"] == (22.5, 48.0)


def test_entries_of_cots_no_longer_configured_still_show() -> None:
    entries = [*NAP, e(at(12, 45), "prone_alarm", "prone", cot="B-9")]
    sheet = build_sheet(entries, {"A-1": ""}, date=DAY)
    assert [r.cot for r in sheet.rows] == ["A-1", "B-9"]
    assert sheet.rows[1].cells["12:45"].alarms == ("prone_alarm",)
