"""Turn one event into the e-mail a farmer, hunter or nursery teacher reads.

A mail is ``multipart/alternative``: UTF-8 plain text first (what feature
phones and carrier mail show), then HTML with the same content.  Everything a
device sent (ids, data values) is treated as hostile: control characters are
stripped from every value, values are shortened, and the HTML part escapes
all of it.  Times are shown in Japan time.  The words come from
:mod:`cloud.templates`.

The Message-ID is derived from the event id and the recipient's position, so
a mail that is sent twice (see ``docs/notifier.md``, delivery guarantees) is
recognisably the same mail.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import hashlib
import html
import math
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from cloud.config import Language, SiteConfig
from cloud.templates import PHRASES, Phrases, kind_text
from edge.event import Event, Location


def _japan() -> dt.tzinfo:
    """Asia/Tokyo, or a fixed UTC+9 where the host has no tz database (Japan has no DST)."""
    try:
        return ZoneInfo("Asia/Tokyo")
    except Exception:  # ZoneInfoNotFoundError, or a broken tzdata install
        return dt.timezone(dt.timedelta(hours=9), "JST")


JST: Final[dt.tzinfo] = _japan()
MESSAGE_ID_DOMAIN: Final = "satoyama-edge"
MAP_ZOOM: Final = 17
#: The device's time and the notifier's differ by more than this: show both.
LATE_AFTER: Final = dt.timedelta(minutes=5)
_MAX_VALUE_CHARS: Final = 300

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


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
) -> EmailMessage:
    """The complete message for one recipient.

    ``received_at`` is when the notifier got the event (also the ``Date``);
    ``with_data=False`` leaves out the device's data fields (the fallback if
    they cannot be shown).
    """
    phrases = PHRASES[language]
    received = _japan_time(received_at or dt.datetime.now(dt.UTC))
    when = _japan_time(event.ts)
    text = kind_text(phrases, event.kind, event.severity)
    place = _clean(site.name)
    marker = phrases.alarm_marker if event.severity == "alarm" else ""
    subject = phrases.subject.format(
        marker=marker, title=text.title, place=place, time=phrases.subject_time(when)
    )

    labels = phrases.labels
    severity = phrases.severity_names.get(event.severity, _clean(event.severity))
    rows: list[tuple[str, str]] = [
        (labels["what"], phrases.what.format(title=text.title, severity=severity)),
        (labels["place"], place),
        (labels["site"], _clean(event.site)),
        (labels["time"], phrases.body_time(when)),
    ]
    late = abs(received - when) > LATE_AFTER
    if not event.clock_synced or late:
        rows.append((labels["received"], phrases.body_time(received)))
    rows.append((labels["device"], _clean(event.device)))
    details: list[tuple[str, str]] = []
    if with_data:
        known, details = _data_rows(event, phrases)
        rows.extend(known)
    links = map_links(event.location, phrases)
    headline = text.headline.format(place=place)
    warning = labels["clock_warning"] if not event.clock_synced else ""

    msg = EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = recipient
    msg["Date"] = format_datetime(received)
    msg["Message-ID"] = message_id(event.id, index)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Satoyama-Event"] = _token(event.id)
    msg["X-Satoyama-Kind"] = _token(event.kind)
    msg["X-Satoyama-Site"] = _token(event.site)
    msg["X-Satoyama-Device"] = _token(event.device)
    if event.severity == "alarm":
        msg["X-Priority"] = "1"
        msg["Importance"] = "high"

    msg.set_content(
        _plain(headline, text.advice, rows, warning, links, details, phrases, event),
        charset="utf-8",
    )
    msg.add_alternative(
        _html(
            subject, headline, text.advice, rows, warning, links, details, phrases, event, language
        ),
        subtype="html",
        charset="utf-8",
    )
    return msg


def as_bytes(msg: EmailMessage) -> bytes:
    """The message as sent on the wire (CRLF line ends)."""
    return msg.as_bytes(policy=email.policy.SMTP)


# --- body parts -------------------------------------------------------------


def _plain(
    headline: str,
    advice: str,
    rows: list[tuple[str, str]],
    warning: str,
    links: list[MapLink],
    details: list[tuple[str, str]],
    phrases: Phrases,
    event: Event,
) -> str:
    labels = phrases.labels
    out = [headline]
    if advice:
        out.append(advice)
    out.append("")
    out.extend(f"■ {label}: {value}" for label, value in rows)
    if warning:
        out += ["", f"※ {warning}"]
    out += ["", f"■ {labels['map']}"]
    if links:
        out.extend(f"  {link.label}: {link.url}" for link in links)
        lat, lon = event.location.lat, event.location.lon
        out.append(f"  {labels['latlon']}: {lat:.6f}, {lon:.6f}")
    else:
        out.append(f"  {labels['no_location']}")
    if details:
        out += ["", f"■ {labels['details']}"]
        out.extend(f"  {key}: {value}" for key, value in details)
    out += ["", "--", phrases.footer, f"{labels['event_id']}: {_clean(event.id)}", ""]
    return "\n".join(out)


def _html(
    subject: str,
    headline: str,
    advice: str,
    rows: list[tuple[str, str]],
    warning: str,
    links: list[MapLink],
    details: list[tuple[str, str]],
    phrases: Phrases,
    event: Event,
    language: str,
) -> str:
    e = html.escape
    labels = phrases.labels
    th = 'style="text-align:left;padding:2px 12px 2px 0;vertical-align:top;white-space:nowrap"'
    out = [
        "<!DOCTYPE html>",
        f'<html lang="{e(language)}"><head><meta charset="utf-8">',
        f"<title>{e(subject)}</title></head>",
        '<body style="font-family:sans-serif;line-height:1.5">',
        f'<p style="font-size:1.15em"><strong>{e(headline)}</strong></p>',
    ]
    if advice:
        out.append(f"<p>{e(advice)}</p>")
    out.append("<table>")
    out.extend(f"<tr><th {th}>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in rows)
    out.append("</table>")
    if warning:
        out.append(f'<p style="color:#b00000"><strong>{e(warning)}</strong></p>')
    out.append(f"<h3>{e(labels['map'])}</h3>")
    if links:
        out.append("<ul>")
        out.extend(f'<li><a href="{e(link.url)}">{e(link.label)}</a></li>' for link in links)
        out.append("</ul>")
        lat, lon = event.location.lat, event.location.lon
        out.append(f"<p>{e(labels['latlon'])}: {lat:.6f}, {lon:.6f}</p>")
    else:
        out.append(f"<p>{e(labels['no_location'])}</p>")
    if details:
        out.append(f"<h3>{e(labels['details'])}</h3><table>")
        out.extend(f"<tr><th {th}>{e(key)}</th><td>{e(value)}</td></tr>" for key, value in details)
        out.append("</table>")
    out.append(
        f'<hr><p style="color:#666666;font-size:small">{e(phrases.footer)}<br>'
        f"{e(labels['event_id'])}: {e(_clean(event.id))}</p>"
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _data_rows(
    event: Event, phrases: Phrases
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(rows for well-known data keys, in a fixed order; rows for all other keys).

    Order: what saw it (detector, sensor, trap, cot), then the deterrents that
    ran, then the other well-known keys in the templates' order.
    """
    data: dict[str, Any] = dict(event.data)
    labels = phrases.field_labels
    first: list[tuple[str, str]] = []
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
    for key, label in labels.items():
        if key in data:
            row = (label, _value(data.pop(key), phrases))
            (first if key in _WHO else later).append(row)
    details = [(_clean(key), _value(data[key], phrases)) for key in sorted(data)]
    return first + deterrents + later, details


_WHO: Final = frozenset({"detector", "sensor", "trap", "cot"})


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


def _clean(value: str) -> str:
    """One line, no control characters, not absurdly long."""
    text = _CONTROL.sub(" ", str(value)).strip()
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 1] + "…"
    return text


def _token(value: str) -> str:
    """A device-provided value made safe for an ``X-`` header."""
    token = re.sub(r"[^A-Za-z0-9._:@+-]", "_", value)[:100]
    return token or "-"


def _digest(value: str) -> str:
    return "h" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
