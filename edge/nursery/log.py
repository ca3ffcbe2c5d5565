"""The nap check sheet's local record: checks, alarms, acknowledgements per cot, on the device.

The paper sheet (午睡チェック表) has a row per child and a column per check
time.  Events that leave the device carry only cot labels; this record stays
on the device, so the report printed in the nursery may show children's names
(from the configuration), and nothing else ever does.

It lives in the device's state directory (beside the outbox) unless the nap
rule's ``log_path`` says otherwise, so two daemons (two bench runs, a test and
the demo) never write into one file and ``edge report naps`` never mixes them.

Writes never touch the disk on the caller's thread: :meth:`NapLog.add` queues
the entry and returns; one writer thread commits what has queued (a group
commit).  :meth:`NapLog.close` writes everything queued before it returns, so
a clean stop loses nothing.

Entry kinds (``value`` / ``by``):

* ``posture_check``: the posture / -
* ``prone_alarm``, ``apnea_alarm``: the posture when it went off / -
* ``posture_unknown``: ``unknown`` / - ("look now": the model could not tell an occupied
  cot's posture for ``unknown_prompt_s``)
* ``posture_unknown_end``: the posture the model answers again with (``empty``: the child
  was taken out; ``start``: the daemon started, whatever was open ends) / -
* ``ack``: the alarm kind acknowledged (or ``posture_unknown``: someone looked) / who
  (``button`` or staff initials)
* ``alarm_cleared``: the alarm kind / who acknowledged it
* ``nap_start``, ``wake``: - / - (the cot became occupied / empty)
* ``by_hand``, ``by_hand_end``: the mat's fault / - (the cot must be checked by hand)
* ``staff_check``: - / who (a staff member's round with no alarm; ``cot`` empty)
* ``climate``: ``"22.5/48"`` room temperature (°C) / humidity (%%); ``cot`` empty
* ``remote_ack``: the alarm kinds it was seen for, comma-separated (``prone_alarm``,
  ``apnea_alarm``, ``posture_unknown``), or ``""`` when none of the cot's alarms was
  sounding / who (the console user's name).  A person acknowledged the cot's alarm in
  the cloud console (``cmd/nap_ack``): they saw it and are on the way.  It never
  silences the buzzer nor counts as the on-site acknowledgement an alarm needs to end,
  and its name is not a staff member's initials (it is not in the staff row)

The acknowledge requests of ``edge nap ack`` (another process) wait in the
``ack_requests`` table until the daemon takes them and writes the outcome.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge.config import Config, NapRuleConfig

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nap_log (
    t      REAL NOT NULL,      -- unix time
    cot    TEXT NOT NULL,
    kind   TEXT NOT NULL,
    value  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nap_log_by_time ON nap_log (t);
CREATE TABLE IF NOT EXISTS ack_requests (
    id       INTEGER PRIMARY KEY,
    t        REAL NOT NULL,     -- unix time the request was made
    rule     TEXT NOT NULL,
    by       TEXT NOT NULL,
    state    TEXT NOT NULL DEFAULT 'new',  -- new, taken, expired
    outcome  TEXT NOT NULL DEFAULT ''
);
"""
BUSY_TIMEOUT_S = 10.0
STATE_FILE = "naps.sqlite3"
COMMIT_TRIES = 30
REMOTE_ACK = "remote_ack"
"""The entry kind of a remote acknowledgement (``cmd/nap_ack`` from the console)."""
REQUEST_MAX_AGE_S = 30.0
"""An ``edge nap ack`` older than this when the daemon sees it is dropped, never applied:
an acknowledgement must not silence an alarm that began after the staff member left."""


@dataclass(frozen=True)
class NapEntry:
    t: float
    cot: str
    kind: str
    value: str
    by: str = ""


def nap_log_path(config: Config, rule: NapRuleConfig) -> Path:
    """The rule's nap log: ``log_path``, relative to the device's state directory (the
    outbox's folder); empty: ``naps.sqlite3`` there."""
    state_dir = Path(config.outbox.path).parent
    return state_dir / (rule.log_path or STATE_FILE)


_STOP = object()


class NapLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(nap_log)")}
        if "by" not in columns:  # a log written before acknowledgements named who
            self._conn.execute("ALTER TABLE nap_log ADD COLUMN by TEXT NOT NULL DEFAULT ''")
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pending = 0
        self._drained = threading.Condition()
        self._closed = False
        self.lost = 0
        """Entries that could not be written (the disk kept refusing); logged as errors."""
        self._writer = threading.Thread(target=self._write_loop, name="nap-log writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S
        )
        return conn

    # -- writing (any thread; never waits for the disk) ------------------------------------

    def add(self, cot: str, kind: str, value: str, t: float, by: str = "") -> None:
        """Queue one entry; the writer thread commits it."""
        if self._closed:
            raise RuntimeError(f"nap log {self.path} is closed")
        with self._drained:
            self._pending += 1
        self._queue.put((t, cot, kind, value, by))

    def _write_loop(self) -> None:
        conn = self._connect()
        try:
            while True:
                item = self._queue.get()
                batch = []
                stop = item is _STOP
                if not stop:
                    batch.append(item)
                while True:  # group commit: everything queued meanwhile
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop = True
                    else:
                        batch.append(more)
                if batch:
                    self._commit(conn, batch)
                    with self._drained:
                        self._pending -= len(batch)
                        self._drained.notify_all()
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[object]) -> None:
        for attempt in range(COMMIT_TRIES):
            try:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(
                        "INSERT INTO nap_log (t, cot, kind, value, by) VALUES (?, ?, ?, ?, ?)",
                        batch,  # type: ignore[arg-type]
                    )
                return
            except sqlite3.OperationalError as exc:
                # Locked past the busy timeout, or a full disk: keep the entries and retry
                # (a sheet missing an alarm is worse than a late one).
                log.error("nap log %s: %s (try %d of %d)", self.path, exc, attempt + 1,
                          COMMIT_TRIES)
                time.sleep(1.0)
        self.lost += len(batch)
        log.error("nap log %s: %d entries could not be written", self.path, len(batch))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued entry is committed."""
        deadline = time.monotonic() + timeout
        with self._drained:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(left)
        return True

    # -- reading --------------------------------------------------------------------------

    def day(self, date: dt.date, tz: dt.tzinfo) -> list[NapEntry]:
        """The entries of one local day, oldest first (what this process queued included)."""
        self.flush()
        start = dt.datetime.combine(date, dt.time(), tz).timestamp()
        with self._lock:
            rows = self._conn.execute(
                "SELECT t, cot, kind, value, by FROM nap_log WHERE t >= ? AND t < ? "
                "ORDER BY t, rowid",
                (start, start + 86400),
            ).fetchall()
        return [NapEntry(*r) for r in rows]

    # -- acknowledge requests from `edge nap ack` -------------------------------------------

    def request_ack(self, rule: str, by: str, t: float) -> int:
        """Another process asks the daemon to acknowledge (returns the request's id)."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO ack_requests (t, rule, by) VALUES (?, ?, ?)", (t, rule, by)
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def take_requests(self, rule: str, now: float) -> list[tuple[int, str]]:
        """The daemon takes new requests for ``rule``: (id, by), oldest first; stale ones are
        marked expired and not returned."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, t, by FROM ack_requests WHERE rule = ? AND state = 'new' ORDER BY id",
                (rule,),
            ).fetchall()
            if not rows:
                return []
            fresh = [(i, by) for i, t, by in rows if now - t <= REQUEST_MAX_AGE_S]
            stale = [(i,) for i, t, _ in rows if now - t > REQUEST_MAX_AGE_S]
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "UPDATE ack_requests SET state = 'taken' WHERE id = ?", [(i,) for i, _ in fresh]
                )
                self._conn.executemany(
                    "UPDATE ack_requests SET state = 'expired', outcome = 'expired' WHERE id = ?",
                    stale,
                )
        return fresh

    def answer(self, request: int, outcome: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE ack_requests SET outcome = ? WHERE id = ?", (outcome, request)
            )

    def withdraw(self, request: int) -> bool:
        """The asker gives up: the request is never applied (False: the daemon took it)."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE ack_requests SET state = 'expired', outcome = 'expired' "
                "WHERE id = ? AND state = 'new'",
                (request,),
            )
        return cur.rowcount == 1

    def outcome(self, request: int) -> str:
        """'' until the daemon has answered."""
        with self._lock:
            row = self._conn.execute(
                "SELECT outcome FROM ack_requests WHERE id = ?", (request,)
            ).fetchone()
        return str(row[0]) if row else ""

    def add_now(self, cot: str, kind: str, value: str, t: float, by: str = "") -> None:
        """Write one entry at once on this thread (the command line's manual entries)."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO nap_log (t, cot, kind, value, by) VALUES (?, ?, ?, ?, ?)",
                (t, cot, kind, value, by),
            )

    def close(self) -> None:
        """Write what is queued, then close.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        self._conn.close()
