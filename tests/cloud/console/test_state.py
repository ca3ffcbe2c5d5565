"""The console's read model over the notifier's real store, on SQLite and on PostgreSQL.

Events go in through the notifier's own :class:`cloud.store.Store` (``accept``,
``add_telemetry``, ``record_status``), exactly as the notifier writes them; the
console reads them through its own connection, as its process would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cloud.clock import ManualClock
from cloud.config import StoreConfig
from cloud.console.errors import ConsoleNotFound, RolloutActionFailed
from cloud.console.model import Point
from cloud.console.state import ConsoleState, downsample
from cloud.database import Database, PostgresDatabase, SqliteDatabase
from cloud.store import Store, TrapPlan
from edge.event import Event, Location, new_event_id
from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox
from tests.cloud.conftest import Publisher, mails, make_event, running
from tests.cloud.test_timers import marked, stored_mails, ticked, timed_config

#: 2026-07-03 12:00 UTC (21:00 in Japan).
NOW = dt.datetime(2026, 7, 3, 12, 0, tzinfo=dt.UTC).timestamp()
STAGES = [
    {"name": "standby", "label": "水防団待機水位", "level_cm": 120.0},
    {"name": "caution", "label": "氾濫注意水位", "level_cm": 160.0},
    {"name": "evacuate", "label": "避難判断水位", "level_cm": 210.0},
    {"name": "danger", "label": "氾濫危険水位", "level_cm": 250.0},
]


def event(
    kind: str,
    device: str,
    site: str,
    seq: int,
    data: dict[str, Any] | None = None,
    *,
    at: float = NOW,
    severity: str = "info",
) -> Event:
    return Event(
        id=new_event_id(),
        device=device,
        site=site,
        kind=kind,
        severity=severity,  # type: ignore[arg-type]
        ts=dt.datetime.fromtimestamp(at, dt.UTC),
        clock_synced=True,
        seq=seq,
        boot="b",
        location=Location(lat=36.0 + seq / 1000, lon=138.0),
        data=data or {},
    )


def heartbeat(device: str, site: str, seq: int, at: float, **data: Any) -> Event:
    body = {"interval_s": 300.0, "uptime_s": 100.0, "outbox_depth": 0, **data}
    return event("heartbeat", device, site, seq, body, at=at)


class Bench:
    """The notifier's store and a console over the same database."""

    def __init__(self, store: Store, connect: Callable[[], Database]) -> None:
        self.store = store
        self.connect = connect
        self.dbs: list[Database] = []

    def console(self, **options: Any) -> ConsoleState:
        db = self.connect()
        self.dbs.append(db)
        console = ConsoleState(db, heartbeat_timeout_s=1800.0, **options)
        console.open()
        return console

    async def put(self, *events: Event, at: float = NOW, **plan: Any) -> None:
        for e in events:
            assert await self.store.accept(e, [], now=at, **plan)


@pytest.fixture
async def bench(store_config: StoreConfig) -> AsyncIterator[Bench]:
    def connect() -> Database:
        if store_config.backend == "postgresql":
            assert store_config.dsn is not None
            return PostgresDatabase.connect(store_config.dsn.reveal(), "test")
        return SqliteDatabase.connect(Path(store_config.path or ""))

    async with await Store.open(store_config) as store:
        b = Bench(store, connect)
        try:
            yield b
        finally:
            for db in b.dbs:
                db.close()


async def test_events_fold_into_the_map_and_sites_stay_apart(bench: Bench) -> None:
    await bench.put(
        heartbeat("gauge-1", "river", 1, NOW - 60),
        event(
            "water_level_alert",
            "gauge-1",
            "river",
            2,
            {
                "sensor": "level",
                "level_cm": 170.0,
                "stage": "caution",
                "stage_label": "氾濫注意水位",
                "threshold_cm": 160.0,
                "direction": "rising",
                "stages": STAGES,
            },
            severity="warning",
        ),
        event("trap_triggered", "trap-1", "farm", 1, {"sensor": "box"}, severity="alarm"),
        heartbeat("trap-1", "farm", 2, NOW - 30),
    )
    console = bench.console()
    rows = console.catch_up(now=NOW)
    assert [(r.device, r.kind) for r in rows] == [
        ("gauge-1", "heartbeat"),
        ("gauge-1", "water_level_alert"),
        ("trap-1", "trap_triggered"),
        ("trap-1", "heartbeat"),
    ]
    assert {s.device for s in console.changed_states()} == {"gauge-1", "trap-1"}
    everything = {s.device: s for s in console.map(None, now=NOW)}
    assert set(everything) == {"gauge-1", "trap-1"}
    gauge, trap = everything["gauge-1"], everything["trap-1"]
    assert (gauge.water_stage, gauge.water_stage_rank, gauge.state) == ("caution", 2, "warning")
    assert gauge.online and gauge.site == "river" and gauge.lat == pytest.approx(36.002)
    assert trap.trap_closed and trap.state == "trap_closed"
    assert [s.device for s in console.map(frozenset({"farm"}), now=NOW)] == ["trap-1"]
    assert console.map(frozenset(), now=NOW) == []
    assert [e.device for e in console.events(frozenset({"river"}))] == ["gauge-1"]
    assert {e.kind for e in console.events(None)} == {"water_level_alert", "trap_triggered"}
    assert console.device_site("trap-1") == "farm" and console.device_site("nope") is None
    assert console.device_page("nope", now=NOW) is None
    # nothing new: nothing returned, nothing changed
    assert console.catch_up(now=NOW + 1) == [] and console.changed_states() == []


async def test_the_cursor_survives_a_restart(bench: Bench) -> None:
    await bench.put(event("trap_triggered", "trap-1", "farm", 1, {"sensor": "box"}))
    first = bench.console()
    assert len(first.catch_up(now=NOW)) == 1
    again = bench.console()  # a new process: its own connection, the cursor from the table
    assert again.catch_up(now=NOW + 1) == []
    assert again.map(None, now=NOW + 1)[0].trap_closed
    later = event("trap_reset", "trap-1", "farm", 2, {"sensor": "box"})
    await bench.put(later, at=NOW + 2)
    assert [r.id for r in again.catch_up(now=NOW + 3)] == [later.id]
    assert not again.map(None, now=NOW + 3)[0].trap_closed


async def test_late_commits_out_of_order_events_and_duplicates(bench: Bench) -> None:
    console = bench.console()
    closed = event("trap_triggered", "trap-1", "farm", 5, {"sensor": "box"}, severity="alarm")
    await bench.put(closed, at=NOW)
    assert len(console.catch_up(now=NOW)) == 1
    # An older reset, sent after the alarm (the outbox sends alarms first) and committed
    # late with an earlier receipt time than the cursor (another notifier instance).
    old_reset = event("trap_reset", "trap-1", "farm", 3, {"sensor": "box"})
    await bench.put(old_reset, at=NOW - 2)
    assert [r.id for r in console.catch_up(now=NOW + 1)] == [old_reset.id]
    assert console.map(None, now=NOW + 1)[0].trap_closed  # seq 3 < 5: changes nothing
    assert not await bench.store.accept(closed, [], now=NOW + 2)  # the notifier refuses it
    assert console.catch_up(now=NOW + 3) == []  # and the console shows each event once


async def test_a_batch_larger_than_one_call(bench: Bench) -> None:
    await bench.put(*[heartbeat(f"d-{n:03d}", "s", 1, NOW) for n in range(25)], at=NOW)
    console = bench.console(batch=10)
    got = [len(console.catch_up(now=NOW)) for _ in range(4)]
    assert got == [10, 10, 5, 0]  # same received_at for all: the id breaks the tie
    assert len(console.map(None, now=NOW)) == 25


async def test_offline_from_the_notifier_and_from_silence(bench: Bench) -> None:
    await bench.put(heartbeat("d-1", "s", 1, NOW), heartbeat("d-2", "s", 1, NOW), at=NOW)
    console = bench.console(sweep_s=5.0)
    console.catch_up(now=NOW)
    await bench.store.record_status("d-1", "offline", "connection lost", now=NOW + 1)
    console.catch_up(now=NOW + 10)  # a sweep
    assert [(s.device, s.online, s.state) for s in console.changed_states()] == [
        ("d-1", False, "offline")
    ]
    # silent past the timeout: offline on the map at once, and published by the next sweep
    late = NOW + 1800 + 10
    assert [s.online for s in console.map(None, now=late)] == [False, False]
    console.catch_up(now=late)
    assert [s.device for s in console.changed_states()] == ["d-2"]
    assert [s.device for s in console.fleet(now=late).silent] == ["d-1", "d-2"]


async def test_trap_reset_closes_the_notifiers_trap_and_records_who(bench: Bench) -> None:
    closed = event("trap_triggered", "trap-1", "farm", 1, {"sensor": "box"}, severity="alarm")
    plan = TrapPlan("open", "farm|trap-1|box", "box", NOW, 3600.0)
    await bench.put(closed, at=NOW, trap=plan)
    assert [t.sensor for t in await bench.store.due_traps(NOW + 3600)] == ["box"]
    console = bench.console()
    console.catch_up(now=NOW)
    console.mark_trap_checked("trap-1", "box", by="taro", now=NOW + 600)
    assert console.map(None, now=NOW + 600)[0].trap_checked_at == NOW + 600
    console.reset_trap("trap-1", "box", by="taro", now=NOW + 900)
    assert await bench.store.due_traps(NOW + 10 * 3600) == []  # no reminder will be due
    assert await bench.store.next_timer(grace_s=60, heartbeat_timeout_s=1800) is None
    assert not console.map(None, now=NOW + 900)[0].trap_closed
    assert [(a.action, a.target, a.by) for a in console.actions("trap-1")] == [
        ("trap_checked", "box", "taro"),
        ("trap_reset", "box", "taro"),
    ]
    console.catch_up(now=NOW + 901)
    assert [s.device for s in console.changed_states()] == ["trap-1"]  # pushed live too
    page = console.device_page("trap-1", now=NOW + 1000)
    assert page is not None
    [capture] = page.captures
    assert capture.sensor == "box" and capture.checked == [(NOW + 600, "taro")]
    assert capture.reset_at is not None and capture.reset_at.startswith("2026-07-03T12:15")
    with pytest.raises(ConsoleNotFound):
        console.reset_trap("nope", "box", by="taro", now=NOW)


async def test_a_moved_devices_reset_closes_only_its_new_sites_trap(bench: Bench) -> None:
    """The same trap sensor closed at site B, then (moved) at site A: the notifier has a row
    for each (keyed ``site|device|sensor``); a reset in the console closes A's only, and a
    trap or cot the device never reported at A is refused."""
    for seq, site in ((1, "site-b"), (3, "site-a")):
        closed = event("trap_triggered", "mover", site, seq, {"sensor": "box"}, severity="alarm")
        plan = TrapPlan("open", f"{site}|mover|box", "box", NOW, 3600.0)
        await bench.put(closed, at=NOW + seq, trap=plan)
    await bench.put(event("prone_alarm", "mover", "site-b", 2, {"cot": "c1"}), at=NOW + 2)
    console = bench.console()
    console.catch_up(now=NOW + 10)
    [state] = console.map(None, now=NOW + 10)
    assert (state.site, state.trap_closed, state.nap_alarm) == ("site-a", True, None)
    refused: list[tuple[Callable[..., None], str]] = [
        (console.reset_trap, "other"),
        (console.mark_trap_checked, "other"),
        (console.acknowledge_nap_alarm, "c1"),  # site B's cot
    ]
    for act, target in refused:
        with pytest.raises(ConsoleNotFound):
            act("mover", target, by="taro", now=NOW + 20)
    console.reset_trap("mover", "box", by="taro", now=NOW + 20)
    assert [(t.site, t.sensor) for t in await bench.store.open_traps()] == [("site-b", "box")]
    assert [(a.action, a.site) for a in console.actions("mover")] == [("trap_reset", "site-a")]


async def test_nap_alarm_acknowledged_from_the_console(bench: Bench) -> None:
    await bench.put(
        event(
            "posture_check",
            "nap-1",
            "hoikuen",
            1,
            {"cot": "A-1", "posture": "supine", "probability": 0.9},
        ),
        event(
            "prone_alarm",
            "nap-1",
            "hoikuen",
            2,
            {"cot": "B-2", "posture": "prone", "duration_s": 60.0},
            severity="alarm",
        ),
    )
    console = bench.console()
    console.catch_up(now=NOW)
    console.acknowledge_nap_alarm("nap-1", "B-2", by="hanako", now=NOW + 5)
    [state] = console.map(None, now=NOW + 5)
    assert (state.nap_alarm, state.nap_alarm_cot, state.nap_alarm_acknowledged_by) == (
        "prone_alarm",
        "B-2",
        "hanako",
    )
    page = console.device_page("nap-1", now=NOW + 5)
    assert page is not None
    assert [(c.cot, c.posture, c.alarm, c.acknowledged_by) for c in page.cots] == [
        ("A-1", "supine", None, None),
        ("B-2", "prone", "prone_alarm", "hanako"),
    ]
    assert [a.action for a in console.actions("nap-1")] == ["nap_acknowledged"]


async def test_data_use_this_month_counts_from_the_month_start_in_japan(bench: Bench) -> None:
    day = 86400.0
    july1 = dt.datetime(2026, 7, 1, tzinfo=dt.UTC).timestamp()
    beats = [
        (july1 - 11 * 3600, july1 - 11 * 3600, 700),  # June 30 13:00 UTC: June in Japan too
        (july1 - 10 * 3600, july1 - 10 * 3600, 900),  # 14:00 UTC: June's last in Japan
        (july1 - 4 * 3600, july1 - 4 * 3600, 999),  # 20:00 UTC June 30 = 05:00 July 1 in Japan
        (july1 + 6 * 3600, july1 + 6 * 3600, 100),
        (july1 + day - 600, july1 + day - 600, 500),  # July 1's last: 500
        (july1 + day + 36000, july1 + day + 36000, 300),
        (july1 + 2 * day - 120, july1 + 2 * day + 120, 800),  # stamped July 2, received July 3
        (july1 + 2 * day + 3600, july1 + 2 * day + 3600, 50),
    ]
    for seq, (stamped, received, sent) in enumerate(beats, start=1):
        await bench.put(heartbeat("d-1", "s", seq, stamped, bytes_sent_today=sent), at=received)
    console = bench.console()
    console.catch_up(now=NOW)
    page = console.device_page("d-1", now=NOW)
    assert page is not None
    # June 30 UTC counted from Japan's July 1 00:00 on (after its 900 at 14:00 UTC): 99
    assert page.health.bytes_this_month == 99 + 500 + 800 + 50
    assert page.health.at == july1 + 2 * day + 3600  # the newest heartbeat's receipt
    assert page.events == []  # heartbeats are health, not the event list


async def test_hydrographs_keep_the_flood_peak(bench: Bench) -> None:
    start = NOW - 7 * 86400
    points = [("level.level_cm", start + 60 * n, 100.0 + (n % 7) * 0.1) for n in range(10080)]
    peak_at = NOW - 3 * 86400 + 30
    points.append(("level.level_cm", peak_at, 388.0))  # one reading at the crest
    points.append(("level.level_cm", NOW - 5 * 86400 + 30, 12.0))  # and one trough
    for n in range(0, len(points), 2000):
        await bench.store.add_telemetry("gauge-1", "river", points[n : n + 2000], now=NOW)
    await bench.put(
        event(
            "water_level_alert",
            "gauge-1",
            "river",
            1,
            {
                "sensor": "level",
                "level_cm": 130.0,
                "stage": "standby",
                "stage_label": "x",
                "threshold_cm": 120.0,
                "direction": "rising",
                "stages": STAGES,
            },
            at=NOW - 6 * 86400,
        ),
    )
    console = bench.console()
    console.catch_up(now=NOW)
    [state] = console.map(None, now=NOW)
    assert state.water_level_cm == pytest.approx(100.0 + (10079 % 7) * 0.1)  # newest reading
    assert state.water_stage is None  # below every stage now: no clear event, the level says
    page = console.device_page("gauge-1", now=NOW)
    assert page is not None
    [week] = page.hydrographs_7d
    [day] = page.hydrographs_24h
    assert week.series == "level.level_cm" and len(week.points) <= 1000
    assert max(p.v for p in week.points) == 388.0 and min(p.v for p in week.points) == 12.0
    assert [p.t for p in week.points] == sorted(p.t for p in week.points)
    assert len(day.points) == 1440 and day.points[-1].t <= NOW
    assert [s.name for s in week.stages] == ["standby", "caution", "evacuate", "danger"]


async def test_what_a_device_watches_learnt_from_its_telemetry(bench: Bench) -> None:
    """A gauge with readings but no alert yet, a nap room before its first posture check."""
    await bench.put(
        heartbeat("gauge-2", "river", 1, NOW, sensors={"level_a": "ok", "level_b": "ok"}),
        heartbeat("nap-2", "room", 1, NOW, sensors={"mat-1": "ok"}),
        heartbeat("trap-2", "hill", 1, NOW, sensors={"trap-1": "ok"}),
    )
    console = bench.console(sweep_s=5.0)
    console.catch_up(now=NOW)  # no readings yet: nothing to learn
    assert [s.capabilities for s in console.map(None, now=NOW)] == [[], [], []]
    await bench.store.add_telemetry(
        "gauge-2",
        "river",
        [("level_a.level_cm", NOW + 10, 88.0), ("level_b.level_cm", NOW + 20, 140.5)],
        now=NOW + 30,
    )
    await bench.store.add_telemetry("nap-2", "room", [("mat-1.load_kg", NOW + 15, 9.5)], now=NOW)
    # the next heartbeats (minutes later, well within the hour) find them by their names
    later = NOW + 300
    await bench.put(
        heartbeat("gauge-2", "river", 2, later, sensors={"level_a": "ok", "level_b": "ok"}),
        heartbeat("nap-2", "room", 2, later, sensors={"mat-1": "ok"}),
        heartbeat("trap-2", "hill", 2, later, sensors={"trap-1": "ok"}),
        at=later,
    )
    console.catch_up(now=later + 700)
    gauge, nap, trap = console.map(None, now=later + 700)
    assert (gauge.capabilities, gauge.water_level_cm) == (["water"], 140.5)
    assert (gauge.water_stage, gauge.water_stage_rank, gauge.state) == (None, 0, "ok")
    assert nap.capabilities == ["nursery"] and trap.capabilities == []
    page = console.device_page("gauge-2", now=later + 700)
    assert page is not None
    assert [h.series for h in page.hydrographs_24h] == ["level_a.level_cm", "level_b.level_cm"]
    # a series whose sensor no heartbeat names is found by the hourly search of its series
    await bench.store.add_telemetry("trap-2", "hill", [("probe.level_cm", later, 5.0)], now=later)
    hour = NOW + 3600
    await bench.put(heartbeat("trap-2", "hill", 3, hour, sensors={"trap-1": "ok"}), at=hour)
    console.catch_up(now=hour + 10)
    trap = console.map(None, now=hour + 10)[2]
    assert (trap.capabilities, trap.water_level_cm) == (["water"], 5.0)


def test_downsampling_keeps_every_extreme_of_each_slice() -> None:
    pts = [Point(float(t), 1.0) for t in range(5000)]
    pts[2500] = Point(2500.0, 50.0)
    pts[100] = Point(100.0, -3.0)
    out = downsample(pts, 100)
    assert len(out) <= 100 and Point(2500.0, 50.0) in out and Point(100.0, -3.0) in out
    assert downsample(pts[:10], 100) == pts[:10]


async def test_updates_and_versions_on_the_page_and_fleet(bench: Bench, tmp_path: Path) -> None:
    await bench.put(
        event(
            "update_failed",
            "d-1",
            "s",
            1,
            {
                "from_version": "1.0.0",
                "to_version": "1.1.0",
                "stage": "health",
                "reason": "no heartbeat",
            },
        ),
        event("update_installed", "d-1", "s", 2, {"from_version": "1.0.0", "to_version": "1.1.0"}),
        heartbeat("d-2", "s", 1, NOW),
    )
    console = bench.console(fleet_db=tmp_path / "absent.sqlite3")
    console.catch_up(now=NOW)
    page = console.device_page("d-1", now=NOW)
    assert page is not None and page.state.version == "1.1.0"
    assert [(u.kind, u.to_version, u.reason) for u in page.updates] == [
        ("update_installed", "1.1.0", None),
        ("update_failed", "1.1.0", "no heartbeat"),
    ]
    fleet = console.fleet(now=NOW)
    assert fleet.versions == {"": 1, "1.1.0": 1} and fleet.rollouts == []


async def test_the_version_a_device_says_it_runs_in_its_status(bench: Bench) -> None:
    await bench.put(
        event("update_installed", "d-1", "s", 1, {"from_version": "1.3.0", "to_version": "1.4.0"}),
        heartbeat("d-2", "s", 1, NOW),
    )
    console = bench.console(sweep_s=5.0)
    console.catch_up(now=NOW)
    assert [s.version for s in console.map(None, now=NOW)] == ["1.4.0", ""]
    # the status message (what it runs now) wins over the older update report
    await bench.store.record_status("d-1", "online", "", now=NOW + 1, version="1.4.2")
    await bench.store.record_status("d-2", "online", "", now=NOW + 1, version="1.4.2")
    await bench.store.record_status("d-3", "online", "", now=NOW + 1)  # says none
    console.catch_up(now=NOW + 10)  # a sweep
    assert {s.device: s.version for s in console.map(None, now=NOW + 10)} == {
        "d-1": "1.4.2",
        "d-2": "1.4.2",
        "d-3": "",
    }
    page = console.device_page("d-1", now=NOW + 10)
    assert page is not None and page.state.version == "1.4.2"
    assert console.fleet(now=NOW + 10).versions == {"": 1, "1.4.2": 2}
    # a person's action keeps it (the version is in the memory, not only in the view)
    await bench.put(event("trap_triggered", "d-1", "s", 2, {"sensor": "t"}), at=NOW + 11)
    console.catch_up(now=NOW + 12)
    console.mark_trap_checked("d-1", "t", by="alice", now=NOW + 13)
    assert console.map(None, now=NOW + 13)[0].version == "1.4.2"


async def test_rollouts_from_the_deploy_tools_database(
    bench: Bench, tmp_path: Path, broker: Mosquitto
) -> None:
    from deploy.fleet import FleetDB  # the test builds the file with the real tool

    path = tmp_path / "fleet.sqlite3"
    with FleetDB(path) as fleet_db:
        for n in range(4):
            fleet_db.add_device(f"d-{n}", "s", "1.0.0")
        rid = fleet_db.create_rollout(
            version="1.1.0",
            url="https://ota.example.jp/b.tar",
            devices=[f"d-{n}" for n in range(4)],
            percent=25.0,
            sha256=hashlib.sha256(b"b").hexdigest(),
            size=1,
            rollout_id="r1",
        )
    await bench.put(event("update_installed", "d-0", "s", 1, {"to_version": "1.1.0"}))
    console = bench.console(
        fleet_db=path,
        deploy_command=(sys.executable, "-m", "deploy.cli"),
        deploy_args=("--broker", f"{broker.host}:{broker.port}"),
    )
    console.catch_up(now=NOW)
    [progress] = console.fleet(now=NOW).rollouts
    assert (progress.id, progress.version, progress.targets, progress.told) == (rid, "1.1.0", 4, 0)
    assert progress.installed == 1 and progress.stage == 1 and not progress.paused
    said = console.rollout_action(rid, "pause", by="op")  # the real tool
    assert said == f"rollout {rid} paused"
    [progress] = console.fleet(now=NOW).rollouts
    assert progress.paused and progress.told == 0
    with FleetDB(path) as fleet_db:
        assert fleet_db.rollout(rid)["paused_by"] == "op"
    said = console.rollout_action(rid, "start", by="op")  # resumed, then the real broker
    assert said.startswith(f"rollout {rid} resumed ") and "stage first" in said
    [progress] = console.fleet(now=NOW).rollouts
    assert progress.told >= 1 and progress.stage == 1 and not progress.paused
    with pytest.raises(RolloutActionFailed, match="first stage not done yet"):
        console.rollout_action(rid, "start", by="op")  # the tool's own gate, in its words
    with pytest.raises(ConsoleNotFound):
        console.rollout_action("nope", "start", by="op")


def test_a_fleet_file_from_before_rollouts_could_be_paused_still_reads(
    tmp_path: Path,
) -> None:
    """The deploy tool adds ``paused``/``paused_by`` when it opens an older file; the
    console only reads (``mode=ro``), so a file without them must still show its rollouts."""
    from deploy.fleet import FleetDB

    path = tmp_path / "fleet.sqlite3"
    with FleetDB(path) as fleet_db:
        fleet_db.add_device("d-0", "s", "1.0.0")
        fleet_db.create_rollout(
            version="1.1.0", url="https://ota.example.jp/b.tar", devices=["d-0"],
            percent=100.0, sha256="0" * 64, size=1, rollout_id="old",
        )  # fmt: skip
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE rollouts DROP COLUMN paused_by")
        conn.execute("ALTER TABLE rollouts DROP COLUMN paused")
    db = SqliteDatabase.connect(tmp_path / "n.sqlite3")
    try:
        console = ConsoleState(db, heartbeat_timeout_s=600.0, fleet_db=path)
        console.open()
        [progress] = console.fleet(now=NOW).rollouts
        assert (progress.id, progress.targets, progress.paused) == ("old", 1, False)
    finally:
        db.close()


async def test_reset_in_the_console_stops_the_running_notifiers_reminders(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    """The real notifier, its timekeeper on a manual clock: reminders come hourly until a
    person resets the trap in the console; then none."""
    config = timed_config(tmp_path, broker, mailbox, top="[traps]\nreminder_every_s = 3600\n")
    clock = ManualClock()
    async with running(config, clock) as notifier:
        await publisher.event(
            make_event("trap_triggered", data={"sensor": "box_trap_2", "closed_s": 4.0})
        )
        await mails(mailbox, 2)
        await marked(notifier, 2)
        clock.advance(3600)
        await mails(mailbox, 4)  # the first reminder
        await marked(notifier, 4)
        assert config.store.path is not None
        db = SqliteDatabase.connect(Path(config.store.path))
        try:
            console = ConsoleState(db, heartbeat_timeout_s=1800.0)
            console.open()
            console.catch_up(now=clock.time())
            [state] = console.map(None, now=clock.time())
            assert state.trap_closed
            console.reset_trap(state.device, "box_trap_2", by="taro", now=clock.time())
        finally:
            db.close()
        await ticked(notifier, clock, 3 * 3600)
        assert await stored_mails(config) == 4  # no reminder after the reset in the console


def test_open_is_idempotent(tmp_path: Path) -> None:
    db = SqliteDatabase.connect(tmp_path / "n.sqlite3")
    try:
        console = ConsoleState(db, heartbeat_timeout_s=60.0)
        console.open()
        console.open()
        started = time.monotonic()
        assert console.catch_up(now=NOW) == []
        assert time.monotonic() - started < 5.0
    finally:
        db.close()


async def test_a_second_console_process_sees_the_first_ones_actions(bench: Bench) -> None:
    await bench.put(event("trap_triggered", "trap-1", "farm", 1, {"sensor": "box"}))
    one, two = bench.console(), bench.console()
    one.catch_up(now=NOW)
    two.catch_up(now=NOW)
    one.reset_trap("trap-1", "box", by="taro", now=NOW + 1)
    assert two.map(None, now=NOW + 1)[0].trap_closed  # its map is its own, until it looks
    two.catch_up(now=NOW + 10)  # the next sweep reads rows others changed
    assert not two.map(None, now=NOW + 10)[0].trap_closed
    assert [a.by for a in two.actions("trap-1")] == ["taro"]
