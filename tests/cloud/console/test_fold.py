"""The console's pure rule: each event kind's transition, out-of-order and repeated events."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cloud.console import fold
from cloud.console.fold import Memory
from cloud.console.model import DeviceState, WaterStage
from edge.event import Event, Location

T0 = dt.datetime(2026, 7, 1, 3, 0, tzinfo=dt.UTC)
STAGES = [  # as a gauge's alert lists them (any order: the rule sorts them rising)
    {"name": "danger", "label": "氾濫危険水位", "level_cm": 250.0},
    {"name": "standby", "label": "水防団待機水位", "level_cm": 120.0},
    {"name": "caution", "label": "氾濫注意水位", "level_cm": 160.0},
    {"name": "evacuate", "label": "避難判断水位", "level_cm": 210.0},
]


def ev(
    kind: str,
    seq: int,
    data: dict[str, Any] | None = None,
    *,
    minutes: float = 0.0,
    synced: bool = True,
    lat: float = 36.1,
    lon: float = 137.9,
) -> Event:
    return Event(
        id=f"e{seq:06d}-{kind}",
        device="dev-1",
        site="site-a",
        kind=kind,
        severity="info",
        ts=T0 + dt.timedelta(minutes=minutes if minutes else seq),
        clock_synced=synced,
        seq=seq,
        boot="b",
        location=Location(lat=lat, lon=lon),
        data=data or {},
    )


def run(*events: Event, start: Memory | None = None) -> Memory:
    m = start
    for e in events:
        m = fold.fold(m, e, e.ts.timestamp() + 5)
    assert m is not None
    return m


def state(m: Memory, online: bool = True) -> DeviceState:
    return fold.view(m, online=online)


def test_heartbeat_sets_health_version_and_position() -> None:
    hb = ev(
        "heartbeat",
        1,
        {
            "interval_s": 300,
            "uptime_s": 12.0,
            "outbox_depth": 3,
            "sensors": {"probe": "ok"},
            "bytes_sent_today": 100,
        },
    )
    m = run(hb)
    assert m.health.outbox_depth == 3 and m.health.interval_s == 300.0
    assert m.health.sensors == {"probe": "ok"}
    assert m.health.at == hb.ts.timestamp() + 5
    s = state(m)
    assert (s.lat, s.lon, s.site, s.online, s.state) == (36.1, 137.9, "site-a", True, "ok")
    assert s.last_seen == hb.ts.timestamp() + 5
    assert state(m, online=False).state == "offline"
    m = run(ev("update_installed", 2, {"from_version": "1.0.0", "to_version": "1.1.0"}), start=m)
    assert state(m).version == "1.1.0"


def test_trap_closes_reminds_and_resets() -> None:
    closed_since = (T0 + dt.timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    m = run(ev("trap_triggered", 1, {"sensor": "box", "closed_since": closed_since}))
    s = state(m)
    assert s.trap_closed and s.state == "trap_closed" and "trap" in s.capabilities
    assert s.trap_closed_since == T0.timestamp() + 30
    # a reminder from the device keeps it closed, since the first closure
    m = run(
        ev("trap_triggered", 2, {"sensor": "box", "reminder": True, "closed_s": 3600.0}), start=m
    )
    assert state(m).trap_closed_since == T0.timestamp() + 30
    m = run(ev("trap_reset", 3, {"sensor": "box"}), start=m)
    assert not state(m).trap_closed and state(m).state == "ok"


def test_unsynced_trap_closure_counts_back_from_receipt() -> None:
    e = ev("trap_triggered", 1, {"sensor": "box", "closed_s": 20.0}, synced=False)
    m = fold.fold(None, e, 1000.0)
    assert state(m).trap_closed_since == 980.0


def test_a_late_older_trap_event_does_not_undo_a_newer_one() -> None:
    closed = ev("trap_triggered", 5, {"sensor": "box"})
    reset_old = ev("trap_reset", 3, {"sensor": "box"})  # stuck in the outbox behind the alarm
    m = run(closed, reset_old)
    assert state(m).trap_closed
    # and the other way: a newer reset, then an old closure arriving late
    m = run(ev("trap_reset", 9, {"sensor": "box"}), ev("trap_triggered", 7, {"sensor": "box"}))
    assert not state(m).trap_closed


def test_folding_the_same_events_twice_changes_nothing() -> None:
    events = [
        ev("trap_triggered", 1, {"sensor": "box"}),
        ev(
            "water_level_alert",
            2,
            {
                "sensor": "gauge",
                "level_cm": 170.0,
                "stage": "caution",
                "direction": "rising",
                "stages": STAGES,
            },
        ),
        ev("prone_alarm", 3, {"cot": "A-1", "posture": "prone", "duration_s": 60.0}),
        ev("sensor_fault", 4, {"sensor": "mat", "fault": "crc", "message": "x"}),
    ]
    once = run(*events)
    twice = run(*events, *events)
    assert fold.view(once, online=True) == fold.view(twice, online=True)
    assert once.traps == twice.traps and once.cots == twice.cots and once.faults == twice.faults


def test_console_actions_on_a_trap() -> None:
    m = run(ev("trap_triggered", 4, {"sensor": "box"}))
    m = fold.trap_checked(m, "box", 5000.0)
    assert state(m).trap_checked_at == 5000.0 and state(m).trap_closed
    m = fold.trap_reset(m, "box")
    assert not state(m).trap_closed
    # an event the device sent before the person's reset does not close it again ...
    m = run(ev("trap_triggered", 3, {"sensor": "box"}), start=m)
    assert not state(m).trap_closed
    # ... a newer one does (the switch is still closed: the device is right)
    m = run(ev("trap_triggered", 6, {"sensor": "box", "reminder": True}), start=m)
    assert state(m).trap_closed and state(m).trap_checked_at is None


def test_water_stage_and_rank_from_the_alert_and_then_from_readings() -> None:
    m = run(
        ev(
            "water_level_alert",
            1,
            {
                "sensor": "gauge",
                "level_cm": 165.0,
                "stage": "caution",
                "direction": "rising",
                "stages": STAGES,
            },
        )
    )
    s = state(m)
    assert (s.water_stage, s.water_stage_rank, s.water_level_cm) == ("caution", 2, 165.0)
    assert s.state == "warning" and "water" in s.capabilities
    t = T0.timestamp() + 3600
    m = fold.fold_reading(m, "gauge", t, 255.0)
    s = state(m)
    assert (s.water_stage, s.water_stage_rank, s.state) == ("danger", 4, "alarm")
    assert fold.fold_reading(m, "gauge", t - 60, 10.0) is m  # older reading: ignored
    m = fold.fold_reading(m, "gauge", t + 600, 90.0)  # the river fell: no clear event comes
    s = state(m)
    assert (s.water_stage, s.water_stage_rank, s.state) == (None, 0, "ok")


def test_a_below_stage_has_no_rank() -> None:
    stages = [
        {"name": "too_low", "label": "低", "level_cm": 3.0},
        {"name": "too_high", "label": "高", "level_cm": 15.0},
    ]
    m = run(
        ev(
            "water_level_alert",
            1,
            {
                "sensor": "paddy",
                "level_cm": 2.0,
                "stage": "too_low",
                "direction": "falling",
                "stages": stages,
            },
        )
    )
    m = fold.fold_reading(m, "paddy", T0.timestamp() + 3600, 8.0)
    assert state(m).water_stage_rank == 0
    assert (state(m).water_stage, state(m).state) == (None, "ok")
    m = fold.fold_reading(m, "paddy", T0.timestamp() + 7200, 16.0)
    s = state(m)  # a line of its own, not a river stage: no rank, but a warning
    assert (s.water_stage, s.water_stage_rank, s.state) == ("too_high", 0, "warning")


# edge/sim/sites/river.toml's bridge ranger lists only two of the four river stages.
BRIDGE_STAGES = [
    {"name": "flood_warning", "label": "氾濫注意水位", "level_cm": 250.0},
    {"name": "danger", "label": "氾濫危険水位", "level_cm": 370.0},
]


def bridge_alert(seq: int, level: float, stage: str) -> Event:
    data = {"sensor": "level_bridge", "level_cm": level, "stage": stage, "direction": "rising"}
    return ev("water_level_alert", seq, {**data, "stages": BRIDGE_STAGES})


def test_the_rank_is_which_river_stage_it_is_not_its_place_in_the_list() -> None:
    m = run(bridge_alert(1, 260.0, "flood_warning"))
    s = state(m)
    assert (s.water_stage, s.water_stage_rank, s.state) == ("flood_warning", 2, "warning")
    m = run(bridge_alert(2, 390.0, "danger"), start=m)
    s = state(m)
    assert (s.water_stage, s.water_stage_rank, s.state) == ("danger", 4, "alarm")
    m = fold.fold_reading(m, "level_bridge", T0.timestamp() + 3600, 260.0)
    assert (state(m).water_stage_rank, state(m).state) == (2, "warning")


def test_the_label_names_the_river_stage_before_the_name_does() -> None:
    # deploy/profiles/water-level.toml: name "flood_watch", label 氾濫注意水位 (rank 2, not 1)
    stages = [
        {"name": "flood_watch", "label": "氾濫注意水位", "level_cm": 120.0},
        {"name": "line_b", "label": "line_b", "level_cm": 160.0},  # no label: its name
        {"name": "flood_danger", "label": "flood_danger", "level_cm": 200.0},
        {"name": "overtopping", "label": "越水", "level_cm": 260.0},  # above the four
    ]
    data = {"sensor": "g", "level_cm": 125.0, "stage": "flood_watch", "stages": stages}
    m = run(ev("water_level_alert", 1, data))
    assert (state(m).water_stage, state(m).water_stage_rank) == ("flood_watch", 2)
    m = fold.fold_reading(m, "g", T0.timestamp() + 600, 170.0)
    s = state(m)  # a custom line above a river stage keeps the river stage's rank
    assert (s.water_stage, s.water_stage_rank, s.state) == ("line_b", 2, "warning")
    m = fold.fold_reading(m, "g", T0.timestamp() + 1200, 270.0)
    s = state(m)
    assert (s.water_stage, s.water_stage_rank, s.state) == ("overtopping", 4, "alarm")
    ranks = [
        fold.river_rank(WaterStage(name=str(st["name"]), label=str(st["label"]), level_cm=0.0))
        for st in STAGES
    ]
    assert ranks == [4, 1, 2, 3]


def test_nap_alarm_until_the_device_clears_it() -> None:
    m = run(ev("prone_alarm", 1, {"cot": "A-1", "posture": "prone", "duration_s": 60.0}))
    s = state(m)
    assert (s.nap_alarm, s.nap_alarm_cot, s.state) == ("prone_alarm", "A-1", "alarm")
    m = fold.nap_acknowledged(m, "A-1", "hanako")
    assert state(m).nap_alarm_acknowledged_by == "hanako"
    assert state(m).nap_alarm == "prone_alarm"  # a person answering never ends the alarm
    m = run(
        ev("posture_check", 2, {"cot": "A-1", "posture": "supine", "probability": 0.9}), start=m
    )
    assert state(m).nap_alarm == "prone_alarm"  # only the device's alarm_cleared ends it
    m = run(
        ev(
            "alarm_cleared",
            3,
            {"cot": "A-1", "cleared": "prone_alarm", "acknowledged_by": "button", "alarm_s": 80.0},
        ),
        start=m,
    )
    s = state(m)
    assert s.nap_alarm is None and s.nap_alarm_acknowledged_by is None and s.state == "ok"
    assert m.cots["A-1"].posture == "supine"


def test_posture_unknown_ends_with_a_safe_posture_and_worst_alarm_wins() -> None:
    m = run(
        ev("posture_unknown", 1, {"cot": "B-2", "unknown_s": 300.0}),
        ev("apnea_alarm", 2, {"cot": "A-1", "posture": "supine", "still_s": 20.0}),
    )
    assert (state(m).nap_alarm, state(m).nap_alarm_cot) == ("apnea_alarm", "A-1")
    m = run(
        ev(
            "alarm_cleared",
            3,
            {"cot": "A-1", "cleared": "apnea_alarm", "acknowledged_by": "button", "alarm_s": 9.0},
        ),
        start=m,
    )
    assert (state(m).nap_alarm, state(m).nap_alarm_cot) == ("posture_unknown", "B-2")
    m = run(ev("posture_check", 4, {"cot": "B-2", "posture": "prone", "probability": 0.8}), start=m)
    assert state(m).nap_alarm == "posture_unknown"  # face down is not safe
    m = run(ev("posture_check", 5, {"cot": "B-2", "posture": "left", "probability": 0.8}), start=m)
    assert state(m).nap_alarm is None


def test_a_look_now_ends_when_the_device_says_so_whatever_the_model_reads() -> None:
    """The device's own end of its look-now prompt (alarm_cleared by the model) ends it in
    the console too, even when the model now reads face down (that alarm comes by itself)."""
    m = run(ev("posture_unknown", 1, {"cot": "B-2", "unknown_s": 30.0}))
    assert state(m).nap_alarm == "posture_unknown"
    end = {"cot": "B-2", "cleared": "posture_unknown", "acknowledged_by": "model",
           "alarm_s": 12.0, "posture": "prone"}  # fmt: skip
    m = run(ev("alarm_cleared", 2, end), start=m)
    assert state(m).nap_alarm is None and state(m).state == "ok"


def test_an_old_alarm_arriving_after_its_clear_stays_cleared() -> None:
    m = run(
        ev(
            "alarm_cleared",
            8,
            {"cot": "A-1", "cleared": "prone_alarm", "acknowledged_by": "b", "alarm_s": 9.0},
        ),
        ev("prone_alarm", 7, {"cot": "A-1", "posture": "prone", "duration_s": 60.0}),
    )
    assert state(m).nap_alarm is None


def test_faults_from_events_and_heartbeats() -> None:
    m = run(ev("sensor_fault", 1, {"sensor": "probe", "fault": "i2c", "message": "EIO"}))
    assert state(m).faults == ["probe"] and state(m).state == "fault"
    m = run(ev("sensor_recovered", 2, {"sensor": "probe"}), start=m)
    assert state(m).faults == []
    m = run(ev("sensor_fault", 3, {"sensor": "probe", "fault": "i2c", "message": "EIO"}), start=m)
    m = run(ev("sensor_recovered", 2, {"sensor": "probe"}), start=m)  # repeated, older
    assert state(m).faults == ["probe"]
    # the recovery was lost; a newer heartbeat saying "ok" settles it
    m = run(
        ev(
            "heartbeat",
            4,
            {"interval_s": 60, "uptime_s": 1, "outbox_depth": 0, "sensors": {"probe": "ok"}},
        ),
        start=m,
    )
    assert state(m).faults == []


def test_position_follows_the_newest_event() -> None:
    m = run(ev("heartbeat", 5, lat=35.0, lon=139.0), ev("heartbeat", 4, lat=1.0, lon=2.0))
    assert (m.lat, m.lon) == (35.0, 139.0)
    assert m.health.mark == 5


def at_site(event: Event, site: str) -> Event:
    return Event(**{**{f: getattr(event, f) for f in Event.__struct_fields__}, "site": site})


def test_a_device_moved_to_another_site_starts_clean_there() -> None:
    """What it reported for site B (a closed trap, a nap alarm, a fault) stays with site B:
    its first event for site A starts a fresh memory; B's backlog, delivered after the
    move (older seq), neither moves it back nor changes A's state."""
    b = [
        at_site(ev("trap_triggered", 1, {"sensor": "trap-1"}), "site-b"),
        at_site(ev("prone_alarm", 2, {"cot": "cot-1", "posture": "prone"}), "site-b"),
        at_site(ev("sensor_fault", 3, {"sensor": "cam"}), "site-b"),
    ]
    moved = run(*b, ev("heartbeat", 5, {"interval_s": 300.0}))
    assert moved.site == "site-a"
    assert (moved.traps, moved.cots, moved.faults) == ({}, {}, {})
    s = state(moved)
    assert (s.site, s.trap_closed, s.nap_alarm, s.faults) == ("site-a", False, None, [])
    late = at_site(ev("trap_triggered", 4, {"sensor": "trap-2"}), "site-b")
    assert run(late, start=moved) == moved
    # a newer event for site B moves it back, clean again
    back = run(at_site(ev("heartbeat", 6), "site-b"), start=moved)
    assert back.site == "site-b" and back.traps == {} and back.last_seq == 6
