"""The nap check sheet: one row per cot, a column per check time, alarms highlighted."""

from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from edge.nap_report import JST
from edge.naplog import NapLog


def at(hour: int, minute: int, second: int = 0) -> float:
    return dt.datetime(2026, 11, 24, hour, minute, second, tzinfo=JST).timestamp()


class Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str]] = []
        self._cls = ""
        self._in = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "td":
            self._in, self._cls = True, dict(attrs).get("class") or ""

    def handle_endtag(self, tag: str) -> None:
        self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.cells.append((self._cls, data))


def test_report_naps_writes_the_sheet(tmp_path: Path) -> None:
    log_path = tmp_path / "naps.sqlite3"
    log = NapLog(log_path)
    log.add("ひよこ-1", "posture_check", "supine", at(12, 30, 5))
    log.add("ひよこ-1", "posture_check", "left", at(12, 35, 4))
    log.add("ひよこ-1", "prone_alarm", "prone", at(12, 38, 30))
    log.add("ひよこ-1", "posture_check", "prone", at(12, 40, 2))
    log.add("ひよこ-2", "posture_check", "supine", at(12, 30, 9))
    log.add("ひよこ-2", "posture_check", "supine", at(12, 30, 9) - 86400)  # yesterday
    log.close()
    config = tmp_path / "device.toml"
    config.write_text(f"""
[device]
id = "nursery-01"
site = "nursery"
latitude = 35.86
longitude = 139.65
[uplink]
host = "127.0.0.1"
[sensors.mat_1]
type = "mat"
port = "/dev/ttyUSB0"
cot = "ひよこ-1"
child = "さくら"
[sensors.mat_2]
type = "mat"
port = "/dev/ttyUSB1"
cot = "ひよこ-2"
[actuators.buzzer]
type = "buzzer"
pin = 12
[rules.naps]
type = "nap"
mats = ["mat_1", "mat_2"]
buzzer = "buzzer"
ack_pin = 26
log_path = "{log_path}"
""")
    result = subprocess.run(
        [sys.executable, "-m", "edge", "report", "naps", "-c", str(config), "--date",
         "2026-11-24", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO((tmp_path / "out" / "naps-2026-11-24.csv")
                                       .read_text(encoding="utf-8-sig"))))
    assert rows[0] == ["ベッド", "園児", "12:30", "12:35", "12:40"]
    assert rows[1] == ["ひよこ-1", "さくら", "仰向け", "横向き うつぶせ寝警報 !", "うつぶせ"]
    assert rows[2] == ["ひよこ-2", "", "仰向け", "", ""]
    page = (tmp_path / "out" / "naps-2026-11-24.html").read_text(encoding="utf-8")
    cells = Cells()
    cells.feed(page)
    assert ("alarm", "横向き うつぶせ寝警報") in cells.cells
    assert ("prone", "うつぶせ") in cells.cells
    assert "午睡チェック表 — 2026-11-24" in page


def test_report_refuses_a_device_without_naps(tmp_path: Path) -> None:
    from tests.edge.conftest import EXAMPLE

    result = subprocess.run(
        [sys.executable, "-m", "edge", "report", "naps", "-c", str(EXAMPLE), "--date", "2026-11-24"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "no nap rule" in result.stderr
