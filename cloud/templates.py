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
    duration: Callable[[float], str]
    """A length of time as people say it: ``2時間5分``, ``2 h 5 min``."""
    texts: Mapping[str, str]
    """Sentences with ``{placeholders}`` for summaries, reminders, charts and the like."""


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


def _parts(seconds: float) -> tuple[int, int, int, int]:
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return days, hours, minutes, secs


def _ja_duration(seconds: float) -> str:
    d, h, m, s = _parts(seconds)
    if d:
        return f"{d}日{h}時間" if h else f"{d}日"
    if h:
        return f"{h}時間{m}分" if m else f"{h}時間"
    if m:
        return f"{m}分{s}秒" if s else f"{m}分"
    return f"{s}秒"


def _en_duration(seconds: float) -> str:
    d, h, m, s = _parts(seconds)
    if d:
        return f"{d} d {h} h" if h else f"{d} d"
    if h:
        return f"{h} h {m} min" if m else f"{h} h"
    if m:
        return f"{m} min {s} s" if s else f"{m} min"
    return f"{s} s"


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
        "posture_unknown": KindText(
            "見てください（寝姿勢不明）",
            "{place}で寝ているお子さまの姿勢を自動で判断できない状態が続いています。"
            "安全とはみなしていません。",
            "すぐにお子さまを直接見て、寝姿勢と呼吸を確認してください。"
            "自動判断が戻るまで、目視での確認を続けてください。",
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
        "command_rejected": KindText(
            "コマンド拒否",
            "{place}の端末 {device} がクラウドからのコマンドを拒否しました。",
        ),
        "trap_armed": KindText(
            "わな稼働報告",
            "{place}のわなは作動可能な状態で、センサーも稼働しています。",
        ),
        "trap_reminder": KindText(
            "わな未解除",
            "{place}のわなが閉じたままです。",
            "見回りと処置をお願いします。処置が済んだら、わなを解除（再設置）してください。",
        ),
        "device_offline": KindText(
            "端末オフライン",
            "{place}の端末 {device} と通信できなくなりました。",
            "電源と通信状態を確認してください。復旧するまで、この端末からの警報は届きません。",
        ),
        "device_online": KindText(
            "端末復旧",
            "{place}の端末 {device} との通信が回復しました。",
        ),
        "update_installed": KindText(
            "ソフト更新完了",
            "{place}の端末 {device} のソフトウェアを更新しました。",
        ),
        "update_failed": KindText(
            "ソフト更新失敗",
            "{place}の端末 {device} のソフトウェア更新が失敗しました。",
            "端末の状態と失敗の詳細を運用担当者が確認してください。",
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
        "open_map": "地図で場所を開く",
        "other_maps": "ほかの地図",
        "map_alt": "{place}の地図（中央の赤いピンが場所です）",
        "technical": "保守用の情報（お問い合わせの際にお伝えください）",
    },
    field_labels={
        "detector": "検知器",
        "sensor": "センサー",
        "trap": "わな",
        "cot": "ベッド",
        "deterrent": "威嚇装置",
        "rule": "動作ルール",
        "siren": "サイレン",
        "strobe": "ライト",
        "closed_since": "閉じた日時",
        "closed_s": "閉じている時間",
        "level_cm": "水位 (cm)",
        "stage_label": "水位の段階",
        "stage": "水位の段階",
        "direction": "変化",
        "threshold_cm": "基準水位 (cm)",
        "rise_cm_per_10min": "上昇量 (cm/10分)",
        "threshold_cm_per_10min": "基準上昇量 (cm/10分)",
        "rise_cm_per_h": "上昇速度 (cm/時)",
        "rise_cm": "上昇幅 (cm)",
        "posture": "姿勢",
        "duration_s": "継続時間",
        "still_s": "体動が止まっている時間",
        "unknown_s": "姿勢が不明な時間",
        "cleared": "解除された警報",
        "acknowledged_by": "確認者",
        "fault": "異常コード",
        "message": "メッセージ",
        "down_s": "停止していた時間",
        "command": "コマンド",
        "reason": "理由",
        "error": "エラー",
        "battery_v": "電池電圧 (V)",
        "interval_s": "通知間隔",
        "uptime_s": "稼働時間",
        "outbox_depth": "未送信のイベント",
        "oldest_undelivered_s": "最も古い未送信",
        "evicted": "破棄されたイベント",
        "sensors": "センサーの状態",
        "bytes_sent_today": "本日の送信量 (バイト)",
        "link": "回線",
        "pattern": "異常の形",
        "detail": "詳細（英語）",
        "update_stage": "更新の段階",
        "from_version": "更新前のバージョン",
        "to_version": "更新後のバージョン",
    },
    values={
        "sounded": "作動しました",
        "resting": "休止中のため作動せず（直前に作動済み。動物がまだ近くにいます）",
        "prone": "うつぶせ",
        "supine": "あおむけ",
        "side": "横向き",
        "left": "左向き",
        "right": "右向き",
        "empty": "不在（ベッドが空）",
        "absent": "不在",
        "unknown": "不明",
        "button": "部屋のボタン",
        "staff": "保育士（端末で確認、氏名は端末の記録に）",
        "model": "センサー（寝姿勢を再び判定できました）",
        "flood_watch": "水防団待機水位",
        "flood_warning": "氾濫注意水位",
        "evacuation": "避難判断水位",
        "danger": "氾濫危険水位",
        "too_low": "水位が低すぎます",
        "too_high": "水位が高すぎます",
        "rising": "上昇中",
        "falling": "下降中",
        "ok": "正常",
        "fault": "異常",
        "warming_up": "準備中",
        "connection lost": "通信が切れました（ブローカーが検知）",
        "no heartbeat": "定期通知（ハートビート）が届きません",
        "shutdown": "端末が停止しました",
        "stuck": "値が変化しない（センサーの固着の疑い）",
        "spike_or_step": "急な跳ね上がり・段差",
        "dropout": "値が急に0・空・上限に飛んだまま（センサーの断線・故障の疑い）",
        "drift": "値のずれ（ドリフト）",
        "disagree": "同じ水を測る2台の水位計の値が食い違う（どちらかのずれ・移動の疑い）",
        "unusual_shape": "いつもと異なる変化",
    },
    yes="はい",
    no="いいえ",
    siren=("鳴らしました", "鳴らしていません"),
    strobe=("点滅させました", "点滅させていません"),
    footer="このメールは里山エッジ（Satoyama Edge）が自動で送信しています。返信はできません。",
    duration=_ja_duration,
    texts={
        "not_acknowledged": "（確認者の記録なし）",
        "rise_fact": "{level}cm +{rise}cm/10分",
        "level_fact": "{level}cm {stage}",
        "elapsed_fact": "{duration}経過",
        "count_fact": "ほか{count}件",
        "chart": "過去24時間の水位",
        "chart_alt": "{series} の過去24時間のグラフ",
        "chart_low": "最低",
        "chart_high": "最高",
        "chart_last": "最新",
        "chart_value": "{value}cm（{time}）",
        "chart_none": "過去24時間の記録はありません。",
        "chart_points": "記録数",
        "summary_title": "{title}・まとめ",
        "summary_headline": "{place}で、最初のお知らせの後も同じ事象が{count}件ありました。",
        "summary_over": "最後の記録から{quiet}の間、新たな記録はありません（終息したとみられます）。",  # noqa: E501
        "summary_ongoing": "現在も続いています。続く場合、次のまとめは{every}後です。",
        "summary_count": "件数",
        "summary_period": "期間",
        "summary_by_sensor": "センサー別",
        "summary_by_kind": "内訳",
        "summary_sounded": "威嚇装置の作動",
        "summary_state": "最新の状態",
        "summary_first": "最初のお知らせ",
        "summary_total": "これまでの合計",
        "times": "{count}回",
        "period": "{start} 〜 {end}",
        "reminder_count": "リマインダー",
        "reminder_n": "{n}回目",
        "elapsed": "閉じてからの時間",
        "offline_since": "通信が途絶えた日時",
        "last_seen": "最後の受信",
        "offline_for": "通信が途絶えていた時間",
        "online_at": "回復した日時",
        "device_site": "端末の所属サイト",
    },
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
        "posture_unknown": KindText(
            "Look now (posture unknown)",
            "The sleeping posture of a child at {place} has not been recognised for a while; "
            "this is not treated as safe.",
            "Look at the child now: check the sleeping position and breathing, and keep "
            "checking by eye until the posture is recognised again.",
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
        "command_rejected": KindText(
            "Command rejected", "The device {device} at {place} refused a command from the cloud."
        ),
        "trap_armed": KindText(
            "Trap armed", "The trap at {place} is armed and its sensor is working."
        ),
        "trap_reminder": KindText(
            "Trap still closed",
            "The trap at {place} is still closed.",
            "Please check it and deal with the catch; reset the trap once done.",
        ),
        "device_offline": KindText(
            "Device offline",
            "The device {device} at {place} cannot be reached.",
            "Check its power and connection; no alarm from it can arrive until it is back.",
        ),
        "device_online": KindText(
            "Device back online", "The device {device} at {place} is reachable again."
        ),
        "update_installed": KindText(
            "Software updated", "The device {device} at {place} runs its new software."
        ),
        "update_failed": KindText(
            "Software update failed",
            "The software update of the device {device} at {place} failed.",
            "The operator should check the device and why it failed.",
        ),
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
        "open_map": "Open the place on a map",
        "other_maps": "Other maps",
        "map_alt": "Map of {place} (the red pin in the middle marks the place)",
        "technical": "For maintenance (quote these when you ask about this mail)",
    },
    field_labels={
        "detector": "Detector",
        "sensor": "Sensor",
        "trap": "Trap",
        "cot": "Cot",
        "deterrent": "Deterrent",
        "rule": "Rule",
        "siren": "Siren",
        "strobe": "Strobe",
        "closed_since": "Closed since",
        "closed_s": "Closed for",
        "level_cm": "Level (cm)",
        "stage_label": "Stage",
        "stage": "Stage",
        "direction": "Direction",
        "threshold_cm": "Stage level (cm)",
        "rise_cm_per_10min": "Rise (cm/10 min)",
        "threshold_cm_per_10min": "Rise threshold (cm/10 min)",
        "rise_cm_per_h": "Rise (cm/h)",
        "rise_cm": "Rise (cm)",
        "posture": "Posture",
        "duration_s": "Duration",
        "still_s": "No movement for",
        "unknown_s": "Posture unknown for",
        "cleared": "Cleared alarm",
        "acknowledged_by": "Acknowledged by",
        "fault": "Fault code",
        "message": "Message",
        "down_s": "Down for",
        "command": "Command",
        "reason": "Reason",
        "error": "Error",
        "battery_v": "Battery (V)",
        "interval_s": "Interval",
        "uptime_s": "Uptime",
        "outbox_depth": "Events waiting",
        "oldest_undelivered_s": "Oldest waiting",
        "evicted": "Evicted events",
        "sensors": "Sensors",
        "bytes_sent_today": "Sent today (bytes)",
        "link": "Link",
        "pattern": "Pattern",
        "detail": "Detail",
        "update_stage": "Update step",
        "from_version": "From version",
        "to_version": "To version",
    },
    values={
        "sounded": "activated",
        "resting": "resting, not activated (it just ran; the animal is still nearby)",
        "prone": "face down",
        "supine": "on the back",
        "side": "on the side",
        "left": "on the left side",
        "right": "on the right side",
        "empty": "cot empty",
        "absent": "absent",
        "unknown": "unknown",
        "button": "the room's button",
        "staff": "a member of staff (on the device; the name stays on its sheet)",
        "model": "the sensor (it can tell the posture again)",
        "flood_watch": "flood watch (stand-by level)",
        "flood_warning": "flood warning (caution level)",
        "evacuation": "evacuation judgement level",
        "danger": "flood danger level",
        "too_low": "too low",
        "too_high": "too high",
        "rising": "rising",
        "falling": "falling",
        "ok": "ok",
        "fault": "fault",
        "warming_up": "warming up",
        "connection lost": "connection lost (noticed by the broker)",
        "no heartbeat": "no heartbeat arrived",
        "shutdown": "the device shut down",
        "stuck": "the reading stopped changing (stuck sensor?)",
        "spike_or_step": "a sudden spike or step",
        "dropout": "the reading jumped to zero, empty or its limit and stays there (broken "
        "wire or failed sensor?)",
        "drift": "a drift of the readings",
        "disagree": "two gauges on the same water disagree (one drifted, slipped or was "
        "moved?)",
        "unusual_shape": "an unusual pattern",
    },
    yes="yes",
    no="no",
    siren=("sounded", "did not sound"),
    strobe=("flashed", "did not flash"),
    footer="This mail was sent automatically by Satoyama Edge; replies are not read.",
    duration=_en_duration,
    texts={
        "not_acknowledged": "(not recorded)",
        "rise_fact": "{level} cm +{rise} cm/10 min",
        "level_fact": "{level} cm {stage}",
        "elapsed_fact": "closed {duration}",
        "count_fact": "{count} more",
        "chart": "Water level, last 24 hours",
        "chart_alt": "Chart of {series} over the last 24 hours",
        "chart_low": "Lowest",
        "chart_high": "Highest",
        "chart_last": "Latest",
        "chart_value": "{value} cm ({time})",
        "chart_none": "No readings in the last 24 hours.",
        "chart_points": "Readings",
        "summary_title": "{title}: summary",
        "summary_headline": "After the first notice, the same happened {count} more times at {place}.",  # noqa: E501
        "summary_over": "Nothing more for {quiet} since the last one: it seems to be over.",
        "summary_ongoing": "It is still going on; if it continues, the next summary comes in {every}.",  # noqa: E501
        "summary_count": "Count",
        "summary_period": "Period",
        "summary_by_sensor": "By sensor",
        "summary_by_kind": "By kind",
        "summary_sounded": "Deterrent activated",
        "summary_state": "Latest state",
        "summary_first": "First notice",
        "summary_total": "Total so far",
        "times": "{count}x",
        "period": "{start} to {end}",
        "reminder_count": "Reminder",
        "reminder_n": "no. {n}",
        "elapsed": "Closed for",
        "offline_since": "Unreachable since",
        "last_seen": "Last message",
        "offline_for": "Was unreachable for",
        "online_at": "Back at",
        "device_site": "Device's site",
    },
)

PHRASES: Final[Mapping[str, Phrases]] = {"ja": JA, "en": EN}


def kind_text(phrases: Phrases, kind: str, severity: str) -> KindText:
    """The text for ``kind``, or the generic one for its severity if the kind is new."""
    return (
        phrases.kinds.get(kind) or phrases.by_severity.get(severity) or phrases.by_severity["info"]
    )
