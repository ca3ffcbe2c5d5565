"""A nap room in the console: today's check sheet, and the remote acknowledgement of an alarm.

**The sheet** is the one the device prints (:mod:`edge.nursery.sheet`, the same
``build_sheet`` and ``render_html``), rebuilt from the events the notifier stored for
the device: the five-minute ``posture_check`` of each cot, the ``prone_alarm`` /
``apnea_alarm`` / ``posture_unknown`` alarms, ``alarm_cleared``, and the
``sensor_fault`` / ``sensor_recovered`` of its mats (check by hand).  What the cloud
cannot know, it does not make up, and the page says so:

* children's names never leave the device: the cloud's sheet names cots only;
* nap start and wake, *missed* slots and who acknowledged in the room (and when) are
  in the device's own record only; ``alarm_cleared`` gives when each alarm ended;
* the end of a "look now" prompt is not an event: the sheet ends it at the cot's next
  answered posture (its latest possible time).

**Remote acknowledgements** (a person pressed "acknowledge" in the console: they saw the
alarm and are on the way) appear on the alarm list as ``遠隔確認 (remote) by NAME at
HH:MM``, apart from the on-site acknowledgement; one that found no alarm sounding is
listed on its own.  :func:`send_nap_ack` tells the device (``cmd/nap_ack``), which
writes it on its own sheet the same way.  Neither ever silences the buzzer or ends the
alarm: the child must be turned, and someone in the room must acknowledge.
"""

# ruff: noqa: RUF001  (Japanese text: full-width punctuation is right there)

from __future__ import annotations

import asyncio
import datetime as dt
import html
import logging
import re
import ssl
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple

import aiomqtt
import msgspec

from cloud.config import MqttConfig
from cloud.console.errors import ConsoleError
from cloud.database import Database, Row, Tx
from edge.event import (
    AlarmCleared,
    ApneaAlarm,
    EnvelopeError,
    Event,
    PostureCheck,
    PostureUnknown,
    ProneAlarm,
    SensorFault,
    SensorRecovered,
    command_topic,
    decode,
    event_data,
    new_event_id,
)
from edge.nursery.log import REMOTE_ACK, NapEntry
from edge.nursery.sheet import ALARMS, ANY_SOUNDING, JST, LOOK_NOW, build_sheet, render_html

log = logging.getLogger(__name__)

SHEET_KINDS: Final = (
    "posture_check", "prone_alarm", "apnea_alarm", "posture_unknown", "alarm_cleared",
    "sensor_fault", "sensor_recovered",
)  # fmt: skip
"""The stored events a sheet is rebuilt from."""
LATE_S: Final = 86400.0
"""Events of a day are looked for among those received from this long before the day
began (a device whose clock runs ahead) to now: the index on ``received_at`` does the
rest (the events table has no index by device)."""
_MAT_OF_COT: Final = re.compile(r"^mat of cot (.+?): ")
"""A mat's fault message names its cot (``edge.nursery.mat_watch``): how the cloud learns
which cot a mat's ``sensor_fault`` and ``sensor_recovered`` are about."""
CONSOLE_ACTION: Final = "nap_acknowledged"
"""The ``console_actions`` row :meth:`cloud.console.state.ConsoleState.acknowledge_nap_alarm`
writes (``target``: the cot, ``by_user``, ``at``)."""
NAP_ACK_QOS: Final = 1
SEND_TIMEOUT_S: Final = 10.0
MAX_COT: Final = 32
MAX_BY: Final = 64
"""The device's limits for ``cmd/nap_ack`` (``edge.link.commands.NapAckCommand``)."""

NOTICE: Final = {
    "ja": "クラウドが受け取った記録から作ったチェック表です。子どもの名前は端末の外へ出ないため、"
          "ベッド名だけを表示します。入眠・起床、欠測、部屋での確認（だれが・いつ）は端末で"
          "印刷するチェック表にあります。「見てください」の終わりは、次に姿勢を判定できた"
          "記録の時刻です。遠隔確認はブザーを止めません（お子さんを仰向けにし、部屋で確認する"
          "まで鳴り続けます）。",
    "en": "Rebuilt from what the cloud received. Children's names never leave the device, "
          "so this sheet names cots only. Nap start and wake, missed checks and who "
          "acknowledged in the room (and when) are on the sheet the device prints. A "
          "'look now' ends here at the cot's next posture the model could tell. A remote "
          "acknowledgement never silences the buzzer: it sounds until the child is turned "
          "and someone in the room acknowledges.",
}


class NapAckError(ConsoleError, ValueError):
    """A remote acknowledgement that must not be sent (the device would refuse it, or the
    console has no identity of its own on the broker)."""


class NapAckNotSent(ConsoleError, ConnectionError):
    """The broker could not be reached or did not confirm the command in time."""


class RemoteAck(NamedTuple):
    """One remote acknowledgement as the sheet shows it; a plain 4-tuple does as well."""

    cot: str
    alarm_kind: str | None
    """The alarm it was for; None: whatever of the cot's alarms was sounding then."""
    at: float
    """When (Unix seconds, the console's clock)."""
    by: str


# --- the sheet -------------------------------------------------------------------------


def sheet_html(
    db: Database,
    device: str,
    day: dt.date | None = None,
    *,
    language: str = "ja",
    acknowledgements: Iterable[tuple[str, str | None, float, str]] | None = None,
    now: float | None = None,
    site: str | None = None,
) -> str | None:
    """The device's nap check sheet of ``day`` (default: today in Japan, by ``now``) as
    the device's printable HTML page; None when the notifier does not know the device.

    ``acknowledgements``: the console's remote acknowledgements (cot, alarm kind or None,
    at, by) of that device; None: those in the console's ``console_actions`` table.

    ``site``: the device's current site; None: the console's own record of it
    (``console_device_state``), else the notifier's ``devices`` row.  Only that site's
    events and acknowledgements make the sheet: a device moved from another site brings
    none of that site's children to this one.
    Synchronous: call it on the console's database thread."""
    if day is None:
        day = dt.datetime.fromtimestamp(time.time() if now is None else now, JST).date()
    lang = language if language in NOTICE else "ja"
    start = dt.datetime.combine(day, dt.time(), JST).timestamp()

    def read(tx: Tx) -> tuple[bool, list[Row], list[RemoteAck]]:
        known = tx.query("SELECT site FROM devices WHERE device = ?", (device,))
        if not known:
            return False, [], []
        at = site
        if at is None and _table_exists(tx, db.name, "console_device_state"):
            mine = tx.query("SELECT site FROM console_device_state WHERE device = ?", (device,))
            at = str(mine[0][0]) if mine else None
        if at is None:
            at = str(known[0][0])
        marks = ", ".join("?" for _ in SHEET_KINDS)
        rows = tx.query(
            f"SELECT payload FROM events WHERE received_at >= ? AND device = ? AND site = ? "
            f"AND kind IN ({marks})",
            (start - LATE_S, device, at, *SHEET_KINDS),
        )
        acks = ([] if acknowledgements is not None
                else _console_acks(tx, db.name, device, at, start))
        return True, rows, acks

    known, rows, stored = db.run(read, write=False)
    if not known:
        return None
    events = [e for e in (_event(r[0]) for r in rows)
              if e is not None and start <= e.ts.timestamp() < start + 86400]
    acks = [RemoteAck(*a) for a in acknowledgements] if acknowledgements is not None else stored
    entries, place = sheet_entries(events, acks, day=day)
    sheet = build_sheet(entries, {}, date=day, facility=place)
    return render_html(sheet, lang, notice=NOTICE[lang])


#: The console's bar over the sheet: its own small style (the sheet's policy allows inline
#: styles only), never printed.
_BAR_STYLE: Final = """<style>
 .console-bar { align-items: center; gap: 4mm; flex-wrap: wrap; font-size: 11pt;
   padding: 2mm 0; margin-bottom: 3mm; border-bottom: 1px solid #767676; }
 .console-bar a { color: #0645ad; }
 .console-bar nav ul { display: flex; gap: 4mm; list-style: none; margin: 0; padding: 0; }
 .console-bar p { margin: 0; font-weight: bold; }
 @media print { .console-bar { display: none; } }
</style>"""


def sheet_page(sheet: str, bar: str, *, title: str) -> str:
    """The device's printable sheet (:func:`sheet_html`) as a console page: ``bar`` (HTML:
    the console's header, with the way back) before it, the sheet's body in ``<main>``,
    ``title`` after the sheet's own in ``<title>``.  The sheet itself (its style and grid)
    is left as the device renders it."""
    head, found, rest = sheet.partition("<body>")
    body, closed, tail = rest.rpartition("</body>")
    if not found or not closed:
        return sheet
    title_at = head.find("</title>")
    if title_at >= 0:
        head = f"{head[:title_at]} | {html.escape(title)}{head[title_at:]}"
    head = head.replace("</head>", f"{_BAR_STYLE}</head>", 1)
    return f'{head}<body>\n{bar}\n<main id="content">{body}</main>\n</body>{tail}'


def _event(payload: Any) -> Event | None:
    try:
        return decode(bytes(payload))
    except (EnvelopeError, TypeError, ValueError):
        return None  # the notifier stores only valid envelopes; never fail a page on one


def sheet_entries(
    events: Iterable[Event], acks: Iterable[tuple[str, str | None, float, str]] = (),
    *, day: dt.date | None = None,
) -> tuple[list[NapEntry], str]:
    """The nap-log entries (:class:`edge.nursery.log.NapEntry`) the device would have
    written for what its events say, and the place (``device.description``) they name.

    Remote acknowledgements outside ``day`` (Japan) are left out when it is given."""
    entries: list[NapEntry] = []
    place = ""
    mats: dict[str, str] = {}  # mat -> cot, learnt from its fault's message
    for event in sorted(events, key=lambda e: (e.ts, e.seq)):
        data = event_data(event)
        t = event.ts.timestamp()
        if isinstance(event.data.get("place"), str):
            place = event.data["place"]
        if isinstance(data, PostureCheck):
            entries.append(NapEntry(t, data.cot, "posture_check", data.posture))
        elif isinstance(data, ProneAlarm | ApneaAlarm):
            entries.append(NapEntry(t, data.cot, data.kind, data.posture))
        elif isinstance(data, PostureUnknown):
            entries.append(NapEntry(t, data.cot, LOOK_NOW, "unknown"))
        elif isinstance(data, AlarmCleared) and data.cleared == LOOK_NOW:
            # The device says when its look-now prompt ended, and what the model read then.
            entries.append(NapEntry(t, data.cot, f"{LOOK_NOW}_end",
                                    data.posture if isinstance(data.posture, str) else ""))
        elif isinstance(data, AlarmCleared):
            entries.append(NapEntry(t, data.cot, "alarm_cleared", data.cleared,
                                    by=data.acknowledged_by))
        elif isinstance(data, SensorFault):
            found = _MAT_OF_COT.match(data.message)
            if found:
                mats[data.sensor] = found.group(1)
                entries.append(NapEntry(t, found.group(1), "by_hand", data.fault))
        elif isinstance(data, SensorRecovered) and data.sensor in mats:
            entries.append(NapEntry(t, mats[data.sensor], "by_hand_end", ""))
    entries = _end_look_now(entries)
    lo = hi = None
    if day is not None:
        lo = dt.datetime.combine(day, dt.time(), JST).timestamp()
        hi = lo + 86400
    for cot, kind, at, by in acks:
        if lo is not None and hi is not None and not lo <= at < hi:
            continue
        entries.append(NapEntry(at, cot, REMOTE_ACK, kind or ANY_SOUNDING, by=by))
    return sorted(entries, key=lambda x: x.t), place


def _end_look_now(entries: list[NapEntry]) -> list[NapEntry]:
    """A look-now prompt ends (on the device) when the model answers again.  Its end is an
    event (``alarm_cleared`` of ``posture_unknown``); from a device older than that event,
    the end is taken at the cot's next entry with a posture other than ``unknown``."""
    out: list[NapEntry] = []
    open_prompt: set[str] = set()
    for x in entries:
        if x.kind == f"{LOOK_NOW}_end":
            if x.cot in open_prompt:
                out.append(x)
                open_prompt.discard(x.cot)
            continue
        answered = x.kind in ("posture_check", "prone_alarm", "apnea_alarm") and (
            x.value != "unknown")
        if x.cot in open_prompt and answered:
            out.append(NapEntry(x.t, x.cot, f"{LOOK_NOW}_end", x.value))
            open_prompt.discard(x.cot)
        if x.kind == LOOK_NOW:
            open_prompt.add(x.cot)
        out.append(x)
    return out


def _table_exists(tx: Tx, engine: str, table: str) -> bool:
    exists = (
        "SELECT to_regclass(?) IS NOT NULL" if engine == "postgresql"
        else "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
    )
    return bool(tx.query(exists, (table,))[0][0])


def _console_acks(
    tx: Tx, engine: str, device: str, site: str, start: float
) -> list[RemoteAck]:
    """The remote acknowledgements of ``device`` at ``site`` in the console's own table
    (none before it exists)."""
    if not _table_exists(tx, engine, "console_actions"):
        return []
    rows = tx.query(
        "SELECT target, detail, at, by_user FROM console_actions WHERE device = ? AND site = ? "
        f"AND action = '{CONSOLE_ACTION}' AND at >= ? AND at < ? ORDER BY at, id",
        (device, site, start, start + 86400),
    )
    # ``detail`` may name the alarm; the console records none today (any sounding then).
    return [RemoteAck(str(cot), str(detail) if detail in ALARMS else None, float(at), str(by))
            for cot, detail, at, by in rows]


# --- telling the device -------------------------------------------------------------------

_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary())


def _lock() -> asyncio.Lock:
    """One send at a time per event loop: under the shipped broker the console's connection
    is named by its certificate, and a second one with that name would drop the first."""
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


def check_nap_ack(device: str, cot: str, by: str) -> None:
    """:class:`NapAckError` unless the device would take ``cmd/nap_ack`` for ``cot`` by
    ``by`` (its schema's limits; a device id that can name a topic level)."""
    if not device or "/" in device or "+" in device or "#" in device:
        raise NapAckError(f"device: not a device id: {device[:64]!r}")
    if not 1 <= len(cot) <= MAX_COT:
        raise NapAckError(f"cot: 1 to {MAX_COT} characters, not {len(cot)}")
    if not 1 <= len(by) <= MAX_BY or by != by.strip() or re.search(r"[\x00-\x1f\x7f]", by):
        raise NapAckError(f"by: 1 to {MAX_BY} printable characters, no spaces around them")


def nap_ack_payload(cot: str, by: str, at: float, ident: str) -> bytes:
    """The ``cmd/nap_ack`` payload, checked against the device's schema's limits."""
    check_nap_ack("-", cot, by)
    when = dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")
    return msgspec.json.encode({"cot": cot, "by": by, "at": when, "id": ident})


async def send_nap_ack(
    mqtt_config: MqttConfig,
    device: str,
    cot: str,
    by: str,
    *,
    at: float | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    timeout_s: float = SEND_TIMEOUT_S,
) -> str:
    """Tell ``device`` that ``by`` acknowledged ``cot``'s alarm in the console at ``at``
    (default: now): ``PREFIX/DEVICE/cmd/nap_ack``, QoS 1, not retained (a device offline
    finds it in its persistent session).  Returns the command's id once the broker has
    confirmed it (PUBACK).

    The broker and prefix are the notifier's (``[mqtt]``), on a connection of the
    console's own.  Under mutual TLS (``[mqtt.tls]``) the console needs a certificate of
    its own (``cert_file``, ``key_file``; the broker makes its CN the client id):
    borrowing the notifier's would take over the notifier's session.

    :class:`NapAckError`: not sendable; :class:`NapAckNotSent`: the broker did not take it.
    """
    check_nap_ack(device, cot, by)
    ident = new_event_id()
    payload = nap_ack_payload(cot, by, time.time() if at is None else at, ident)
    tls_context: ssl.SSLContext | None = None
    if mqtt_config.tls is not None:
        if cert_file is None:
            raise NapAckError(
                "mqtt.tls: the console needs its own client certificate to publish "
                "cmd/nap_ack (the notifier's would take over the notifier's session)"
            )
        tls_context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=mqtt_config.tls.ca_file
        )
        tls_context.minimum_version = ssl.TLSVersion.TLSv1_2
        tls_context.load_cert_chain(cert_file, key_file)
    topic = command_topic(mqtt_config.topic_prefix, device, "nap_ack")
    async with _lock():
        client = aiomqtt.Client(
            mqtt_config.host, mqtt_config.port,
            identifier=f"{mqtt_config.client_id}-console-{uuid.uuid4().hex[:8]}",
            username=mqtt_config.username,
            password=(mqtt_config.password.reveal()
                      if mqtt_config.password is not None else None),
            keepalive=mqtt_config.keepalive,
            protocol=aiomqtt.ProtocolVersion.V5 if mqtt_config.protocol == "5" else None,
            tls_context=tls_context,
        )  # fmt: skip
        try:
            async with asyncio.timeout(timeout_s), client:
                await client.publish(topic, payload, qos=NAP_ACK_QOS, retain=False)
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            raise NapAckNotSent(
                f"cmd/nap_ack to {device} not confirmed by the broker "
                f"{mqtt_config.host}:{mqtt_config.port}: {exc or type(exc).__name__}"
            ) from None
    log.info("told %s: %s acknowledged cot %s's alarm remotely (%s)", device, by, cot, ident)
    return ident


def nap_ack_sender(
    mqtt_config: MqttConfig, *, cert_file: str | None = None, key_file: str | None = None
) -> Callable[[str, str, str, float], Awaitable[None]]:
    """:func:`send_nap_ack` as the console's app calls it: ``(device, cot, by, at)``."""

    async def send(device: str, cot: str, by: str, at: float) -> None:
        await send_nap_ack(mqtt_config, device, cot, by, at=at, cert_file=cert_file,
                           key_file=key_file)

    return send


def acknowledgements(rows: Sequence[tuple[str, str | None, float, str]]) -> list[RemoteAck]:
    """``rows`` as :class:`RemoteAck` records (for callers holding plain tuples)."""
    return [RemoteAck(*r) for r in rows]
