"""Every word the console shows, in Japanese (the default) and English.

Pages call ``t(key)`` (a Jinja global bound to the page's language); the map's
script reads its labels from a JSON object the page embeds (:func:`labels`).
Event kinds are named as the notifier's mails name them
(:data:`cloud.templates.PHRASES`), so a mail and the console say the same.
"""

# Japanese text uses full-width brackets, as Japanese typography wants.
# ruff: noqa: RUF001

from __future__ import annotations

from typing import Final

from cloud.console.accounts import Language
from cloud.templates import PHRASES
from edge.nursery.sheet import POSTURES

DEFAULT_LANGUAGE: Final[Language] = "ja"

TEXT: Final[dict[str, dict[Language, str]]] = {
    # layout
    "app": {"ja": "里山エッジ コンソール", "en": "Satoyama Edge console"},
    "nav": {"ja": "メインメニュー", "en": "Main menu"},
    "nav_map": {"ja": "地図", "en": "Map"},
    "nav_fleet": {"ja": "端末管理", "en": "Fleet"},
    "logout": {"ja": "ログアウト", "en": "Log out"},
    "language": {"ja": "表示言語", "en": "Language"},
    "language_switch": {"ja": "English", "en": "日本語"},
    "signed_in_as": {"ja": "ログイン中: {name}", "en": "Signed in as {name}"},
    "skip": {"ja": "本文へ移動", "en": "Skip to content"},
    # login
    "login_title": {"ja": "ログイン", "en": "Log in"},
    "login_user": {"ja": "ユーザー名", "en": "User name"},
    "login_password": {"ja": "パスワード", "en": "Password"},
    "login_submit": {"ja": "ログイン", "en": "Log in"},
    "login_wrong": {
        "ja": "ユーザー名またはパスワードが違います。",
        "en": "Wrong user name or password.",
    },
    "login_limited": {
        "ja": "ログインの失敗が続いたため、1分ほど待ってから試してください。",
        "en": "Too many failed logins: wait a minute and try again.",
    },
    "login_expired": {
        "ja": "フォームの有効期限が切れました。もう一度ログインしてください。",
        "en": "The form expired. Please log in again.",
    },
    # map
    "map_title": {"ja": "地図", "en": "Map"},
    "map_label": {"ja": "端末の地図", "en": "Map of the devices"},
    "map_list": {"ja": "端末一覧", "en": "Devices"},
    "events_title": {"ja": "最新のイベント", "en": "Latest events"},
    "no_events": {"ja": "イベントはまだありません。", "en": "No events yet."},
    "no_devices": {"ja": "表示できる端末はありません。", "en": "No devices to show."},
    "live_on": {"ja": "自動更新中", "en": "Live"},
    "live_off": {"ja": "自動更新が停止しています", "en": "Live updates stopped"},
    "position_unknown": {"ja": "位置不明", "en": "Position unknown"},
    # device
    "device_title": {"ja": "端末 {device}", "en": "Device {device}"},
    "site": {"ja": "サイト", "en": "Site"},
    "state": {"ja": "状態", "en": "State"},
    "online": {"ja": "オンライン", "en": "Online"},
    "offline": {"ja": "オフライン", "en": "Offline"},
    "last_seen": {"ja": "最終受信", "en": "Last heard from"},
    "never": {"ja": "なし", "en": "never"},
    "version": {"ja": "ソフトウェア", "en": "Software version"},
    "capabilities": {"ja": "機能", "en": "Watches"},
    "health_title": {"ja": "端末の健全性", "en": "Health"},
    "health_at": {"ja": "最終ハートビート", "en": "Last heartbeat"},
    "sensor": {"ja": "センサー", "en": "Sensor"},
    "sensor_state": {"ja": "状態", "en": "State"},
    "outbox_depth": {"ja": "未送信イベント数", "en": "Events not yet delivered"},
    "oldest_undelivered": {"ja": "最も古い未送信", "en": "Oldest undelivered"},
    "bytes_this_month": {"ja": "今月（日本時間）の通信量", "en": "Data this month (JST)"},
    "uptime": {"ja": "連続稼働", "en": "Up for"},
    "faults": {"ja": "異常のあるセンサー", "en": "Sensors with a fault"},
    "updates_title": {"ja": "ソフトウェア更新の履歴", "en": "Software updates"},
    "no_updates": {"ja": "更新の記録はありません。", "en": "No updates recorded."},
    "update_from_to": {"ja": "{old} → {new}", "en": "{old} → {new}"},
    "water_title": {"ja": "水位", "en": "Water level"},
    "water_now": {"ja": "現在の水位", "en": "Level now"},
    "water_stage": {"ja": "水位の段階", "en": "Stage"},
    "below_stages": {"ja": "基準未満", "en": "Below every stage"},
    "hydrograph_24h": {"ja": "水位グラフ（24時間）", "en": "Hydrograph (24 h)"},
    "hydrograph_7d": {"ja": "水位グラフ（7日間）", "en": "Hydrograph (7 days)"},
    "hydrograph_of": {"ja": "{sensor} の{graph}", "en": "{graph}: {sensor}"},
    "trap_title": {"ja": "わな", "en": "Trap"},
    "trap_closed": {"ja": "わなが閉じています", "en": "The trap is closed"},
    "trap_open": {"ja": "わなは開いています（作動可能）", "en": "The trap is open (armed)"},
    "captures_title": {"ja": "捕獲の履歴", "en": "Capture history"},
    "no_captures": {"ja": "捕獲の記録はありません。", "en": "No captures recorded."},
    "closed_at": {"ja": "作動", "en": "Closed"},
    "reset_at": {"ja": "解除", "en": "Reset"},
    "checked_by": {"ja": "見回り確認", "en": "Checked"},
    "mark_checked": {"ja": "見回り済みにする", "en": "Mark as checked"},
    "mark_reset": {"ja": "解除・再設置済みにする", "en": "Mark as reset"},
    "nap_title": {"ja": "午睡（お昼寝）", "en": "Nap room"},
    "cot": {"ja": "コット", "en": "Cot"},
    "posture": {"ja": "寝姿勢", "en": "Posture"},
    "alarm": {"ja": "警報", "en": "Alarm"},
    "acknowledged_by": {"ja": "確認済み（{name}）", "en": "Acknowledged by {name}"},
    "acknowledge": {"ja": "警報を確認した", "en": "Acknowledge the alarm"},
    "acknowledge_note": {
        "ja": "確認しても端末の警報は止まりません。お子さまの様子を必ず直接確認してください。",
        "en": "Acknowledging does not silence the device: see to the child in person.",
    },
    "ack_unsent": {
        "ja": "確認を記録しましたが、端末に届けられませんでした。"
        "お子さまの様子を直接確認してください。",
        "en": "Recorded, but the device could not be told. See to the child in person.",
    },
    "sheet_link": {"ja": "今日の午睡チェック表", "en": "Today's nap check sheet"},
    "no_cots": {"ja": "コットの記録はまだありません。", "en": "No cots reported yet."},
    "actions_title": {"ja": "操作の記録", "en": "Actions taken here"},
    "time": {"ja": "日時", "en": "Time"},
    "kind": {"ja": "種類", "en": "Kind"},
    "severity": {"ja": "重要度", "en": "Severity"},
    "device": {"ja": "端末", "en": "Device"},
    "details": {"ja": "内容", "en": "Details"},
    "who": {"ja": "操作者", "en": "By"},
    "done": {"ja": "記録しました。", "en": "Recorded."},
    "action_trap_checked": {"ja": "わなの見回り", "en": "Trap checked"},
    "action_trap_reset": {"ja": "わなの解除・再設置", "en": "Trap reset"},
    "action_nap_acknowledged": {"ja": "午睡警報の遠隔確認", "en": "Nap alarm acknowledged"},
    "action_rollout_start": {"ja": "段階的な更新の開始", "en": "Rollout started"},
    # fleet
    "fleet_title": {"ja": "端末管理", "en": "Fleet"},
    "versions_title": {"ja": "ソフトウェアのバージョン", "en": "Software versions"},
    "devices_count": {"ja": "台数", "en": "Devices"},
    "rollouts_title": {"ja": "段階的な更新", "en": "Staged rollouts"},
    "no_rollouts": {"ja": "段階的な更新はありません。", "en": "No staged rollouts."},
    "rollout": {"ja": "更新", "en": "Rollout"},
    "percent": {"ja": "対象の割合", "en": "Share"},
    "stage": {"ja": "段階", "en": "Stage"},
    "paused": {"ja": "一時停止中", "en": "Paused"},
    "running": {"ja": "進行中", "en": "Running"},
    "targets": {"ja": "対象", "en": "Targets"},
    "told": {"ja": "通知済み", "en": "Told"},
    "installed": {"ja": "更新済み", "en": "Installed"},
    "failed": {"ja": "失敗", "en": "Failed"},
    "start": {"ja": "次の段階を開始", "en": "Start the next stage"},
    "resume": {"ja": "再開", "en": "Resume"},
    "pause": {"ja": "一時停止", "en": "Pause"},
    "silent_title": {"ja": "通信が途絶えている端末", "en": "Devices not heard from"},
    "no_silent": {"ja": "すべての端末から受信しています。", "en": "Every device is reporting."},
    # errors
    "error_404": {"ja": "ページが見つかりません", "en": "Page not found"},
    "error_404_text": {
        "ja": "このページは存在しないか、表示する権限がありません。",
        "en": "This page does not exist, or you may not see it.",
    },
    "error_403": {"ja": "権限がありません", "en": "Not allowed"},
    "error_403_text": {
        "ja": "このページは運用担当者のみが使えます。",
        "en": "Only operators may use this page.",
    },
    "error_400": {"ja": "リクエストが正しくありません", "en": "Bad request"},
    "error_400_text": {
        "ja": "フォームの有効期限が切れたか、内容が正しくありません。ページを開き直してください。",
        "en": "The form expired or was not valid. Please reload the page.",
    },
    "error_500": {"ja": "エラーが発生しました", "en": "Something went wrong"},
    "error_500_text": {
        "ja": "しばらくしてからもう一度お試しください。",
        "en": "Please try again in a moment.",
    },
    "back_to_map": {"ja": "地図に戻る", "en": "Back to the map"},
    "back_to_device": {"ja": "{device} のページに戻る", "en": "Back to {device}"},
    # marker states (MarkerState) and capabilities
    "state_alarm": {"ja": "警報", "en": "Alarm"},
    "state_trap_closed": {"ja": "わな作動", "en": "Trap closed"},
    "state_fault": {"ja": "センサー異常", "en": "Sensor fault"},
    "state_offline": {"ja": "オフライン", "en": "Offline"},
    "state_warning": {"ja": "注意", "en": "Warning"},
    "state_ok": {"ja": "正常", "en": "OK"},
    "state_unknown": {"ja": "不明", "en": "Unknown"},
    "cap_wildlife": {"ja": "鳥獣", "en": "Wildlife"},
    "cap_trap": {"ja": "わな", "en": "Trap"},
    "cap_water": {"ja": "水位", "en": "Water level"},
    "cap_nursery": {"ja": "午睡", "en": "Nap room"},
    "sev_alarm": {"ja": "警報", "en": "Alarm"},
    "sev_warning": {"ja": "注意", "en": "Warning"},
    "sev_info": {"ja": "情報", "en": "Info"},
    # the four Japanese river stages (water_stage_rank 1..4)
    "rank_0": {"ja": "平常", "en": "Normal"},
    "rank_1": {"ja": "水防団待機水位", "en": "Standby level"},
    "rank_2": {"ja": "氾濫注意水位", "en": "Flood warning level"},
    "rank_3": {"ja": "避難判断水位", "en": "Evacuation decision level"},
    "rank_4": {"ja": "氾濫危険水位", "en": "Flood danger level"},
}


def text(language: str, key: str, **values: object) -> str:
    """The text ``key`` in ``language`` (Japanese when the language is unknown)."""
    entry = TEXT.get(key)
    if entry is None:
        return key
    lang: Language = "en" if language == "en" else "ja"
    words = entry[lang]
    return words.format(**values) if values else words


def kind_name(language: str, kind: str) -> str:
    """An event kind as the notifier's mails name it (``動物検知``); the kind itself else."""
    phrases = PHRASES.get(language) or PHRASES[DEFAULT_LANGUAGE]
    found = phrases.kinds.get(kind)
    return found.title if found is not None else kind


def posture_name(language: str, posture: str) -> str:
    """A cot's posture as the nap sheet names it (``うつぶせ``); the value itself else."""
    names = POSTURES.get(language) or POSTURES[DEFAULT_LANGUAGE]
    return names.get(posture, posture)


def labels(language: str) -> dict[str, str]:
    """What the map's script shows: marker states, capabilities, stages, live status."""
    keys = [k for k in TEXT if k.startswith(("state_", "cap_", "rank_", "sev_", "live_"))]
    keys += ["online", "offline", "last_seen", "never", "position_unknown", "no_events", "device"]
    return {key: text(language, key) for key in keys}
