"""The fleet as the store knows it: each device's connection (table ``devices``) and
the notifier instances alive (table ``instances``).

A device's row says whether it is online or offline (by its status message or
by a missed heartbeat), and who was told it went offline; the timekeeper's
offline and back-online notices are compare-and-sets on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from cloud.database import Tx
from cloud.store.base import StoreBase
from cloud.store.mails import Notice, OutgoingMail, _insert_mails, _recipients, _recipients_json


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """What the store knows of one device's connection."""

    device: str
    site: str
    state: Literal["online", "offline"]
    cause: str
    since: float
    reason: str
    last_seen: float
    hb_interval: float | None
    notified: bool
    transitions: int
    recipients: tuple[tuple[str, str], ...]
    lat: float | None
    lon: float | None
    version: str = ""
    """The software it runs, as its last status message with a version said."""


@dataclass(frozen=True, slots=True)
class InstanceRow:
    id: str
    started_at: float
    last_seen: float
    host: str
    pid: int


_DEVICE_COLUMNS: Final = (
    "device, site, state, cause, since, reason, last_seen, hb_interval, notified, "
    "transitions, recipients, lat, lon, version"
)


class DeviceTables(StoreBase):
    """Devices' connections, and the notifier's instances."""

    async def device(self, device: str) -> DeviceRow | None:
        rows = await self._read(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device = ?", (device,)
        )
        return _device_row(rows[0]) if rows else None

    async def devices(self) -> list[DeviceRow]:
        rows = await self._read(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY device", ())
        return [_device_row(r) for r in rows]

    async def record_status(
        self, device: str, state: str, reason: str, *, now: float, version: str = ""
    ) -> DeviceRow:
        """A status message: an ``offline`` one starts the grace period (no mail yet).

        An ``online`` one only records that the device is seen; bringing a
        device back is :meth:`device_back_online` (it needs the mails).  A
        non-empty ``version`` (the software it runs) is kept in ``devices.version``.
        """
        return await self._run(lambda tx: _record_status(tx, device, state, reason, now, version))

    async def device_offline_notified(
        self,
        row: DeviceRow,
        notice: Notice,
        mails: Sequence[OutgoingMail],
        *,
        now: float,
        by_heartbeat: bool,
    ) -> bool:
        """Compare-and-set: the device in ``row``'s state goes offline-notified; queue ``mails``.

        ``by_heartbeat``: ``row`` is online and silent past its deadline.
        Returns False if the row changed meanwhile (another instance did it,
        or the device spoke): nothing is written.
        """
        return await self._run(
            lambda tx: _device_offline(tx, row, notice, tuple(mails), now, by_heartbeat)
        )

    async def device_back_online(
        self, row: DeviceRow, notice: Notice, mails: Sequence[OutgoingMail], *, now: float
    ) -> bool:
        """Compare-and-set: the offline device in ``row`` is online again; queue ``mails``."""
        return await self._run(lambda tx: _device_online(tx, row, notice, tuple(mails), now))

    async def overdue_devices(
        self, *, now: float, grace_s: float, heartbeat_timeout_s: float
    ) -> list[tuple[DeviceRow, bool]]:
        """Devices to mail about now: (row, by_heartbeat).

        Offline by their status for ``grace_s`` without a mail yet; or online
        with no message for ``max(heartbeat_timeout_s, 2 x interval)``.
        """
        rows = await self._read(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE"
            " (state = 'offline' AND notified = 0 AND since + ? <= ?)"
            " OR (state = 'online' AND hb_interval IS NOT NULL AND last_seen +"
            " (CASE WHEN 2 * hb_interval > ? THEN 2 * hb_interval ELSE ? END) <= ?)",
            (grace_s, now, heartbeat_timeout_s, heartbeat_timeout_s, now),
        )
        return [(r, r.state == "online") for r in map(_device_row, rows)]

    async def returned_devices(self) -> list[DeviceRow]:
        """Devices offline by a missed heartbeat that have spoken since (crash recovery)."""
        rows = await self._read(
            f"SELECT {_DEVICE_COLUMNS} FROM devices"
            " WHERE state = 'offline' AND cause = 'heartbeat' AND last_seen > since",
            (),
        )
        return [_device_row(r) for r in rows]

    async def instance_alive(
        self, instance: str, *, now: float, host: str, pid: int, starting: bool = False
    ) -> None:
        """Record that ``instance`` is running (for ``status`` and session takeover)."""
        await self._run(lambda tx: _instance_alive(tx, instance, now, host, pid, starting))

    async def instances(self) -> list[InstanceRow]:
        rows = await self._read(
            "SELECT id, started_at, last_seen, host, pid FROM instances ORDER BY id", ()
        )
        return [InstanceRow(r[0], float(r[1]), float(r[2]), r[3], int(r[4])) for r in rows]


# --- transactions and rows (run on the store's thread) -------------------------------------


def _seen(
    tx: Tx,
    device: str,
    site: str,
    now: float,
    hb_interval: float | None,
    lat: float | None,
    lon: float | None,
) -> DeviceRow:
    """A message came from ``device``: it is alive (a state change is the caller's).

    Returns the row as it now is, made from what was written (not read back: that
    was a third statement for every event)."""
    rows = tx.query(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device = ?{tx.for_update}", (device,)
    )
    now = float(now)
    hb = None if hb_interval is None else float(hb_interval)
    if not rows:
        new = DeviceRow(
            device=device, site=site, state="online", cause="event", since=now, reason="",
            last_seen=now, hb_interval=hb, notified=False, transitions=0, recipients=(),
            lat=None if lat is None else float(lat), lon=None if lon is None else float(lon),
        )  # fmt: skip
        tx.execute(
            "INSERT INTO devices (device, site, state, cause, since, last_seen, hb_interval,"
            " lat, lon) VALUES (?, ?, 'online', 'event', ?, ?, ?, ?, ?)",
            (device, site, now, now, hb, new.lat, new.lon),
        )
        return new
    row = _device_row(rows[0])
    new = dataclasses.replace(
        row,
        site=site or row.site,
        last_seen=max(now, row.last_seen),
        hb_interval=hb if hb is not None else row.hb_interval,
        lat=float(lat) if lat is not None else row.lat,
        lon=float(lon) if lon is not None else row.lon,
    )
    tx.execute(
        "UPDATE devices SET site = ?, last_seen = ?, hb_interval = ?, lat = ?, lon = ?"
        " WHERE device = ?",
        (new.site, new.last_seen, new.hb_interval, new.lat, new.lon, device),
    )
    return new


def _record_status(
    tx: Tx, device: str, state: str, reason: str, now: float, version: str = ""
) -> DeviceRow:
    rows = tx.query(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device = ?{tx.for_update}", (device,)
    )
    if not rows:
        tx.execute(
            "INSERT INTO devices (device, site, state, cause, since, reason, last_seen,"
            " transitions) VALUES (?, '', ?, 'status', ?, ?, ?, ?)",
            (device, state, now, reason, now, 1 if state == "offline" else 0),
        )
    else:
        row = _device_row(rows[0])
        if state == "offline" and row.state == "online":
            tx.execute(
                "UPDATE devices SET state = 'offline', cause = 'status', since = ?, reason = ?,"
                " notified = 0, transitions = transitions + 1 WHERE device = ?",
                (now, reason, device),
            )
        elif state == "offline":
            # Already offline (a missed heartbeat said so first): the broker's word is
            # better, but one offline mail is enough.
            tx.execute(
                "UPDATE devices SET cause = 'status', reason = ? WHERE device = ?",
                (reason, device),
            )
        else:
            tx.execute(
                "UPDATE devices SET last_seen = ? WHERE device = ? AND last_seen < ?",
                (now, device, now),
            )
    if version:
        tx.execute(
            "UPDATE devices SET version = ? WHERE device = ? AND version <> ?",
            (version[:64], device, version[:64]),
        )
    rows = tx.query(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device = ?", (device,))
    return _device_row(rows[0])


def _device_offline(
    tx: Tx,
    row: DeviceRow,
    notice: Notice,
    mails: tuple[OutgoingMail, ...],
    now: float,
    by_heartbeat: bool,
) -> bool:
    recipients = _recipients_json(mails)
    if by_heartbeat:
        changed = tx.execute(
            "UPDATE devices SET state = 'offline', cause = 'heartbeat', since = ?,"
            " reason = 'no heartbeat', notified = 1, transitions = transitions + 1,"
            " recipients = ? WHERE device = ? AND state = 'online' AND last_seen = ?"
            " AND transitions = ?",
            (now, recipients, row.device, row.last_seen, row.transitions),
        )
    else:
        changed = tx.execute(
            "UPDATE devices SET notified = 1, recipients = ?"
            " WHERE device = ? AND state = 'offline' AND notified = 0 AND transitions = ?",
            (recipients, row.device, row.transitions),
        )
    if changed != 1:
        return False
    _insert_mails(tx, notice, mails, now)
    return True


def _device_online(
    tx: Tx, row: DeviceRow, notice: Notice, mails: tuple[OutgoingMail, ...], now: float
) -> bool:
    changed = tx.execute(
        "UPDATE devices SET state = 'online', cause = 'status', since = ?, reason = '',"
        " notified = 0, transitions = transitions + 1, recipients = '[]', last_seen = ?"
        " WHERE device = ? AND state = 'offline' AND transitions = ?",
        (now, max(now, row.last_seen), row.device, row.transitions),
    )
    if changed != 1:
        return False
    _insert_mails(tx, notice, mails, now)
    return True


def _instance_alive(tx: Tx, instance: str, now: float, host: str, pid: int, starting: bool) -> None:
    changed = tx.execute(
        "UPDATE instances SET last_seen = ?, host = ?, pid = ?"
        + (", started_at = ?" if starting else "")
        + " WHERE id = ?",
        (now, host, pid, now, instance) if starting else (now, host, pid, instance),
    )
    if changed == 0:
        tx.execute(
            "INSERT INTO instances (id, started_at, last_seen, host, pid) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (instance, now, now, host, pid),
        )


def _device_row(r: tuple[Any, ...]) -> DeviceRow:
    return DeviceRow(
        device=r[0],
        site=r[1],
        state=r[2],
        cause=r[3],
        since=float(r[4]),
        reason=r[5],
        last_seen=float(r[6]),
        hb_interval=None if r[7] is None else float(r[7]),
        notified=bool(r[8]),
        transitions=int(r[9]),
        recipients=_recipients(r[10]),
        lat=None if r[11] is None else float(r[11]),
        lon=None if r[12] is None else float(r[12]),
        version=r[13],
    )
