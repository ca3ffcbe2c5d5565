"""Every word the notifier's mails say, per language, in one place.

:mod:`cloud.render` decides *where* things go; this module decides *what they
say*.  To add a language, add one :class:`Phrases` to :data:`PHRASES` (and its
code to ``cloud.config.Language``); to add an event kind, add one
:class:`KindText` to each language.  Kinds a newer device sends that are not
here fall back to :attr:`Phrases.by_severity`.
"""

# Japanese text uses full-width brackets, as Japanese typography wants.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class KindText:
    """How one kind of event is named and announced."""

    title: str
    """Short name for the subject line: ``動物検知``."""
    headline: str
    """First sentence of the body; ``{place}`` is the site's human name."""
    advice: str = ""
    """What the reader should do, if anything."""


@dataclass(frozen=True, slots=True)
class Phrases:
    """Everything one language needs."""

    kinds: Mapping[str, KindText]
    by_severity: Mapping[str, KindText]
    severity_names: Mapping[str, str]
    alarm_marker: str
    """Put in front of the subject of ``alarm`` events."""
    subject: str
    """``{marker}``, ``{title}``, ``{place}``, ``{time}``."""
    what: str
    """The "what" line of the body: ``{title}``, ``{severity}``."""
    subject_time: Callable[[dt.datetime], str]
    body_time: Callable[[dt.datetime], str]
    labels: Mapping[str, str]
    """Labels of the fixed lines of the body (keys used by :mod:`cloud.render`)."""
    field_labels: Mapping[str, str]
    """Labels of well-known ``event.data`` keys; other keys are shown as they are."""
    values: Mapping[str, str]
    """Translations of well-known string values (``prone`` → ``うつぶせ``)."""
    yes: str
    no: str
    siren: tuple[str, str]
    """(sounded, did not sound)"""
    strobe: tuple[str, str]
    """(flashed, did not flash)"""
    footer: str


_JA_WEEKDAYS: Final = "月火水木金土日"
_EN_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # fmt: skip
_EN_WEEKDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _ja_subject_time(t: dt.datetime) -> str:
    return f"{t.month}月{t.day}日 {t:%H:%M}"


def _ja_body_time(t: dt.datetime) -> str:
    return f"{t.year}年{t.month}月{t.day}日({_JA_WEEKDAYS[t.weekday()]}) {t:%H:%M:%S}（日本時間）"


def _en_subject_time(t: dt.datetime) -> str:
    return f"{t.day} {_EN_MONTHS[t.month - 1]} {t:%H:%M} JST"


def _en_body_time(t: dt.datetime) -> str:
    return (
        f"{_EN_WEEKDAYS[t.weekday()]} {t.day} {_EN_MONTHS[t.month - 1]} {t.year}, "
        f"{t:%H:%M:%S} JST (UTC+9)"
    )


JA: Final = Phrases(
    kinds={
        "animal_detected": KindText(
            "動物検知",
            "{place}で動物（イノシシ・シカなど）を検知しました。",
            "田畑の被害や、周辺を通る方の安全にご注意ください。",
        ),
        "trap_triggered": KindText(
            "わな作動",
            "{place}のわなが作動しました。獲物が掛かっている可能性があります。",
            "早めの見回りと処置をお願いします。近づく際は十分に注意してください。",
        ),
        "trap_reset": KindText(
            "わな解除",
            "{place}のわなの作動が解除されました（再び作動できる状態です）。",
        ),
        "water_level_alert": KindText(
            "水位警報",
            "{place}の水位が設定した基準を超えました。",
            "水位を確認し、必要に応じて水門・排水の操作や避難の判断をしてください。",
        ),
        "water_rise_alert": KindText(
            "水位急上昇",
            "{place}の水位が急に上昇しています。",
            "今後の増水に警戒してください。",
        ),
        "posture_check": KindText(
            "午睡チェック",
            "{place}の午睡チェック（寝姿勢）を記録しました。",
        ),
        "prone_alarm": KindText(
            "うつぶせ寝警報",
            "{place}でうつぶせ寝を検知しました。",
            "すぐにお子さまの様子を確認し、あおむけに戻してください。",
        ),
        "apnea_alarm": KindText(
            "無呼吸警報",
            "{place}で体動（呼吸の動き）が止まっています。",
            "ただちにお子さまの様子を確認してください。",
        ),
        "alarm_cleared": KindText(
            "警報解除",
            "{place}の警報が解除されました。",
        ),
        "anomaly": KindText(
            "異常検知",
            "{place}でいつもと異なる状態を検知しました。",
            "現地の状況を確認してください。",
        ),
        "sensor_fault": KindText(
            "センサー異常",
            "{place}のセンサーに異常が発生しました。",
            "配線や電源を点検してください。復旧するまでこのセンサーの検知は行われません。",
        ),
        "sensor_recovered": KindText(
            "センサー復旧",
            "{place}のセンサーが復旧しました。",
        ),
        "heartbeat": KindText(
            "死活通知",
            "{place}の端末は正常に稼働しています。",
        ),
    },
    by_severity={
        "alarm": KindText(
            "警報", "{place}で警報が発生しました。", "現地の状況を確認してください。"
        ),
        "warning": KindText("注意", "{place}で注意が必要な事象が発生しました。"),
        "info": KindText("お知らせ", "{place}の端末からのお知らせです。"),
    },
    severity_names={"alarm": "警報", "warning": "注意", "info": "情報"},
    alarm_marker="【緊急】",
    subject="{marker}【{title}】{place} {time}",
    what="{title}（{severity}）",
    subject_time=_ja_subject_time,
    body_time=_ja_body_time,
    labels={
        "what": "内容",
        "place": "場所",
        "site": "サイトID",
        "time": "日時",
        "device": "端末",
        "received": "受信日時",
        "clock_warning": (
            "注意: 端末の時計が未同期のため、上記の日時は正しくない可能性があります。"
            "受信日時を目安にしてください。"
        ),
        "map": "地図",
        "gsi": "地理院地図",
        "osm": "OpenStreetMap",
        "google": "Google マップ",
        "latlon": "緯度・経度",
        "no_location": "位置情報がありません（端末の設置位置が未設定です）。",
        "details": "詳細データ",
        "event_id": "イベントID",
    },
    field_labels={
        "detector": "検知器",
        "sensor": "センサー",
        "deterrent": "威嚇装置",
        "rule": "動作ルール",
        "siren": "サイレン",
        "strobe": "ライト",
        "trap": "わな",
        "level_cm": "水位 (cm)",
        "threshold_cm": "基準水位 (cm)",
        "stage": "水位の段階",
        "rise_cm_per_h": "上昇速度 (cm/時)",
        "rise_cm": "上昇幅 (cm)",
        "cot": "ベッド",
        "posture": "姿勢",
        "duration_s": "継続時間 (秒)",
        "reason": "理由",
        "error": "エラー",
        "cleared": "解除された警報",
        "battery_v": "電池電圧 (V)",
        "uptime_s": "稼働時間 (秒)",
    },
    values={
        "sounded": "作動しました",
        "resting": "休止中のため作動せず（直前に作動済み。動物がまだ近くにいます）",
        "prone": "うつぶせ",
        "supine": "あおむけ",
        "side": "横向き",
        "left": "左向き",
        "right": "右向き",
        "absent": "不在",
        "unknown": "不明",
        "animal_detected": "動物検知",
        "trap_triggered": "わな作動",
        "water_level_alert": "水位警報",
        "water_rise_alert": "水位急上昇",
        "prone_alarm": "うつぶせ寝警報",
        "apnea_alarm": "無呼吸警報",
    },
    yes="はい",
    no="いいえ",
    siren=("鳴らしました", "鳴らしていません"),
    strobe=("点滅させました", "点滅させていません"),
    footer="このメールは里山エッジ（Satoyama Edge）が自動で送信しています。返信はできません。",
)

EN: Final = Phrases(
    kinds={
        "animal_detected": KindText(
            "Animal detected",
            "An animal (wild boar, deer or similar) was detected at {place}.",
            "Watch for crop damage, and take care near the site.",
        ),
        "trap_triggered": KindText(
            "Trap triggered",
            "The trap at {place} has been triggered; an animal may be caught.",
            "Please check the trap soon, and approach with care.",
        ),
        "trap_reset": KindText(
            "Trap reset", "The trap at {place} has been reset and is armed again."
        ),
        "water_level_alert": KindText(
            "Water level alert",
            "The water level at {place} has passed a configured stage.",
            "Check the water level and decide on gates, drainage or evacuation as needed.",
        ),
        "water_rise_alert": KindText(
            "Water rising fast",
            "The water level at {place} is rising fast.",
            "Watch for further rise.",
        ),
        "posture_check": KindText(
            "Nap check", "A nap check (sleeping posture) was recorded at {place}."
        ),
        "prone_alarm": KindText(
            "Face-down sleep alarm",
            "A child sleeping face down was detected at {place}.",
            "Check the child now and turn them onto their back.",
        ),
        "apnea_alarm": KindText(
            "Apnea alarm",
            "Body (breathing) movement has stopped at {place}.",
            "Check the child immediately.",
        ),
        "alarm_cleared": KindText("Alarm cleared", "The alarm at {place} has been cleared."),
        "anomaly": KindText(
            "Anomaly detected",
            "Something unusual was detected at {place}.",
            "Please check the situation on site.",
        ),
        "sensor_fault": KindText(
            "Sensor fault",
            "A sensor at {place} has failed.",
            "Check its wiring and power; it detects nothing until it recovers.",
        ),
        "sensor_recovered": KindText("Sensor recovered", "A sensor at {place} has recovered."),
        "heartbeat": KindText("Heartbeat", "The device at {place} is up and running."),
    },
    by_severity={
        "alarm": KindText(
            "Alarm", "An alarm was raised at {place}.", "Please check the situation on site."
        ),
        "warning": KindText("Warning", "Something at {place} needs attention."),
        "info": KindText("Notice", "A notice from the device at {place}."),
    },
    severity_names={"alarm": "alarm", "warning": "warning", "info": "info"},
    alarm_marker="[ALARM] ",
    subject="{marker}[{title}] {place} {time}",
    what="{title} ({severity})",
    subject_time=_en_subject_time,
    body_time=_en_body_time,
    labels={
        "what": "What",
        "place": "Place",
        "site": "Site ID",
        "time": "When",
        "device": "Device",
        "received": "Received",
        "clock_warning": (
            "Note: the device's clock was not synchronised, so the time above may be wrong; "
            "go by the time received."
        ),
        "map": "Map",
        "gsi": "GSI Maps",
        "osm": "OpenStreetMap",
        "google": "Google Maps",
        "latlon": "Latitude, longitude",
        "no_location": "No location (the device's position has not been set).",
        "details": "Details",
        "event_id": "Event ID",
    },
    field_labels={
        "detector": "Detector",
        "sensor": "Sensor",
        "deterrent": "Deterrent",
        "rule": "Rule",
        "siren": "Siren",
        "strobe": "Strobe",
        "trap": "Trap",
        "level_cm": "Level (cm)",
        "threshold_cm": "Stage level (cm)",
        "stage": "Stage",
        "rise_cm_per_h": "Rise (cm/h)",
        "rise_cm": "Rise (cm)",
        "cot": "Cot",
        "posture": "Posture",
        "duration_s": "Duration (s)",
        "reason": "Reason",
        "error": "Error",
        "cleared": "Cleared alarm",
        "battery_v": "Battery (V)",
        "uptime_s": "Uptime (s)",
    },
    values={
        "sounded": "activated",
        "resting": "resting, not activated (it just ran; the animal is still nearby)",
        "prone": "face down",
        "supine": "on the back",
        "side": "on the side",
    },
    yes="yes",
    no="no",
    siren=("sounded", "did not sound"),
    strobe=("flashed", "did not flash"),
    footer="This mail was sent automatically by Satoyama Edge; replies are not read.",
)

PHRASES: Final[Mapping[str, Phrases]] = {"ja": JA, "en": EN}


def kind_text(phrases: Phrases, kind: str, severity: str) -> KindText:
    """The text for ``kind``, or the generic one for its severity if the kind is new."""
    return (
        phrases.kinds.get(kind) or phrases.by_severity.get(severity) or phrases.by_severity["info"]
    )
