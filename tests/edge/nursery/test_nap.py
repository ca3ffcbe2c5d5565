"""Nap rules: the five-minute check, prone and apnea alarms that latch until safe and
acknowledged."""

from __future__ import annotations

from edge.nursery.cot import (
    AckWhileUnsafe,
    AlarmCleared,
    AlarmRaised,
    CotRule,
    ModelDown,
    PostureCheck,
)


def kinds(out: list[object]) -> list[str]:
    names = []
    for o in out:
        if isinstance(o, AlarmRaised):
            names.append(o.kind)
        elif isinstance(o, AlarmCleared):
            names.append(f"cleared {o.cleared}")
        else:
            names.append(type(o).__name__)
    return names


def feed(  # type: ignore[no-untyped-def]
    w: CotRule, t: float, posture: str = "supine", still: float = 0.0, occupied: bool = True
):
    return w.update(
        t, occupied=occupied, seconds_since_motion=still, posture=posture, probability=0.99
    )


def test_posture_checked_when_laid_down_then_every_five_minutes() -> None:
    w = CotRule("A-1")
    assert feed(w, 0, occupied=False, posture="empty") == []
    [first] = feed(w, 10)
    assert isinstance(first, PostureCheck) and first.posture == "supine"
    assert feed(w, 309) == []
    [second] = feed(w, 310, posture="left")
    assert second == PostureCheck("left", 0.99)
    assert feed(w, 400, occupied=False, posture="empty") == []  # picked up: no checks
    assert feed(w, 1000, occupied=False, posture="empty") == []


def test_prone_for_the_configured_time_alarms_once_and_latches() -> None:
    w = CotRule("A-1", prone_alarm_s=30)
    feed(w, 0)
    assert feed(w, 10, posture="prone") == []
    assert feed(w, 39, posture="prone") == []
    assert kinds(feed(w, 40, posture="prone")) == ["prone_alarm"]
    assert w.sounding
    assert feed(w, 50, posture="prone") == []  # once
    # Staff press the button while the infant is still face down: noted, not silenced.
    assert kinds(w.acknowledge(55)) == ["AckWhileUnsafe"]
    assert w.sounding
    # Turned over: safe (for the confirm time) and acknowledged -> cleared.
    assert feed(w, 60, posture="supine") == []
    [cleared] = feed(w, 63, posture="supine")
    assert cleared == AlarmCleared("prone_alarm", 23, "button")
    assert not w.sounding


def test_turned_over_but_not_acknowledged_keeps_sounding() -> None:
    w = CotRule("A-1", prone_alarm_s=30)
    feed(w, 0, posture="prone")
    feed(w, 30, posture="prone")
    assert feed(w, 35, posture="supine") == []  # safe now, but nobody came
    assert w.sounding
    assert kinds(w.acknowledge(80)) == ["cleared prone_alarm"]
    assert not w.sounding


def test_brief_prone_moments_do_not_alarm() -> None:
    w = CotRule("A-1", prone_alarm_s=30)
    feed(w, 0)
    for tick in range(600):  # prone 10 s, then on the side 10 s, repeatedly (0.5-s ticks)
        t = tick / 2
        posture = "prone" if t % 20 < 10 else "left"
        assert "prone_alarm" not in kinds(feed(w, t, posture=posture))
    assert not w.sounding


def test_no_motion_for_twenty_seconds_is_apnea() -> None:
    w = CotRule("A-1", apnea_alarm_s=20)
    feed(w, 0)
    assert feed(w, 19, still=19) == []
    assert kinds(feed(w, 20, still=20)) == ["apnea_alarm"]
    assert kinds(w.acknowledge(25)) == ["AckWhileUnsafe"]  # still not breathing
    assert kinds(feed(w, 26, still=0.5)) == ["cleared apnea_alarm"]


def test_an_empty_cot_never_alarms_for_apnea() -> None:
    w = CotRule("A-1", apnea_alarm_s=20)
    assert feed(w, 100, still=500, occupied=False, posture="empty") == []


def test_model_down_is_told_once_and_checks_say_unknown() -> None:
    w = CotRule("A-1")
    out = w.update(0, occupied=True, seconds_since_motion=0, posture=None,
                   model_error="posture model missing")
    assert isinstance(out[0], ModelDown) and out[0].reason == "posture model missing"
    assert out[1] == PostureCheck("unknown", None)
    again = w.update(1, occupied=True, seconds_since_motion=0, posture=None, model_error="x")
    assert not any(isinstance(o, ModelDown) for o in again)
    # Apnea detection does not need the model: it keeps working.
    assert "apnea_alarm" in kinds(
        w.update(25, occupied=True, seconds_since_motion=25, posture=None, model_error="x"))


def test_ack_while_unsafe_is_reported_per_alarm() -> None:
    w = CotRule("A-1", prone_alarm_s=1, apnea_alarm_s=1)
    feed(w, 0, posture="prone")
    feed(w, 2, posture="prone", still=2)
    assert sorted(w.active_alarms) == ["apnea_alarm", "prone_alarm"]
    out = w.acknowledge(3)
    assert sorted(o.kind for o in out if isinstance(o, AckWhileUnsafe)) == [
        "apnea_alarm", "prone_alarm"]


def test_who_acknowledged_first_is_kept_until_the_alarm_clears() -> None:
    w = CotRule("A-1", prone_alarm_s=30)
    feed(w, 0, posture="prone")
    feed(w, 30, posture="prone")
    assert kinds(w.acknowledge(35, by="YT")) == ["AckWhileUnsafe"]  # still face down
    assert w.sounding
    assert kinds(w.acknowledge(40, by="button")) == ["AckWhileUnsafe"]
    assert feed(w, 45, posture="supine") == []
    [cleared] = feed(w, 48, posture="supine")
    assert cleared == AlarmCleared("prone_alarm", 18, "YT")
    assert not w.sounding


def test_an_acknowledgement_before_an_alarm_does_not_pre_silence_it() -> None:
    w = CotRule("A-1", prone_alarm_s=30)
    feed(w, 0)
    assert w.acknowledge(5, by="YT") == []
    feed(w, 10, posture="prone")
    assert kinds(feed(w, 40, posture="prone")) == ["prone_alarm"]
    assert feed(w, 45, posture="supine") == []  # turned, but nobody acknowledged this one
    assert w.sounding


def test_checks_after_the_first_fall_on_the_sheets_five_minute_grid() -> None:
    # The wall clock reads 12:32:30 at t=0 (phase 150 s into a five-minute step).
    w = CotRule("A-1", grid_phase_s=150.0)
    [first] = feed(w, 0)  # laid down: checked at once (12:32:30)
    assert isinstance(first, PostureCheck)
    assert feed(w, 149.9) == []
    assert [type(o) for o in feed(w, 150.3)] == [PostureCheck]  # 12:35:00.3
    for k in range(1, 30):  # late ticks never drift a check into the next column
        assert feed(w, 150 + 300 * k - 0.2) == []
        assert [type(o) for o in feed(w, 150 + 300 * k + 0.45)] == [PostureCheck]
