"""Turn one event into the e-mail a farmer, hunter or nursery teacher reads.

A mail is ``multipart/alternative``: UTF-8 plain text first (what feature
phones and carrier mail show), then HTML with the same content.  Everything a
device sent (ids, data values) is treated as hostile: control characters are
stripped from every value, values are shortened, and the HTML part escapes
all of it.  Times are shown in Japan time.  The words come from
:mod:`cloud.templates`.

The Message-ID is derived from the event id (or, for the notifier's own
notices, the notice id) and the recipient's position, so a mail that is sent
twice (see ``docs/notifier.md``, delivery guarantees) is recognisably the same
mail; reminders, summaries and "back online" mails name the mail they follow
in ``In-Reply-To`` so mail clients thread them.  A water alert's HTML part is
``multipart/related`` with the last 24 h of the level as an inline PNG.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import functools
import hashlib
import html
import math
import re
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from cloud import mime
from cloud.chart import WIDTH as CHART_WIDTH
from cloud.chart import LevelChart
from cloud.config import Language, SiteConfig
from cloud.mime import Mail, RelatedImage
from cloud.staticmap import StaticMaps
from cloud.templates import JA, PHRASES, Phrases, kind_text
from edge.event import (
    CotData,
    Event,
    Location,
    TrapTriggered,
    WaterLevelAlert,
    WaterRiseAlert,
    event_data,
)


def _japan() -> dt.tzinfo:
    """Asia/Tokyo, or a fixed UTC+9 where the host has no tz database (Japan has no DST)."""
    try:
        return ZoneInfo("Asia/Tokyo")
    except Exception:  # noqa: BLE001 - no or broken tzdata: JST is fixed anyway
        return dt.timezone(dt.timedelta(hours=9), "JST")


JST: Final[dt.tzinfo] = _japan()
MESSAGE_ID_DOMAIN: Final = "satoyama-edge"
MAP_ZOOM: Final = 17
#: Content-ID prefix of the map picture among :attr:`Content.images`.
MAP_CID: Final = "map."
#: A place's own description (``data.place``) is cut to this many characters.
_MAX_PLACE_CHARS: Final = 80
#: The device's time and the notifier's differ by more than this: show both.
LATE_AFTER: Final = dt.timedelta(minutes=5)
_MAX_VALUE_CHARS: Final = 300

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069):
#: they can make a subject or a line read other than it is ("gnirps" for "spring").
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True, slots=True)
class MapLink:
    label: str
    url: str


def message_id(event_id: str, index: int) -> str:
    """``<EVENTID.N@satoyama-edge>``; a hash stands in for an id unfit for a header."""
    token = event_id if _SAFE_ID.fullmatch(event_id) else _digest(event_id)
    return f"<{token}.{index}@{MESSAGE_ID_DOMAIN}>"


def map_links(location: Location, phrases: Phrases) -> list[MapLink]:
    """Links to GSI Maps, OpenStreetMap and Google Maps; empty if the position is unusable."""
    lat, lon = location.lat, location.lon
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return []
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0) or (lat == 0.0 and lon == 0.0):
        return []  # (0, 0) is an unprovisioned device, not a buoy in the Gulf of Guinea
    la, lo, z = f"{lat:.6f}", f"{lon:.6f}", MAP_ZOOM
    labels = phrases.labels
    return [
        MapLink(labels["gsi"], f"https://maps.gsi.go.jp/#{z}/{la}/{lo}/"),
        MapLink(
            labels["osm"],
            f"https://www.openstreetmap.org/?mlat={la}&mlon={lo}#map={z}/{la}/{lo}",
        ),
        MapLink(labels["google"], f"https://www.google.com/maps/search/?api=1&query={la},{lo}"),
    ]


@dataclass(frozen=True, slots=True)
class InlineImage:
    """A picture shown inside the HTML part (``<img src="cid:...">``), e.g. the map."""

    cid: str
    """Content-ID without angle brackets."""
    png: bytes
    filename: str
    alt: str


@dataclass(frozen=True, slots=True)
class Content:
    """Everything one mail says, before it is laid out as text and HTML."""

    notice_id: str
    kind: str
    severity: str
    site_id: str
    place: str
    device: str
    title: str
    headline: str
    advice: str
    when: dt.datetime
    """The time the mail is about (the event's, or the notifier's for its own notices)."""
    received: dt.datetime
    rows: list[tuple[str, str]]
    fact: str = ""
    """A few words for the subject after the place: ``182cm 氾濫注意水位``, ``ベッド3``."""
    clock_synced: bool = True
    details: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Sentences after the table (a summary's "it seems to be over")."""
    location: Location | None = None
    chart: LevelChart | None = None
    chart_wanted: bool = False
    """A water alert: say so when there is no chart."""
    references: str | None = None
    """The Message-ID this mail follows up (a reminder, a summary, back online)."""
    images: list[InlineImage] = field(default_factory=list)
    """Pictures the HTML part shows inline (``multipart/related``), besides the chart."""
    technical: list[tuple[str, str]] = field(default_factory=list)
    """Ids for whoever maintains the devices (sensor, rule): the small print at the end."""
    map_credit: str = ""
    """The tiles' credit, printed under the map picture (GSI's: 出典, then its name)."""


def render_mail(
    event: Event,
    site: SiteConfig,
    *,
    language: Language,
    sender: str,
    recipient: str,
    index: int = 1,
    received_at: dt.datetime | None = None,
    with_data: bool = True,
    chart: LevelChart | None = None,
    maps: StaticMaps | None = None,
) -> Mail:
    """The complete message about one device event, for one recipient.

    ``received_at`` is when the notifier got the event (also the ``Date``);
    ``with_data=False`` leaves out the device's data fields (the fallback if
    they cannot be shown); ``chart`` is the last 24 h of a water alert's level;
    ``maps`` draws the map picture (none: the mail has its map links only).
    """
    phrases = PHRASES[language]
    received = _japan_time(received_at or dt.datetime.now(dt.UTC))
    when = _japan_time(event.ts)
    kind = event.kind
    if kind == "trap_triggered" and event.data.get("reminder") is True:
        kind = "trap_reminder"  # the device's own "still closed", not a new catch
    text = kind_text(phrases, kind, event.severity)
    place = place_name(site, event.data.get("place"))
    rows: list[tuple[str, str]] = []
    technical: list[tuple[str, str]] = []
    details: list[tuple[str, str]] = []
    fact = ""
    if with_data:
        rows, technical, details = _data_rows(event, phrases)
        fact = _subject_fact(event, phrases)
    images, credit = _map_images(event.location, maps, event.id)
    content = Content(
        notice_id=event.id,
        kind=event.kind,
        severity=event.severity,
        site_id=event.site,
        place=place,
        device=event.device,
        title=text.title,
        headline=text.headline.format(place=place, device=_clean(event.device)),
        advice=text.advice,
        when=when,
        received=received,
        rows=rows,
        fact=fact,
        clock_synced=event.clock_synced,
        details=details,
        location=event.location,
        chart=chart,
        chart_wanted=event.kind in CHART_KINDS,
        images=images,
        technical=technical,
        map_credit=credit,
    )
    return compose(content, language=language, sender=sender, recipient=recipient, index=index)


#: Kinds whose mail carries the last 24 h of the level (``<data.sensor>.level_cm``).
CHART_KINDS: Final = frozenset({"water_level_alert", "water_rise_alert"})


def place_name(site: SiteConfig, described: Any = None) -> str:
    """Where it is, as people say it: the device's own description (``data.place``,
    from its configuration's ``device.description``) with the site's name before it
    unless it already says it; the site's name alone for devices that send none."""
    name = _clean(site.name)
    if not isinstance(described, str):
        return name
    own = " ".join(_clean(described).split())
    if len(own) > _MAX_PLACE_CHARS:
        own = own[: _MAX_PLACE_CHARS - 1] + "…"
    if not own or own == name:
        return name
    return own if name in own else f"{name} {own}"


def _map_images(
    location: Location | None, maps: StaticMaps | None, notice_id: str
) -> tuple[list[InlineImage], str]:
    """The map picture as an inline image (and its credit), or nothing."""
    if maps is None or location is None or not map_links(location, PHRASES["en"]):
        return [], ""
    picture = maps.picture(location.lat, location.lon)
    if picture is None:
        return [], ""
    cid = f"{MAP_CID}{_token(notice_id)}@{MESSAGE_ID_DOMAIN}"
    return [InlineImage(cid, picture.png, "map.png", "")], _clean(picture.credit)


def render_summary(
    *,
    notice_id: str,
    first_id: str,
    kind: str,
    severity: str,
    site_id: str,
    site: SiteConfig,
    device: str,
    count: int,
    total: int,
    stats: dict[str, Any],
    over: bool,
    quiet_s: float,
    every_s: float,
    lat: float,
    lon: float,
    language: Language,
    sender: str,
    recipient: str,
    index: int,
    now: dt.datetime,
    place: str | None = None,
    maps: StaticMaps | None = None,
) -> Mail:
    """The summary of a burst folded into one mail (an animal lingering, a flapping sensor).

    ``place`` is the device's own description (the first event's ``data.place``).
    """
    phrases = PHRASES[language]
    texts = phrases.texts
    place = place_name(site, place)
    base = kind_text(phrases, kind, severity)
    title = texts["summary_title"].format(title=base.title)
    images, credit = _map_images(Location(lat=lat, lon=lon), maps, notice_id)
    rows: list[tuple[str, str]] = [
        (texts["summary_count"], texts["times"].format(count=count)),
    ]
    start, end = stats.get("from"), stats.get("to")
    if isinstance(start, int | float) and isinstance(end, int | float):
        rows.append((texts["summary_period"], _period(start, end, phrases)))
    by_kind = {str(k): int(v) for k, v in (stats.get("by_kind") or {}).items()}
    if len(by_kind) > 1 or (by_kind and next(iter(by_kind)) != kind):
        rows.append(
            (
                texts["summary_by_kind"],
                _counts(
                    {kind_text(phrases, k, severity).title: n for k, n in by_kind.items()}, phrases
                ),
            )
        )
    by_sensor = {str(k): int(v) for k, v in (stats.get("by_sensor") or {}).items() if k}
    if by_sensor:
        rows.append((texts["summary_by_sensor"], _counts(by_sensor, phrases)))
    if kind == "animal_detected":
        sounded = int(stats.get("sounded") or 0)
        rows.append((texts["summary_sounded"], texts["times"].format(count=sounded)))
    last_kind = stats.get("last_kind")
    if isinstance(last_kind, str) and by_kind and (len(by_kind) > 1 or last_kind != kind):
        rows.append((texts["summary_state"], kind_text(phrases, last_kind, severity).title))
    first = stats.get("first") or {}
    if isinstance(first.get("at"), int | float):
        rows.append(
            (
                texts["summary_first"],
                phrases.body_time(
                    _japan_time(dt.datetime.fromtimestamp(float(first["at"]), dt.UTC))
                ),
            )
        )
    if total != count:
        rows.append((texts["summary_total"], texts["times"].format(count=total + 1)))
    note = (
        texts["summary_over"].format(quiet=phrases.duration(quiet_s))
        if over
        else texts["summary_ongoing"].format(every=phrases.duration(every_s))
    )
    content = Content(
        notice_id=notice_id,
        kind=f"{kind}_summary",
        severity="info",  # a look back: the alarm itself was the first mail
        site_id=site_id,
        place=place,
        device=device,
        title=title,
        headline=texts["summary_headline"].format(place=place, count=count),
        advice="",
        when=_japan_time(now),
        received=_japan_time(now),
        rows=rows,
        fact=texts["count_fact"].format(count=count),
        notes=[note],
        location=Location(lat=lat, lon=lon),
        references=message_id(first_id, index),
        images=images,
        map_credit=credit,
    )
    return compose(content, language=language, sender=sender, recipient=recipient, index=index)


def render_reminder(
    *,
    notice_id: str,
    trigger_id: str,
    site_id: str,
    site: SiteConfig,
    device: str,
    sensor: str,
    closed_since: float,
    number: int,
    lat: float,
    lon: float,
    language: Language,
    sender: str,
    recipient: str,
    index: int,
    now: dt.datetime,
    place: str | None = None,
    maps: StaticMaps | None = None,
) -> Mail:
    """A reminder that a trap is still closed (until its ``trap_reset`` arrives).

    ``place`` is the device's own description (the trigger's ``data.place``).
    """
    phrases = PHRASES[language]
    texts = phrases.texts
    place = place_name(site, place)
    text = kind_text(phrases, "trap_reminder", "alarm")
    elapsed = phrases.duration(max(0.0, now.timestamp() - closed_since))
    since = phrases.body_time(_japan_time(dt.datetime.fromtimestamp(closed_since, dt.UTC)))
    rows = [
        (phrases.field_labels["closed_since"], since),
        (texts["elapsed"], elapsed),
        (texts["reminder_count"], texts["reminder_n"].format(n=number)),
    ]
    images, credit = _map_images(Location(lat=lat, lon=lon), maps, notice_id)
    content = Content(
        notice_id=notice_id,
        kind="trap_reminder",
        severity="alarm",
        site_id=site_id,
        place=place,
        device=device,
        title=text.title,
        headline=text.headline.format(place=place, device=_clean(device)),
        advice=text.advice,
        when=_japan_time(now),
        received=_japan_time(now),
        rows=rows,
        fact=_short(texts["elapsed_fact"].format(duration=elapsed)),
        location=Location(lat=lat, lon=lon),
        references=message_id(trigger_id, index),
        images=images,
        technical=[(phrases.field_labels["sensor"], _clean(sensor))],
        map_credit=credit,
    )
    return compose(content, language=language, sender=sender, recipient=recipient, index=index)


def render_device(
    *,
    notice_id: str,
    online: bool,
    site_id: str,
    site: SiteConfig,
    device: str,
    reason: str,
    since: float,
    last_seen: float,
    lat: float | None,
    lon: float | None,
    language: Language,
    sender: str,
    recipient: str,
    index: int,
    now: dt.datetime,
    references: str | None = None,
    maps: StaticMaps | None = None,
) -> Mail:
    """A device went offline (``online=False``) or came back."""
    phrases = PHRASES[language]
    texts, labels = phrases.texts, phrases.labels
    place = _clean(site.name)
    kind = "device_online" if online else "device_offline"
    severity = "info" if online else "warning"
    text = kind_text(phrases, kind, severity)

    def at(t: float) -> str:
        return phrases.body_time(_japan_time(dt.datetime.fromtimestamp(t, dt.UTC)))

    rows = [(labels["device"], _clean(device))]
    if online:
        rows += [
            (texts["offline_since"], at(since)),
            (texts["online_at"], phrases.body_time(_japan_time(now))),
            (texts["offline_for"], phrases.duration(max(0.0, now.timestamp() - since))),
        ]
    else:
        rows += [
            (phrases.field_labels["reason"], _clean(phrases.values.get(reason, reason) or "-")),
            (texts["offline_since"], at(since)),
            (texts["last_seen"], at(last_seen)),
        ]
    location = None
    if lat is not None and lon is not None:
        location = Location(lat=lat, lon=lon)
    images, credit = _map_images(location, maps, notice_id)
    content = Content(
        notice_id=notice_id,
        kind=kind,
        severity=severity,
        site_id=site_id,
        place=place,
        device=device,
        title=text.title,
        headline=text.headline.format(place=place, device=_clean(device)),
        advice=text.advice,
        when=_japan_time(now),
        received=_japan_time(now),
        rows=rows,
        fact=_short(_clean(device)),
        location=location,
        references=references,
        images=images,
        map_credit=credit,
    )
    return compose(content, language=language, sender=sender, recipient=recipient, index=index)


def compose(
    content: Content, *, language: Language, sender: str, recipient: str, index: int
) -> Mail:
    """Lay ``content`` out as one ``multipart/alternative`` mail (with an inline chart).

    :func:`as_bytes` writes it as MIME; ``Mail.message()`` gives it as an
    ``EmailMessage``.
    """
    phrases = PHRASES[language]
    labels = phrases.labels
    content = _sanitised(content)
    marker = phrases.alarm_marker if content.severity == "alarm" else ""
    place = f"{content.place} {content.fact}" if content.fact else content.place
    subject = phrases.subject.format(
        marker=marker, title=content.title, place=place, time=phrases.subject_time(content.when)
    )
    rows = list(content.rows)  # what, where and when: _head(); the ids: _small_print()
    chart = _chart_block(content, phrases)
    links = map_links(content.location, phrases) if content.location is not None else []
    warning = labels["clock_warning"] if not content.clock_synced else ""

    subject = _line(subject)
    rows = [(_line(label), _line(value)) for label, value in rows]
    headers: list[tuple[str, str]] = [
        ("Subject", subject),
        ("From", sender),
        ("To", recipient),
        ("Date", format_datetime(content.received)),
        ("Message-ID", message_id(content.notice_id, index)),
    ]
    if content.references:
        headers += [("In-Reply-To", content.references), ("References", content.references)]
    headers += [
        ("Auto-Submitted", "auto-generated"),
        ("X-Auto-Response-Suppress", "All"),
        ("X-Satoyama-Event", _token(content.notice_id)),
        ("X-Satoyama-Kind", _token(content.kind)),
        ("X-Satoyama-Site", _token(content.site_id)),
        ("X-Satoyama-Device", _token(content.device)),
    ]
    if content.severity == "alarm":
        headers += [("X-Priority", "1"), ("Importance", "high")]
    related: list[RelatedImage] = []
    if chart is not None and chart.png is not None:
        related.append(RelatedImage(chart.cid, chart.png, "level-24h.png"))
    related.extend(RelatedImage(i.cid, i.png, i.filename) for i in content.images)
    # The MIME itself is written by cloud.mime (as_bytes): the email package took ~3 ms.
    return Mail(
        headers=tuple(headers),
        plain=_plain(content, rows, warning, links, chart, phrases),
        html=_html(subject, content, rows, warning, links, chart, phrases, language),
        related=tuple(related),
    )


def as_bytes(msg: Mail | EmailMessage) -> bytes:
    """The message as sent on the wire (CRLF line ends, 7-bit), see :mod:`cloud.mime`."""
    if isinstance(msg, Mail):
        return mime.as_bytes(msg)
    return msg.as_bytes(policy=email.policy.SMTP)


# --- body parts -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ChartBlock:
    heading: str
    rows: list[tuple[str, str]]
    png: bytes | None
    cid: str
    alt: str


def _chart_block(content: Content, phrases: Phrases) -> _ChartBlock | None:
    """What the mail says about the last 24 h (and the picture), or None for other kinds."""
    if not content.chart_wanted and content.chart is None:
        return None
    texts = phrases.texts
    chart = content.chart
    cid = f"chart.{_token(content.notice_id)}@{MESSAGE_ID_DOMAIN}"
    if chart is None:
        return _ChartBlock(texts["chart"], [("", texts["chart_none"])], None, cid, "")

    def point(p: tuple[float, float]) -> str:
        when = _japan_time(dt.datetime.fromtimestamp(p[0], dt.UTC))
        return texts["chart_value"].format(value=f"{p[1]:g}", time=phrases.subject_time(when))

    rows = [
        (texts["chart_high"], point(chart.high)),
        (texts["chart_low"], point(chart.low)),
        (texts["chart_last"], point(chart.last)),
        (texts["chart_points"], str(len(chart.points))),
    ]
    alt = texts["chart_alt"].format(series=_clean(chart.series))
    return _ChartBlock(texts["chart"], rows, chart.png, cid, alt)


def _head(content: Content, phrases: Phrases) -> list[tuple[str, str]]:
    """Where and when (what happened is the headline above them)."""
    labels = phrases.labels
    head = [
        (labels["place"], content.place),
        (labels["time"], phrases.body_time(content.when)),
    ]
    late = abs(content.received - content.when) > LATE_AFTER
    if not content.clock_synced or late:
        head.append((labels["received"], phrases.body_time(content.received)))
    return [(_line(label), _line(value)) for label, value in head]


def _small_print(
    content: Content, rows: list[tuple[str, str]], phrases: Phrases
) -> list[tuple[str, str]]:
    """The ids a maintainer asks for: site, device, sensor, rule (never before the facts)."""
    labels = phrases.labels
    out = [(labels["site"], _clean(content.site_id))]
    if not any(label == labels["device"] for label, _ in rows):
        out.append((labels["device"], _clean(content.device)))
    out.extend(content.technical)
    return [(_line(label), _line(value)) for label, value in out]


def _plain(
    content: Content,
    rows: list[tuple[str, str]],
    warning: str,
    links: list[MapLink],
    chart: _ChartBlock | None,
    phrases: Phrases,
) -> str:
    """What happened, where, when and the one map link first; the ids last."""
    labels = phrases.labels
    out = [content.headline, ""]
    out.extend(f"■ {label}: {value}" for label, value in _head(content, phrases))
    if warning:
        out.append(f"※ {warning}")
    if links and content.location is not None:
        out.append(f"■ {labels['open_map']}: {links[0].url}")
    else:
        out.append(f"■ {labels['map']}: {labels['no_location']}")
    if content.advice:
        out += ["", content.advice]
    if rows:
        out.append("")
        out.extend(f"■ {label}: {value}" for label, value in rows)
    if content.notes:
        out.append("")
        out.extend(content.notes)
    if chart is not None:
        out += ["", f"■ {chart.heading}"]
        out.extend(f"  {label}: {value}" if label else f"  {value}" for label, value in chart.rows)
    if links and content.location is not None:
        out += ["", f"■ {labels['other_maps']}"]
        out.extend(f"  {link.label}: {link.url}" for link in links[1:])
        lat, lon = content.location.lat, content.location.lon
        out.append(f"  {labels['latlon']}: {lat:.6f}, {lon:.6f}")
    out += ["", "--", labels["technical"]]
    out.extend(f"{label}: {value}" for label, value in _small_print(content, rows, phrases))
    out.extend(f"{key}: {value}" for key, value in content.details)
    out += [f"{labels['event_id']}: {_clean(content.notice_id)}", phrases.footer, ""]
    return "\n".join(out)


#: Fits a 390-px phone and a desktop client alike; every style inline (mail clients drop <style>).
_PAGE = (
    "max-width:600px;margin:0 auto;padding:12px;font-family:sans-serif;font-size:16px;"
    "line-height:1.5;color:#222222;overflow-wrap:anywhere;word-break:break-word"
)
_TH = (  # the labels are ours and short: kept on one line, the value wraps
    'style="text-align:left;padding:3px 12px 3px 0;vertical-align:top;font-weight:bold;'
    'white-space:nowrap"'
)
_TD = 'style="padding:3px 0;vertical-align:top"'
_SMALL_TH = 'style="text-align:left;padding:1px 10px 1px 0;vertical-align:top;font-weight:normal"'
_BUTTON = (
    "display:inline-block;padding:12px 18px;background:#0b57d0;color:#ffffff;font-size:18px;"
    "font-weight:bold;text-decoration:none;border-radius:8px"
)


def _html(
    subject: str,
    content: Content,
    rows: list[tuple[str, str]],
    warning: str,
    links: list[MapLink],
    chart: _ChartBlock | None,
    phrases: Phrases,
    language: str,
) -> str:
    """The same as :func:`_plain`, for a phone's screen: the map within the first screenful."""
    e = _escape
    labels = phrases.labels
    alarm = content.severity == "alarm"
    out = [
        "<!DOCTYPE html>",
        f'<html lang="{e(language)}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(subject)}</title></head>",
        '<body style="margin:0;padding:0;background:#ffffff">',
        f'<div style="{_PAGE}">',
        f'<p style="margin:0 0 8px;font-size:20px;line-height:1.4;'
        f'color:{"#b00000" if alarm else "#222222"}"><strong>{e(content.headline)}</strong></p>',
        '<table role="presentation" style="border-collapse:collapse;margin:0 0 8px">',
    ]
    out.extend(
        f"<tr><th {_TH}>{e(label)}</th><td {_TD}>{e(value)}</td></tr>"
        for label, value in _head(content, phrases)
    )
    out.append("</table>")
    if warning:
        out.append(f'<p style="margin:0 0 8px;color:#b00000"><strong>{e(warning)}</strong></p>')
    if links and content.location is not None:
        first = links[0]
        picture = next((i for i in content.images if i.cid.startswith(MAP_CID)), None)
        if picture is not None:
            alt = labels["map_alt"].format(place=content.place)
            out.append(
                f'<a href="{e(first.url)}" style="display:block;text-decoration:none">'
                f'<img src="cid:{e(picture.cid)}" alt="{e(alt)}" width="600" '
                'style="display:block;width:100%;max-width:600px;height:auto;border:0"></a>'
            )
            if content.map_credit:
                out.append(
                    f'<p style="margin:2px 0 0;font-size:12px;color:#555555">'
                    f"{e(content.map_credit)}</p>"
                )
        out.append(
            f'<p style="margin:10px 0 14px"><a href="{e(first.url)}" style="{_BUTTON}">'
            f"{e(labels['open_map'])}</a></p>"
        )
    else:
        out.append(f"<p>{e(labels['no_location'])}</p>")
    if content.advice:
        out.append(f'<p style="margin:0 0 10px">{e(content.advice)}</p>')
    if rows:
        out.append('<table role="presentation" style="border-collapse:collapse;margin:0 0 8px">')
        out.extend(f"<tr><th {_TH}>{e(label)}</th><td {_TD}>{e(value)}</td></tr>"
                   for label, value in rows)  # fmt: skip
        out.append("</table>")
    out.extend(f"<p>{e(note)}</p>" for note in content.notes)
    if chart is not None:
        out.append(f'<h3 style="font-size:17px;margin:14px 0 6px">{e(chart.heading)}</h3>')
        if chart.png is not None:
            out.append(
                f'<p style="margin:0"><img src="cid:{e(chart.cid)}" alt="{e(chart.alt)}" '
                f'width="{CHART_WIDTH}" style="display:block;width:100%;max-width:{CHART_WIDTH}px;'
                'height:auto;border:0"></p>'
            )
        out.append('<table role="presentation" style="border-collapse:collapse">')
        out.extend(
            f"<tr><th {_TH}>{e(label)}</th><td {_TD}>{e(value)}</td></tr>" if label
            else f'<tr><td colspan="2" {_TD}>{e(value)}</td></tr>'
            for label, value in chart.rows
        )  # fmt: skip
        out.append("</table>")
    if links and content.location is not None:
        others = " / ".join(f'<a href="{e(link.url)}">{e(link.label)}</a>' for link in links[1:])
        lat, lon = content.location.lat, content.location.lon
        out.append(
            f'<p style="margin:14px 0 0">{e(labels["other_maps"])}: {others}<br>'
            f"{e(labels['latlon'])}: {lat:.6f}, {lon:.6f}</p>"
        )
    small = _small_print(content, rows, phrases) + content.details
    small.append((labels["event_id"], _clean(content.notice_id)))
    out.append(
        '<hr style="border:0;border-top:1px solid #dddddd;margin:16px 0 6px">'
        '<div style="font-size:12px;color:#666666;line-height:1.4">'
        f'<p style="margin:0 0 2px">{e(labels["technical"])}</p>'
        '<table role="presentation" style="border-collapse:collapse">'
    )
    out.extend(f"<tr><th {_SMALL_TH}>{e(key)}</th><td>{e(value)}</td></tr>"
               for key, value in small)  # fmt: skip
    out.append(f'</table><p style="margin:6px 0 0">{e(phrases.footer)}</p></div>')
    out.append("</div></body></html>")
    return "\n".join(out) + "\n"


#: Data keys shown as a length of time, and as a moment.
_DURATIONS: Final = frozenset(
    {"closed_s", "duration_s", "still_s", "unknown_s", "down_s", "uptime_s",
     "oldest_undelivered_s", "interval_s"}
)  # fmt: skip
_MOMENTS: Final = frozenset({"closed_since"})
_NAP_KINDS: Final = frozenset(
    {"prone_alarm", "apnea_alarm", "posture_unknown", "alarm_cleared", "posture_check"}
)
_TRAP_KINDS: Final = frozenset({"trap_triggered"})


#: The updater's kinds: their ``stage`` is a step of the update.
_UPDATE_KINDS: Final = frozenset({"update_installed", "update_failed"})


def _data_rows(
    event: Event, phrases: Phrases
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """(rows a person reads; the ids of what saw it, for the small print; all other keys).

    Rows: the cot, then the deterrents that ran, then the other well-known
    keys in the templates' order.  ``place`` is the mail's place (not a row)
    and ``reminder`` its title (the device's "still closed"), so neither is a row.
    """
    data: dict[str, Any] = dict(event.data)
    for said_elsewhere in ("place", "reminder", "stages"):
        data.pop(said_elsewhere, None)
    if event.kind in _UPDATE_KINDS and "stage" in data:
        # The updater's step ("health", "verify"...), not a water stage.
        data["update_stage"] = data.pop("stage")
    labels = phrases.field_labels
    first: list[tuple[str, str]] = []
    technical: list[tuple[str, str]] = []
    deterrents: list[tuple[str, str]] = []
    later: list[tuple[str, str]] = []
    # Deterrents arrive as `siren` / `strobe` booleans, or an `actions` list naming what ran.
    actions = data.pop("actions", None)
    ran = {str(a) for a in actions} if isinstance(actions, list) else None
    for name, (did, did_not) in (("siren", phrases.siren), ("strobe", phrases.strobe)):
        value = data.get(name)
        if isinstance(value, bool):
            del data[name]
            deterrents.append((labels[name], did if value else did_not))
        elif value is None and ran is not None:
            deterrents.append((labels[name], did if name in ran else did_not))
    if ran is not None and ran - {"siren", "strobe"}:
        data["actions"] = sorted(ran - {"siren", "strobe"})
    stage = _stage_text(data, phrases)
    if stage is not None:
        data.pop("stage", None)
        data["stage_label"] = stage
    for key, label in labels.items():
        if key in data:
            row = (label, _field(key, data.pop(key), phrases))
            if key in _IDS:
                technical.append(row)
            else:
                (first if key in _WHO else later).append(row)
    details = [(_clean(key), _value(data[key], phrases)) for key in sorted(data)]
    return first + deterrents + later, technical, details


def _stage_text(data: dict[str, Any], phrases: Phrases) -> str | None:
    """The device's own label for a water stage, with the standard name if it differs."""
    code, label = data.get("stage"), data.get("stage_label")
    standard = phrases.values.get(code, code) if isinstance(code, str) else None
    if isinstance(label, str) and _clean(label):
        label = _clean(label)
        if isinstance(standard, str):
            standard = _clean(standard)
        if standard and standard != label and standard != code:
            return f"{label}（{standard}）" if phrases is JA else f"{label} ({standard})"  # noqa: RUF001
        return label
    if isinstance(code, str):
        return _clean(standard) if isinstance(standard, str) else standard
    return None


def _field(key: str, value: Any, phrases: Phrases) -> str:
    """A well-known data value, formatted for people."""
    if key in _DURATIONS and isinstance(value, int | float) and not isinstance(value, bool):
        return phrases.duration(float(value)) if math.isfinite(value) else "-"
    if key in _MOMENTS and isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return _value(value, phrases)
        if moment.tzinfo is not None:
            return phrases.body_time(_japan_time(moment))
    if key == "acknowledged_by" and value is None:
        return phrases.texts["not_acknowledged"]
    if key == "cleared" and isinstance(value, str) and value in phrases.kinds:
        return phrases.kinds[value].title
    if key in ("sensors", "evicted") and isinstance(value, dict):
        return _clean(", ".join(f"{k}: {_value(v, phrases)}" for k, v in sorted(value.items())))
    return _value(value, phrases)


def _subject_fact(event: Event, phrases: Phrases) -> str:
    """The figure that matters, for the subject line (empty when there is none)."""
    texts = phrases.texts
    typed = event_data(event)
    if isinstance(typed, WaterLevelAlert) and _is_number(typed.level_cm):
        stage = _stage_text({"stage": typed.stage, "stage_label": typed.stage_label}, phrases)
        level_fact = texts["level_fact"].format(level=f"{typed.level_cm:g}", stage=stage or "")
        return _short(level_fact.strip())
    if isinstance(typed, WaterRiseAlert) and _is_number(typed.level_cm):
        if _is_number(typed.rise_cm_per_10min):
            level, rise = f"{typed.level_cm:g}", f"{typed.rise_cm_per_10min:g}"
            return _short(texts["rise_fact"].format(level=level, rise=rise))
        return _short(f"{typed.level_cm:g}cm")
    if isinstance(typed, CotData):
        return _short(_clean(typed.cot))
    if isinstance(typed, TrapTriggered):
        closed_s = typed.closed_s
        if _is_number(closed_s) and closed_s:
            elapsed = phrases.duration(float(closed_s))
            return _short(texts["elapsed_fact"].format(duration=elapsed))
        return ""
    if typed is None:  # data that does not fit its kind (an older device), or a new kind
        return _untyped_fact(event, phrases)
    return ""  # a sensor's name (``trap_a``) means nothing to the reader: small print only


def _untyped_fact(event: Event, phrases: Phrases) -> str:
    """:func:`_subject_fact` of data that does not fit its kind's type: what can be read."""
    data, kind, texts = event.data, event.kind, phrases.texts
    level = data.get("level_cm")
    if kind == "water_level_alert" and _is_number(level):
        stage = _stage_text(dict(data), phrases) or ""
        return _short(texts["level_fact"].format(level=f"{level:g}", stage=stage).strip())
    if kind == "water_rise_alert" and _is_number(level):
        rise = data.get("rise_cm_per_10min")
        if _is_number(rise):
            return _short(texts["rise_fact"].format(level=f"{level:g}", rise=f"{rise:g}"))
        return _short(f"{level:g}cm")
    if kind in _NAP_KINDS and isinstance(data.get("cot"), str | int):
        return _short(_clean(str(data["cot"])))
    if kind in _TRAP_KINDS and _is_number(data.get("closed_s")) and data.get("closed_s"):
        elapsed = phrases.duration(float(data["closed_s"]))
        return _short(texts["elapsed_fact"].format(duration=elapsed))
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _counts(counts: dict[str, int], phrases: Phrases) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return _clean(", ".join(f"{k}: {phrases.texts['times'].format(count=n)}" for k, n in items))


def _period(start: float, end: float, phrases: Phrases) -> str:
    def at(t: float) -> str:
        return phrases.subject_time(_japan_time(dt.datetime.fromtimestamp(t, dt.UTC)))

    return phrases.texts["period"].format(start=at(start), end=at(end))


_WHO: Final = frozenset({"cot", "deterrent"})
#: Names from the device's configuration (``pir_north``, ``chase_north``): for the small print.
_IDS: Final = frozenset({"detector", "sensor", "trap", "rule"})


def _value(value: Any, phrases: Phrases) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return phrases.yes if value else phrases.no
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _clean(phrases.values.get(value, value))
    try:
        return _clean(msgspec.json.encode(value).decode())
    except (TypeError, msgspec.EncodeError):
        return _clean(repr(value))


def _japan_time(t: dt.datetime) -> dt.datetime:
    """``t`` in Japan time; an unsynced clock's year 9999 stays in UTC rather than overflow."""
    try:
        return t.astimezone(JST)
    except (OverflowError, ValueError):
        return t.astimezone(dt.UTC)


#: ``html.escape``, remembered: most of what a mail escapes (labels, places, devices,
#: phrases) is the same from mail to mail.
_escape: Final = functools.lru_cache(maxsize=1024)(html.escape)


@functools.lru_cache(maxsize=1024, typed=True)  # labels and values repeat from mail to mail
def _line(value: str) -> str:
    """One line: control characters become spaces, bidi overrides and isolates go."""
    return _BIDI.sub("", _CONTROL.sub(" ", str(value)))


def _text(value: str) -> str:
    """Several lines (ours): only the bidi overrides and isolates go."""
    return _BIDI.sub("", value)


def _sanitised(content: Content) -> Content:
    """Every field that reaches a header or a line of the body, made safe for it.

    The renderers clean what the device sent as they use it; this is the net
    under them, so that a value one of them missed (a CR/LF in a water stage's
    label once made the subject raise, and the alert went out without its data)
    can neither break a header nor forge a line.
    """
    return replace(
        content,
        place=_line(content.place),
        title=_line(content.title),
        headline=_line(content.headline),
        advice=_text(content.advice),
        fact=_line(content.fact),
        rows=[(_line(label), _line(value)) for label, value in content.rows],
        technical=[(_line(label), _line(value)) for label, value in content.technical],
        details=[(_line(label), _line(value)) for label, value in content.details],
        map_credit=_line(content.map_credit),
        notes=[_text(note) for note in content.notes],
    )


@functools.lru_cache(maxsize=1024, typed=True)
def _clean(value: str) -> str:
    """One line, no control characters, not absurdly long."""
    text = _BIDI.sub("", _CONTROL.sub(" ", str(value))).strip()
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 1] + "…"
    return text


def _token(value: str) -> str:
    """A device-provided value made safe for an ``X-`` header."""
    token = re.sub(r"[^A-Za-z0-9._:@+-]", "_", value)[:100]
    return token or "-"


def _digest(value: str) -> str:
    return "h" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
