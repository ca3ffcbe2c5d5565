"""Telemetry (table ``telemetry``): the devices' readings, for the charts in the mails."""

from __future__ import annotations

from collections.abc import Sequence

from cloud.database import Tx
from cloud.store.base import StoreBase
from cloud.store.devices import _seen


class TelemetryTables(StoreBase):
    """Series of readings per device, duplicates ignored."""

    async def add_telemetry(
        self, device: str, site: str, points: Sequence[tuple[str, float, float]], *, now: float
    ) -> int:
        """Keep readings ``(series, ts, value)`` (duplicates ignored); the device is seen."""
        return await self._run(lambda tx: _add_telemetry(tx, device, site, tuple(points), now))

    async def series(
        self, device: str, name: str, since: float, until: float
    ) -> list[tuple[float, float]]:
        rows = await self._read(
            "SELECT ts, value FROM telemetry WHERE device = ? AND series = ?"
            " AND ts >= ? AND ts <= ? ORDER BY ts",
            (device, name, since, until),
        )
        return [(float(t), float(v)) for t, v in rows]


# --- transactions (run on the store's thread) ----------------------------------------------


def _add_telemetry(
    tx: Tx, device: str, site: str, points: tuple[tuple[str, float, float], ...], now: float
) -> int:
    before = tx.query("SELECT COUNT(*) FROM telemetry WHERE device = ?", (device,))[0][0]
    tx.executemany(
        "INSERT INTO telemetry (device, series, ts, value) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (device, series, ts) DO NOTHING",
        [(device, name, ts, value) for name, ts, value in points],
    )
    after = tx.query("SELECT COUNT(*) FROM telemetry WHERE device = ?", (device,))[0][0]
    _seen(tx, device, site, now, None, None, None)
    return int(after) - int(before)
