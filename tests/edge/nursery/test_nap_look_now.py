""""Look now" (見てください) in the nap room: the buzzer's chirp is not the alarm's tone, the
nursery hears of it, a staff member's press is recorded, and the sheet shows it, from the
prompt until the model answers again, never as a safe posture."""

# ruff: noqa: RUF001  (Japanese text: full-width parentheses)

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from edge.config import BuzzerConfig, MatSensorConfig, NapRuleConfig
from edge.devices.actuators import Actuator
from edge.devices.factory import build_actuator
from edge.event import AlarmCleared, EventData, PostureUnknown, Severity
from edge.health.sensor import SensorHealth
from edge.nursery.log import NapEntry, NapLog
from edge.nursery.mat_watch import MatWatch
from edge.nursery.sheet import JST, build_sheet, cell_text, render_csv, render_html
from edge.nursery.watch import CHIRP_PERIOD_S, TICK_S, NapWatch

DAY = dt.date(2026, 11, 24)


def at(hour: int, minute: int, second: int = 0) -> float:
    return dt.datetime(2026, 11, 24, hour, minute, second, tzinfo=JST).timestamp()


def e(t: float, kind: str, value: str = "", by: str = "") -> NapEntry:
    return NapEntry(t, "A-1", kind, value, by)


# -- the sheet ---------------------------------------------------------------------------


def test_the_sheet_marks_look_now_from_the_prompt_until_the_model_answers() -> None:
    entries = [
        e(at(12, 30, 1), "nap_start"),
        e(at(12, 30, 1), "posture_check", "supine"),
        e(at(12, 36, 20), "posture_unknown", "unknown"),
        e(at(12, 37), "ack", "posture_unknown", by="YT"),
        e(at(12, 40, 1), "posture_check", "supine"),  # a check that says "on the back"...
        e(at(12, 47, 30), "posture_unknown_end", "supine"),
        e(at(12, 50, 1), "posture_check", "supine"),
        e(at(13, 0), "wake"),
    ]
    sheet = build_sheet(entries, {"A-1": "さくら"}, date=DAY)
    cells = sheet.rows[0].cells
    for slot in ("12:35", "12:40", "12:45"):
        # ...is not shown as safe while the model could not tell: ? and the look-now mark
        assert cells[slot].posture == "unknown", slot
        assert cells[slot].alarms == ("posture_unknown",), slot
        assert cell_text(cells[slot], "ja", short=True) == "?見"
    assert cell_text(cells["12:40"], "ja") == "不明 見てください（姿勢不明）"
    assert cell_text(cells["12:40"], "en", short=True) == "??!"
    assert cells["12:30"].posture == cells["12:50"].posture == "supine"
    assert not cells["12:30"].alarms and not cells["12:50"].alarms
    [look] = sheet.rows[0].alarms
    assert look.kind == "posture_unknown" and look.acks == ((at(12, 37), "YT"),)
    assert look.cleared == at(12, 47, 30)
    assert sheet.staff["12:35"] == ("YT",)
    page = render_html(sheet, "ja")
    assert 'class="slot look"' in page and "見=見てください" in page
    assert 'class="slot alarm"' not in page  # a prompt to look, not an alarm
    csv_text = render_csv(sheet, "ja")
    assert "見てください（姿勢不明）,12:36:20,不明,12:37:00 YT（40秒後）,12:47:30" in csv_text


def test_a_look_now_still_open_runs_to_the_end_of_the_nap_and_an_alarm_stays_red() -> None:
    entries = [
        e(at(12, 30, 1), "nap_start"),
        e(at(12, 31), "posture_unknown", "unknown"),
        e(at(12, 33), "prone_alarm", "prone"),
        e(at(12, 44), "wake"),
    ]
    sheet = build_sheet(entries, {"A-1": ""}, date=DAY)
    cells = sheet.rows[0].cells
    assert cells["12:30"].alarms == ("posture_unknown", "prone_alarm")
    assert cells["12:30"].posture == "prone"
    assert cells["12:35"].alarms == cells["12:40"].alarms == ("posture_unknown",)
    page = render_html(sheet, "en")
    assert page.count('class="slot alarm"') == 1 and page.count('class="slot look"') == 2
    assert sheet.rows[0].alarms[0].cleared is None  # listed as still on, not made up


def test_a_restart_ends_a_look_now_left_open() -> None:
    entries = [
        e(at(12, 30, 1), "nap_start"),
        e(at(12, 31), "posture_unknown", "unknown"),
        e(at(12, 33), "posture_unknown_end", "start"),
        e(at(12, 58), "posture_check", "supine"),
    ]
    sheet = build_sheet(entries, {"A-1": ""}, date=DAY)
    assert sheet.rows[0].cells["12:30"].alarms == ("posture_unknown",)
    assert not sheet.rows[0].cells["12:35"].alarms


# -- the daemon's side ---------------------------------------------------------------------


def _nap_room(tmp_path: Path) -> tuple[NapWatch, Actuator, list[EventData]]:
    """One cot's nap rule on mock pins (look now after 20 s); what it records, in a list."""
    events: list[EventData] = []

    async def record(
        data: EventData, *, severity: Severity | None = None, at: float | None = None
    ) -> None:
        events.append(data)

    factory = MockFactory()
    buzzer = build_actuator(BuzzerConfig(pin=12), factory)
    mat = MatWatch("mat_1", MatSensorConfig(port="/dev/null", cot="ひよこ-1"),
                   health=SensorHealth("mat_1", record), telemetry=None)  # type: ignore[arg-type]
    config = NapRuleConfig(mats=["mat_1"], buzzer="buzzer", ack_pin=26, unknown_prompt_s=20)
    nap = NapWatch("naps", config, {"mat_1": mat}, buzzer, record=record,
                   log_path=tmp_path / "naps.sqlite3")
    return nap, buzzer, events


async def test_the_chirp_is_not_the_alarm_and_a_press_records_the_look(tmp_path: Path) -> None:
    nap, buzzer, events = _nap_room(tmp_path)
    cot = nap.cots["mat_1"]
    assert (cot.prone_reset_s, cot.unknown_prompt_s) == (3.0, 20.0)
    try:
        t = 0.0
        outcomes: list[Any] = []
        while t <= 20:
            outcomes += cot.update(t, occupied=True, seconds_since_motion=0.1, posture="unknown")
            t += TICK_S
        await nap._handle("mat_1", outcomes)
        [look] = [x for x in events if isinstance(x, PostureUnknown)]
        assert look.to_data() == {"cot": "ひよこ-1", "unknown_s": 20.0}
        assert look.severity == "warning"
        states = []
        for _ in range(round(2 * CHIRP_PERIOD_S / TICK_S)):
            nap._drive_buzzer(tick=True)
            states.append(buzzer.is_on)
        # Two short beeps every 10 s: never the alarm's steady tone.
        period = round(CHIRP_PERIOD_S / TICK_S)
        assert states == ([True, False, True] + [False] * (period - 3)) * 2
        # A staff member presses the button: recorded as a look, the chirp stops.
        await nap._acknowledge(time.monotonic(), "KS", None)
        assert cot.looking and not cot.prompting
        for _ in range(period):
            nap._drive_buzzer(tick=True)
            assert not buzzer.is_on
        # The child rolls face down (still unknown to the model): the alarm wins, steady.
        for k in range(ticks := round(31 / TICK_S)):
            cot.update(t + k * TICK_S, occupied=True, seconds_since_motion=0.1,
                       posture="prone" if k < 2 else "unknown")
            nap._drive_buzzer(tick=True)
        assert ticks and cot.sounding
        for _ in range(period):
            nap._drive_buzzer(tick=True)
            assert buzzer.is_on
    finally:
        nap.close()
    log = NapLog(tmp_path / "naps.sqlite3")
    try:
        today = dt.datetime.now(JST).date()  # and yesterday: a run across midnight
        entries = log.day(today, JST) + log.day(today - dt.timedelta(days=1), JST)
    finally:
        log.close()
    kinds = [(x.kind, x.value, x.by) for x in entries]
    assert ("posture_unknown", "unknown", "") in kinds
    assert ("ack", "posture_unknown", "KS") in kinds


async def test_the_nursery_hears_when_a_look_now_prompt_ends(tmp_path: Path) -> None:
    """The prompt went to the nursery as an event; its end does too (alarm_cleared, by the
    model, with what it reads now), and only a prompt that went off ends."""
    nap, _, events = _nap_room(tmp_path)
    cot = nap.cots["mat_1"]
    try:
        def prompts() -> list[EventData]:
            return [x for x in events if isinstance(x, PostureUnknown | AlarmCleared)]

        def run(t: float, until_s: float, posture: str) -> float:
            outcomes: list[Any] = []
            while t <= until_s:
                outcomes += cot.update(t, occupied=True, seconds_since_motion=0.1,
                                       posture=posture)
                t += TICK_S
            pending.extend(outcomes)
            return t

        pending: list[Any] = []
        t = run(0.0, 10.0, "unknown")  # 10 s unknown: no prompt yet...
        t = run(t, 15.0, "supine")  # ...and the model answers: nothing to end
        await nap._handle("mat_1", pending)
        assert prompts() == []
        pending.clear()
        t = run(t, 40.0, "unknown")
        await nap._handle("mat_1", pending)
        [look] = prompts()
        assert isinstance(look, PostureUnknown)
        pending.clear()
        run(t, t + cot.prone_reset_s + 1, "left")
        await nap._handle("mat_1", pending)
        [_, end] = prompts()
        assert isinstance(end, AlarmCleared)
        data = end.to_data()
        assert data["cleared"] == "posture_unknown" and data["acknowledged_by"] == "model"
        assert data["posture"] == "left" and end.severity == "info"
        assert isinstance(data["alarm_s"], float) and data["alarm_s"] >= 0
    finally:
        nap.close()
