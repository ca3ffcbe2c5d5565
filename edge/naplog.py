"""The nap check sheet's local record: posture checks and alarms per cot, on the device.

The paper sheet (午睡チェック表) has a row per child and a column per check
time.  Events that leave the device carry only cot labels; this record stays
on the device, so the report printed in the nursery may show children's names
(from the configuration), and nothing else ever does.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nap_log (
    t      REAL NOT NULL,      -- unix time
    cot    TEXT NOT NULL,
    kind   TEXT NOT NULL,      -- posture_check, prone_alarm, apnea_alarm, alarm_cleared
    value  TEXT NOT NULL       -- the posture, or the alarm kind cleared
);
CREATE INDEX IF NOT EXISTS nap_log_by_time ON nap_log (t);
"""


@dataclass(frozen=True)
class NapEntry:
    t: float
    cot: str
    kind: str
    value: str


class NapLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def add(self, cot: str, kind: str, value: str, t: float) -> None:
        with self._lock:
            self._conn.execute("INSERT INTO nap_log VALUES (?, ?, ?, ?)", (t, cot, kind, value))

    def day(self, date: dt.date, tz: dt.tzinfo) -> list[NapEntry]:
        start = dt.datetime.combine(date, dt.time(), tz).timestamp()
        with self._lock:
            rows = self._conn.execute(
                "SELECT t, cot, kind, value FROM nap_log WHERE t >= ? AND t < ? ORDER BY t",
                (start, start + 86400),
            ).fetchall()
        return [NapEntry(*r) for r in rows]

    def close(self) -> None:
        self._conn.close()
