"""Rendering: the mail a person reads, parsed back as a mail client would."""

# The expected Japanese texts use full-width brackets, as the mails do.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import zoneinfo
from email.message import EmailMessage
from typing import Any

import pytest

import cloud.render
from cloud.config import SiteConfig
from cloud.render import as_bytes, message_id, render_mail
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
    assert "片丘 東の田で動物（イノシシ・シカなど）を検知しました。" in plain
    assert f"■ サイトID: {SITE}" in plain
    assert "■ 端末: pi-east-01" in plain
    assert "■ 日時: 2025年11月24日(月) 13:05:12（日本時間）" in plain
    assert "■ 検知器: pir-north" in plain
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
    assert "地理院地図" in plain and "Google マップ" in plain


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
    assert "GSI Maps" in plain and 'lang="en"' in html


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("language", sorted(PHRASES))
def test_every_kind_has_its_own_text_in_every_language(kind: str, language: str) -> None:
    title = PHRASES[language].kinds[kind].title
    msg = rendered(make_event(kind, "warning", data={}), language=language)
    assert title in msg["Subject"]
    plain, _ = parts(msg)
    assert PHRASES[language].kinds[kind].headline.format(place=PLACE) in plain


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
        "alarm_cleared": "警報解除",
        "anomaly": "異常検知",
        "sensor_fault": "センサー異常",
        "sensor_recovered": "センサー復旧",
        "heartbeat": "死活通知",
    }
    assert set(EN.kinds) == set(JA.kinds) == set(KINDS)


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
