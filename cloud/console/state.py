"""The console's read model over the notifier's database.

The notifier writes ``events``, ``devices``, ``traps`` and ``telemetry``;
:class:`ConsoleState` tails ``events`` from a durable cursor, folds each event into
one row per device (``console_device_state``, the map's data; see
:mod:`cloud.console.fold`) and answers the pages' questions with indexed look-ups.
Its own tables are prefixed ``console_`` and created here (``IF NOT EXISTS``), on
SQLite and on PostgreSQL alike, through :class:`cloud.database.Database`.

**The cursor.**  Events are read in ``(received_at, id)`` order after the cursor
kept in ``console_cursor``.  ``received_at`` is the notifier's clock when it took
the event, and a transaction may commit after a later one (several notifier
instances, or a group commit that waited): so every call also looks again at the
last ``settle_s`` seconds before the cursor for ids it has not folded yet.  Folding
is idempotent and order-proof (see :mod:`cloud.console.fold`), so an event seen
twice changes nothing.

**Online.**  The notifier's ``devices`` row says whether a device is online (its
status message, or the timekeeper's missed-heartbeat verdict) and when it was last
heard from.  Every ``sweep_s`` seconds :meth:`ConsoleState.catch_up` reads those
rows (one scan of the table), republishes the devices whose online state flipped
and reads the newest water level of each device heard from since.  Between sweeps
:meth:`ConsoleState.map` turns a device offline itself once it is silent past
``max(heartbeat_timeout_s, 2 x its heartbeat interval)``.

**Indexes on the notifier's tables.**  The pages ask "the last events of this
device", "of these sites", "this device's heartbeats of one day": :meth:`open`
creates four partial/compound indexes on ``events`` (named ``console_events_*``)
that the notifier's schema does not have.

Synchronous: the app calls it from one worker thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import sqlite3
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from cloud.console import fold
from cloud.console.errors import ConsoleNotFound, RolloutActionFailed
from cloud.console.model import (
    Capability,
    Capture,
    CotNow,
    DevicePage,
    DeviceState,
    EventRow,
    FleetPage,
    Health,
    Hydrograph,
    Point,
    RolloutProgress,
    UpdateRecord,
    marker_state,
)
from cloud.database import Database, Row, Tx
from edge.event import EnvelopeError, Event, decode

log = logging.getLogger(__name__)

#: Japan Standard Time: the month data use is counted in.
JST: Final = dt.timezone(dt.timedelta(hours=9), "JST")
#: Events folded per :meth:`ConsoleState.catch_up` at most (the rest next call).
CATCH_UP_BATCH: Final = 2000
#: Points a 7-day hydrograph keeps at most (the minimum and maximum of each slice).
HYDROGRAPH_MAX_POINTS: Final = 1000
#: The device page's event list, update history and capture history lengths.
PAGE_EVENTS: Final = 50
#: Heartbeats looked at per day for the day's data use (the newest of the day's last
#: ones plus a few minutes after midnight, for those received late).
_DAY_HEARTBEATS: Final = 12
_DAY_LATE_S: Final = 300.0
#: How often a device's telemetry is searched for series it has never sent.
_DISCOVER_EVERY_S: Final = 3600.0
#: How often the series of the sensors a device's heartbeat names are probed, while some
#: are not known yet (one primary-key look-up each).
_PROBE_EVERY_S: Final = 600.0
#: Sensors of one heartbeat probed at most.
_PROBE_SENSORS: Final = 16
#: What a telemetry series (``SENSOR.QUANTITY``) says its device watches: a gauge's
#: level (``edge/water/watch.py``), a nap mat's load (``edge/nursery/mat_watch.py``).
SERIES_CAPABILITY: Final[dict[str, Capability]] = {"level_cm": "water", "load_kg": "nursery"}
_IN_CHUNK: Final = 500

Action = Literal["trap_checked", "trap_reset", "nap_acknowledged", "rollout_start", "rollout_pause"]
#: How long one ``satoyama-deploy`` command may run (it waits on the broker at most this).
DEPLOY_TIMEOUT_S: Final = 120.0


class ActionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Who did what in the console (the device page's list; the nap sheet's remote acks)."""

    id: int
    device: str
    site: str
    action: str
    target: str
    """The trap's sensor, the cot, or the rollout id."""
    by: str
    at: float
    detail: str = ""


# --- schema -------------------------------------------------------------------------------------


def _schema(engine: str) -> list[str]:
    real = "DOUBLE PRECISION" if engine == "postgresql" else "REAL"
    blob = "BYTEA" if engine == "postgresql" else "BLOB"
    ident = (
        "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        if engine == "postgresql"
        else "INTEGER PRIMARY KEY"
    )
    return [
        f"""CREATE TABLE IF NOT EXISTS console_device_state (
            device       TEXT PRIMARY KEY,
            site         TEXT NOT NULL,
            online       INTEGER NOT NULL,
            online_until {real},
            last_seen    {real},
            seen_at      {real},
            marker       TEXT NOT NULL,
            changed_at   {real} NOT NULL,
            memory       {blob} NOT NULL,
            view         {blob} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS console_device_state_site ON console_device_state (site)",
        "CREATE INDEX IF NOT EXISTS console_device_state_last_seen"
        " ON console_device_state (last_seen)",
        "CREATE INDEX IF NOT EXISTS console_device_state_changed"
        " ON console_device_state (changed_at)",
        f"""CREATE TABLE IF NOT EXISTS console_cursor (
            name        TEXT PRIMARY KEY,
            received_at {real} NOT NULL,
            event_id    TEXT NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS console_actions (
            id      {ident},
            device  TEXT NOT NULL,
            site    TEXT NOT NULL,
            action  TEXT NOT NULL,
            target  TEXT NOT NULL,
            by_user TEXT NOT NULL,
            at      {real} NOT NULL,
            detail  TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX IF NOT EXISTS console_actions_device ON console_actions (device, at)",
    ]


#: Indexes on the notifier's ``events`` (it has only the primary key and received_at), built
#: with :meth:`cloud.database.Database.create_index` so that the notifier keeps inserting
#: while a big table is indexed (PostgreSQL: concurrently).
EVENT_INDEXES: Final = (
    ("console_events_device", "ON events (device, received_at) WHERE kind <> 'heartbeat'"),
    ("console_events_device_kind", "ON events (device, kind, received_at)"),
    ("console_events_site", "ON events (site, received_at) WHERE kind <> 'heartbeat'"),
    ("console_events_recent", "ON events (received_at) WHERE kind <> 'heartbeat'"),
)


_EVENT_COLUMNS: Final = "id, device, site, kind, severity, ts, received_at, payload"


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


def _chunks(items: Sequence[str], size: int = _IN_CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _DeviceRow(msgspec.Struct, frozen=True):
    site: str
    state: str
    last_seen: float
    hb_interval: float | None
    lat: float | None
    lon: float | None
    version: str
    """The software the device runs, as its last status message said ('' when none did)."""


_DEVICES_COLUMNS: Final = "device, site, state, last_seen, hb_interval, lat, lon, version"


def _device_row(r: Row) -> _DeviceRow:
    return _DeviceRow(
        str(r[1]),
        str(r[2]),
        float(r[3]),
        None if r[4] is None else float(r[4]),
        None if r[5] is None else float(r[5]),
        None if r[6] is None else float(r[6]),
        "" if r[7] is None else str(r[7]),
    )


class _Row(msgspec.Struct, kw_only=True):
    """What the console stored for one device, as loaded for an update."""

    memory: fold.Memory
    memory_bytes: bytes
    view: bytes
    online: bool
    seen_at: float | None


_view_decoder = msgspec.msgpack.Decoder(DeviceState)
_memory_decoder = msgspec.msgpack.Decoder(fold.Memory)
_encoder = msgspec.msgpack.Encoder()


class ConsoleState:
    """Synchronous; the app calls it from ONE worker thread (a dedicated executor)."""

    def __init__(
        self,
        db: Database,
        *,
        heartbeat_timeout_s: float,
        fleet_db: Path | None = None,
        deploy_command: Sequence[str] = ("satoyama-deploy",),
        deploy_args: Sequence[str] = (),
        settle_s: float = 10.0,
        sweep_s: float = 5.0,
        batch: int = CATCH_UP_BATCH,
    ) -> None:
        """``deploy_args``: appended to ``satoyama-deploy rollout announce`` (the broker and
        its TLS files: ``--broker HOST:PORT --tls-ca ...``).  ``settle_s``: how far before
        the cursor late commits are looked for; ``sweep_s``: how often the notifier's
        ``devices`` rows are read for online changes and new readings."""
        self.db = db
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.fleet_db = fleet_db
        self.deploy_command = tuple(deploy_command)
        self.deploy_args = tuple(deploy_args)
        self.settle_s = settle_s
        self.sweep_s = sweep_s
        self.batch = batch
        self._cursor: tuple[float, str] = (-math.inf, "")
        self._seen: dict[str, float] = {}
        """Ids folded within ``settle_s`` before the cursor (id -> received_at)."""
        self._online: dict[str, bool] = {}
        self._seen_at: dict[str, float | None] = {}
        self._discovered: dict[str, float] = {}
        self._probed: dict[str, float] = {}
        self._next_sweep = -math.inf
        self._sweep_marks = (-math.inf, -math.inf)
        """The newest ``last_seen`` and ``since`` (notifier clock) the last sweep read."""
        self._changed: dict[str, DeviceState] = {}
        self._pending: dict[str, DeviceState] = {}
        """States changed by a person's action since the last catch_up."""
        self._cache: dict[str, tuple[str, DeviceState, bool, float | None]] = {}
        """Every device's row as the map needs it: (site, view, online, online_until)."""
        self._sites: dict[str, set[str]] = {}
        self._order: list[str] | None = None
        self._cache_mark = -math.inf
        self._reloaded_at: float | None = None
        """When the last sweep looked for rows others wrote (this process's clock)."""
        self._wrote: dict[str, float] = {}
        """``changed_at`` of the rows this process wrote last (not reloaded)."""
        self._opened = False

    # --- life cycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Create the console's tables and indexes (idempotent); load the cursor."""

        def work(tx: Tx) -> None:
            for statement in _schema(self.db.name):
                tx.execute(statement)

        self.db.run(work)
        for name, definition in EVENT_INDEXES:
            self.db.create_index(name, definition)
        rows = self.db.run(
            lambda tx: tx.query(
                "SELECT received_at, event_id FROM console_cursor WHERE name = 'events'"
            ),
            write=False,
        )
        if rows:
            self._cursor = (float(rows[0][0]), str(rows[0][1]))
            at = self._cursor[0]
            # What the last run folded just before its cursor: not news after a restart.
            window = self.db.run(
                lambda tx: tx.query(
                    "SELECT id, received_at FROM events WHERE received_at >= ?"
                    " AND received_at <= ?",
                    (at - self.settle_s, at),
                ),
                write=False,
            )
            self._seen = {str(i): float(r) for i, r in window if (float(r), str(i)) <= self._cursor}
        known = self.db.run(
            lambda tx: tx.query(
                "SELECT device, site, view, online, online_until, changed_at, seen_at"
                " FROM console_device_state"
            ),
            write=False,
        )
        self._cache.clear()
        self._sites.clear()
        self._remember_rows(known)
        self._online = {str(r[0]): bool(r[3]) for r in known}
        self._seen_at = {str(r[0]): None if r[6] is None else float(r[6]) for r in known}
        self._opened = True

    def _remember(
        self, device: str, site: str, view: DeviceState, online: bool, until: float | None
    ) -> None:
        old = self._cache.get(device)
        if old is None or old[0] != site:
            if old is not None:
                self._sites.get(old[0], set()).discard(device)
            self._sites.setdefault(site, set()).add(device)
            if old is None:
                self._order = None
        self._cache[device] = (site, view, online, until)

    def _remember_rows(self, rows: list[Row]) -> None:
        """Rows of ``device, site, view, online, online_until, changed_at`` into the cache."""
        for r in rows:
            view = _view_decoder.decode(bytes(r[2]))
            self._remember(
                str(r[0]), str(r[1]), view, bool(r[3]), None if r[4] is None else float(r[4])
            )
            self._cache_mark = max(self._cache_mark, float(r[5]))
            self._wrote[str(r[0])] = float(r[5])

    # --- the live side -------------------------------------------------------------------

    def catch_up(self, *, now: float) -> list[EventRow]:
        """Fold every event stored since the last call; return them, oldest first.

        Nothing new: two indexed look-ups (and, every ``sweep_s``, one scan of the
        notifier's ``devices``), no write."""
        if not self._opened:
            self.open()
        changed: dict[str, DeviceState] = dict(self._pending)
        self._pending.clear()
        fresh = self._read_events()
        by_device: dict[str, list[tuple[Event, float]]] = {}
        for event, received_at in fresh:
            by_device.setdefault(event.device, []).append((event, received_at))
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + self.sweep_s
        devices = self._swept(now) if sweep else {}
        devices.update(self._device_rows([d for d in by_device if d not in devices]))
        if sweep:
            self._reload_others(now)
        candidates = set(by_device)
        if sweep:
            for device, swept in devices.items():
                if (
                    device not in self._online
                    or swept.last_seen != self._seen_at.get(device)
                    or self._online[device] != self._is_online(swept, now)
                ):
                    candidates.add(device)
        stored = self._load(sorted(candidates))
        writes: list[tuple[str, fold.Memory, DeviceState, bool, float | None, float | None]] = []
        for device in sorted(candidates):
            old = stored.get(device)
            row = devices.get(device)
            memory = fold.fold_all(
                old.memory if old is not None else None, by_device.get(device, ())
            )
            if memory is None:
                if row is None:
                    continue
                memory = fold.new_memory(device, row.site)
            if row is not None:
                if row.site and not memory.site:
                    memory.site = row.site
                if memory.lat is None and row.lat is not None:
                    memory.lat, memory.lon = row.lat, row.lon
                if row.version:  # what the device says it runs now, at its last connect
                    memory.version = row.version
                seen_before = old.seen_at if old is not None else None
                if row.last_seen != seen_before:
                    memory = self._read_series(memory, now)
            online = self._is_online(row, now) if row is not None else self._recent(memory, now)
            until = self._online_until(row, memory)
            view = fold.view(
                memory, online=online, last_seen=row.last_seen if row is not None else None
            )
            encoded = _encoder.encode(view)
            seen_at: float | None = row.last_seen if row is not None else None
            if (
                old is not None
                and encoded == old.view
                and old.seen_at == seen_at
                and old.online == online
                and _encoder.encode(memory) == old.memory_bytes
            ):
                self._online[device] = online
                continue
            writes.append((device, memory, view, online, until, seen_at))
            if old is None or encoded != old.view:
                changed[device] = view
        if fresh or writes:
            self._write(writes, now)
        for device, _, _, online, _, seen_at in writes:
            self._online[device] = online
            self._seen_at[device] = seen_at
        self._changed = changed
        return [_event_row(event, received_at) for event, received_at in fresh]

    def changed_states(self) -> list[DeviceState]:
        """The states the last :meth:`catch_up` changed (and the actions before it)."""
        return [self._changed[d] for d in sorted(self._changed)]

    def _read_events(self) -> list[tuple[Event, float]]:
        at, last_id = self._cursor
        limit = self.batch

        def work(tx: Tx) -> tuple[list[Row], list[Row]]:
            late: list[Row] = []
            if at > -math.inf:
                window = tx.query(
                    "SELECT id, received_at FROM events WHERE received_at >= ?"
                    " AND received_at <= ?",
                    (at - self.settle_s, at),
                )
                missed = [
                    str(i)
                    for i, r in window
                    if str(i) not in self._seen and (float(r), str(i)) < (at, last_id)
                ]
                for chunk in _chunks(missed):
                    late += tx.query(
                        f"SELECT {_EVENT_COLUMNS} FROM events WHERE id IN ({_marks(len(chunk))})",
                        tuple(chunk),
                    )
            new = tx.query(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE received_at >= ?"
                " AND (received_at > ? OR id > ?) ORDER BY received_at, id LIMIT ?",
                (
                    at if at > -math.inf else -1e300,
                    at if at > -math.inf else -1e300,
                    last_id,
                    limit,
                ),
            )
            return late, new

        late, new = self.db.run(work, write=False)
        out: list[tuple[Event, float]] = []
        for row in sorted(late, key=lambda r: (float(r[6]), str(r[0]))) + new:
            event_id, received_at = str(row[0]), float(row[6])
            self._seen[event_id] = received_at
            event = _decode(row)
            if event is not None:
                out.append((event, received_at))
        if new:
            last = new[-1]
            self._cursor = (float(last[6]), str(last[0]))
        floor = self._cursor[0] - self.settle_s
        if len(self._seen) > 4 * self.batch or late or new:
            self._seen = {i: r for i, r in self._seen.items() if r >= floor}
        return out

    def _swept(self, now: float) -> dict[str, _DeviceRow]:
        """The ``devices`` rows that may have changed since the last sweep: heard from
        (``last_seen``) or changed state (``since``) after it, less ``settle_s`` for late
        commits, and those silent past their deadline while the notifier still says
        online (one scan of the table; the first sweep takes every row)."""
        seen_mark, since_mark = self._sweep_marks
        timeout = self.heartbeat_timeout_s

        def work(tx: Tx) -> list[Row]:
            return tx.query(
                f"SELECT {_DEVICES_COLUMNS}, since FROM devices WHERE last_seen > ?"
                " OR since > ? OR (state = 'online' AND last_seen + (CASE WHEN"
                " 2 * hb_interval > ? THEN 2 * hb_interval ELSE ? END) < ?)",
                (seen_mark - self.settle_s, since_mark - self.settle_s, timeout, timeout, now),
            )

        rows = self.db.run(work, write=False)
        if rows:
            self._sweep_marks = (
                max(seen_mark, max(float(r[3]) for r in rows)),
                max(since_mark, max(float(r[8]) for r in rows)),
            )
        return {str(r[0]): _device_row(r) for r in rows}

    def _device_rows(self, devices: list[str]) -> dict[str, _DeviceRow]:
        def work(tx: Tx) -> list[Row]:
            rows: list[Row] = []
            for chunk in _chunks(devices):
                rows += tx.query(
                    f"SELECT {_DEVICES_COLUMNS} FROM devices"
                    f" WHERE device IN ({_marks(len(chunk))})",
                    tuple(chunk),
                )
            return rows

        if not devices:
            return {}
        return {str(r[0]): _device_row(r) for r in self.db.run(work, write=False)}

    def _deadline(self, last_seen: float, hb_interval: float | None) -> float:
        return last_seen + max(self.heartbeat_timeout_s, 2 * (hb_interval or 0.0))

    def _is_online(self, row: _DeviceRow, now: float) -> bool:
        return row.state == "online" and now <= self._deadline(row.last_seen, row.hb_interval)

    def _recent(self, memory: fold.Memory, now: float) -> bool:
        seen = memory.last_event_at
        return seen is not None and now <= self._deadline(seen, memory.health.interval_s)

    def _online_until(self, row: _DeviceRow | None, memory: fold.Memory) -> float | None:
        if row is not None:
            return self._deadline(row.last_seen, row.hb_interval)
        if memory.last_event_at is None:
            return None
        return self._deadline(memory.last_event_at, memory.health.interval_s)

    def _load(self, devices: list[str]) -> dict[str, _Row]:
        def work(tx: Tx) -> list[Row]:
            rows: list[Row] = []
            for chunk in _chunks(devices):
                rows += tx.query(
                    "SELECT device, memory, view, online, seen_at FROM console_device_state"
                    f" WHERE device IN ({_marks(len(chunk))})",
                    tuple(chunk),
                )
            return rows

        if not devices:
            return {}
        return {
            str(r[0]): _Row(
                memory=_memory_decoder.decode(bytes(r[1])),
                memory_bytes=bytes(r[1]),
                view=bytes(r[2]),
                online=bool(r[3]),
                seen_at=None if r[4] is None else float(r[4]),
            )
            for r in self.db.run(work, write=False)
        }

    def _read_series(self, memory: fold.Memory, now: float) -> fold.Memory:
        """What the device's telemetry says: the newest reading of each of its
        ``*.level_cm`` series, and the capabilities its series reveal before any event
        does (a gauge's level before its first alert, a nap mat's load before the first
        posture check).  Series not yet known are looked for by the names of the sensors
        its heartbeat lists (a primary-key probe each, every ``_PROBE_EVERY_S``) and by a
        search of all its series (every ``_DISCOVER_EVERY_S``)."""
        device = memory.device
        known = {"level_cm": set(memory.water), "load_kg": set[str]()}
        wanted = [
            q
            for q, c in SERIES_CAPABILITY.items()
            if c not in memory.capabilities or q == "level_cm"
        ]
        unknown = [s for s in sorted(memory.health.sensors) if s not in memory.water]
        probe = (
            unknown[:_PROBE_SENSORS]
            if unknown and wanted and now - self._probed.get(device, -math.inf) >= _PROBE_EVERY_S
            else []
        )
        missing = [c for c in SERIES_CAPABILITY.values() if c not in memory.capabilities]
        discover = bool(missing or not memory.water) and (
            now - self._discovered.get(device, -math.inf) >= _DISCOVER_EVERY_S
        )
        if probe:
            self._probed[device] = now
        if discover:
            self._discovered[device] = now

        def find(tx: Tx) -> list[str]:
            found: list[str] = []
            if discover:
                found += [
                    str(r[0])
                    for r in tx.query(
                        "SELECT DISTINCT series FROM telemetry WHERE device = ?"
                        " AND (series LIKE ? OR series LIKE ?)",
                        (device, "%.level_cm", "%.load_kg"),
                    )
                ]
            for sensor in probe:
                for quantity in wanted:
                    series = f"{sensor}.{quantity}"
                    if tx.query(
                        "SELECT 1 FROM telemetry WHERE device = ? AND series = ? LIMIT 1",
                        (device, series),
                    ):
                        found.append(series)
            return found

        if probe or discover:
            for series in self.db.run(find, write=False):
                sensor, _, quantity = series.rpartition(".")
                if sensor and quantity in known:
                    known[quantity].add(sensor)
        if known["load_kg"]:
            memory = fold.learn(memory, "nursery")
        sensors = sorted(known["level_cm"])
        if not sensors:
            return memory

        def work(tx: Tx) -> list[tuple[str, Row]]:
            out: list[tuple[str, Row]] = []
            for sensor in sensors:
                found = tx.query(
                    "SELECT ts, value FROM telemetry WHERE device = ? AND series = ?"
                    " ORDER BY ts DESC LIMIT 1",
                    (device, f"{sensor}.level_cm"),
                )
                out += [(sensor, r) for r in found]
            return out

        for sensor, (t, value) in self.db.run(work, write=False):
            memory = fold.fold_reading(memory, sensor, float(t), float(value))
        return memory

    def _reload_others(self, now: float) -> None:
        """Rows another console process changed (each process folds the same events, so
        only people's actions differ): a range of the ``changed_at`` index, then the rows
        this process did not write itself."""
        last = self._cache_mark if self._reloaded_at is None else self._reloaded_at
        since = last - max(10.0, 2 * self.sweep_s)
        self._reloaded_at = now

        def work(tx: Tx) -> list[Row]:
            marks = tx.query(
                "SELECT device, changed_at FROM console_device_state WHERE changed_at > ?",
                (since,),
            )
            theirs = [str(d) for d, at in marks if self._wrote.get(str(d)) != float(at)]
            rows: list[Row] = []
            for chunk in _chunks(theirs):
                rows += tx.query(
                    "SELECT device, site, view, online, online_until, changed_at"
                    f" FROM console_device_state WHERE device IN ({_marks(len(chunk))})",
                    tuple(chunk),
                )
            return rows

        self._remember_rows(self.db.run(work, write=False))

    def _write(
        self,
        writes: list[tuple[str, fold.Memory, DeviceState, bool, float | None, float | None]],
        now: float,
    ) -> None:
        cursor = self._cursor
        rows = [
            (
                device,
                view.site,
                int(online),
                until,
                view.last_seen,
                seen_at,
                view.state,
                now,
                _encoder.encode(memory),
                _encoder.encode(view),
            )
            for device, memory, view, online, until, seen_at in writes
        ]

        def work(tx: Tx) -> None:
            tx.executemany(_UPSERT, rows)
            if cursor[0] > -math.inf:
                tx.execute(
                    "INSERT INTO console_cursor (name, received_at, event_id)"
                    " VALUES ('events', ?, ?) ON CONFLICT (name) DO UPDATE"
                    " SET received_at = excluded.received_at, event_id = excluded.event_id",
                    cursor,
                )

        self.db.run(work)
        for device, _, view, online, until, _ in writes:
            self._remember(device, view.site, view, online, until)
            self._wrote[device] = now
        self._cache_mark = max(self._cache_mark, now)

    # --- what the pages ask -----------------------------------------------------------------

    def map(self, sites: frozenset[str] | None, *, now: float) -> list[DeviceState]:
        """Every device of ``sites`` (``None``: all) by id, as of the last catch-up (kept in
        memory: no query); a device silent past its deadline since then is offline already."""
        if not self._opened:
            self.open()
        if sites is None:
            if self._order is None:
                self._order = sorted(self._cache)
            devices: Iterable[str] = self._order
        else:
            devices = sorted(d for site in sites for d in self._sites.get(site, ()))
        out: list[DeviceState] = []
        for device in devices:
            _, state, online, until = self._cache[device]
            if online and until is not None and now > until:
                state = _offline(state)
            out.append(state)
        return out

    def device_site(self, device: str) -> str | None:
        cached = self._cache.get(device)
        if cached is not None:
            return cached[0]
        rows = self.db.run(
            lambda tx: tx.query(
                "SELECT site FROM console_device_state WHERE device = ?", (device,)
            ),
            write=False,
        )
        return str(rows[0][0]) if rows else None

    def _state(self, tx: Tx, device: str, now: float) -> tuple[fold.Memory, DeviceState] | None:
        rows = tx.query(
            "SELECT memory, view, online, online_until FROM console_device_state WHERE device = ?",
            (device,),
        )
        if not rows:
            return None
        memory_b, view_b, online, until = rows[0]
        state = _view_decoder.decode(bytes(view_b))
        if online and until is not None and now > float(until):
            state = _offline(state)
        return _memory_decoder.decode(bytes(memory_b)), state

    def device_page(self, device: str, *, now: float) -> DevicePage | None:
        """Everything the device page shows; ``None`` for a device the console never saw."""
        month_days = _utc_days_of_jst_month(now)
        month_start = _jst_month_start(now)

        def work(tx: Tx) -> tuple[Any, ...] | None:
            found = self._state(tx, device, now)
            if found is None:
                return None
            memory, state = found
            site = memory.site
            # what happened while the device was at another site stays with that site
            events = tx.query(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE device = ? AND site = ?"
                " AND kind <> 'heartbeat' ORDER BY received_at DESC, id DESC LIMIT ?",
                (device, site, PAGE_EVENTS),
            )
            days = [
                tx.query(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE device = ? AND kind = 'heartbeat'"
                    " AND received_at >= ? AND received_at < ?"
                    " ORDER BY received_at DESC, id DESC LIMIT ?",
                    (device, start, start + 86400.0 + _DAY_LATE_S, _DAY_HEARTBEATS),
                )
                for start in month_days
            ]
            # the first UTC day began before the month did (09:00 in Japan is 00:00 UTC):
            # the device's count as of its last heartbeat before the month began
            before = tx.query(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE device = ? AND kind = 'heartbeat'"
                " AND received_at >= ? AND received_at < ?"
                " ORDER BY received_at DESC, id DESC LIMIT ?",
                (device, month_days[0], month_start + _DAY_LATE_S, _DAY_HEARTBEATS),
            )
            updates = tx.query(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE device = ?"
                " AND kind IN ('update_installed', 'update_failed')"
                " ORDER BY received_at DESC, id DESC LIMIT ?",
                (device, PAGE_EVENTS),
            )
            traps: list[Row] = []
            if "trap" in state.capabilities or memory.traps:
                traps = tx.query(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE device = ? AND site = ?"
                    " AND kind IN ('trap_triggered', 'trap_reset', 'trap_armed')"
                    " ORDER BY received_at DESC, id DESC LIMIT ?",
                    (device, site, 10 * PAGE_EVENTS),
                )
            series: dict[str, list[Row]] = {}
            for sensor in sorted(memory.water):
                series[sensor] = tx.query(
                    "SELECT ts, value FROM telemetry WHERE device = ? AND series = ?"
                    " AND ts >= ? AND ts <= ? ORDER BY ts",
                    (device, f"{sensor}.level_cm", now - 7 * 86400.0, now),
                )
            actions = _actions(tx, device, site)
            return memory, state, events, (days, before), updates, traps, series, actions

        found = self.db.run(work, write=False)
        if found is None:
            return None
        memory, state, events, days, updates, traps, series, actions = found
        if not state.version and self.fleet_db is not None:
            version = self._fleet_versions([device]).get(device)
            if version:
                state = msgspec.structs.replace(state, version=version)
        h = memory.health
        health = Health(
            at=h.at,
            sensors=dict(h.sensors),
            outbox_depth=h.outbox_depth,
            oldest_undelivered_s=h.oldest_undelivered_s,
            uptime_s=h.uptime_s,
            bytes_this_month=_month_bytes(days[0], month_days, days[1], month_start),
        )
        hydro_24: list[Hydrograph] = []
        hydro_7d: list[Hydrograph] = []
        for sensor, week in series.items():
            stages = list(memory.water[sensor].stages)
            points = [Point(float(t), float(v)) for t, v in week]
            day = [p for p in points if p.t >= now - 86400.0]
            name = f"{sensor}.level_cm"
            hydro_24.append(Hydrograph(series=name, points=day, stages=stages))
            hydro_7d.append(Hydrograph(series=name, points=downsample(points), stages=stages))
        return DevicePage(
            state=state,
            events=[_event_row(e, r) for e, r in _decoded(events)],
            health=health,
            updates=[_update(e) for e, _ in _decoded(updates)],
            hydrographs_24h=hydro_24,
            hydrographs_7d=hydro_7d,
            captures=_captures(_decoded(traps)[::-1], actions),
            cots=[
                CotNow(
                    cot=name,
                    posture=cot.posture,
                    at=cot.at,
                    alarm=next((k for k in fold.NAP_ALARMS if k in cot.alarms), None),
                    acknowledged_by=cot.acknowledged_by,
                )
                for name, cot in sorted(memory.cots.items())
            ],
        )

    def events(self, sites: frozenset[str] | None, *, limit: int = 50) -> list[EventRow]:
        """The newest events (heartbeats left out) of ``sites`` (``None``: all), newest first."""
        if sites is not None and not sites:
            return []

        def work(tx: Tx) -> list[Row]:
            if sites is None:
                return tx.query(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE kind <> 'heartbeat'"
                    " ORDER BY received_at DESC, id DESC LIMIT ?",
                    (limit,),
                )
            rows: list[Row] = []
            for site in sorted(sites):
                rows += tx.query(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE site = ? AND kind <> 'heartbeat'"
                    " ORDER BY received_at DESC, id DESC LIMIT ?",
                    (site, limit),
                )
            return rows

        rows = sorted(
            self.db.run(work, write=False), key=lambda r: (float(r[6]), str(r[0])), reverse=True
        )[:limit]
        return [_event_row(e, r) for e, r in _decoded(rows)]

    # --- the fleet page -------------------------------------------------------------------------

    def fleet(self, *, now: float) -> FleetPage:
        """Versions (the console's, else the fleet database's), rollouts, silent devices."""
        states = self.map(None, now=now)
        missing = [s.device for s in states if not s.version]
        known = self._fleet_versions(missing) if missing and self.fleet_db is not None else {}
        versions: dict[str, int] = {}
        for s in states:
            version = s.version or known.get(s.device, "")
            versions[version] = versions.get(version, 0) + 1
        cutoff = now - self.heartbeat_timeout_s
        silent = sorted(
            (s for s in states if s.last_seen is None or s.last_seen < cutoff),
            key=lambda s: (s.last_seen is not None, s.last_seen or 0.0, s.device),
        )
        by_device = {s.device: s.version for s in states}
        return FleetPage(
            versions=dict(sorted(versions.items())),
            rollouts=self._rollouts(by_device),
            silent=silent,
        )

    def _fleet_connect(self) -> sqlite3.Connection | None:
        if self.fleet_db is None or not self.fleet_db.exists():
            return None
        try:
            return sqlite3.connect(f"{self.fleet_db.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            log.warning("cannot read the fleet database %s: %s", self.fleet_db, exc)
            return None

    def _fleet_versions(self, devices: list[str]) -> dict[str, str]:
        conn = self._fleet_connect()
        if conn is None:
            return {}
        try:
            out: dict[str, str] = {}
            for chunk in _chunks(devices):
                for device, version in conn.execute(
                    f"SELECT device, version FROM devices WHERE device IN ({_marks(len(chunk))})"
                    " AND version IS NOT NULL",
                    tuple(chunk),
                ):
                    out[str(device)] = str(version)
            return out
        except sqlite3.Error as exc:
            log.warning("cannot read the fleet database %s: %s", self.fleet_db, exc)
            return {}
        finally:
            conn.close()

    def _rollouts(self, console_versions: dict[str, str]) -> list[RolloutProgress]:
        conn = self._fleet_connect()
        if conn is None:
            return []
        try:
            rollouts = conn.execute(
                "SELECT id, version, percent FROM rollouts ORDER BY created DESC, id"
            ).fetchall()
            paused = _fleet_paused(conn)
            out: list[RolloutProgress] = []
            for rid, version, percent in rollouts:
                targets = conn.execute(
                    "SELECT t.device, t.stage, t.announced, d.version FROM rollout_targets t"
                    " LEFT JOIN devices d ON d.device = t.device WHERE t.rollout = ?",
                    (rid,),
                ).fetchall()
                failed = {
                    str(r[0])
                    for r in conn.execute(
                        "SELECT DISTINCT u.device FROM update_reports u JOIN rollout_targets t"
                        " ON t.device = u.device AND t.rollout = ?"
                        " WHERE u.kind = 'update_failed' AND u.to_version = ?",
                        (rid, version),
                    )
                }
                installed = 0
                for device, _, _, fleet_version in targets:
                    have = [v for v in (fleet_version, console_versions.get(device)) if v]
                    if any(version_at_least(v, str(version)) for v in have):
                        installed += 1
                out.append(
                    RolloutProgress(
                        id=str(rid),
                        version=str(version),
                        percent=float(percent),
                        stage=2 if any(s == 2 and a for _, s, a, _ in targets) else 1,
                        paused=paused.get(str(rid), (None, None))[0] is not None,
                        targets=len(targets),
                        told=sum(1 for _, _, a, _ in targets if a),
                        installed=installed,
                        failed=len(failed),
                    )
                )
            return out
        except sqlite3.Error as exc:
            log.warning("cannot read rollouts from %s: %s", self.fleet_db, exc)
            return []
        finally:
            conn.close()

    def rollout_commands(
        self, rollout: str, action: Literal["start", "pause"], *, by: str
    ) -> list[list[str]]:
        """The ``satoyama-deploy`` commands that carry out ``action``, to run in turn (the
        caller runs them off the database thread: :meth:`rollout_action` or the app).

        ``pause``: ``rollout pause --by BY`` (no stage is announced until resumed).
        ``start``: ``rollout resume`` if it is paused, then ``rollout announce`` of the
        next stage (the first if none of it was announced, else the rest: the tool itself
        refuses the rest while the first is unfinished or failed, and says why).
        :class:`ConsoleNotFound` for a rollout the fleet database does not hold."""
        conn = self._fleet_connect()
        if conn is None:
            raise ConsoleNotFound(f"no fleet database to find rollout {rollout!r} in")
        try:
            found = conn.execute("SELECT 1 FROM rollouts WHERE id = ?", (rollout,)).fetchall()
            stages = conn.execute(
                "SELECT stage, COUNT(announced) FROM rollout_targets WHERE rollout = ?"
                " GROUP BY stage",
                (rollout,),
            ).fetchall()
            paused = _fleet_paused(conn).get(rollout, (None, None))[0] is not None
        except sqlite3.Error as exc:
            raise RolloutActionFailed(f"cannot read the fleet database: {exc}") from exc
        finally:
            conn.close()
        if not found:
            raise ConsoleNotFound(f"no rollout {rollout!r}")
        assert self.fleet_db is not None
        base = [*self.deploy_command, "rollout"]
        where = ["--db", str(self.fleet_db), "--id", rollout]
        if action == "pause":
            return [[*base, "pause", *where, "--by", by]]
        told = {int(s): int(n) for s, n in stages}
        stage = "rest" if told.get(1, 0) > 0 else "first"
        commands = [[*base, "resume", *where]] if paused else []
        commands.append([*base, "announce", *where, "--stage", stage, *self.deploy_args])
        return commands

    def rollout_done(
        self, rollout: str, action: Literal["start", "pause"], *, by: str, detail: str = ""
    ) -> None:
        """Record that ``by`` started or paused ``rollout`` (the deploy tool agreed)."""
        what: Action = "rollout_start" if action == "start" else "rollout_pause"
        self._record("", "", what, rollout, by, _wall(), detail=detail[:200])

    def rollout_action(
        self,
        rollout: str,
        action: Literal["start", "pause"],
        *,
        by: str,
        timeout_s: float = DEPLOY_TIMEOUT_S,
    ) -> str:
        """:meth:`rollout_commands`, run here one after the other; what the tool said.
        Blocks for as long as the tool runs: the app runs the commands off its database
        thread instead.  :class:`RolloutActionFailed` with the tool's words when it
        refuses."""
        said: list[str] = []
        for command in self.rollout_commands(rollout, action, by=by):
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=timeout_s, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise RolloutActionFailed(" ".join([*said, f"{command[-1]}: {exc}"])) from exc
            words = deploy_words(done.stdout, done.stderr, done.returncode)
            if done.returncode != 0:
                raise RolloutActionFailed(" ".join([*said, words]))
            said.append(words)
        message = " ".join(said)
        self.rollout_done(rollout, action, by=by, detail=message)
        return message

    # --- what people do ---------------------------------------------------------------------

    def mark_trap_checked(self, device: str, sensor: str, *, by: str, now: float) -> None:
        """A person looked at the closed trap; recorded in its capture history.
        :class:`ConsoleNotFound` for a trap the device never reported at its site."""
        self._act(
            device, "trap_checked", sensor, by, now, lambda m: fold.trap_checked(m, sensor, now)
        )

    def reset_trap(self, device: str, sensor: str, *, by: str, now: float) -> None:
        """A person says the trap is empty and re-armed: the notifier's trap row closes (its
        reminders stop: the timekeeper reminds only ``open = 1`` rows, by a compare-and-set
        that also needs ``open = 1``); recorded in the capture history.  Only the row of the
        device's current site closes (a trap row is keyed ``site|device|sensor``): a device
        moved from another site leaves that site's reminders alone.
        :class:`ConsoleNotFound` for a trap the device never reported at its site."""
        self._act(
            device,
            "trap_reset",
            sensor,
            by,
            now,
            lambda m: fold.trap_reset(m, sensor),
            close_trap=True,
        )

    def acknowledge_nap_alarm(self, device: str, cot: str, *, by: str, now: float) -> None:
        """Recorded (the nap sheet shows it as a remote acknowledgement); telling the device
        is the nap module's job.  The alarm stays until the device clears it.
        :class:`ConsoleNotFound` for a cot the device never reported at its site."""
        self._act(
            device, "nap_acknowledged", cot, by, now, lambda m: fold.nap_acknowledged(m, cot, by)
        )

    def actions(self, device: str) -> list[ActionRecord]:
        """Who did what for ``device`` at its current site in the console, oldest first
        (what people did while it was at another site stays with that site)."""
        site = self.device_site(device)
        if site is None:
            return []
        return self.db.run(lambda tx: _actions(tx, device, site), write=False)

    def _act(
        self,
        device: str,
        action: Action,
        target: str,
        by: str,
        now: float,
        change: Any,
        *,
        close_trap: bool = False,
    ) -> None:
        def work(tx: Tx) -> tuple[DeviceState, bool, float | None]:
            rows = tx.query(
                "SELECT memory, online, online_until, last_seen FROM console_device_state"
                f" WHERE device = ?{tx.for_update}",
                (device,),
            )
            if not rows:
                raise ConsoleNotFound(f"no device {device!r}")
            memory = _memory_decoder.decode(bytes(rows[0][0]))
            known = memory.cots if action == "nap_acknowledged" else memory.traps
            if target not in known:
                # never reported at this site: nothing to record, nothing to tell a device
                raise ConsoleNotFound(f"no such trap or cot of device {device!r}")
            online = bool(rows[0][1]) and (rows[0][2] is None or now <= float(rows[0][2]))
            last_seen = None if rows[0][3] is None else float(rows[0][3])
            memory = change(memory)
            view = fold.view(memory, online=online, last_seen=last_seen)
            if close_trap:
                tx.execute(
                    "UPDATE traps SET open = 0 WHERE key = ? AND open = 1",
                    (f"{memory.site}|{device}|{target}",),  # cloud.plan's key of the trap
                )
            tx.execute(
                "UPDATE console_device_state SET memory = ?, view = ?, marker = ?,"
                " changed_at = ? WHERE device = ?",
                (_encoder.encode(memory), _encoder.encode(view), view.state, now, device),
            )
            _insert_action(tx, device, memory.site, action, target, by, now, "")
            return view, bool(rows[0][1]), None if rows[0][2] is None else float(rows[0][2])

        view, online, until = self.db.run(work)
        self._remember(device, view.site, view, online, until)
        self._wrote[device] = now
        self._pending[device] = view

    def _record(
        self,
        device: str,
        site: str,
        action: Action,
        target: str,
        by: str,
        at: float,
        *,
        detail: str = "",
    ) -> None:
        self.db.run(lambda tx: _insert_action(tx, device, site, action, target, by, at, detail))


_UPSERT: Final = (
    "INSERT INTO console_device_state (device, site, online, online_until, last_seen, seen_at,"
    " marker, changed_at, memory, view) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (device) DO UPDATE SET site = excluded.site, online = excluded.online,"
    " online_until = excluded.online_until, last_seen = excluded.last_seen,"
    " seen_at = excluded.seen_at, marker = excluded.marker, changed_at = excluded.changed_at,"
    " memory = excluded.memory, view = excluded.view"
)


def deploy_words(stdout: str, stderr: str, returncode: int) -> str:
    """What ``satoyama-deploy`` said, for the operator (its last 2000 characters)."""
    said = (stdout.strip() or stderr.strip())[-2000:]
    return said or f"satoyama-deploy exited with {returncode}"


def _fleet_paused(conn: sqlite3.Connection) -> dict[str, tuple[str | None, str | None]]:
    """Rollout id -> (paused since, by) from the fleet database; a file from before
    rollouts could be paused (no such columns) says none is."""
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(rollouts)")}
    if "paused" not in columns:
        return {}
    by = "paused_by" if "paused_by" in columns else "NULL"
    return {
        str(r[0]): (None if r[1] is None else str(r[1]), None if r[2] is None else str(r[2]))
        for r in conn.execute(f"SELECT id, paused, {by} FROM rollouts")
    }


def _wall() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def _insert_action(
    tx: Tx, device: str, site: str, action: str, target: str, by: str, at: float, detail: str
) -> None:
    tx.execute(
        "INSERT INTO console_actions (device, site, action, target, by_user, at, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (device, site, action, target, by, at, detail),
    )


def _actions(tx: Tx, device: str, site: str) -> list[ActionRecord]:
    rows = tx.query(
        "SELECT id, device, site, action, target, by_user, at, detail FROM console_actions"
        " WHERE device = ? AND site = ? ORDER BY at, id",
        (device, site),
    )
    return [
        ActionRecord(
            id=int(r[0]),
            device=str(r[1]),
            site=str(r[2]),
            action=str(r[3]),
            target=str(r[4]),
            by=str(r[5]),
            at=float(r[6]),
            detail=str(r[7]),
        )
        for r in rows
    ]


def _offline(state: DeviceState) -> DeviceState:
    state = msgspec.structs.replace(state, online=False)
    return msgspec.structs.replace(state, state=marker_state(state))


def _decode(row: Row) -> Event | None:
    try:
        return decode(bytes(row[7]))
    except EnvelopeError as exc:
        log.warning("console: event %s cannot be read: %s", row[0], exc)
        return None


def _decoded(rows: list[Row]) -> list[tuple[Event, float]]:
    out: list[tuple[Event, float]] = []
    for row in rows:
        event = _decode(row)
        if event is not None:
            out.append((event, float(row[6])))
    return out


def _event_row(event: Event, received_at: float) -> EventRow:
    return EventRow(
        id=event.id,
        device=event.device,
        site=event.site,
        kind=event.kind,
        severity=event.severity,
        ts=event.ts.isoformat(),
        received_at=received_at,
        data=dict(event.data),
    )


def _update(event: Event) -> UpdateRecord:
    d = event.data

    def text(key: str) -> str | None:
        value = d.get(key)
        return value if isinstance(value, str) else None

    return UpdateRecord(
        at=event.ts.isoformat(),
        kind=event.kind,
        from_version=text("from_version"),
        to_version=text("to_version"),
        reason=text("reason"),
    )


def _jst_month_start(now: float) -> float:
    """When the current month began in Japan (00:00 JST on the 1st: 15:00 UTC the day
    before)."""
    first = dt.datetime.fromtimestamp(now, JST).date().replace(day=1)
    return dt.datetime(first.year, first.month, first.day, tzinfo=JST).timestamp()


def _utc_days_of_jst_month(now: float) -> list[float]:
    """The starts (Unix seconds) of the UTC days that hold some of the current month in
    Japan, up to today: from the UTC day in which the month began (the day before the 1st)
    (a device counts its bytes per UTC day: ``bytes_sent_today``)."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    first = dt.datetime.fromtimestamp(_jst_month_start(now), dt.UTC).date()
    days = []
    day = first
    while day <= today:
        days.append(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
        day += dt.timedelta(days=1)
    return days


def _largest_sent(rows: list[Row], start: float, end: float) -> int | None:
    """The largest ``bytes_sent_today`` of the heartbeats in ``rows`` the device stamped
    in ``[start, end)``."""
    best: int | None = None
    for event, received_at in _decoded(rows):
        at = fold.event_time(event, received_at)
        if not start <= at < end:
            continue
        value = event.data.get("bytes_sent_today")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            best = value if best is None else max(best, value)
    return best


def _month_bytes(
    days: list[list[Row]], starts: list[float], before: list[Row], month_start: float
) -> int | None:
    """Sum over the UTC days of each day's largest ``bytes_sent_today`` of a heartbeat the
    device stamped that day (its counter restarts at the device's UTC midnight); of the
    first day (which began nine hours before the month in Japan) only what it counted
    after its last heartbeat stamped before the month began (``before``)."""
    total, any_found = 0, False
    for rows, start in zip(days, starts, strict=True):
        best = _largest_sent(rows, start, start + 86400.0)
        if best is None:
            continue
        if start < month_start:
            earlier = _largest_sent(before, start, month_start)
            best = max(0, best - (earlier or 0))
        total, any_found = total + best, True
    return total if any_found else None


def downsample(points: list[Point], limit: int = HYDROGRAPH_MAX_POINTS) -> list[Point]:
    """At most ``limit`` points: the lowest and the highest of each of ``limit / 2`` equal
    time slices, in time order, so a peak (or a trough) is never smoothed away."""
    if len(points) <= limit:
        return points
    slices = max(1, limit // 2)
    start, end = points[0].t, points[-1].t
    width = (end - start) / slices or 1.0
    out: list[Point] = []
    lo: Point | None = None
    hi: Point | None = None
    current = 0
    for p in points:
        n = min(slices - 1, int((p.t - start) / width))
        if n != current and lo is not None and hi is not None:
            out += [lo] if lo is hi else sorted((lo, hi), key=lambda q: q.t)
            lo = hi = None
        current = n
        if lo is None or p.v < lo.v:
            lo = p
        if hi is None or p.v > hi.v:
            hi = p
    if lo is not None and hi is not None:
        out += [lo] if lo is hi else sorted((lo, hi), key=lambda q: q.t)
    return out


def _captures(events: list[tuple[Event, float]], actions: list[ActionRecord]) -> list[Capture]:
    """Each closure of a trap (reminders folded in), when it was reset, and the people's
    "checked" marks and console resets in between; newest first."""
    marks = sorted(
        ((a.at, a) for a in actions if a.action in ("trap_checked", "trap_reset")),
        key=lambda x: (x[0], x[1].id),
    )
    timeline: list[tuple[float, int, Any]] = [(fold.event_time(e, r), 0, e) for e, r in events]
    timeline += [(at, 1, a) for at, a in marks]
    timeline.sort(key=lambda x: (x[0], x[1]))
    open_: dict[str, dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    for _, _, item in timeline:
        if isinstance(item, ActionRecord):
            sensor = item.target
            current = open_.get(sensor)
            if current is None:
                continue
            if item.action == "trap_checked":
                current["checked"].append((item.at, item.by))
            else:
                current["reset_at"] = _iso(item.at)
                done.append(open_.pop(sensor))
            continue
        event: Event = item
        sensor = fold._sensor(event.data)
        if event.kind == "trap_triggered":
            if sensor not in open_:
                closed = event.data.get("closed_since")
                open_[sensor] = {
                    "sensor": sensor,
                    "closed_at": closed if isinstance(closed, str) else event.ts.isoformat(),
                    "reset_at": None,
                    "checked": [],
                }
        elif sensor in open_:
            open_[sensor]["reset_at"] = event.ts.isoformat()
            done.append(open_.pop(sensor))
    done += list(open_.values())
    done.sort(key=lambda c: str(c["closed_at"]), reverse=True)
    return [
        Capture(
            sensor=c["sensor"],
            closed_at=c["closed_at"],
            reset_at=c["reset_at"],
            checked=c["checked"],
        )
        for c in done[:PAGE_EVENTS]
    ]


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat()


def version_at_least(have: str, want: str) -> bool:
    """Whether version ``have`` is ``want`` or newer (dotted numbers; else equal text)."""

    def parts(v: str) -> tuple[int, ...] | None:
        try:
            return tuple(int(p) for p in v.strip().lstrip("v").split("."))
        except ValueError:
            return None

    a, b = parts(have), parts(want)
    if a is None or b is None:
        return have == want
    return a >= b
