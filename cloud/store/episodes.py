"""Bursts (table ``episodes``) and closed traps (table ``traps``): where the timekeeper's
summaries and reminders come from.

An event that a ``[[coalesce]]`` rule covers opens a burst or folds into the
open one (no mail of its own, counted for the summary); a trap that closed
gets reminders until it is reset.  Each summary and reminder is queued by a
compare-and-set on its row, so several instances queue it once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from cloud.database import Tx
from cloud.store.base import StoreBase
from cloud.store.mails import Notice, OutgoingMail, _insert_mails, _recipients, _recipients_json
from edge.event import AnimalDetected, Event, event_data


@dataclass(frozen=True, slots=True)
class CoalescePlan:
    """The event may fold into a burst with this key (see ``[[coalesce]]``)."""

    key: str
    quiet_s: float
    summary_every_s: float
    sensor: str


@dataclass(frozen=True, slots=True)
class TrapPlan:
    """``open``: a trap closed (reminders start); ``close``: it was reset (they stop)."""

    action: Literal["open", "close"]
    key: str
    sensor: str
    closed_since: float
    reminder_every_s: float


@dataclass(frozen=True, slots=True)
class EpisodeRow:
    """A burst of events folded into one mail, with what the summary will say."""

    id: str
    key: str
    open: bool
    site: str
    device: str
    kind: str
    started_at: float
    last_at: float
    quiet_s: float
    summary_every_s: float
    next_summary_at: float
    folded: int
    folded_total: int
    summaries: int
    stats: dict[str, Any]
    recipients: tuple[tuple[str, str], ...]
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class TrapRow:
    """A closed trap and its reminders."""

    key: str
    open: bool
    site: str
    device: str
    sensor: str
    trigger_id: str
    closed_since: float
    next_reminder_at: float
    reminders: int
    recipients: tuple[tuple[str, str], ...]
    lat: float
    lon: float


_EPISODE_COLUMNS: Final = (
    "id, key, open, site, device, kind, started_at, last_at, quiet_s, summary_every_s, "
    "next_summary_at, folded, folded_total, summaries, stats, recipients, lat, lon"
)


_TRAP_COLUMNS: Final = (
    "key, open, site, device, sensor, trigger_id, closed_since, next_reminder_at, reminders, "
    "recipients, lat, lon"
)


class EpisodeTables(StoreBase):
    """Bursts and traps, and when the next timer of any kind falls."""

    async def due_episodes(self, now: float) -> list[EpisodeRow]:
        """Bursts whose summary is due: ended (quiet), or open past their summary time."""
        rows = await self._read(
            f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE (open = 0)"
            " OR (last_at + quiet_s <= ?) OR (folded > 0 AND next_summary_at <= ?)",
            (now, now),
        )
        return [_episode_row(r) for r in rows]

    async def episode_summarised(
        self,
        row: EpisodeRow,
        notice: Notice | None,
        mails: Sequence[OutgoingMail],
        *,
        now: float,
        close: bool,
    ) -> bool:
        """Compare-and-set on ``row``: queue the summary, and end the burst if ``close``."""
        return await self._run(
            lambda tx: _episode_summarised(tx, row, notice, tuple(mails), now, close)
        )

    async def episodes(self) -> list[EpisodeRow]:
        rows = await self._read(f"SELECT {_EPISODE_COLUMNS} FROM episodes ORDER BY started_at", ())
        return [_episode_row(r) for r in rows]

    async def due_traps(self, now: float) -> list[TrapRow]:
        rows = await self._read(
            f"SELECT {_TRAP_COLUMNS} FROM traps WHERE open = 1 AND next_reminder_at <= ?", (now,)
        )
        return [_trap_row(r) for r in rows]

    async def open_traps(self) -> list[TrapRow]:
        rows = await self._read(
            f"SELECT {_TRAP_COLUMNS} FROM traps WHERE open = 1 ORDER BY closed_since", ()
        )
        return [_trap_row(r) for r in rows]

    async def trap_reminded(
        self,
        row: TrapRow,
        notice: Notice,
        mails: Sequence[OutgoingMail],
        *,
        now: float,
        every_s: float,
    ) -> bool:
        """Compare-and-set on ``row``: queue reminder number ``row.reminders + 1``."""
        return await self._run(
            lambda tx: _trap_reminded(tx, row, notice, tuple(mails), now, every_s)
        )

    async def next_timer(self, *, grace_s: float, heartbeat_timeout_s: float) -> float | None:
        """When the earliest summary, reminder or offline deadline falls (Unix seconds)."""
        rows = await self._read(
            "SELECT MIN(t) FROM ("
            " SELECT CASE WHEN open = 0 THEN 0"
            "  WHEN folded > 0 AND next_summary_at < last_at + quiet_s THEN next_summary_at"
            "  ELSE last_at + quiet_s END AS t FROM episodes"
            " UNION ALL SELECT next_reminder_at FROM traps WHERE open = 1"
            " UNION ALL SELECT since + ? FROM devices WHERE state = 'offline' AND notified = 0"
            " UNION ALL SELECT last_seen + (CASE WHEN 2 * hb_interval > ? THEN 2 * hb_interval"
            "  ELSE ? END) FROM devices WHERE state = 'online' AND hb_interval IS NOT NULL"
            ") AS timers",
            (grace_s, heartbeat_timeout_s, heartbeat_timeout_s),
        )
        value = rows[0][0]
        return None if value is None else float(value)


# --- transactions and rows (run on the store's thread) -------------------------------------


def _coalesce(
    tx: Tx, event: Event, plan: CoalescePlan, mails: tuple[OutgoingMail, ...], now: float
) -> bool:
    """Fold the event into the open burst of its key, or open one; True if folded."""
    rows = tx.query(
        f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE key = ? AND open = 1{tx.for_update}",
        (plan.key,),
    )
    if rows:
        episode = _episode_row(rows[0])
        if now < episode.last_at + episode.quiet_s:
            stats = _fold_stats(episode.stats, event, plan.sensor, now)
            tx.execute(
                "UPDATE episodes SET last_at = ?, folded = folded + 1,"
                " folded_total = folded_total + 1, stats = ? WHERE id = ?",
                (max(now, episode.last_at), json.dumps(stats, ensure_ascii=False), episode.id),
            )
            return True
        # The burst is over (its summary, if any, is the timers' job): start a new one.
        tx.execute("UPDATE episodes SET open = 0 WHERE id = ?", (episode.id,))
    tx.execute(
        "INSERT INTO episodes (id, key, open, site, device, kind, started_at, last_at, quiet_s,"
        " summary_every_s, next_summary_at, stats, recipients, lat, lon)"
        " VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.id, plan.key, event.site, event.device, event.kind, now, now, plan.quiet_s,
            plan.summary_every_s, now + plan.summary_every_s,
            json.dumps(_first_stats(event, plan.sensor, now), ensure_ascii=False),
            _recipients_json(mails), event.location.lat, event.location.lon,
        ),
    )  # fmt: skip
    return False


def _first_stats(event: Event, sensor: str, now: float) -> dict[str, Any]:
    return {
        "first": {"kind": event.kind, "sensor": sensor, "at": now},
        "severity": event.severity,
        "by_sensor": {},
        "by_kind": {},
        "sounded": 0,
        "from": None,
        "to": None,
        "last_kind": event.kind,
        "last_data": _small(event.data),
    }


def _fold_stats(stats: dict[str, Any], event: Event, sensor: str, now: float) -> dict[str, Any]:
    """What a summary says, updated with one more folded event."""
    out = dict(stats)
    by_sensor = dict(out.get("by_sensor") or {})
    by_sensor[sensor] = int(by_sensor.get(sensor, 0)) + 1
    by_kind = dict(out.get("by_kind") or {})
    by_kind[event.kind] = int(by_kind.get(event.kind, 0)) + 1
    out["by_sensor"], out["by_kind"] = by_sensor, by_kind
    typed = event_data(event)  # data that does not fit its kind (older devices): as it came
    deterrent = typed.deterrent if isinstance(typed, AnimalDetected) else None
    if (deterrent if typed is not None else event.data.get("deterrent")) == "sounded":
        out["sounded"] = int(out.get("sounded") or 0) + 1
    out["from"] = now if out.get("from") is None else out["from"]
    out["to"] = now
    out["last_kind"] = event.kind
    out["last_data"] = _small(event.data)
    return out


def _small(data: dict[str, Any]) -> dict[str, Any]:
    """A device's data, JSON-safe and bounded, for a summary's "last seen" line."""
    out: dict[str, Any] = {}
    for key, value in list(data.items())[:20]:
        if isinstance(value, str | int | float | bool) or value is None:
            out[str(key)[:64]] = value if not isinstance(value, str) else value[:300]
    return out


def _episode_summarised(
    tx: Tx,
    row: EpisodeRow,
    notice: Notice | None,
    mails: tuple[OutgoingMail, ...],
    now: float,
    close: bool,
) -> bool:
    guard = " AND folded = ? AND summaries = ? AND last_at = ? AND open = ?"
    guard_args = (row.folded, row.summaries, row.last_at, 1 if row.open else 0)
    if close:
        changed = tx.execute(f"DELETE FROM episodes WHERE id = ?{guard}", (row.id, *guard_args))
    else:
        stats = dict(row.stats, by_sensor={}, by_kind={}, sounded=0, **{"from": None, "to": None})
        changed = tx.execute(
            "UPDATE episodes SET folded = 0, summaries = summaries + 1, next_summary_at = ?,"
            f" stats = ? WHERE id = ?{guard}",
            (
                now + row.summary_every_s,
                json.dumps(stats, ensure_ascii=False),
                row.id,
                *guard_args,
            ),
        )
    if changed != 1:
        return False
    if notice is not None:
        _insert_mails(tx, notice, mails, now)
    return True


def _trap(
    tx: Tx, event: Event, plan: TrapPlan, mails: tuple[OutgoingMail, ...], now: float
) -> bool:
    rows = tx.query(f"SELECT {_TRAP_COLUMNS} FROM traps WHERE key = ?{tx.for_update}", (plan.key,))
    current = _trap_row(rows[0]) if rows else None
    if plan.action == "close":
        if current is not None and current.open:
            tx.execute("UPDATE traps SET open = 0 WHERE key = ?", (plan.key,))
        return False
    if current is not None and current.open:
        return False  # closed already: reminders go on as they were
    values = (
        event.site, event.device, plan.sensor, event.id, plan.closed_since,
        now + plan.reminder_every_s, _recipients_json(mails), event.location.lat,
        event.location.lon,
    )  # fmt: skip
    if current is None:
        tx.execute(
            "INSERT INTO traps (open, site, device, sensor, trigger_id, closed_since,"
            " next_reminder_at, recipients, lat, lon, key)"
            " VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, plan.key),
        )
    else:
        tx.execute(
            "UPDATE traps SET open = 1, site = ?, device = ?, sensor = ?, trigger_id = ?,"
            " closed_since = ?, next_reminder_at = ?, reminders = 0, recipients = ?, lat = ?,"
            " lon = ? WHERE key = ?",
            (*values, plan.key),
        )
    return True


def _trap_reminded(
    tx: Tx,
    row: TrapRow,
    notice: Notice,
    mails: tuple[OutgoingMail, ...],
    now: float,
    every_s: float,
) -> bool:
    # After a long outage, one reminder now and the next a full interval later,
    # rather than a burst of the reminders that were missed.
    following = max(row.next_reminder_at + every_s, now + every_s / 2)
    changed = tx.execute(
        "UPDATE traps SET reminders = reminders + 1, next_reminder_at = ?"
        " WHERE key = ? AND open = 1 AND trigger_id = ? AND reminders = ?",
        (following, row.key, row.trigger_id, row.reminders),
    )
    if changed != 1:
        return False
    _insert_mails(tx, notice, mails, now)
    return True


def _episode_row(r: tuple[Any, ...]) -> EpisodeRow:
    try:
        stats = json.loads(r[14] or "{}")
    except ValueError:
        stats = {}
    return EpisodeRow(
        id=r[0], key=r[1], open=bool(r[2]), site=r[3], device=r[4], kind=r[5],
        started_at=float(r[6]), last_at=float(r[7]), quiet_s=float(r[8]),
        summary_every_s=float(r[9]), next_summary_at=float(r[10]), folded=int(r[11]),
        folded_total=int(r[12]), summaries=int(r[13]), stats=stats,
        recipients=_recipients(r[15]), lat=float(r[16]), lon=float(r[17]),
    )  # fmt: skip


def _trap_row(r: tuple[Any, ...]) -> TrapRow:
    return TrapRow(
        key=r[0], open=bool(r[1]), site=r[2], device=r[3], sensor=r[4], trigger_id=r[5],
        closed_since=float(r[6]), next_reminder_at=float(r[7]), reminders=int(r[8]),
        recipients=_recipients(r[9]), lat=float(r[10]), lon=float(r[11]),
    )  # fmt: skip
