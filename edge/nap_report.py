"""``edge report naps``: the day's nap check sheet, as it is kept on paper today.

One row per cot, one column per check time (five-minute steps), posture marks
(仰向け / うつぶせ / 横向き), alarms highlighted; a printable HTML page and a CSV,
Japanese by default.  Built from the device's local record (``edge.naplog``):
the only place where a child's name (``child`` in the mat's configuration)
may appear.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from pathlib import Path

from edge.naplog import NapEntry

JST = dt.timezone(dt.timedelta(hours=9), "JST")

MARKS = {
    "ja": {"supine": "仰向け", "prone": "うつぶせ", "left": "横向き", "right": "横向き",
           "empty": "不在", "unknown": "不明"},
    "en": {"supine": "on back", "prone": "FACE DOWN", "left": "side", "right": "side",
           "empty": "empty", "unknown": "unknown"},
}
TEXT = {
    "ja": {"title": "午睡チェック表", "cot": "ベッド", "child": "園児", "alarm": "警報",
           "prone_alarm": "うつぶせ寝警報", "apnea_alarm": "無呼吸警報", "note":
           "自動記録（5分ごと）。赤は警報。うつぶせ・不明の欄は職員が必ず確認してください。"},
    "en": {"title": "Nap check sheet", "cot": "Cot", "child": "Child", "alarm": "Alarm",
           "prone_alarm": "face-down alarm", "apnea_alarm": "no-motion alarm", "note":
           "Recorded automatically every 5 minutes. Red: alarm. Staff must check every "
           "face-down or unknown entry."},
}


def _slot(t: float) -> str:
    local = dt.datetime.fromtimestamp(t, JST)
    minute = local.minute - local.minute % 5
    return f"{local.hour:02d}:{minute:02d}"


def build_sheet(
    entries: list[NapEntry], children: dict[str, str], language: str = "ja"
) -> tuple[list[str], dict[str, dict[str, tuple[str, bool]]]]:
    """(check times, {cot: {time: (mark, alarm)}})."""
    marks = MARKS[language]
    text = TEXT[language]
    cells: dict[str, dict[str, tuple[str, bool]]] = {c: {} for c in children}
    slots: set[str] = set()
    for e in entries:
        slot = _slot(e.t)
        row = cells.setdefault(e.cot, {})
        if e.kind == "posture_check":
            slots.add(slot)
            old = row.get(slot)
            row[slot] = (marks.get(e.value, e.value), old[1] if old else False)
        elif e.kind in ("prone_alarm", "apnea_alarm"):
            slots.add(slot)
            old = row.get(slot)
            label = text[e.kind]
            row[slot] = (f"{old[0]} {label}" if old else label, True)
    return sorted(slots), cells


def render_csv(times: list[str], cells: dict[str, dict[str, tuple[str, bool]]],
               children: dict[str, str], language: str = "ja") -> str:
    text = TEXT[language]
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([text["cot"], text["child"], *times])
    for cot in sorted(cells):
        row = cells[cot]
        w.writerow([cot, children.get(cot, ""),
                    *[(row[t][0] + (" !" if row[t][1] else "")) if t in row else "" for t in times]])
    return out.getvalue()


def render_html(date: dt.date, times: list[str], cells: dict[str, dict[str, tuple[str, bool]]],
                children: dict[str, str], language: str = "ja") -> str:
    text = TEXT[language]
    e = html.escape
    head = "".join(f"<th>{e(t)}</th>" for t in times)
    rows = []
    for cot in sorted(cells):
        tds = []
        for t in times:
            mark, alarm = cells[cot].get(t, ("", False))
            cls = ' class="alarm"' if alarm else (' class="prone"' if mark in (
                MARKS[language]["prone"], MARKS[language]["unknown"]) else "")
            tds.append(f"<td{cls}>{e(mark)}</td>")
        rows.append(f"<tr><th>{e(cot)}</th><td>{e(children.get(cot, ''))}</td>{''.join(tds)}</tr>")
    return f"""<!doctype html>
<html lang="{language}"><head><meta charset="utf-8">
<title>{e(text['title'])} {date.isoformat()}</title>
<style>
 body {{ font-family: sans-serif; }}
 table {{ border-collapse: collapse; font-size: 11px; }}
 th, td {{ border: 1px solid #444; padding: 2px 4px; text-align: center; white-space: nowrap; }}
 td.alarm {{ background: #f44; color: #fff; font-weight: bold; }}
 td.prone {{ background: #fdd; }}
 @page {{ size: A4 landscape; margin: 10mm; }}
</style></head><body>
<h1>{e(text['title'])} — {date.isoformat()}</h1>
<p>{e(text['note'])}</p>
<table><tr><th>{e(text['cot'])}</th><th>{e(text['child'])}</th>{head}</tr>
{''.join(rows)}
</table></body></html>
"""


def write_report(entries: list[NapEntry], date: dt.date, children: dict[str, str],
                 out_dir: Path, language: str = "ja") -> tuple[Path, Path]:
    times, cells = build_sheet(entries, children, language)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"naps-{date.isoformat()}.html"
    csv_path = out_dir / f"naps-{date.isoformat()}.csv"
    html_path.write_text(render_html(date, times, cells, children, language), encoding="utf-8")
    csv_path.write_text(render_csv(times, cells, children, language), encoding="utf-8-sig")
    return html_path, csv_path
