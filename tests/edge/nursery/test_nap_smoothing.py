"""The nap rule over the model's tick-by-tick readings: one misread tick never restarts the
face-down count, a child really turned over stops it after the confirm time, and a posture
the model cannot tell for long is a "look now" prompt, never safe."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.nursery.cot import (
    PRONE_SHARE,
    AlarmCleared,
    AlarmRaised,
    CotRule,
    LookNow,
    LookNowEnded,
    PostureCheck,
)

TICK = 0.5
PRONE_S = 30.0
RESET_S = 3.0


def rule(**kw: float) -> CotRule:
    return CotRule("A-1", prone_alarm_s=PRONE_S, prone_reset_s=RESET_S, **kw)


def feed(w: CotRule, t: float, posture: str, occupied: bool = True) -> list[object]:
    return w.update(t, occupied=occupied, seconds_since_motion=0.0,
                    posture=posture if occupied else None, probability=0.9)


def play(w: CotRule, postures: list[str], t0: float = 0.0) -> list[tuple[float, object]]:
    """Every outcome with its time, one posture per half-second tick."""
    out = []
    for i, posture in enumerate(postures):
        t = t0 + i * TICK
        out += [(t, o) for o in feed(w, t, posture) if not isinstance(o, PostureCheck)]
    return out


def alarms(out: list[tuple[float, object]]) -> list[tuple[float, float]]:
    """(when, how long face down by then) of each prone alarm."""
    return [(t, o.duration_s) for t, o in out
            if isinstance(o, AlarmRaised) and o.kind == "prone_alarm"]


def ticks(seconds: float) -> int:
    return round(seconds / TICK)


def test_prone_with_one_in_five_misread_ticks_still_alarms_on_time() -> None:
    for misread in ("supine", "left", "right", "unknown"):
        for offset in range(5):
            w = rule()
            postures = [misread if k % 5 == offset else "prone" for k in range(ticks(60))]
            first_prone = (1 if offset == 0 else 0) * TICK
            [(t, duration)] = alarms(play(w, postures))
            assert first_prone + PRONE_S <= t <= first_prone + PRONE_S + TICK, (misread, offset)
            assert duration >= PRONE_S
            assert w.sounding


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 12), st.integers(0, ticks(RESET_S)),
                          st.sampled_from(["supine", "left", "right", "unknown"])),
                min_size=10, max_size=40))
def test_misreads_shorter_than_the_confirm_time_never_restart_the_count(
    pattern: list[tuple[int, int, str]],
) -> None:
    # Runs of face-down ticks broken by misread runs under the confirm time (< 3 s).
    postures = []
    for prone, misread, label in pattern:
        postures += ["prone"] * prone + [label] * min(misread, ticks(RESET_S) - 1)
    postures += ["prone"] * ticks(PRONE_S)
    out = play(rule(), postures)
    [(t, _)] = alarms(out)
    # From 30 s after the first (face-down) tick, the first tick at which 40 % of the
    # answered readings of the last 30 s said face down.
    expected = next(
        k * TICK for k in range(ticks(PRONE_S), len(postures))
        if _share(postures[max(0, k - ticks(PRONE_S) + 1) : k + 1]) >= PRONE_SHARE
    )
    assert t == expected


def _share(window: list[str]) -> float:
    answered = [p for p in window if p != "unknown"]
    return 1.0 if not answered else answers_prone(answered) / len(answered)


def answers_prone(answered: list[str]) -> int:
    return sum(p == "prone" for p in answered)


def test_scattered_face_down_misreads_of_a_child_on_its_back_never_add_up_to_an_alarm() -> None:
    """A child on its back read "prone" at one tick in five, at random, for ten minutes."""
    import random

    for seed in range(20):
        rng = random.Random(seed)
        postures = ["prone" if rng.random() < 0.2 else "supine" for _ in range(ticks(600))]
        assert alarms(play(rule(), postures)) == [], seed


def test_a_face_down_child_misread_more_often_than_not_still_alarms() -> None:
    """Read correctly only 40 % of the time (at random; half the answered readings), face
    down: the alarm still comes, within 90 s (a 3-s run of misreads restarts the count)."""
    import random

    for seed in range(20):
        rng = random.Random(seed)
        postures = ["prone"] + [
            "prone" if rng.random() < 0.4 else rng.choice(["supine", "left", "unknown"])
            for _ in range(ticks(120))
        ]
        [(t, _)] = alarms(play(rule(), postures))
        assert t <= 3 * PRONE_S, seed


def test_unknown_never_restarts_the_count_however_long() -> None:
    w = rule()
    out = play(w, ["prone"] * ticks(5) + ["unknown"] * ticks(40))
    assert [t for t, _ in alarms(out)] == [PRONE_S]


def test_a_child_turned_onto_the_back_stops_the_count_after_the_confirm_time() -> None:
    # Face down 20 s, on the back 3 s, face down again: the count starts over.
    w = rule()
    postures = ["prone"] * ticks(20) + ["supine"] * (ticks(RESET_S) + 1) + ["prone"] * ticks(40)
    out = play(w, postures)
    second_start = (ticks(20) + ticks(RESET_S) + 1) * TICK
    assert [t for t, _ in alarms(out)] == [second_start + PRONE_S]
    # On the back only 2.5 s (under the confirm time): still the first count.
    w = rule()
    postures = ["prone"] * ticks(20) + ["supine"] * ticks(2.5) + ["prone"] * ticks(40)
    assert [t for t, _ in alarms(play(w, postures))] == [PRONE_S]


def test_on_the_back_for_good_never_alarms() -> None:
    w = rule()
    out = play(w, ["prone"] * ticks(25) + ["supine"] * ticks(60))
    assert alarms(out) == [] and not w.sounding


def test_mid_roll_from_face_down_onto_the_back() -> None:
    # Face down 26 s, then a roll: unknown, on the side, on the back.  Safe since 27 s:
    # the count ends at 30 s, just as it would have gone off -- no alarm.
    w = rule()
    roll = ["prone"] * ticks(26) + ["unknown"] * 2 + ["left"] * 2 + ["supine"] * ticks(30)
    assert alarms(play(w, roll)) == []
    # The same roll stalled on the way (unknown again in the middle): the safe run
    # restarts, the count goes on, the alarm sounds.
    w = rule()
    stalled = (["prone"] * ticks(26) + ["unknown"] * 2 + ["left"] * 2 + ["unknown"]
               + ["supine"] * ticks(30))
    assert [t for t, _ in alarms(play(w, stalled))] == [PRONE_S]


def test_mid_roll_from_the_back_onto_the_face() -> None:
    # On the back, a roll through the side and unknown, then face down: the count starts
    # at the first face-down reading; a brief slip back to the side does not restart it.
    w = rule()
    postures = (["supine"] * 10 + ["left"] * 2 + ["unknown"] * 2 + ["prone"] * 8 + ["left"] * 3
                + ["prone"] * ticks(40))
    first_prone = 14 * TICK
    [(t, duration)] = alarms(play(w, postures))
    assert t == first_prone + PRONE_S and duration == PRONE_S


def test_a_latched_alarm_counts_the_child_safe_only_after_the_confirm_time() -> None:
    w = rule()
    play(w, ["prone"] * (ticks(PRONE_S) + 1))
    assert w.sounding
    w.acknowledge(31)
    # Turned over, but a misread (unknown, face down) every 2 s: never safe for 3 s.
    t = 31.0
    for k in range(40):
        t += TICK
        out = feed(w, t, "unknown" if k % 4 == 3 else "supine")
        assert not [o for o in out if isinstance(o, AlarmCleared)]
    assert w.sounding
    # Then on the back, unbroken: cleared after the confirm time.
    start = t + TICK
    cleared_at = None
    for k in range(20):
        t = start + k * TICK
        if any(isinstance(o, AlarmCleared) for o in feed(w, t, "supine")):
            cleared_at = t
            break
    assert cleared_at == start + RESET_S
    assert not w.sounding


def test_a_child_picked_up_clears_after_the_confirm_time() -> None:
    w = rule()
    play(w, ["prone"] * (ticks(PRONE_S) + 1))
    w.acknowledge(30.5)
    assert feed(w, 31, "", occupied=False) == []
    assert feed(w, 33.5, "", occupied=False) == []
    [cleared] = feed(w, 34, "", occupied=False)
    assert isinstance(cleared, AlarmCleared) and cleared.cleared == "prone_alarm"


def test_no_confirm_time_is_the_old_one_tick_rule_but_unknown_still_is_not_safe() -> None:
    w = CotRule("A-1", prone_alarm_s=PRONE_S, prone_reset_s=0)
    assert alarms(play(w, (["prone"] * 9 + ["supine"]) * 12)) == []
    w = CotRule("A-1", prone_alarm_s=PRONE_S, prone_reset_s=0)
    assert [t for t, _ in alarms(play(w, (["prone"] * 9 + ["unknown"]) * 12))] == [PRONE_S]


# -- look now (見てください) ----------------------------------------------------------------


def looks(out: list[tuple[float, object]]) -> list[tuple[float, object]]:
    return [(t, o) for t, o in out if isinstance(o, (LookNow, LookNowEnded))]


def test_sustained_unknown_on_an_occupied_cot_is_look_now_until_the_model_answers() -> None:
    w = rule(unknown_prompt_s=20)
    out = play(w, ["supine"] * 4 + ["unknown"] * ticks(30))
    [(t, look)] = looks(out)
    assert t == 2 + 20 and look == LookNow(20)
    assert w.looking and w.prompting
    assert not w.sounding  # a prompt, not an alarm
    # One confident tick among unknown ones does not end it.
    t0 = 2 + 30
    out = play(w, ["supine"] + ["unknown"] * 3 + ["supine"] * 2 + ["unknown"], t0=t0)
    assert looks(out) == [] and w.prompting
    # Answers that last the confirm time do.
    t1 = t0 + 7 * TICK
    out = play(w, ["left"] * (ticks(RESET_S) + 1), t0=t1)
    [(t, ended)] = looks(out)
    assert t == t1 + RESET_S
    assert ended == LookNowEnded(t1 + RESET_S - 2, "left")
    assert not w.looking and not w.prompting


def test_unknown_checks_are_recorded_and_look_now_is_never_a_safe_posture() -> None:
    w = rule(unknown_prompt_s=20)
    checks = [o for _, o in [(0, x) for x in feed(w, 0, "unknown")]
              if isinstance(o, PostureCheck)]
    assert checks == [PostureCheck("unknown", 0.9)]
    play(w, ["unknown"] * ticks(25), t0=TICK)
    assert w.looking and w.posture == "unknown"


def test_brief_unknown_stretches_do_not_prompt() -> None:
    w = rule(unknown_prompt_s=20)
    # Unknown 15 s, answered 5 s, again and again: each stretch ends before 20 s.
    out = play(w, (["unknown"] * ticks(15) + ["supine"] * ticks(5)) * 6)
    assert looks(out) == []


def test_a_face_down_alarm_takes_precedence_over_look_now() -> None:
    w = rule(unknown_prompt_s=20)
    out = play(w, ["prone"] * ticks(5) + ["unknown"] * ticks(60))
    assert [t for t, _ in alarms(out)] == [PRONE_S]
    assert looks(out) == []  # the face-down count was running: the alarm, not a prompt
    assert w.sounding and not w.prompting


def test_an_alarm_sounding_silences_the_prompt_until_it_clears() -> None:
    w = CotRule("A-1", prone_reset_s=RESET_S, unknown_prompt_s=20, apnea_alarm_s=20)
    for k in range(ticks(25)):
        w.update(k * TICK, occupied=True, seconds_since_motion=k * TICK, posture="unknown")
    assert w.sounding and w.active_alarms == ["apnea_alarm"]
    assert not w.prompting  # the alarm sounds: no prompt over it
    w.acknowledge(25)
    out = w.update(25.5, occupied=True, seconds_since_motion=0.2, posture="unknown")
    assert any(isinstance(o, AlarmCleared) for o in out)
    assert any(isinstance(o, LookNow) for o in out)  # still unknown: look now
    assert w.prompting


def test_staff_acknowledging_quietens_the_prompt_until_the_next_check() -> None:
    w = rule(unknown_prompt_s=20, check_interval_s=300)
    play(w, ["unknown"] * ticks(21))
    assert w.prompting
    w.acknowledge(21, by="YT")
    play(w, ["unknown"] * ticks(299), t0=21)
    assert w.looking and not w.prompting  # still open on the sheet, but quiet
    play(w, ["unknown"] * 2, t0=321)
    assert w.prompting  # five minutes on, still unknown: look again


def test_a_child_taken_out_ends_look_now() -> None:
    w = rule(unknown_prompt_s=20)
    play(w, ["unknown"] * ticks(21))
    out = []
    for k in range(ticks(RESET_S) + 1):
        out += feed(w, 21 + k * TICK, "", occupied=False)
    [ended] = [o for o in out if isinstance(o, LookNowEnded)]
    assert ended.posture == "empty"


def test_a_model_that_is_down_does_not_prompt_look_now() -> None:
    w = rule(unknown_prompt_s=20)
    for k in range(ticks(60)):
        out = w.update(k * TICK, occupied=True, seconds_since_motion=0, posture=None,
                       model_error="posture model missing")
        assert not [o for o in out if isinstance(o, LookNow)]


def test_a_model_that_sees_no_child_on_an_occupied_mat_is_not_safe() -> None:
    """The mat's load says a child lies there; the model answering "empty" (a light child
    on a soft mattress) is unknown: it never ends a face-down count nor counts as safe."""
    w = rule()
    out = play(w, ["prone"] * ticks(10) + ["empty"] * ticks(25))
    [(t, _)] = alarms(out)
    assert t == PRONE_S
    assert w.posture == "unknown"
