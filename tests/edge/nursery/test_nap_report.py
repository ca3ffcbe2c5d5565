"""`edge report naps`: the day's sheet from the nap log in the device's state directory."""

# ruff: noqa: RUF001  (Japanese text: full-width parentheses are right there)

from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

from edge.nursery.log import NapLog
from edge.nursery.sheet import JST
from edge.sim import site_text


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
        if tag == "td":
            self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.cells.append((self._cls, data))


def test_report_naps_writes_the_sheet(tmp_path: Path) -> None:
    log_path = tmp_path / "state" / "naps.sqlite3"
    log = NapLog(log_path)
    log.add("ひよこ-1", "nap_start", "", at(12, 30, 5))
    log.add("ひよこ-1", "posture_check", "supine", at(12, 30, 5))
    log.add("ひよこ-1", "posture_check", "left", at(12, 35, 4))
    log.add("ひよこ-1", "prone_alarm", "prone", at(12, 38, 30))
    log.add("ひよこ-1", "posture_check", "prone", at(12, 40, 2))
    log.add("ひよこ-2", "posture_check", "supine", at(12, 30, 9))
    log.add("ひよこ-2", "posture_check", "supine", at(12, 30, 9) - 86400)  # yesterday
    log.close()
    config = tmp_path / "device.toml"
    config.write_text(
        site_text.device(tmp_path / "state" / "outbox.sqlite3", device_id="nursery-01",
                         site="nursery", latitude=35.86, longitude=139.65)
        + site_text.nap_room(("/dev/ttyUSB0", "ひよこ-1"), ("/dev/ttyUSB1", "ひよこ-2"),
                             children={"ひよこ-1": "さくら"})
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "edge", "report", "naps", "-c", str(config), "--date",
         "2026-11-24", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO((tmp_path / "out" / "naps-2026-11-24.csv")
                                       .read_text(encoding="utf-8-sig"))))
    grid = rows.index(["ベッド", "園児", "入眠", "起床", "12:30", "12:35", "12:40"])
    assert rows[grid + 1] == ["ひよこ-1", "さくら", "12:30", "記録なし", "仰向け",
                              "うつぶせ うつぶせ寝警報", "うつぶせ"]
    assert rows[grid + 2] == ["ひよこ-2", "", "", "", "仰向け", "", ""]
    alarms = rows.index(["ベッド", "園児", "警報", "発生", "姿勢", "確認（時刻・対応者）", "解除"])
    assert rows[alarms + 1] == ["ひよこ-1", "さくら", "うつぶせ寝警報", "12:38:30", "うつぶせ",
                                "", "鳴動中"]
    page = (tmp_path / "out" / "naps-2026-11-24.html").read_text(encoding="utf-8")
    cells = Cells()
    cells.feed(page)
    assert ("slot alarm", "う") in cells.cells and ("slot alarm", "!") in cells.cells
    assert ("slot prone", "う") in cells.cells
    assert "午睡チェック表" in page and "2026年11月24日（火）" in page


def test_report_refuses_a_device_without_naps(tmp_path: Path) -> None:
    from tests.edge.conftest import EXAMPLE

    result = subprocess.run(
        [sys.executable, "-m", "edge", "report", "naps", "-c", str(EXAMPLE),
         "--date", "2026-11-24"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "no nap rule" in result.stderr


def _device(tmp_path: Path) -> Path:
    config = tmp_path / "device.toml"
    config.write_text(
        site_text.device(tmp_path / "state" / "outbox.sqlite3", device_id="nursery-01",
                         site="nursery", latitude=35.86, longitude=139.65)
        + site_text.nap_room(("/dev/ttyUSB0", "ひよこ-1"), rule_extra='staff = ["YT"]\n')
    )  # fmt: skip
    return config


def _edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True,
                          timeout=60)


def test_room_climate_entered_by_hand_is_on_the_sheet(tmp_path: Path) -> None:
    config = _device(tmp_path)
    bad = _edge("nap", "climate", "-c", str(config), "--humidity", "140")
    assert bad.returncode == 2 and "--humidity 140: expected 0 to 100" in bad.stderr
    ok = _edge("nap", "climate", "-c", str(config), "--temp", "22.5", "--humidity", "48",
               "--by", "YT")
    assert ok.returncode == 0, ok.stderr
    today = dt.datetime.now(JST).date().isoformat()
    report = _edge("report", "naps", "-c", str(config), "--date", today, "--out",
                   str(tmp_path / "out"))
    assert report.returncode == 0, report.stderr
    rows = list(csv.reader(io.StringIO((tmp_path / "out" / f"naps-{today}.csv")
                                       .read_text(encoding="utf-8-sig"))))
    temp = next(r for r in rows if r and r[0] == "室温 ℃")
    hum = next(r for r in rows if r and r[0] == "湿度 %")
    assert "22.5" in temp and "48" in hum


def test_an_ack_nobody_takes_is_withdrawn_never_applied_later(tmp_path: Path) -> None:
    config = _device(tmp_path)
    result = _edge("nap", "ack", "-c", str(config), "--by", "YT", "--wait", "0.5")
    assert result.returncode == 1 and "withdrawn" in result.stderr
    log = NapLog(tmp_path / "state" / "naps.sqlite3")
    try:
        assert log.take_requests("naps", time.time()) == []  # a daemon starting now gets none
    finally:
        log.close()
