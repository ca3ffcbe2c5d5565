"""Remote acknowledgement of a nap alarm (``cmd/nap_ack``): recorded on the sheet, never a
silence.

A person who saw a cot's alarm in the cloud console says so; the device writes it on the
check sheet as 遠隔確認 (remote), and the alarm goes on exactly as before: it ends only once
someone in the room has acknowledged it and the child is safe again.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge.event import command_topic
from edge.link.commands import CommandError, NapAckCommand, parse_command
from edge.nursery.log import REMOTE_ACK, NapEntry, NapLog
from edge.nursery.sheet import (
    ANY_SOUNDING,
    JST,
    build_sheet,
    remote_text,
    render_csv,
    render_html,
    write_report,
)
from edge.nursery.watch import TICK_S
from edge.sim.emulated import EmulatedSite
from edge.tools.bench import SITES
from tests.support.naplog import entries_since
from tests.support.waiting import until

DAY = dt.date(2026, 11, 24)


def _t(hhmm: str, s: int = 0) -> float:
    h, m = hhmm.split(":")
    return dt.datetime.combine(DAY, dt.time(int(h), int(m), s), JST).timestamp()


def _payload(**over: Any) -> bytes:
    body: dict[str, Any] = {"cot": "ひよこ-1", "by": "山田 花子", "at": "2026-11-24T03:41:00Z",
                            "id": "01938f2a-7c1e-7000-8000-000000000001"}
    body.update(over)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


# -- the command's schema -------------------------------------------------------------------


def test_nap_ack_payload_is_validated_like_every_command() -> None:
    command = parse_command("nap_ack", _payload())
    assert isinstance(command, NapAckCommand)
    assert command.cot == "ひよこ-1" and command.by == "山田 花子"
    assert command.at == dt.datetime(2026, 11, 24, 3, 41, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (_payload(at="2026-11-24T03:41:00"), "UTC offset"),  # which clock? refused
        (_payload(at="yesterday"), "$.at"),
        (_payload(by="YT\nrm -rf"), "$.by"),  # no control characters into the sheet
        (_payload(by=""), "$.by"),
        (_payload(by=" YT"), "spaces"),
        (_payload(by="x" * 65), "$.by"),
        (_payload(cot=""), "$.cot"),
        (_payload(cot="c" * 33), "$.cot"),
        (_payload(id="../../etc"), "$.id"),
        (_payload(id=None), "id"),
        (_payload(silence=True), "silence"),  # unknown fields are refused, not ignored
        (b"[]", "invalid payload"),
        (b"", "invalid payload"),
    ],
)
def test_a_bad_nap_ack_is_refused(payload: bytes, why: str) -> None:
    with pytest.raises(CommandError, match=None) as caught:
        parse_command("nap_ack", payload)
    assert why in str(caught.value)


# -- the sheet ------------------------------------------------------------------------------


def _alarm_day(*extra: NapEntry) -> list[NapEntry]:
    return [
        NapEntry(_t("12:30"), "1", "nap_start", ""),
        NapEntry(_t("12:30", 5), "1", "posture_check", "supine"),
        NapEntry(_t("12:40", 10), "1", "prone_alarm", "prone"),
        NapEntry(_t("12:40", 30), "1", REMOTE_ACK, "prone_alarm", by="山田"),
        NapEntry(_t("12:40", 50), "1", "ack", "prone_alarm", by="button"),
        NapEntry(_t("12:41", 0), "1", "alarm_cleared", "prone_alarm", by="button"),
        NapEntry(_t("12:50", 0), "1", REMOTE_ACK, "", by="佐藤"),  # no alarm sounding
        *extra,
        NapEntry(_t("13:00"), "1", "wake", ""),
    ]


def test_the_sheet_lists_a_remote_acknowledgement_apart_from_the_on_site_one() -> None:
    sheet = build_sheet(_alarm_day(), {"1": "あおい"}, date=DAY)
    [row] = sheet.rows
    [alarm] = row.alarms
    assert alarm.acks == ((_t("12:40", 50), "button"),)  # the room's: what ended it
    assert alarm.remote_acks == ((_t("12:40", 30), "山田"),)
    assert alarm.cleared == _t("12:41")
    assert row.remote_only == [(_t("12:50"), "佐藤")]  # recorded as such, not dropped
    # A remote name is nobody's round in the room: not in the staff row.
    assert all("山田" not in who and "佐藤" not in who for who in sheet.staff.values())
    page = render_html(sheet, "ja")
    assert "遠隔確認 (remote) by 山田 at 12:40" in page
    assert '<span class="remote">' in page
    assert "遠隔確認 (remote) by 佐藤 at 12:50" in page  # the list of those with no alarm
    assert "鳴っている警報がなかったとき" in page
    assert "ボタン" in page  # the on-site acknowledgement is still there, as it was
    csv_text = render_csv(sheet, "en")
    assert "remote acknowledgement (遠隔確認) by 山田 at 12:40" in csv_text
    assert "Remote acknowledgements with no alarm sounding" in csv_text


def test_a_remote_acknowledgement_while_it_sounds_does_not_clear_or_hide_the_alarm() -> None:
    entries = [
        NapEntry(_t("12:40", 10), "1", "prone_alarm", "prone"),
        NapEntry(_t("12:40", 30), "1", REMOTE_ACK, "prone_alarm", by="山田"),
    ]
    sheet = build_sheet(entries, {"1": ""}, date=DAY)
    [alarm] = sheet.rows[0].alarms
    assert alarm.cleared is None and alarm.acks == ()
    page = render_html(sheet, "ja")
    assert 'class="still"' in page  # 鳴動中
    alarm_cells = [c for c in sheet.rows[0].cells.values() if c.alarms]
    assert [c.posture for c in alarm_cells] == ["prone"]


def test_any_sounding_goes_beside_every_alarm_still_sounding_at_its_time() -> None:
    entries = [
        NapEntry(_t("12:40", 10), "1", "prone_alarm", "prone"),
        NapEntry(_t("12:40", 12), "1", "apnea_alarm", "prone"),
        NapEntry(_t("12:40", 20), "1", "alarm_cleared", "apnea_alarm", by="button"),
        NapEntry(_t("12:40", 30), "1", REMOTE_ACK, ANY_SOUNDING, by="山田"),
        NapEntry(_t("12:45", 30), "2", REMOTE_ACK, ANY_SOUNDING, by="山田"),
    ]
    sheet = build_sheet(entries, {"1": "", "2": ""}, date=DAY)
    one, two = sheet.rows
    prone, apnea = one.alarms
    assert prone.remote_acks == ((_t("12:40", 30), "山田"),)
    assert apnea.remote_acks == ()  # it had cleared already
    assert two.remote_only == [(_t("12:45", 30), "山田")]


def test_remote_text_reads_the_same_in_both_languages_of_the_sheet() -> None:
    assert remote_text(_t("12:41", 59), "山田") == "遠隔確認 (remote) by 山田 at 12:41"
    assert remote_text(_t("09:05"), "Yamada", "en") == (
        "remote acknowledgement (遠隔確認) by Yamada at 09:05")


# -- through the real daemon and a real broker ------------------------------------------------


async def _publish(site: EmulatedSite, payload: bytes) -> None:
    config = site.base
    topic = command_topic(config.uplink.topic_prefix, config.device.id, "nap_ack")
    async with aiomqtt.Client(site.broker.host, site.broker.port) as client:
        await client.publish(topic, payload, qos=1)


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.slow
async def test_a_remote_acknowledgement_is_recorded_and_the_buzzer_sounds_until_the_turn(
    tmp_path: Path,
) -> None:
    text = (SITES / "nap-alarms.toml").read_text(encoding="utf-8")
    async with EmulatedSite(text, tmp_path / "site") as site:
        assert site.daemon is not None
        naps = site.daemon.naps["naps"]
        cot = naps.cots["mat_1"]
        kinds = lambda k: [e for e in site.events() if e["kind"] == k]  # noqa: E731
        today = dt.datetime.now(JST).date()

        def remote_entries() -> list[NapEntry]:
            return [e for e in entries_since(naps.log, today) if e.kind == REMOTE_ACK]

        await site.apply("mat_1", "lie_down")
        await until(lambda: bool(kinds("posture_check")), 10, "a posture check")
        await site.apply("mat_1", "roll_to", "prone")
        await until(lambda: bool(kinds("prone_alarm")), 15, "the prone alarm")
        assert site.actuator_states()["buzzer"] is True

        # Seen in the console: recorded, and nothing else changes.
        await _publish(site, _payload(by="山田 花子", at=_now_rfc3339()))
        await until(lambda: bool(remote_entries()), 10, "the remote acknowledgement")
        [entry] = remote_entries()
        assert (entry.cot, entry.value, entry.by) == ("ひよこ-1", "prone_alarm", "山田 花子")
        assert cot.active_alarms == ["prone_alarm"]
        assert site.actuator_states()["buzzer"] is True

        # Turned onto the back, safe for longer than prone_reset_s: with only the remote
        # acknowledgement nobody in the room has answered, so it still sounds.
        await site.apply("mat_1", "roll_to", "supine")
        reset_s = site.base.rules["naps"].prone_reset_s  # type: ignore[union-attr]
        safe_since: list[float] = []

        def safe_long_enough() -> bool:
            if cot.posture != "supine":
                safe_since.clear()
                return False
            if not safe_since:
                safe_since.append(time.monotonic())
            return time.monotonic() - safe_since[0] > reset_s + 4 * TICK_S

        await until(safe_long_enough, 15, "the child safe on its back for prone_reset_s")
        assert cot.active_alarms == ["prone_alarm"], "a remote acknowledgement ended the alarm"
        assert site.actuator_states()["buzzer"] is True
        assert not kinds("alarm_cleared")

        # Someone in the room answers: now it ends, and the room's button is who did.
        await site.apply("naps", "acknowledge")
        await until(lambda: bool(kinds("alarm_cleared")), 10, "the alarm cleared")
        assert kinds("alarm_cleared")[0]["data"]["acknowledged_by"] == "button"
        await until(lambda: site.actuator_states()["buzzer"] is False, 3, "the buzzer off")

        # With no alarm sounding it is recorded as such; an unknown cot is refused.
        await _publish(site, _payload(by="佐藤", at=_now_rfc3339(), id="second"))
        await until(lambda: len(remote_entries()) == 2, 10, "the second acknowledgement")
        assert (remote_entries()[1].value, remote_entries()[1].by) == ("", "佐藤")
        await _publish(site, _payload(cot="うさぎ-9", at=_now_rfc3339(), id="third"))
        await until(lambda: bool(kinds("command_rejected")), 10, "the refusal")
        rejected = kinds("command_rejected")[0]["data"]
        assert rejected["command"] == "nap_ack" and "unknown cot 'うさぎ-9'" in rejected["reason"]
        assert len(remote_entries()) == 2
        # The name stays on the device: no event carries it.
        assert "山田" not in str(site.events()) and "佐藤" not in str(site.events())

    # The printed sheet (what `edge report naps` writes).
    log = NapLog(tmp_path / "site" / "naps.sqlite3")
    try:
        entries = log.day(today, JST)
    finally:
        log.close()
    html_path, csv_path = write_report(entries, today, {"ひよこ-1": "あおい"}, tmp_path / "out")
    page = html_path.read_text(encoding="utf-8")
    assert "遠隔確認 (remote) by 山田 花子 at" in page
    assert "遠隔確認 (remote) by 佐藤 at" in page and "鳴っている警報がなかったとき" in page
    sheet = build_sheet(entries, {"ひよこ-1": "あおい"}, date=today)
    [alarm] = sheet.rows[0].alarms
    assert [by for _, by in alarm.acks] == ["button"]
    assert [by for _, by in alarm.remote_acks] == ["山田 花子"]
    assert alarm.remote_acks[0][0] < alarm.acks[0][0] < (alarm.cleared or 0)
    assert "遠隔確認" in csv_path.read_text(encoding="utf-8-sig")


@pytest.mark.slow
async def test_a_remote_acknowledgement_sent_before_the_alarm_began_names_no_alarm(
    tmp_path: Path,
) -> None:
    """A command that waited in the broker (the device was offline) must not be put
    beside an alarm that went off after the person looked."""
    text = (SITES / "nap-alarms.toml").read_text(encoding="utf-8")
    async with EmulatedSite(text, tmp_path / "site") as site:
        assert site.daemon is not None
        naps = site.daemon.naps["naps"]
        kinds = lambda k: [e for e in site.events() if e["kind"] == k]  # noqa: E731
        today = dt.datetime.now(JST).date()
        await site.apply("mat_1", "lie_down")
        await site.apply("mat_1", "roll_to", "prone")
        await until(lambda: bool(kinds("prone_alarm")), 15, "the prone alarm")
        old = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()
        await _publish(site, _payload(at=old))
        await until(lambda: any(e.kind == REMOTE_ACK for e in entries_since(naps.log, today)), 10,
                    "the remote acknowledgement")
        [entry] = [e for e in entries_since(naps.log, today) if e.kind == REMOTE_ACK]
        assert entry.value == ""  # recorded, beside no alarm
        assert site.actuator_states()["buzzer"] is True
