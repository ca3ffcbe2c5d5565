"""The console's nap sheet (rebuilt from the stored events, the device's own renderer) and
the remote acknowledgement it sends to the device (``cmd/nap_ack``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from cloud.config import MqttConfig, MqttTlsConfig, StoreConfig
from cloud.console.naps import (
    NapAckError,
    NapAckNotSent,
    RemoteAck,
    nap_ack_sender,
    send_nap_ack,
    sheet_entries,
    sheet_html,
)
from cloud.console.state import ConsoleState
from cloud.database import Database, PostgresDatabase, SqliteDatabase
from cloud.store import Store
from edge.event import Event, command_topic
from edge.link.commands import NapAckCommand, parse_command
from edge.nursery.log import REMOTE_ACK
from edge.nursery.sheet import JST, build_sheet, render_html
from edge.sim.broker import Mosquitto, free_port
from edge.sim.emulated import EmulatedSite
from edge.tools.bench import SITES
from tests.cloud.conftest import make_event
from tests.support.naplog import entries_since
from tests.support.waiting import until

DAY = dt.date(2026, 11, 24)
DEVICE = "hiyoko-room-01"
PLACE = "さとやま保育園 ひよこ組"


def _ts(hhmm: str, s: int = 0, day: dt.date = DAY) -> dt.datetime:
    h, m = hhmm.split(":")
    return dt.datetime.combine(day, dt.time(int(h), int(m), s), JST).astimezone(dt.UTC)


def _event(kind: str, severity: str, at: dt.datetime, seq: int, **data: Any) -> Event:
    return make_event(
        kind, severity, site="hoikuen", device=DEVICE, ts=at, seq=seq, data={"place": PLACE, **data}
    )


def _day_events() -> list[Event]:
    """Cot 1 lies face down at 12:40 and is turned; cot 2's model cannot tell for a while,
    then its mat is unplugged and plugged back."""
    e: list[Event] = []
    for n, hhmm in enumerate(["12:30", "12:35", "12:40", "12:45", "12:50"]):
        e.append(
            _event(
                "posture_check",
                "info",
                _ts(hhmm, 5),
                10 + n,
                cot="1",
                posture="supine",
                probability=0.97,
            )
        )
    e += [
        _event(
            "prone_alarm", "alarm", _ts("12:40", 40), 20, cot="1", posture="prone", duration_s=30.0
        ),
        _event(
            "alarm_cleared",
            "info",
            _ts("12:41", 30),
            21,
            cot="1",
            cleared="prone_alarm",
            acknowledged_by="button",
            alarm_s=50.0,
        ),
        _event(
            "posture_check",
            "info",
            _ts("12:30", 6),
            30,
            cot="2",
            posture="unknown",
            probability=None,
        ),
        _event("posture_unknown", "warning", _ts("12:31", 0), 31, cot="2", unknown_s=20.0),
        _event(
            "posture_check", "info", _ts("12:45", 6), 32, cot="2", posture="left", probability=0.9
        ),
        _event(
            "sensor_fault",
            "warning",
            _ts("13:02", 0),
            33,
            sensor="mat_2",
            fault="no_answer",
            message="mat of cot 2: no frame for 5 s; check cot 2 by hand",
        ),
        _event(
            "sensor_recovered",
            "info",
            _ts("13:08", 0),
            34,
            sensor="mat_2",
            fault="no_answer",
            down_s=360.0,
        ),
        # Not the sheet's: the day before, another device, another kind.
        _event(
            "prone_alarm",
            "alarm",
            _ts("12:40", 0, DAY - dt.timedelta(days=1)),
            1,
            cot="1",
            posture="prone",
            duration_s=30.0,
        ),
        make_event(
            "prone_alarm",
            "alarm",
            site="hoikuen",
            device="other-room",
            seq=1,
            ts=_ts("12:40"),
            data={"cot": "9", "posture": "prone", "duration_s": 30.0},
        ),
        _event(
            "heartbeat", "info", _ts("12:42"), 40, interval_s=60.0, uptime_s=1.0, outbox_depth=0
        ),
    ]
    return e


ACKS = [
    RemoteAck("1", "prone_alarm", _ts("12:41", 0).timestamp(), "山田 花子"),
    ("1", None, _ts("14:00", 0).timestamp(), "佐藤"),  # nothing sounding: its own list
]


@contextlib.contextmanager
def _database(store: StoreConfig) -> Iterator[Database]:
    """A connection of the console's own to the notifier's database."""
    if store.backend == "postgresql":
        assert store.dsn is not None
        db: Database = PostgresDatabase.connect(store.dsn.reveal(), "test")
    else:
        assert store.path is not None
        db = SqliteDatabase.connect(Path(store.path))
    try:
        yield db
    finally:
        db.close()


async def _sheet(store: StoreConfig, device: str, *args: Any, **kw: Any) -> str | None:
    """:func:`sheet_html` on a connection of its own, on one thread (as the console's
    database thread calls it)."""

    def work() -> str | None:
        with _database(store) as db:
            return sheet_html(db, device, *args, **kw)

    return await asyncio.to_thread(work)


async def _stored(store_config: StoreConfig, events: list[Event]) -> None:
    async with await Store.open(store_config) as store:
        for event in events:
            assert await store.accept(event, [])


async def test_the_sheet_is_the_devices_sheet_rebuilt_from_the_stored_events(
    store_config: StoreConfig,
) -> None:
    await _stored(store_config, _day_events())
    page = await _sheet(store_config, DEVICE, DAY, language="ja", acknowledgements=ACKS)
    assert await _sheet(store_config, "nobody", DAY, language="ja", acknowledgements=[]) is None
    assert page is not None
    # The device's renderer: its title, its grid, its legend.
    assert "<title>午睡チェック表 2026-11-24</title>" in page
    assert PLACE in page  # the facility line: the place the device's events name
    # Cot 1's 12:40 slot: the check on its back and the alarm, worst first ("う" + "!").
    cot1 = re.search(r'<tr><th class="cot">1</th>.*?</tr>', page, re.S)
    assert cot1 is not None
    cells = re.findall(r'<td class="(slot[^"]*)" title="[^"]*">(.*?)</td>', cot1.group(0))
    assert len(cells) == 19  # 12:30 .. 14:00 (the last remote acknowledgement)
    assert "alarm" in cells[2][0] and "う" in cells[2][1] and "!" in cells[2][1]
    assert [c for c in cells if "alarm" in c[0]] == [cells[2]]
    # Cot 2: look now from 12:31 until the model answered (12:45), then by hand 13:02-13:08.
    cot2 = re.search(r'<tr><th class="cot">2</th>.*?</tr>', page, re.S)
    assert cot2 is not None
    classes = re.findall(r'<td class="(slot[^"]*)"', cot2.group(0))
    assert [("look" in c, "byhand" in c) for c in classes[:8]] == [
        (True, False),
        (True, False),
        (True, False),
        (True, False),  # 12:30-12:45
        (False, False),
        (False, False),  # 12:50, 12:55
        (False, True),
        (False, True),  # 13:00, 13:05
    ]
    assert not any("look" in c or "byhand" in c for c in classes[8:])
    # The alarm list: the remote acknowledgement apart from the on-site one, when cleared.
    alarms = page.split("警報と対応", 1)[1]
    assert "遠隔確認 (remote) by 山田 花子 at 12:41" in alarms
    assert "12:41:30" in alarms  # cleared
    assert "鳴っている警報がなかったとき" in page and "遠隔確認 (remote) by 佐藤 at 14:00" in page
    # The cloud has no child's name and says so; what it cannot know it does not invent.
    assert "ベッド名だけ" in page
    assert '<td class="child"></td>' in cot1.group(0)
    assert "2025-11-2" not in page and "9</th>" not in page


async def test_the_same_entries_make_the_same_grid_as_on_the_device(
    store_config: StoreConfig,
) -> None:
    """The cloud's page is the device's renderer over the entries the events stand for:
    the grid and the lists are byte for byte those of ``edge report naps`` for them."""
    await _stored(store_config, _day_events())
    page = await _sheet(store_config, DEVICE, DAY, language="en", acknowledgements=ACKS)
    assert page is not None
    day = [e for e in _day_events() if e.device == DEVICE and e.ts.astimezone(JST).date() == DAY]
    entries, place = sheet_entries(day, ACKS, day=DAY)
    device_page = render_html(build_sheet(entries, {}, date=DAY, facility=place), "en")
    grid = lambda html: html[html.index('<table class="grid">') :]  # noqa: E731
    assert grid(page) == grid(device_page)
    assert "remote acknowledgement (遠隔確認) by 山田 花子 at 12:41" in page
    assert "never silences the buzzer" in page  # the notice, in the user's language


async def test_the_consoles_own_record_of_acknowledgements_is_what_the_sheet_shows(
    store_config: StoreConfig,
) -> None:
    """Acknowledged through the console's read model (``console_actions``): no list passed."""
    await _stored(store_config, _day_events())

    def work() -> str | None:
        with _database(store_config) as db:
            state = ConsoleState(db, heartbeat_timeout_s=600.0)
            state.open()
            state.catch_up(now=_ts("12:41").timestamp())
            state.acknowledge_nap_alarm(DEVICE, "1", by="山田 花子", now=_ts("12:41").timestamp())
            state.acknowledge_nap_alarm(DEVICE, "2", by="佐藤", now=_ts("14:00").timestamp())
            state.acknowledge_nap_alarm(
                DEVICE, "1", by="翌日", now=_ts("12:41", day=DAY + dt.timedelta(days=1)).timestamp()
            )
            return sheet_html(db, DEVICE, DAY, language="ja")

    page = await asyncio.to_thread(work)
    assert page is not None
    alarms = page.split("警報と対応", 1)[1]
    assert "遠隔確認 (remote) by 山田 花子 at 12:41" in alarms.split("鳴っている警報がなかった")[0]
    assert "遠隔確認 (remote) by 佐藤 at 14:00" in alarms.split("鳴っている警報がなかった")[1]
    assert "翌日" not in page


def test_a_remote_acknowledgement_of_another_day_is_left_out() -> None:
    other = ("1", "prone_alarm", _ts("12:41", 0, DAY + dt.timedelta(days=1)).timestamp(), "X")
    entries, _ = sheet_entries([], [other], day=DAY)
    assert entries == []
    entries, _ = sheet_entries([], [ACKS[0]], day=DAY)
    assert [(x.kind, x.value, x.by) for x in entries] == [(REMOTE_ACK, "prone_alarm", "山田 花子")]


def test_a_look_now_ends_where_the_device_says_it_ended() -> None:
    """A device that reports the end of its look-now prompt (alarm_cleared by the model) is
    taken at its word: the prompt ends then, not at the next check the model could answer;
    an end with no prompt open changes nothing."""
    events = [
        _event("posture_check", "info", _ts("12:30", 5), 1, cot="2", posture="unknown",
               probability=None),
        _event("posture_unknown", "warning", _ts("12:31"), 2, cot="2", unknown_s=20.0),
        _event("alarm_cleared", "info", _ts("12:38", 10), 3, cot="2", cleared="posture_unknown",
               acknowledged_by="model", alarm_s=430.0, posture="left"),
        _event("alarm_cleared", "info", _ts("12:39"), 4, cot="2", cleared="posture_unknown",
               acknowledged_by="model", alarm_s=1.0, posture="supine"),
        _event("posture_check", "info", _ts("12:45", 6), 5, cot="2", posture="left",
               probability=0.9),
    ]  # fmt: skip
    entries, _ = sheet_entries(events, [], day=DAY)
    ends = [(x.t, x.value) for x in entries if x.kind == "posture_unknown_end"]
    assert ends == [(_ts("12:38", 10).timestamp(), "left")]
    sheet = build_sheet(entries, {}, date=DAY)
    [alarm] = sheet.rows[0].alarms
    assert alarm.kind == "posture_unknown" and alarm.cleared == _ts("12:38", 10).timestamp()
    looked = [slot for slot, c in sheet.rows[0].cells.items() if "posture_unknown" in c.alarms]
    assert looked == ["12:30", "12:35"]


async def test_sheet_of_today_by_default_reads_todays_events(tmp_path: Path) -> None:
    store = StoreConfig(backend="sqlite", path=str(tmp_path / "n.sqlite3"))
    now = dt.datetime.now(dt.UTC)
    await _stored(
        store, [_event("prone_alarm", "alarm", now, 1, cot="1", posture="prone", duration_s=30.0)]
    )
    page = await _sheet(store, DEVICE, language="ja", now=time.time())
    assert page is not None
    assert now.astimezone(JST).date().isoformat() in page
    assert "うつぶせ寝警報" in page and "鳴動中" in page


# -- cmd/nap_ack ------------------------------------------------------------------------------


def _mqtt(broker: Mosquitto, **over: Any) -> MqttConfig:
    return MqttConfig(
        host=broker.host, port=broker.port, client_id="satoyama-notifier-test", **over
    )


async def test_send_nap_ack_publishes_what_the_device_accepts_at_qos_1_not_retained(
    broker: Mosquitto,
) -> None:
    config = _mqtt(broker)
    topic = command_topic(config.topic_prefix, DEVICE, "nap_ack")
    async with aiomqtt.Client(broker.host, broker.port) as listener:
        await listener.subscribe(command_topic(config.topic_prefix, "+"), qos=1)
        at = time.time()
        ident = await send_nap_ack(config, DEVICE, "ひよこ-1", "山田 花子", at=at)
        async with asyncio.timeout(10):
            message = await anext(aiter(listener.messages))
    assert message.topic.value == topic
    assert message.qos == 1 and message.retain is False
    assert isinstance(message.payload, bytes)
    command = parse_command("nap_ack", message.payload)  # the device's own validation
    assert isinstance(command, NapAckCommand)
    assert (command.cot, command.by, command.id) == ("ひよこ-1", "山田 花子", ident)
    assert abs(command.at.timestamp() - at) < 1e-3
    # Not retained: a device (or anyone) subscribing later is not told again.
    async with aiomqtt.Client(broker.host, broker.port) as late:
        await late.subscribe(topic, qos=1)
        marker = command_topic(config.topic_prefix, DEVICE, "marker")
        await late.subscribe(marker, qos=1)
        await late.publish(marker, b"{}", qos=1)
        async with asyncio.timeout(10):
            first = await anext(aiter(late.messages))
        assert first.topic.value == marker  # the ack was not waiting for it


@pytest.mark.parametrize(
    ("cot", "by", "device"),
    [
        ("", "YT", DEVICE),
        ("c" * 33, "YT", DEVICE),
        ("1", "", DEVICE),
        ("1", "Y\nT", DEVICE),
        ("1", " YT", DEVICE),
        ("1", "YT", "a/b"),
        ("1", "YT", "+"),
    ],
)
async def test_send_nap_ack_refuses_what_the_device_would(
    broker: Mosquitto, cot: str, by: str, device: str
) -> None:
    with pytest.raises(NapAckError):
        await send_nap_ack(_mqtt(broker), device, cot, by)


async def test_under_mutual_tls_the_console_does_not_borrow_the_notifiers_identity(
    broker: Mosquitto,
) -> None:
    tls = MqttTlsConfig(ca_file="ca.pem", cert_file="cloud.pem", key_file="cloud.key")
    with pytest.raises(NapAckError, match="its own client certificate"):
        await send_nap_ack(_mqtt(broker, tls=tls), DEVICE, "1", "YT")


async def test_a_broker_that_is_not_there_is_an_error_not_a_silent_loss() -> None:
    config = MqttConfig(host="127.0.0.1", port=free_port())
    with pytest.raises(NapAckNotSent):
        await send_nap_ack(config, DEVICE, "1", "YT", timeout_s=3)


@pytest.mark.slow
async def test_the_real_daemon_records_the_consoles_acknowledgement_and_keeps_sounding(
    tmp_path: Path,
) -> None:
    text = (SITES / "nap-alarms.toml").read_text(encoding="utf-8")
    async with EmulatedSite(text, tmp_path / "site") as site:
        assert site.daemon is not None
        naps = site.daemon.naps["naps"]
        kinds = lambda k: [e for e in site.events() if e["kind"] == k]  # noqa: E731
        today = dt.datetime.now(JST).date()
        await site.apply("mat_1", "lie_down")
        await site.apply("mat_1", "roll_to", "prone")
        await until(lambda: bool(kinds("prone_alarm")), 15, "the prone alarm")
        config = MqttConfig(
            host=site.broker.host, port=site.broker.port, topic_prefix=site.base.uplink.topic_prefix
        )
        ident = await send_nap_ack(config, site.base.device.id, "ひよこ-1", "山田 花子")
        assert ident
        await until(
            lambda: any(e.kind == REMOTE_ACK for e in entries_since(naps.log, today)),
            10,
            "the device to record the console's acknowledgement",
        )
        [entry] = [e for e in entries_since(naps.log, today) if e.kind == REMOTE_ACK]
        assert (entry.cot, entry.value, entry.by) == ("ひよこ-1", "prone_alarm", "山田 花子")
        assert naps.cots["mat_1"].active_alarms == ["prone_alarm"]
        assert site.actuator_states()["buzzer"] is True  # the child is still face down
        # As the console's app calls it: (device, cot, by, at).
        await nap_ack_sender(config)(site.base.device.id, "ない", "山田 花子", time.time())
        await until(lambda: bool(kinds("command_rejected")), 10, "the unknown cot refused")
        assert "unknown cot" in kinds("command_rejected")[0]["data"]["reason"]
        assert site.actuator_states()["buzzer"] is True
