"""Rendering: the mail a person reads, parsed back as a mail client would."""

# The expected Japanese texts use full-width brackets, as the mails do.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
import email
import email.policy
import io
import re
import zoneinfo
from email.message import EmailMessage
from typing import Any

import pytest
from PIL import Image

import cloud.render
from cloud.chart import HEIGHT as CHART_HEIGHT
from cloud.chart import WIDTH as CHART_WIDTH
from cloud.chart import level_chart
from cloud.config import KNOWN_KINDS, SiteConfig
from cloud.render import (
    JST,
    as_bytes,
    message_id,
    render_device,
    render_mail,
    render_reminder,
    render_summary,
)
from cloud.templates import EN, JA, PHRASES
from edge.event import KINDS, Event
from tests.cloud.conftest import LAT, LON, PLACE, SITE, TS, make_event

SITE_CONFIG = SiteConfig(name=PLACE, recipients=("farmer@example.jp",))
SENDER = "里山エッジ <alerts@example.jp>"
RECEIVED = dt.datetime(2025, 11, 24, 4, 5, 13, tzinfo=dt.UTC)


def rendered(
    event: Event, *, language: str = "ja", site: SiteConfig = SITE_CONFIG, **kwargs: Any
) -> EmailMessage:
    """Render, serialise to bytes, and parse back."""
    msg = render_mail(
        event,
        site,
        language=language,  # type: ignore[arg-type]
        sender=SENDER,
        recipient="farmer@example.jp",
        received_at=kwargs.pop("received_at", RECEIVED),
        **kwargs,
    )
    parsed = email.message_from_bytes(as_bytes(msg), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(msg: EmailMessage) -> tuple[str, str]:
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


def top_and_small_print(plain: str) -> tuple[str, str]:
    """The text part above the signature line ("--"), and the small print under it."""
    top, small = plain.replace("\r\n", "\n").split("\n--\n", 1)
    return top, small


def html_row(label: str, value: str) -> re.Pattern[str]:
    """A table row of the HTML part, whatever its inline styles."""
    esc = value.replace("&", "&amp;").replace("<", "&lt;")
    return re.compile(rf"<th[^>]*>{re.escape(label)}</th><td[^>]*>{re.escape(esc)}</td>")


def test_mime_structure_and_headers() -> None:
    event = make_event()
    msg = rendered(event, index=2)
    assert msg.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in msg.iter_parts()]
    assert types == ["text/plain", "text/html"]
    for part in msg.iter_parts():
        assert part.get_content_charset() == "utf-8"
    assert msg["To"] == "farmer@example.jp"
    assert msg["From"].addresses[0].addr_spec == "alerts@example.jp"
    assert msg["From"].addresses[0].display_name == "里山エッジ"
    assert msg["Message-ID"] == f"<{event.id}.2@satoyama-edge>"
    assert msg["Date"].datetime == RECEIVED
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Satoyama-Event"] == event.id


def test_the_wire_format_is_plain_ascii_with_crlf() -> None:
    """Any SMTP server takes it: no 8BITMIME or SMTPUTF8 needed."""
    raw = as_bytes(
        render_mail(
            make_event(), SITE_CONFIG, language="ja", sender=SENDER, recipient="farmer@example.jp"
        )
    )
    raw.decode("ascii")
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_japanese_subject_says_what_where_and_when_in_japan_time() -> None:
    msg = rendered(make_event("animal_detected", "alarm"))
    assert msg["Subject"] == "【緊急】【動物検知】片丘 東の田 11月24日 13:05"
    assert msg["X-Priority"] == "1"


def test_only_alarms_carry_the_marker() -> None:
    msg = rendered(make_event("trap_reset", "info", data={}))
    assert msg["Subject"] == "【わな解除】片丘 東の田 11月24日 13:05"
    assert msg["X-Priority"] is None


def test_time_is_japan_time_across_midnight() -> None:
    late = dt.datetime(2025, 11, 24, 15, 30, 0, tzinfo=dt.UTC)  # 00:30 next day in Japan
    msg = rendered(make_event("trap_triggered", "alarm", ts=late), received_at=late)
    assert msg["Subject"].endswith("11月25日 00:30")
    plain, html = parts(msg)
    assert "2025年11月25日(火) 00:30:00（日本時間）" in plain
    assert "2025年11月25日(火) 00:30:00（日本時間）" in html


def test_body_tells_what_where_which_device_and_which_detector() -> None:
    event = make_event(data={"detector": "pir-north", "siren": True, "strobe": False})
    plain, html = parts(rendered(event))
    top, small = top_and_small_print(plain)
    assert top.startswith("片丘 東の田で動物（イノシシ・シカなど）を検知しました。")
    assert f"サイトID: {SITE}" in small and "サイトID" not in top
    assert "端末: pi-east-01" in small and "pi-east-01" not in top
    assert "■ 日時: 2025年11月24日(月) 13:05:12（日本時間）" in top
    assert "検知器: pir-north" in small and "pir-north" not in top
    assert "■ サイレン: 鳴らしました" in plain
    assert "■ ライト: 点滅させました" not in plain
    assert "■ ライト: 点滅させていません" in plain
    assert "未同期" not in plain  # the clock was synced
    assert "pir-north" in html and "鳴らしました" in html


def test_deterrents_may_come_as_an_actions_list() -> None:
    event = make_event(data={"detector": "pir-1", "actions": ["siren", "strobe", "camera"]})
    plain, _ = parts(rendered(event))
    assert "■ サイレン: 鳴らしました" in plain
    assert "■ ライト: 点滅させました" in plain
    assert 'actions: ["camera"]' in plain


def test_map_links_carry_the_position_with_six_decimals() -> None:
    plain, html = parts(rendered(make_event()))
    lat, lon = f"{LAT:.6f}", f"{LON:.6f}"
    assert lat == "36.079432" and lon == "137.954322"
    gsi = f"https://maps.gsi.go.jp/#17/{lat}/{lon}/"
    osm = f"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"
    google = f"https://www.google.com/maps/search/?api=1&query={lat},{lon}"
    for url in (gsi, osm, google):
        assert url in plain
        assert f'href="{url.replace("&", "&amp;")}"' in html
    assert f"■ 地図で場所を開く: {gsi}" in plain  # one tap, near the top
    assert "OpenStreetMap" in plain and "Google マップ" in plain


def test_unset_location_gives_no_map_links() -> None:
    plain, html = parts(rendered(make_event(lat=0.0, lon=0.0)))
    assert "maps.gsi.go.jp" not in plain and "maps.gsi.go.jp" not in html
    assert "位置情報がありません" in plain


def test_unsynced_clock_is_warned_about_with_the_time_received() -> None:
    plain, html = parts(rendered(make_event(clock_synced=False)))
    assert "端末の時計が未同期" in plain
    assert "■ 受信日時: 2025年11月24日(月) 13:05:13（日本時間）" in plain
    assert "端末の時計が未同期" in html


def test_late_delivery_shows_the_time_received() -> None:
    received = dt.datetime(2025, 11, 25, 0, 0, 0, tzinfo=dt.UTC)  # the device was offline
    plain, _ = parts(rendered(make_event(), received_at=received))
    assert "■ 受信日時: 2025年11月25日(火) 09:00:00（日本時間）" in plain


HOSTILE = '<script>alert("x")</script>&<b>'


def test_device_values_are_escaped_in_html() -> None:
    site = SiteConfig(name=f"東の田 {HOSTILE}", recipients=("farmer@example.jp",))
    event = make_event(
        device=f"pi-{HOSTILE}",
        data={"detector": HOSTILE, HOSTILE: HOSTILE, "note": "a\r\nBcc: victim@example.com"},
    )
    msg = rendered(event, site=site)
    plain, html = parts(msg)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;b&gt;" in html
    assert html.count("<b>") == 0
    # The plain part shows values as they are (a mail client does not run it) ...
    assert HOSTILE in plain
    # ... but on one line: a device cannot forge lines or headers.
    assert "Bcc" not in msg
    assert "note: a Bcc: victim@example.com" in plain
    assert re.fullmatch(r"pi-[A-Za-z0-9_]+", msg["X-Satoyama-Device"])


def test_control_characters_in_the_place_name_do_not_break_the_subject() -> None:
    site = SiteConfig(name="東の田\nBcc: x@example.com", recipients=("farmer@example.jp",))
    msg = rendered(make_event(), site=site)
    assert msg["Subject"] == "【緊急】【動物検知】東の田 Bcc: x@example.com 11月24日 13:05"
    assert "Bcc" not in msg


def test_message_id_is_stable_and_safe() -> None:
    event = make_event()
    assert rendered(event)["Message-ID"] == rendered(event)["Message-ID"]
    weird = message_id("id with <spaces> and\nnewlines", 1)
    assert weird == message_id("id with <spaces> and\nnewlines", 1)
    assert weird.startswith("<h") and weird.endswith(".1@satoyama-edge>")
    assert " " not in weird and "\n" not in weird
    msg = rendered(make_event(event_id="evil>\r\nBcc: x@example.com"))
    assert "Bcc" not in msg
    assert msg["Message-ID"].endswith(".1@satoyama-edge>")


def test_english_rendering() -> None:
    msg = rendered(make_event(), language="en")
    assert msg["Subject"] == "[ALARM] [Animal detected] 片丘 東の田 24 Nov 13:05 JST"
    plain, html = parts(msg)
    assert "An animal (wild boar, deer or similar) was detected at 片丘 東の田." in plain
    assert "■ When: Mon 24 Nov 2025, 13:05:12 JST (UTC+9)" in plain
    assert "■ Siren: sounded" in plain
    assert "■ Strobe: did not flash" in plain
    assert "■ Open the place on a map: https://maps.gsi.go.jp/" in plain and 'lang="en"' in html


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("language", sorted(PHRASES))
def test_every_kind_has_its_own_text_in_every_language(kind: str, language: str) -> None:
    title = PHRASES[language].kinds[kind].title
    msg = rendered(make_event(kind, "warning", data={}), language=language)
    assert title in msg["Subject"]
    plain, _ = parts(msg)
    headline = PHRASES[language].kinds[kind].headline.format(place=PLACE, device="pi-east-01")
    assert headline in plain


def test_japanese_titles_are_the_agreed_ones() -> None:
    titles = {kind: text.title for kind, text in JA.kinds.items()}
    assert titles == {
        "animal_detected": "動物検知",
        "trap_triggered": "わな作動",
        "trap_reset": "わな解除",
        "water_level_alert": "水位警報",
        "water_rise_alert": "水位急上昇",
        "posture_check": "午睡チェック",
        "prone_alarm": "うつぶせ寝警報",
        "apnea_alarm": "無呼吸警報",
        "posture_unknown": "見てください（寝姿勢不明）",
        "alarm_cleared": "警報解除",
        "anomaly": "異常検知",
        "sensor_fault": "センサー異常",
        "sensor_recovered": "センサー復旧",
        "heartbeat": "死活通知",
        "command_rejected": "コマンド拒否",
        "trap_armed": "わな稼働報告",
        "trap_reminder": "わな未解除",
        "device_offline": "端末オフライン",
        "device_online": "端末復旧",
        "update_installed": "ソフト更新完了",
        "update_failed": "ソフト更新失敗",
    }
    assert set(EN.kinds) == set(JA.kinds) == set(KNOWN_KINDS)
    assert KINDS <= KNOWN_KINDS


@pytest.mark.parametrize("severity", ["alarm", "warning"])
def test_a_failed_update_is_named_as_one_whatever_its_severity(severity: str) -> None:
    """The updater's kinds (relayed by the daemon's spool) have their own words: an operator
    reading 【警報】 alone could not tell a failed update from a field alarm."""
    data = {"stage": "health", "reason": "no heartbeat"}
    msg = rendered(make_event("update_failed", severity, data=data))
    assert "ソフト更新失敗" in msg["Subject"]
    plain, _ = parts(msg)
    assert "ソフトウェア更新が失敗しました" in plain
    assert "■ 更新の段階: health" in plain and "水位" not in plain


@pytest.mark.parametrize(
    ("severity", "subject"),
    [
        ("alarm", "【緊急】【警報】片丘 東の田 11月24日 13:05"),
        ("warning", "【注意】片丘 東の田 11月24日 13:05"),
        ("info", "【お知らせ】片丘 東の田 11月24日 13:05"),
    ],
)
def test_unknown_kind_falls_back_to_its_severity(severity: str, subject: str) -> None:
    msg = rendered(make_event("goat_detected", severity, data={"goats": 3}))
    assert msg["Subject"] == subject
    plain, _ = parts(msg)
    assert "goats: 3" in plain


def test_water_and_nap_fields_are_labelled_and_translated() -> None:
    plain, _ = parts(rendered(make_event("water_level_alert", "alarm", data={"level_cm": 182.5})))
    assert "■ 水位 (cm): 182.5" in plain
    plain, _ = parts(
        rendered(make_event("prone_alarm", "alarm", data={"cot": "3", "posture": "prone"}))
    )
    assert "■ ベッド: 3" in plain
    assert "■ 姿勢: うつぶせ" in plain


@pytest.mark.parametrize(
    ("pattern", "ja", "en"),
    [
        ("stuck", "値が変化しない", "the reading stopped changing"),
        ("spike_or_step", "急な跳ね上がり・段差", "a sudden spike or step"),
        ("drift", "値のずれ（ドリフト）", "a drift of the readings"),
        ("dropout", "値が急に0・空・上限に飛んだまま", "the reading jumped to zero, empty or its"),
        ("unusual_shape", "いつもと異なる変化", "an unusual pattern"),
        ("disagree", "同じ水を測る2台の水位計の値が食い違う", "two gauges on the same water"),
    ],
)
def test_anomaly_says_what_the_series_did(pattern: str, ja: str, en: str) -> None:
    data = {"sensor": "river-gauge", "series": "water", "tests": ["peak"], "pattern": pattern}
    plain, _ = parts(rendered(make_event("anomaly", "warning", data=data)))
    assert f"■ 異常の形: {ja}" in plain
    assert "センサー: river-gauge" in top_and_small_print(plain)[1]
    plain, _ = parts(rendered(make_event("anomaly", "warning", data=data), language="en"))
    assert f"Pattern: {en}" in plain


def test_every_pattern_the_fault_rules_tell_has_words_in_both_languages() -> None:
    from edge.health.mat_load_faults import PATTERN as MAT
    from edge.health.water_faults import PATTERN as WATER
    from edge.water.pair import TEST as PAIR

    for pattern in {*WATER.values(), *MAT.values(), PAIR}:
        assert pattern in JA.values and pattern in EN.values, pattern
        assert JA.values[pattern] != EN.values[pattern]


def test_an_anomalys_detail_is_a_row_beside_its_pattern() -> None:
    detail = "level repeats 61.30 cm exactly for 1 h 10 min (this sensor's noise floor 0.28 cm)"
    data = {"sensor": "river-gauge", "series": "water", "score": 7.0, "threshold": 6.0,
            "tests": ["stuck"], "pattern": "stuck", "detail": detail}  # fmt: skip
    plain, html = parts(rendered(make_event("anomaly", "warning", data=data)))
    top, _ = top_and_small_print(plain)
    assert f"■ 詳細（英語）: {detail}" in top
    assert top.index("■ 異常の形") < top.index("■ 詳細")
    assert "61.30 cm exactly" in html
    plain, _ = parts(rendered(make_event("anomaly", "warning", data=data), language="en"))
    assert f"Detail: {detail}" in top_and_small_print(plain)[0]


def test_rendering_without_data_fields() -> None:
    plain, _ = parts(rendered(make_event(data={"detector": "pir-7"}), with_data=False))
    assert "pir-7" not in plain
    assert "maps.gsi.go.jp" in plain


def test_japan_time_without_a_tz_database(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(key: str) -> zoneinfo.ZoneInfo:
        raise zoneinfo.ZoneInfoNotFoundError(key)

    monkeypatch.setattr(cloud.render, "ZoneInfo", missing)
    tz = cloud.render._japan()
    assert TS.astimezone(tz).strftime("%H:%M") == "13:05"
    assert tz.utcoffset(None) == dt.timedelta(hours=9)


@pytest.mark.parametrize("year", [1, 9999])
def test_absurd_device_times_still_render(year: int) -> None:
    """An unsynced clock can say anything; the mail must still go out."""
    ts = dt.datetime(year, 6 if year == 1 else 12, 1, tzinfo=dt.UTC)
    if year == 9999:
        ts = ts.replace(day=31, hour=23)
    msg = rendered(make_event(ts=ts, clock_synced=False))
    assert str(year) in parts(msg)[0]


# --- the facts each kind must carry ----------------------------------------------------

CLOSED_SINCE = "2025-11-24T03:50:12Z"  # 15 minutes before TS

KIND_FACTS: list[tuple[str, str, dict[str, Any], str, list[str]]] = [
    # kind, severity, data, what the subject carries after the place, lines of the text part
    ("animal_detected", "alarm",
     {"sensor": "pir_north", "rule": "chase_north", "deterrent": "resting", "siren": False,
      "strobe": False},
     "", ["センサー: pir_north", "動作ルール: chase_north",
          "■ 威嚇装置: 休止中のため作動せず（直前に作動済み。動物がまだ近くにいます）",
          "■ サイレン: 鳴らしていません", "■ ライト: 点滅させていません"]),
    ("trap_triggered", "alarm",
     {"sensor": "box_trap_2", "closed_since": CLOSED_SINCE, "closed_s": 900.0},
     "15分経過", ["センサー: box_trap_2", "■ 閉じた日時: 2025年11月24日(月) 12:50:12（日本時間）",
                 "■ 閉じている時間: 15分"]),
    ("trap_reset", "info",
     {"sensor": "box_trap_2", "closed_since": CLOSED_SINCE, "closed_s": 7500.0},
     "", ["■ 閉じている時間: 2時間5分", "センサー: box_trap_2"]),
    ("water_level_alert", "alarm",
     {"sensor": "level_east", "level_cm": 182.5, "stage": "flood_warning",
      "stage_label": "はん濫注意", "threshold_cm": 180.0, "direction": "rising"},
     "182.5cm はん濫注意（氾濫注意水位）",
     ["■ 水位 (cm): 182.5", "■ 水位の段階: はん濫注意（氾濫注意水位）", "■ 変化: 上昇中",
      "■ 基準水位 (cm): 180"]),
    ("water_level_alert", "warning",
     {"sensor": "paddy_3", "level_cm": 1.5, "stage": "too_low", "threshold_cm": 2.0,
      "direction": "falling"},
     "1.5cm 水位が低すぎます", ["■ 水位の段階: 水位が低すぎます", "■ 変化: 下降中"]),
    ("water_rise_alert", "warning",
     {"sensor": "level_east", "level_cm": 120.0, "rise_cm_per_10min": 14.5,
      "threshold_cm_per_10min": 10.0},
     "120cm +14.5cm/10分", ["■ 上昇量 (cm/10分): 14.5", "■ 基準上昇量 (cm/10分): 10"]),
    ("posture_check", "info", {"cot": "ひよこ3", "posture": "left"}, "ひよこ3",
     ["■ ベッド: ひよこ3", "■ 姿勢: 左向き"]),
    ("prone_alarm", "alarm", {"cot": "ひよこ3", "posture": "prone", "duration_s": 65.0},
     "ひよこ3", ["■ ベッド: ひよこ3", "■ 姿勢: うつぶせ", "■ 継続時間: 1分5秒"]),
    ("apnea_alarm", "alarm", {"cot": "ひよこ1", "still_s": 22.0}, "ひよこ1",
     ["■ ベッド: ひよこ1", "■ 体動が止まっている時間: 22秒"]),
    ("posture_unknown", "warning", {"cot": "ひよこ2", "unknown_s": 20.5}, "ひよこ2",
     ["■ ベッド: ひよこ2", "■ 姿勢が不明な時間: 20秒"]),
    ("alarm_cleared", "info", {"cot": "ひよこ3", "cleared": "prone_alarm",
                               "acknowledged_by": None},
     "ひよこ3", ["■ 解除された警報: うつぶせ寝警報", "■ 確認者: （確認者の記録なし）"]),
    ("alarm_cleared", "info", {"cot": "ひよこ3", "cleared": "prone_alarm",
                               "acknowledged_by": "button", "alarm_s": 50.0},
     "ひよこ3", ["■ 解除された警報: うつぶせ寝警報", "■ 確認者: 部屋のボタン"]),
    ("alarm_cleared", "info", {"cot": "ひよこ2", "cleared": "posture_unknown",
                               "acknowledged_by": "model", "alarm_s": 95.0, "posture": "left"},
     "ひよこ2", ["■ 解除された警報: 見てください（寝姿勢不明）",
                 "■ 確認者: センサー（寝姿勢を再び判定できました）", "■ 姿勢: 左向き"]),
    ("sensor_fault", "warning",
     {"sensor": "level_east", "fault": "wire_break", "message": "current 2.1 mA < 3.6 mA"},
     "", ["センサー: level_east", "■ 異常コード: wire_break",
          "■ メッセージ: current 2.1 mA < 3.6 mA"]),
    ("sensor_recovered", "info", {"sensor": "level_east", "down_s": 3720.0}, "",
     ["■ 停止していた時間: 1時間2分"]),
    ("heartbeat", "info",
     {"interval_s": 300.0, "uptime_s": 90061.0, "outbox_depth": 0, "oldest_undelivered_s": None,
      "sensors": {"pir_north": "ok", "level_east": "fault"}},
     "", ["■ 通知間隔: 5分", "■ 稼働時間: 1日1時間",
          "■ センサーの状態: level_east: 異常, pir_north: 正常"]),
    ("command_rejected", "warning", {"command": "reboot", "reason": "not allowed"}, "",
     ["■ コマンド: reboot", "■ 理由: not allowed"]),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "severity", "data", "fact", "lines"), KIND_FACTS)
def test_each_kind_carries_its_facts(
    kind: str, severity: str, data: dict[str, Any], fact: str, lines: list[str]
) -> None:
    msg = rendered(make_event(kind, severity, data=data))
    title = JA.kinds[kind].title
    marker = "【緊急】" if severity == "alarm" else ""
    place = f"{PLACE} {fact}" if fact else PLACE
    assert msg["Subject"] == f"{marker}【{title}】{place} 11月24日 13:05"
    plain, html = parts(msg)
    top, small = top_and_small_print(plain)
    for line in lines:
        # facts for people above the signature; names from the device's config under it
        if line.startswith("■ "):
            assert line in top
            label, value = line[2:].split(": ", 1)
        else:
            assert line in small.splitlines()
            label, value = line.split(": ", 1)
        assert html_row(label, value).search(html), line
    assert "詳細データ" not in plain  # every key the device sends for this kind is known


def test_unknown_data_keys_are_still_shown() -> None:
    plain, html = parts(rendered(make_event("prone_alarm", data={"cot": "1", "mat_rev": "B2"})))
    assert "mat_rev: B2" in top_and_small_print(plain)[1]
    assert html_row("mat_rev", "B2").search(html)


def test_look_now_asks_staff_to_look_and_never_calls_the_child_safe() -> None:
    data = {"cot": "ひよこ2", "unknown_s": 20.0, "place": "ひよこ組"}
    msg = rendered(make_event("posture_unknown", "warning", data=data))
    assert msg["Subject"].startswith("【見てください（寝姿勢不明）】")
    assert "【緊急】" not in msg["Subject"]  # a prompt to look, not the face-down alarm
    plain, _ = parts(msg)
    assert "安全とはみなしていません" in plain and "直接見て" in plain
    assert "■ 姿勢が不明な時間: 20秒" in plain
    msg = rendered(make_event("posture_unknown", "warning", data=data), language="en")
    assert "[Look now (posture unknown)]" in msg["Subject"]
    plain, _ = parts(msg)
    assert "not treated as safe" in plain and "■ Posture unknown for: 20 s" in plain


def test_english_facts_per_recipient_language() -> None:
    data = {"cot": "chick-3", "posture": "prone", "duration_s": 65.0}
    msg = rendered(make_event("prone_alarm", "alarm", data=data), language="en")
    assert msg["Subject"] == f"[ALARM] [Face-down sleep alarm] {PLACE} chick-3 24 Nov 13:05 JST"
    plain, _ = parts(msg)
    assert "■ Posture: face down" in plain and "■ Duration: 1 min 5 s" in plain


def _water_chart() -> tuple[Any, float]:
    end = TS.timestamp()
    points = [(end - 86400 + i * 600, 100.0 + i * 0.5) for i in range(144)]
    chart = level_chart("level_east.level_cm", points, end=end, threshold=150.0, mark=end, tz=JST)
    assert chart is not None
    return chart, end


def test_water_alert_embeds_the_last_24_hours_as_an_inline_image() -> None:
    chart, _ = _water_chart()
    event = make_event("water_level_alert", data={
        "sensor": "level_east", "level_cm": 171.5, "threshold_cm": 150.0, "stage": "flood_watch",
    })  # fmt: skip
    msg = rendered(event, chart=chart)
    assert msg.get_content_type() == "multipart/alternative"
    plain_part, related = msg.iter_parts()
    assert plain_part.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html_part, image = related.iter_parts()
    assert html_part.get_content_type() == "text/html"
    assert image.get_content_type() == "image/png"
    cid = image["Content-ID"].strip("<>")
    html = html_part.get_content()
    assert f'src="cid:{cid}"' in html
    png = image.get_content()
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG" and picture.size == (CHART_WIDTH, CHART_HEIGHT)
        colours = {c for _, c in picture.convert("RGB").getcolors(100000)}
    assert (31, 100, 180) in colours and (200, 30, 30) in colours  # the level, the threshold
    plain = plain_part.get_content()
    assert "■ 過去24時間の水位" in plain
    assert "  最高: 171.5cm（11月24日 12:55）" in plain  # the last reading 10 min before
    assert "  最低: 100cm（11月23日 13:05）" in plain
    assert "  記録数: 144" in plain
    assert "最高" in html and "171.5cm" in html


def test_water_alert_without_readings_says_so() -> None:
    event = make_event("water_rise_alert", data={"sensor": "level_east", "level_cm": 120.0})
    msg = rendered(event)
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    plain, _ = parts(msg)
    assert "過去24時間の記録はありません。" in plain


def test_chart_of_one_reading_and_an_empty_window() -> None:
    end = TS.timestamp()
    assert level_chart("x.level_cm", [(end - 90000, 1.0)], end=end) is None
    one = level_chart("x.level_cm", [(end, 5.0)], end=end)
    assert one is not None and one.low == one.high == one.last == (end, 5.0)


NOW = dt.datetime(2025, 11, 24, 7, 5, 12, tzinfo=dt.UTC)  # 16:05:12 in Japan


def test_summary_of_a_lingering_animal() -> None:
    stats = {"by_sensor": {"pir_north": 40, "pir_south": 19}, "by_kind": {"animal_detected": 59},
             "sounded": 3, "from": TS.timestamp() + 60, "to": TS.timestamp() + 3540,
             "first": {"at": TS.timestamp()}, "last_kind": "animal_detected"}  # fmt: skip
    msg = _parse(render_summary(
        notice_id="ev1.s1", first_id="ev1", kind="animal_detected", severity="alarm",
        site_id=SITE, site=SITE_CONFIG, device="pi-east-01", count=59, total=59, stats=stats,
        over=True, quiet_s=900, every_s=3600, lat=LAT, lon=LON, language="ja",
        sender=SENDER, recipient="farmer@example.jp", index=2, now=NOW,
    ))  # fmt: skip
    assert msg["Subject"] == f"【動物検知・まとめ】{PLACE} ほか59件 11月24日 16:05"
    assert msg["In-Reply-To"] == msg["References"] == "<ev1.2@satoyama-edge>"
    assert msg["Message-ID"] == "<ev1.s1.2@satoyama-edge>"
    plain, _ = parts(msg)
    assert "同じ事象が59件ありました" in plain
    assert "■ 件数: 59回" in plain
    assert "■ 期間: 11月24日 13:06 〜 11月24日 14:04" in plain
    assert "■ センサー別: pir_north: 40回, pir_south: 19回" in plain
    assert "■ 威嚇装置の作動: 3回" in plain
    assert "最後の記録から15分の間、新たな記録はありません" in plain
    assert "maps.gsi.go.jp" in plain


def test_summary_of_a_flapping_sensor_says_how_it_ended() -> None:
    stats = {"by_sensor": {"level_east": 9},
             "by_kind": {"sensor_recovered": 5, "sensor_fault": 4}, "from": TS.timestamp(),
             "to": TS.timestamp() + 600, "last_kind": "sensor_recovered"}  # fmt: skip
    msg = _parse(render_summary(
        notice_id="ev2.s1", first_id="ev2", kind="sensor_fault", severity="warning",
        site_id=SITE, site=SITE_CONFIG, device="pi-east-01", count=9, total=9, stats=stats,
        over=False, quiet_s=1800, every_s=3600, lat=LAT, lon=LON, language="en",
        sender=SENDER, recipient="farmer@example.jp", index=1, now=NOW,
    ))  # fmt: skip
    plain, _ = parts(msg)
    assert "■ By kind: Sensor recovered: 5x, Sensor fault: 4x" in plain
    assert "■ Latest state: Sensor recovered" in plain
    assert "next summary comes in 1 h" in plain


def test_trap_reminder_says_how_long_it_has_been_closed() -> None:
    closed = TS.timestamp()
    msg = _parse(render_reminder(
        notice_id="trig.r2", trigger_id="trig", site_id=SITE, site=SITE_CONFIG,
        device="pi-trap-01", sensor="box_trap_2", closed_since=closed, number=2, lat=LAT,
        lon=LON, language="ja", sender=SENDER, recipient="hunter@example.jp", index=1, now=NOW,
    ))  # fmt: skip
    assert msg["Subject"] == f"【緊急】【わな未解除】{PLACE} 3時間経過 11月24日 16:05"
    assert msg["In-Reply-To"] == "<trig.1@satoyama-edge>"
    plain, _ = parts(msg)
    assert "■ 閉じた日時: 2025年11月24日(月) 13:05:12（日本時間）" in plain
    assert "■ 閉じてからの時間: 3時間" in plain
    assert "■ リマインダー: 2回目" in plain


@pytest.mark.parametrize("online", [False, True])
def test_device_offline_and_back_online(online: bool) -> None:
    msg = _parse(render_device(
        notice_id="pi-east-01.off1", online=online, site_id=SITE, site=SITE_CONFIG,
        device="pi-east-01", reason="connection lost", since=TS.timestamp(),
        last_seen=TS.timestamp() - 30, lat=LAT, lon=LON, language="ja", sender=SENDER,
        recipient="op@example.jp", index=1, now=NOW,
    ))  # fmt: skip
    plain, _ = parts(msg)
    if online:
        assert msg["Subject"] == f"【端末復旧】{PLACE} pi-east-01 11月24日 16:05"
        assert "■ 通信が途絶えていた時間: 3時間" in plain
    else:
        assert msg["Subject"] == f"【端末オフライン】{PLACE} pi-east-01 11月24日 16:05"
        assert "■ 理由: 通信が切れました（ブローカーが検知）" in plain
        assert "■ 最後の受信: 2025年11月24日(月) 13:04:42（日本時間）" in plain


def _parse(msg: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(as_bytes(msg), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@pytest.mark.parametrize("language", ["ja", "en"])
def test_a_line_break_in_a_stage_label_costs_nothing_of_the_alert(language: str) -> None:
    # It once made the subject raise: the alert went out without its level.
    event = make_event("water_level_alert", "alarm", data={
        "sensor": "level_east", "level_cm": 182.5, "stage": "flood_warning",
        "stage_label": "はん濫\r\nBcc: victim@example.jp\n注意", "threshold_cm": 180.0,
    })  # fmt: skip
    msg = rendered(event, language=language)
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert "182.5" in msg["Subject"]
    assert msg["Bcc"] is None
    plain, _ = parts(msg)
    assert "182.5" in plain
    assert not any(line.startswith("Bcc:") for line in plain.splitlines())
    assert "victim@example.jp" in plain  # shown, on the stage's own line


def test_control_characters_in_every_device_field_stay_on_their_line() -> None:
    nasty = "a\r\nb\x00c\x1bd\u2028e\x85f"
    event = make_event("trap_triggered", device="pi\r\nX-Evil: 1", data={
        "sensor": nasty, "trap": nasty, "note": nasty, nasty: nasty,
    })  # fmt: skip
    site = SiteConfig(name="片丘\r\n東の田", recipients=("farmer@example.jp",))
    msg = rendered(event, site=site)
    assert msg["X-Evil"] is None
    for header in ("Subject", "X-Satoyama-Device"):
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028]", str(msg[header])), header
    plain, _ = parts(msg)
    for line in plain.splitlines():
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028]", line), line
    assert "片丘 東の田" in msg["Subject"]


@pytest.mark.parametrize("language", ["ja", "en"])
def test_bidi_overrides_and_isolates_are_stripped_from_subjects_and_bodies(
    language: str,
) -> None:
    event = make_event("trap_triggered", device=f"pi{BIDI}east", data={
        "sensor": f"box{BIDI}_trap", "note": f"gpj.{BIDI}exe", f"k{BIDI}ey": f"v{BIDI}al",
    })  # fmt: skip
    site = SiteConfig(name=f"片丘{BIDI}東の田", recipients=("farmer@example.jp",))
    msg = rendered(event, language=language, site=site)
    plain, html = parts(msg)
    for text in (str(msg["Subject"]), plain, html):
        assert not re.search("[\u202a-\u202e\u2066-\u2069]", text)
    assert "片丘東の田" in str(msg["Subject"]) and "box_trap" in plain
    assert "pieast" in plain and "gpj.exe" in plain and "key: val" in plain
    reminder = _parse(render_reminder(
        notice_id="notice:t.r1", trigger_id="t", site_id=SITE, site=site,
        device=f"pi{BIDI}east", sensor=f"box{BIDI}", closed_since=TS.timestamp(), number=1,
        lat=LAT, lon=LON, language="ja", sender=SENDER, recipient="hunter@example.jp",
        index=1, now=NOW,
    ))  # fmt: skip
    device = _parse(render_device(
        notice_id="notice:pi.off1", online=False, site_id=SITE, site=site,
        device=f"pi{BIDI}east", reason=f"lost{BIDI}", since=TS.timestamp(),
        last_seen=TS.timestamp(), lat=LAT, lon=LON, language="ja", sender=SENDER,
        recipient="op@example.jp", index=1, now=NOW,
    ))  # fmt: skip
    for other in (reminder, device):
        plain, html = parts(other)
        for text in (str(other["Subject"]), plain, html):
            assert not re.search("[\u202a-\u202e\u2066-\u2069]", text)


# --- read at a glance on a phone (issue 14) -------------------------------------------


def test_the_devices_own_description_of_the_place_reaches_the_mail() -> None:
    data = {"sensor": "pir_north", "rule": "chase_north", "siren": True, "place": "北端の柵"}
    msg = rendered(make_event(data=data))
    assert msg["Subject"] == f"【緊急】【動物検知】{PLACE} 北端の柵 11月24日 13:05"
    plain, html = parts(msg)
    assert plain.startswith(f"{PLACE} 北端の柵で動物")
    assert f"■ 場所: {PLACE} 北端の柵" in plain
    assert html_row("場所", f"{PLACE} 北端の柵").search(html)
    assert "place:" not in plain  # the place, not a data row


def test_a_description_that_names_the_site_is_not_doubled() -> None:
    msg = rendered(make_event(data={"sensor": "pir_north", "place": f"{PLACE} 北端の柵"}))
    assert msg["Subject"].startswith(f"【緊急】【動物検知】{PLACE} 北端の柵 ")


def test_an_older_device_without_a_description_still_names_the_site() -> None:
    msg = rendered(make_event(data={"sensor": "pir_north", "siren": True}))
    assert msg["Subject"] == f"【緊急】【動物検知】{PLACE} 11月24日 13:05"
    assert f"■ 場所: {PLACE}\n" in parts(msg)[0].replace("\r\n", "\n")


def test_what_where_when_and_the_map_come_before_any_id() -> None:
    data = {"sensor": "pir_north", "rule": "chase_north", "deterrent": "sounded", "siren": True,
            "strobe": True, "place": "北端の柵"}  # fmt: skip
    event = make_event(data=data)
    plain, html = parts(rendered(event))
    plain = plain.replace("\r\n", "\n")
    lines = plain.splitlines()
    assert lines[0].startswith(f"{PLACE} 北端の柵で動物")
    assert lines[2:5] == [
        f"■ 場所: {PLACE} 北端の柵",
        "■ 日時: 2025年11月24日(月) 13:05:12（日本時間）",
        f"■ 地図で場所を開く: https://maps.gsi.go.jp/#17/{LAT:.6f}/{LON:.6f}/",
    ]
    ids = (SITE, "pi-east-01", "pir_north", "chase_north", event.id)
    first_id = min(plain.index(x) for x in ids)
    assert plain.index("■ サイレン: 鳴らしました") < first_id
    assert plain.index("--\n") < first_id
    first_html_id = min(html.index(x) for x in (SITE, "pir_north", "chase_north", event.id))
    assert html.index("地図で場所を開く") < html.index("サイレン") < first_html_id
    assert html.index("場所") < first_html_id
    assert "font-size:12px" in html[html.index("<hr") :]  # the ids in small print


def test_the_trap_mail_has_no_raw_sensor_name_in_its_subject_and_no_machine_rows() -> None:
    closure = {"sensor": "trap_a", "closed_since": CLOSED_SINCE, "reminder": False,
               "place": "沢沿いの箱わな"}  # fmt: skip
    msg = rendered(make_event("trap_triggered", data=closure))
    assert msg["Subject"] == f"【緊急】【わな作動】{PLACE} 沢沿いの箱わな 11月24日 13:05"
    plain, html = parts(msg)
    top, small = top_and_small_print(plain)
    assert "trap_a" not in top and "センサー: trap_a" in small
    assert "reminder" not in plain and "いいえ" not in plain and "リマインダー" not in plain
    assert "■ 閉じた日時: 2025年11月24日(月) 12:50:12（日本時間）" in top
    assert "reminder" not in html and "いいえ" not in html


def test_the_devices_own_still_closed_reminder_is_titled_as_one() -> None:
    still = {"sensor": "trap_a", "closed_since": CLOSED_SINCE, "closed_s": 3600.0,
             "reminder": True}  # fmt: skip
    msg = rendered(make_event("trap_triggered", data=still))
    assert msg["Subject"] == f"【緊急】【わな未解除】{PLACE} 1時間経過 11月24日 13:05"
    assert "わなが閉じたままです" in parts(msg)[0]
