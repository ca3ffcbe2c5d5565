"""``edge report naps``: the day's nap check sheet (午睡チェック表), as a nursery files it.

One row per cot and child, one column per check time (five-minute slots), a
printable A4-landscape HTML page and a CSV with the same facts, Japanese by
default.  Built from the device's local record (``edge.nursery.log``): the only
place where a child's name (``child`` in the mat's configuration) may appear.

What the sheet promises:

* **an alarm is never hidden**: a slot shows the worst posture seen in it
  (face down > unknown > on the side > on the back) with every alarm raised in
  it beside the posture, whatever order the entries came in;
* **every slot has a column**: the configured nap period (``period``), widened
  to every entry of the day; a slot inside a child's nap with no check is
  flagged *missed* (欠測), never silently left out;
* a mat that could not be read makes its slots *check by hand* (手で確認),
  never "empty";
* a posture the model could not tell for long ("look now", 見てください) marks every
  slot from the prompt until the model answered again, with the posture ``?`` (never
  a safe posture), and is listed with the alarms (who looked, when it ended);
* per child: nap start and wake; per alarm: when it went off, who acknowledged
  it and when, when it cleared;
* a **remote acknowledgement** (a person saw the alarm in the cloud console and is on
  the way, ``remote_ack``) is listed beside the alarm as 遠隔確認 (remote), never as the
  on-site acknowledgement: it silences nothing and does not end the alarm.  One that
  found no alarm sounding on its cot is listed on its own, never dropped;
* per slot: the initials of staff who responded or checked, room temperature
  and humidity where entered; facility, class and sign-off boxes (施設長 / 担当).

The page fits one A4 landscape sheet for a full afternoon (12:30-15:00 is 31
columns); longer days are split into pages of ``SLOTS_PER_PAGE`` columns, each
with its header repeated.  No column is ever cut.
"""

# ruff: noqa: RUF001  (Japanese text: full-width parentheses are right there)

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edge.nursery.log import REMOTE_ACK, NapEntry

JST = dt.timezone(dt.timedelta(hours=9), "JST")
SLOT_MIN = 5
SLOTS_PER_PAGE = 36
"""Three hours of five-minute columns: what fits the width of an A4 landscape page."""
SLOTS_WIDTH_MM = 216.0
"""A4 landscape (297 mm) less 2 x 8 mm margins, less 57 mm of cot, child, start, wake."""
MIN_NAP_OVERLAP_S = 30.0
"""A slot belongs to a nap (and must have a check) when the nap covers this much of it."""
BUTTON = "button"

SEVERITY = {"empty": 0, "supine": 1, "left": 2, "right": 2, "unknown": 3, "prone": 4}
"""Worse postures win a slot; anything not listed (a future label) counts as unknown."""
LOOK_NOW = "posture_unknown"
"""The look-now prompt (the model could not tell the posture): listed with the alarms."""
ALARMS = ("prone_alarm", "apnea_alarm", LOOK_NOW)
ANY_SOUNDING = "*"
"""A ``remote_ack`` entry's value when the sender did not say which alarm (the cloud's
record): it is put beside every alarm of the cot still sounding at its time."""

POSTURES = {
    "ja": {"supine": "仰向け", "prone": "うつぶせ", "left": "左向き", "right": "右向き",
           "empty": "不在", "unknown": "不明"},
    "en": {"supine": "on back", "prone": "FACE DOWN", "left": "left side", "right": "right side",
           "empty": "empty", "unknown": "unknown"},
}
SHORT = {
    "ja": {"supine": "仰", "prone": "う", "left": "左", "right": "右", "empty": "空",
           "unknown": "?", "prone_alarm": "!", "apnea_alarm": "無", "by_hand": "手",
           "missed": "欠", LOOK_NOW: "見"},
    "en": {"supine": "B", "prone": "F", "left": "L", "right": "R", "empty": "E",
           "unknown": "?", "prone_alarm": "!", "apnea_alarm": "A", "by_hand": "H",
           "missed": "M", LOOK_NOW: "?!"},
}
TEXT = {
    "ja": {
        "title": "午睡チェック表", "cot": "ベッド", "child": "園児", "start": "入眠",
        "wake": "起床", "facility": "施設", "class": "クラス", "director": "施設長",
        "keeper": "担当", "staff": "職員（対応・確認）", "temp": "室温 ℃", "humidity": "湿度 %",
        "prone_alarm": "うつぶせ寝警報", "apnea_alarm": "無呼吸警報", "by_hand": "手で確認",
        LOOK_NOW: "見てください（姿勢不明）",
        "missed": "欠測", "alarms": "警報と対応", "kind": "警報", "raised": "発生",
        "posture": "姿勢", "ack": "確認（時刻・対応者）", "cleared": "解除", "still": "鳴動中",
        "no_alarms": "警報なし", "faults": "手で確認した時間（マットが読めなかった）",
        "from": "開始", "to": "終了", "why": "理由", "button": "ボタン", "later": "秒後",
        "page": "頁", "unknown_time": "記録なし", "hour": "時",
        "legend": "記号: 仰=仰向け 左=左向き 右=右向き う=うつぶせ ?=不明 "
                  "!=うつぶせ寝警報 無=無呼吸警報 見=見てください（姿勢が判断できない） "
                  "手=手で確認（マットが読めない） "
                  "欠=欠測（午睡中なのに記録なし）",
        "note": "5分ごとに自動記録。赤は警報、橙は見てください、薄赤はうつぶせ・不明。"
                "各欄はその5分間で最も"
                "危険な状態を示します。欠測・手で確認の欄は職員が確認し、記入してください。",
        "remote": "遠隔確認 (remote) by {by} at {at}",
        "remote_only": "遠隔確認（鳴っている警報がなかったとき）",
        "remote_when": "受信", "remote_by": "確認者",
        "faults_why": {"all_zero": "マットの全センサーが0（電源・配線）",
                       "no_answer": "マットから応答なし（配線・電源）",
                       "garbage": "マットの信号が乱れている", "bus_error": "シリアル通信の異常"},
    },
    "en": {
        "title": "Nap check sheet", "cot": "Cot", "child": "Child", "start": "Asleep",
        "wake": "Awake", "facility": "Facility", "class": "Class", "director": "Director",
        "keeper": "In charge", "staff": "Staff (responded / checked)", "temp": "Room °C",
        "humidity": "Humidity %", "prone_alarm": "face-down alarm",
        "apnea_alarm": "no-motion alarm", "by_hand": "check by hand", "missed": "missed",
        LOOK_NOW: "look now (posture unknown)",
        "alarms": "Alarms and responses", "kind": "Alarm", "raised": "Raised",
        "posture": "Posture", "ack": "Acknowledged (time, by)", "cleared": "Cleared",
        "still": "still sounding", "no_alarms": "No alarms",
        "faults": "Checked by hand (the mat could not be read)", "from": "From", "to": "To",
        "why": "Why", "button": "button", "later": "s later", "page": "page",
        "unknown_time": "not recorded", "hour": ":00",
        "legend": "Marks: B=on back L/R=on the side F=FACE DOWN ?=unknown !=face-down alarm "
                  "A=no-motion alarm ?!=look now (posture cannot be told) "
                  "H=check by hand (mat unreadable) M=missed (asleep, no record)",
        "note": "Recorded every 5 minutes. Red: alarm; orange: look now; pink: face down or "
                "unknown. Each cell "
                "shows the worst state of its 5 minutes. Staff check and fill in every missed "
                "or by-hand cell.",
        "remote": "remote acknowledgement (遠隔確認) by {by} at {at}",
        "remote_only": "Remote acknowledgements with no alarm sounding",
        "remote_when": "Received", "remote_by": "By",
        "faults_why": {"all_zero": "every mat cell reads zero (power, cable)",
                       "no_answer": "the mat does not answer (cable, power)",
                       "garbage": "garbled mat signal", "bus_error": "serial line error"},
    },
}


@dataclass
class Cell:
    """One cot's five minutes."""

    posture: str | None = None
    """The worst posture seen in the slot (checks and alarms); None: no record."""
    alarms: tuple[str, ...] = ()
    """Alarm kinds raised in the slot, in order."""
    missed: bool = False
    """The child was asleep but nothing was recorded: a visible gap."""
    by_hand: bool = False
    """The mat could not be read: staff check by hand."""


@dataclass(frozen=True)
class Nap:
    start: float
    wake: float | None
    """None: no wake recorded (still asleep, or the record stops)."""


@dataclass
class AlarmRecord:
    kind: str
    posture: str
    raised: float
    acks: tuple[tuple[float, str], ...] = ()
    """(time, who) of each acknowledgement while it sounded; who: ``button`` or initials."""
    cleared: float | None = None
    remote_acks: tuple[tuple[float, str], ...] = ()
    """(time, who) of each remote acknowledgement (the console): seen, on the way.  Never
    an on-site acknowledgement: the alarm still needs one (and the child turned) to end."""


@dataclass
class CotRow:
    cot: str
    child: str
    cells: dict[str, Cell] = field(default_factory=dict)
    naps: list[Nap] = field(default_factory=list)
    alarms: list[AlarmRecord] = field(default_factory=list)
    by_hand: list[tuple[float, float | None, str]] = field(default_factory=list)
    """(from, to or None, the mat's fault)."""
    remote_only: list[tuple[float, str]] = field(default_factory=list)
    """(time, who) of remote acknowledgements that found no alarm sounding on the cot."""


@dataclass
class Sheet:
    date: dt.date
    slots: list[str]
    rows: list[CotRow]
    staff: dict[str, tuple[str, ...]]
    climate: dict[str, tuple[float | None, float | None]]
    facility: str = ""
    class_name: str = ""
    slot_min: int = SLOT_MIN


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _label(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _worse(a: str | None, b: str) -> str:
    if a is None:
        return b
    return b if SEVERITY.get(b, 3) > SEVERITY.get(a, 3) else a


def build_sheet(
    entries: Iterable[NapEntry],
    children: dict[str, str],
    *,
    date: dt.date,
    period: tuple[str, str] | list[str] | None = None,
    slot_min: int = SLOT_MIN,
    facility: str = "",
    class_name: str = "",
) -> Sheet:
    """The sheet of one day from its entries; ``children``: cot -> child's name (may be "")."""
    day0 = dt.datetime.combine(date, dt.time(), JST).timestamp()
    step = slot_min * 60
    items = sorted(entries, key=lambda x: x.t)

    def index(t: float) -> int:
        return int((t - day0) // step)

    # Which slots: the period, widened to every entry of the day.
    marks = [index(x.t) for x in items]
    if period:
        marks += [_minutes(period[0]) // slot_min, _minutes(period[1]) // slot_min]
    first, last = (min(marks), max(marks)) if marks else (0, -1)
    first, last = max(first, 0), min(last, 24 * 60 // slot_min - 1)
    slots = [_label(i * slot_min) for i in range(first, last + 1)]
    end_of_sheet = day0 + (last + 1) * step

    cots = list(children) + sorted({x.cot for x in items if x.cot} - set(children))
    rows = {c: CotRow(c, children.get(c, ""), {s: Cell() for s in slots}) for c in cots}
    staff: dict[str, list[str]] = {}
    climate: dict[str, tuple[float | None, float | None]] = {}
    open_nap: dict[str, float] = {}
    last_seen: dict[str, float] = {}
    faults: dict[str, tuple[float, str]] = {}

    def slot(t: float) -> str:
        return _label(max(first, min(last, index(t))) * slot_min)

    for x in items:
        if x.by and x.by != BUTTON and x.kind in ("ack", "staff_check"):
            who = staff.setdefault(slot(x.t), [])
            if x.by not in who:
                who.append(x.by)
        if x.kind == "climate":
            temp, _, hum = x.value.partition("/")
            climate[slot(x.t)] = (_number(temp), _number(hum))
            continue
        row = rows.get(x.cot)
        if row is None:
            continue
        last_seen[x.cot] = x.t
        cell = row.cells[slot(x.t)]
        if x.kind == "posture_check":
            cell.posture = _worse(cell.posture, x.value)
        elif x.kind in ALARMS:
            cell.posture = _worse(cell.posture, x.value)
            if x.kind not in cell.alarms:
                cell.alarms = (*cell.alarms, x.kind)
            row.alarms.append(AlarmRecord(x.kind, x.value, x.t))
        elif x.kind == "ack":
            sounding = [a for a in row.alarms if a.kind == x.value and a.cleared is None]
            if sounding:
                sounding[-1].acks = (*sounding[-1].acks, (x.t, x.by))
        elif x.kind == "alarm_cleared":
            sounding = [a for a in row.alarms if a.kind == x.value and a.cleared is None]
            if sounding:
                sounding[0].cleared = x.t
        elif x.kind == REMOTE_ACK:
            _remote_ack(row, x)
        elif x.kind == f"{LOOK_NOW}_end":
            for a in row.alarms:
                if a.kind == LOOK_NOW and a.cleared is None:
                    a.cleared = x.t
        elif x.kind == "nap_start":
            open_nap.setdefault(x.cot, x.t)  # a restart does not start the nap again
        elif x.kind == "wake":
            if x.cot in open_nap:
                row.naps.append(Nap(open_nap.pop(x.cot), x.t))
        elif x.kind == "by_hand":
            faults.setdefault(x.cot, (x.t, x.value))
        elif x.kind == "by_hand_end":
            if x.cot in faults:
                since, why = faults.pop(x.cot)
                row.by_hand.append((since, x.t, why))
    for cot, since in open_nap.items():
        rows[cot].naps.append(Nap(since, None))
    for cot, (since, why) in faults.items():
        rows[cot].by_hand.append((since, None, why))

    for row in rows.values():
        _mark_look_now(row, slots, day0, step, last_seen.get(row.cot))
        for since, until, _ in row.by_hand:
            stop = until if until is not None else end_of_sheet
            for s in slots:
                lo = day0 + _minutes(s) * 60
                if since < lo + step and stop > lo:
                    row.cells[s].by_hand = True
        for nap in row.naps:
            stop = nap.wake if nap.wake is not None else last_seen.get(row.cot, nap.start)
            for s in slots:
                lo = day0 + _minutes(s) * 60
                overlap = min(stop, lo + step) - max(nap.start, lo)
                cell = row.cells[s]
                if overlap >= MIN_NAP_OVERLAP_S and cell.posture is None and not cell.by_hand:
                    cell.missed = True
        row.naps.sort(key=lambda n: n.start)
    return Sheet(
        date=date,
        slots=slots,
        rows=list(rows.values()),
        staff={k: tuple(v) for k, v in staff.items()},
        climate=climate,
        facility=facility,
        class_name=class_name,
        slot_min=slot_min,
    )


def _remote_ack(row: CotRow, x: NapEntry) -> None:
    """Beside the latest sounding alarm of each kind it names (``*``: every kind still
    sounding); with none sounding, on the cot's own list: never dropped."""
    if x.value == ANY_SOUNDING:
        kinds = list(dict.fromkeys(a.kind for a in row.alarms if a.cleared is None))
    else:
        kinds = [k for k in x.value.split(",") if k]
    placed = False
    for kind in kinds:
        sounding = [a for a in row.alarms if a.kind == kind and a.cleared is None]
        if sounding:
            sounding[-1].remote_acks = (*sounding[-1].remote_acks, (x.t, x.by))
            placed = True
    if not placed:
        row.remote_only.append((x.t, x.by))


def _mark_look_now(
    row: CotRow, slots: list[str], day0: float, step: float, last_seen: float | None
) -> None:
    """Every slot a look-now prompt covered shows it, and ``?``: never a safe posture.

    An open prompt ends at the nap's end, else at the cot's last entry."""
    for a in row.alarms:
        if a.kind != LOOK_NOW:
            continue
        stop = a.cleared
        if stop is None:
            wakes = [n.wake for n in row.naps if n.wake is not None and n.wake >= a.raised]
            stop = min(wakes) if wakes else max(last_seen or a.raised, a.raised)
        for s in slots:
            lo = day0 + _minutes(s) * 60
            if a.raised < lo + step and stop >= lo:
                cell = row.cells[s]
                cell.posture = _worse(cell.posture, "unknown")
                if LOOK_NOW not in cell.alarms:
                    cell.alarms = (*cell.alarms, LOOK_NOW)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def cell_text(cell: Cell, language: str = "ja", *, short: bool = False) -> str:
    """What a cell says: the posture, then every alarm beside it, or the gap's flag."""
    text, marks = TEXT[language], SHORT[language]
    parts: list[str] = []
    if cell.posture is not None:
        parts.append(marks.get(cell.posture, "?") if short else POSTURES[language].get(
            cell.posture, cell.posture))
    parts += [marks[a] if short else str(text[a]) for a in cell.alarms]
    if cell.by_hand:
        parts.append(marks["by_hand"] if short else str(text["by_hand"]))
    elif cell.missed and not parts:
        parts.append(marks["missed"] if short else str(text["missed"]))
    return ("" if short else " ").join(parts)


def _clock(t: float | None, seconds: bool = False) -> str:
    if t is None:
        return ""
    local = dt.datetime.fromtimestamp(t, JST)
    return local.strftime("%H:%M:%S" if seconds else "%H:%M")


def _who(by: str, language: str) -> str:
    return str(TEXT[language]["button"]) if by == BUTTON else by


def _onsite_acks(alarm: AlarmRecord, language: str) -> list[str]:
    later = TEXT[language]["later"]
    return [
        f"{_clock(t, True)} {_who(by, language)}（{round(t - alarm.raised)}{later}）"
        if language == "ja" else f"{_clock(t, True)} {_who(by, language)} "
        f"({round(t - alarm.raised)}{later})"
        for t, by in alarm.acks
    ]


def _acks_text(alarm: AlarmRecord, language: str) -> str:
    """The on-site acknowledgements, then the remote ones (each marked 遠隔確認)."""
    return "; ".join([*_onsite_acks(alarm, language),
                      *(remote_text(t, by, language) for t, by in alarm.remote_acks)])


def remote_text(t: float, by: str, language: str = "ja") -> str:
    """How a remote acknowledgement reads on the sheet: ``遠隔確認 (remote) by NAME at HH:MM``."""
    return str(TEXT[language]["remote"]).format(by=by, at=_clock(t))


def _naps(row: CotRow, which: str, language: str) -> str:
    unknown = str(TEXT[language]["unknown_time"])
    if which == "start":
        return " / ".join(_clock(n.start) for n in row.naps)
    return " / ".join(_clock(n.wake) if n.wake is not None else unknown for n in row.naps)


def _naps_html(row: CotRow, which: str, language: str) -> str:
    """Start or wake times, one nap per line."""
    return "<br>".join(html.escape(t) for t in _naps(row, which, language).split(" / "))


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


def render_csv(sheet: Sheet, language: str = "ja") -> str:
    """The same facts as the page, one table after another (UTF-8 with BOM for Excel)."""
    text = TEXT[language]
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([text["title"], sheet.date.isoformat()])
    w.writerow([text["facility"], sheet.facility])
    w.writerow([text["class"], sheet.class_name])
    w.writerow([])
    w.writerow([text["cot"], text["child"], text["start"], text["wake"], *sheet.slots])
    for row in sheet.rows:
        w.writerow([row.cot, row.child, _naps(row, "start", language),
                    _naps(row, "wake", language),
                    *[cell_text(row.cells[s], language) for s in sheet.slots]])
    w.writerow([text["staff"], "", "", "",
                *[" ".join(sheet.staff.get(s, ())) for s in sheet.slots]])
    w.writerow([text["temp"], "", "", "",
                *[_fmt(sheet.climate.get(s, (None, None))[0]) for s in sheet.slots]])
    w.writerow([text["humidity"], "", "", "",
                *[_fmt(sheet.climate.get(s, (None, None))[1]) for s in sheet.slots]])
    w.writerow([])
    w.writerow([text["alarms"]])
    w.writerow([text["cot"], text["child"], text["kind"], text["raised"], text["posture"],
                text["ack"], text["cleared"]])
    for row in sheet.rows:
        for a in row.alarms:
            w.writerow([row.cot, row.child, text[a.kind], _clock(a.raised, True),
                        POSTURES[language].get(a.posture, a.posture), _acks_text(a, language),
                        _clock(a.cleared, True) if a.cleared is not None else text["still"]])
    remote = [(row, t, by) for row in sheet.rows for t, by in row.remote_only]
    if remote:
        w.writerow([])
        w.writerow([text["remote_only"]])
        w.writerow([text["cot"], text["child"], text["remote_when"], text["remote_by"]])
        for row, t, by in remote:
            w.writerow([row.cot, row.child, _clock(t, True), by])
    w.writerow([])
    w.writerow([text["faults"]])
    w.writerow([text["cot"], text["child"], text["from"], text["to"], text["why"]])
    for row in sheet.rows:
        for since, until, why in row.by_hand:
            w.writerow([row.cot, row.child, _clock(since, True), _clock(until, True),
                        _why(why, language)])
    w.writerow([])
    w.writerow([text["director"], ""])
    w.writerow([text["keeper"], ""])
    return out.getvalue()


def _why(code: str, language: str) -> str:
    reasons = TEXT[language]["faults_why"]
    assert isinstance(reasons, dict)
    return str(reasons.get(code, code))


_CSS = """
 @page { size: A4 landscape; margin: 8mm; }
 * { box-sizing: border-box; }
 html, body { margin: 0; padding: 0; }
 body { font-family: "Noto Sans CJK JP", "Noto Sans JP", sans-serif; font-size: 8pt;
        color: #000; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
 header { display: flex; justify-content: space-between; align-items: flex-start;
          margin-bottom: 1.5mm; }
 h1 { font-size: 15pt; margin: 0 0 1mm 0; }
 h2 { font-size: 9pt; margin: 2.5mm 0 1mm 0; }
 .meta td, .meta th { border: none; text-align: left; padding: 0 3mm 0 0; font-size: 9pt; }
 .meta th { font-weight: normal; color: #444; }
 .fill { display: inline-block; min-width: 14mm; border-bottom: 1px solid #000; }
 table.sign { border-collapse: collapse; }
 table.sign th { border: 1px solid #000; width: 22mm; font-size: 8pt; padding: 0.5mm; }
 table.sign td { border: 1px solid #000; height: 15mm; }
 .legend, .note { margin: 0.5mm 0; font-size: 7pt; }
 table.grid { border-collapse: collapse; table-layout: fixed; margin-top: 1mm; }
 table.grid th, table.grid td { border: 0.5px solid #333; padding: 0; text-align: center;
   overflow: hidden; white-space: nowrap; line-height: 1.15; }
 table.grid col.cot { width: 17mm; } table.grid col.child { width: 20mm; }
 table.grid col.time { width: 10mm; }
 table.grid tbody td.slot, table.grid tbody td.slot-x { height: 7.5mm; font-size: 8pt; }
 table.grid th.slot { font-size: 7pt; font-weight: normal; }
 table.grid th.hour { font-size: 7.5pt; }
 table.grid td.child, table.grid th.cot, table.grid td.time { font-size: 8pt;
   white-space: normal; overflow-wrap: anywhere; }
 tr.staff td { white-space: normal; overflow-wrap: anywhere; }
 td.slot .p { display: block; } td.slot .a { display: block; font-weight: bold; }
 td.alarm { background: #d40000; color: #fff; font-weight: bold; }
 td.prone { background: #ffd0d0; }
 td.look { background: #ff9933; color: #000; font-weight: bold; }
 td.missed { color: #000; font-weight: bold; background: repeating-linear-gradient(45deg,
   #fff, #fff 1.2mm, #bbb 1.2mm, #bbb 1.6mm); }
 td.byhand { background: #ffe680; font-weight: bold; }
 tr.staff td, tr.climate td { font-size: 6.5pt; }
 tr.staff th, tr.climate th { font-size: 7pt; font-weight: normal; text-align: right;
   padding-right: 1mm; }
 .page-head { font-size: 7.5pt; margin-top: 1mm; }
 .break { break-before: page; page-break-before: always; }
 table.list { border-collapse: collapse; font-size: 7.5pt; }
 table.list th, table.list td { border: 0.5px solid #333; padding: 0.3mm 1.5mm; text-align: left; }
 table.list td.still { color: #d40000; font-weight: bold; }
 table.list .remote { font-style: italic; }
"""


def render_html(sheet: Sheet, language: str = "ja", *, notice: str = "") -> str:
    """The printable page: A4 landscape, every column on the page.  ``notice``: one more
    line under the legend (plain text), e.g. where the sheet was rebuilt and what it
    cannot show."""
    text = TEXT[language]
    e = html.escape
    date = sheet.date
    weekday = "月火水木金土日"[date.weekday()] if language == "ja" else date.strftime("%a")
    when = (f"{date.year}年{date.month}月{date.day}日（{weekday}）" if language == "ja"
            else f"{date.isoformat()} ({weekday})")
    climate_given = any(v != (None, None) for v in sheet.climate.values())
    blank = '<span class="fill"></span>'
    head = f"""<header>
<div><h1>{e(str(text['title']))}</h1>
<table class="meta"><tr><th>{e(str(text['facility']))}</th><td>{e(sheet.facility) or blank}</td>
<th>{e(str(text['class']))}</th><td>{e(sheet.class_name) or blank}</td>
<th>{e(when)}</th></tr>
<tr><th>{e(str(text['temp']))}</th><td>{_span(sheet, 0) if climate_given else blank}</td>
<th>{e(str(text['humidity']))}</th><td>{_span(sheet, 1) if climate_given else blank}</td>
<td></td></tr>
</table></div>
<table class="sign"><tr><th>{e(str(text['director']))}</th><th>{e(str(text['keeper']))}</th></tr>
<tr><td></td><td></td></tr></table>
</header>
<p class="legend">{e(str(text['legend']))}</p>
<p class="note">{e(str(text['note']))}</p>"""
    if notice:
        head += f'\n<p class="note notice">{e(notice)}</p>'
    pages = [sheet.slots[i:i + SLOTS_PER_PAGE]
             for i in range(0, len(sheet.slots), SLOTS_PER_PAGE)] or [[]]
    grids = []
    for n, slots in enumerate(pages):
        caption = ""
        if len(pages) > 1:
            caption = (f'<p class="page-head{" break" if n else ""}">{e(str(text["title"]))} '
                       f'{e(when)} {e(sheet.facility)} {e(sheet.class_name)} — '
                       f'{n + 1}/{len(pages)} {e(str(text["page"]))}</p>')
        grids.append(caption + _grid(sheet, slots, language))
    return f"""<!doctype html>
<html lang="{language}"><head><meta charset="utf-8">
<title>{e(str(text['title']))} {date.isoformat()}</title>
<style>{_CSS}</style></head><body>
{head}
{''.join(grids)}
{_alarm_list(sheet, language)}
{_remote_list(sheet, language)}
{_fault_list(sheet, language)}
</body></html>
"""


def _span(sheet: Sheet, which: int) -> str:
    """The range of the room's temperature or humidity entered that day."""
    values = [x for v in sheet.climate.values() if (x := v[which]) is not None]
    if not values:
        return ""
    low, high = min(values), max(values)
    return _fmt(low) if low == high else f"{_fmt(low)}–{_fmt(high)}"


def _grid(sheet: Sheet, slots: list[str], language: str) -> str:
    text = TEXT[language]
    e = html.escape
    hours: list[tuple[str, int]] = []
    for s in slots:
        h = s[:2]
        if hours and hours[-1][0] == h:
            hours[-1] = (h, hours[-1][1] + 1)
        else:
            hours.append((h, 1))
    hour_row = "".join(
        f'<th class="hour" colspan="{n}">{int(h)}{e(str(text["hour"])) if n > 1 else ""}</th>'
        for h, n in hours
    )
    minute_row = "".join(f'<th class="slot" data-slot="{s}">{s[3:]}</th>' for s in slots)
    # The slot columns share what the page has left (277 mm less 57 mm), at most 8 mm each.
    width = min(8.0, SLOTS_WIDTH_MM / max(len(slots), 1))
    cols = ('<col class="cot"><col class="child"><col class="time"><col class="time">'
            + f'<col class="slot" style="width: {width:.2f}mm">' * len(slots))
    body = []
    for row in sheet.rows:
        tds = []
        for s in slots:
            cell = row.cells[s]
            cls = ["slot"]
            if set(cell.alarms) - {LOOK_NOW}:
                cls.append("alarm")
            elif cell.alarms:
                cls.append("look")
            elif cell.posture in ("prone", "unknown"):
                cls.append("prone")
            if cell.by_hand:
                cls.append("byhand")
            elif cell.missed:
                cls.append("missed")
            marks = SHORT[language]
            inner = ""
            if cell.posture is not None:
                inner += f'<span class="p">{e(marks.get(cell.posture, "?"))}</span>'
            if cell.alarms:
                inner += f'<span class="a">{e("".join(marks[a] for a in cell.alarms))}</span>'
            if cell.by_hand:
                inner += f'<span class="a">{e(marks["by_hand"])}</span>'
            elif cell.missed and not inner:
                inner = e(marks["missed"])
            title = cell_text(cell, language)
            tds.append(f'<td class="{" ".join(cls)}" title="{e(title)}">{inner}</td>')
        body.append(
            f'<tr><th class="cot">{e(row.cot)}</th><td class="child">{e(row.child)}</td>'
            f'<td class="time">{_naps_html(row, "start", language)}</td>'
            f'<td class="time">{_naps_html(row, "wake", language)}</td>{"".join(tds)}</tr>'
        )
    staff = "".join(
        f'<td class="slot-x">{"<br>".join(e(w) for w in sheet.staff.get(s, ()))}</td>'
        for s in slots
    )
    climate = "".join(
        '<td class="slot-x">{}</td>'.format(
            "<br>".join(e(_fmt(v)) for v in sheet.climate[s]) if s in sheet.climate else ""
        )
        for s in slots
    )
    return f"""<table class="grid">{cols}
<thead><tr><th class="cot-head" rowspan="2">{e(str(text['cot']))}</th>
<th rowspan="2">{e(str(text['child']))}</th><th rowspan="2">{e(str(text['start']))}</th>
<th rowspan="2">{e(str(text['wake']))}</th>{hour_row}</tr>
<tr>{minute_row}</tr></thead>
<tbody>{''.join(body)}
<tr class="staff"><th colspan="4">{e(str(text['staff']))}</th>{staff}</tr>
<tr class="climate"><th colspan="4">{e(str(text['temp']))} / {e(str(text['humidity']))}</th>
{climate}</tr>
</tbody></table>"""


def _alarm_list(sheet: Sheet, language: str) -> str:
    text = TEXT[language]
    e = html.escape
    rows = []
    for row in sheet.rows:
        for a in row.alarms:
            cleared = (f"<td>{_clock(a.cleared, True)}</td>" if a.cleared is not None
                       else f'<td class="still">{e(str(text["still"]))}</td>')
            rows.append(
                f"<tr><td>{e(row.cot)}</td><td>{e(row.child)}</td><td>{e(str(text[a.kind]))}</td>"
                f"<td>{_clock(a.raised, True)}</td>"
                f"<td>{e(POSTURES[language].get(a.posture, a.posture))}</td>"
                f"<td>{_acks_html(a, language)}</td>{cleared}</tr>"
            )
    if not rows:
        return f"<h2>{e(str(text['alarms']))}: {e(str(text['no_alarms']))}</h2>"
    return f"""<h2>{e(str(text['alarms']))}</h2>
<table class="list"><tr><th>{e(str(text['cot']))}</th><th>{e(str(text['child']))}</th>
<th>{e(str(text['kind']))}</th><th>{e(str(text['raised']))}</th>
<th>{e(str(text['posture']))}</th><th>{e(str(text['ack']))}</th>
<th>{e(str(text['cleared']))}</th></tr>{''.join(rows)}</table>"""


def _acks_html(alarm: AlarmRecord, language: str) -> str:
    """The on-site acknowledgements, then each remote one on a line of its own."""
    onsite = "; ".join(_onsite_acks(alarm, language))
    remote = [f'<span class="remote">{html.escape(remote_text(t, by, language))}</span>'
              for t, by in alarm.remote_acks]
    return "<br>".join([html.escape(onsite)] * bool(onsite) + remote)


def _remote_list(sheet: Sheet, language: str) -> str:
    """Remote acknowledgements that found no alarm sounding on their cot."""
    text = TEXT[language]
    e = html.escape
    rows = [
        f'<tr><td>{e(row.cot)}</td><td>{e(row.child)}</td><td>{_clock(t, True)}</td>'
        f"<td>{e(remote_text(t, by, language))}</td></tr>"
        for row in sheet.rows
        for t, by in row.remote_only
    ]
    if not rows:
        return ""
    return f"""<h2 class="remote-only">{e(str(text['remote_only']))}</h2>
<table class="list remote-only"><tr><th>{e(str(text['cot']))}</th>
<th>{e(str(text['child']))}</th><th>{e(str(text['remote_when']))}</th>
<th>{e(str(text['remote_by']))}</th></tr>{''.join(rows)}</table>"""


def _fault_list(sheet: Sheet, language: str) -> str:
    text = TEXT[language]
    e = html.escape
    rows = [
        f"<tr><td>{e(row.cot)}</td><td>{e(row.child)}</td><td>{_clock(since, True)}</td>"
        f"<td>{_clock(until, True)}</td><td>{e(_why(why, language))}</td></tr>"
        for row in sheet.rows
        for since, until, why in row.by_hand
    ]
    if not rows:
        return ""
    return f"""<h2>{e(str(text['faults']))}</h2>
<table class="list"><tr><th>{e(str(text['cot']))}</th><th>{e(str(text['child']))}</th>
<th>{e(str(text['from']))}</th><th>{e(str(text['to']))}</th><th>{e(str(text['why']))}</th>
</tr>{''.join(rows)}</table>"""


def write_report(
    entries: list[NapEntry],
    date: dt.date,
    children: dict[str, str],
    out_dir: Path,
    language: str = "ja",
    *,
    period: tuple[str, str] | list[str] | None = None,
    facility: str = "",
    class_name: str = "",
) -> tuple[Path, Path]:
    sheet = build_sheet(entries, children, date=date, period=period, facility=facility,
                        class_name=class_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"naps-{date.isoformat()}.html"
    csv_path = out_dir / f"naps-{date.isoformat()}.csv"
    html_path.write_text(render_html(sheet, language), encoding="utf-8")
    csv_path.write_text(render_csv(sheet, language), encoding="utf-8-sig")
    return html_path, csv_path
