"""Telemetry batching: many readings, one compact message.

Readings wait in memory until ``batch_s`` has passed since the first of them
or ``max_readings`` are held; then the batch is encoded (MessagePack, offsets
from ``t0``, each series as packed columns: millisecond offsets as differences
of differences, values as differences of scaled integers) and queued in the
outbox below every event.  A reading costs about 3 bytes on the wire instead
of a JSON message each.

:class:`TelemetryBuffer` is the pure part (what a batch holds, when it is due);
:class:`Telemetry` is the sink the watches write readings into, and its
:meth:`Telemetry.run` the task that queues each batch when it is due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from edge.event import Series, TelemetryBatch, encode_telemetry, new_event_id
from edge.link.outbox import TELEMETRY_RANK, Outbox, Row
from edge.timed_wait import wait_set


class TelemetrySink(Protocol):
    """Where a watch puts its readings (``"<sensor>.<quantity>"``)."""

    def add(self, name: str, value: float, at: float | None = None) -> None: ...
    async def flush(self) -> None: ...


class TelemetryBuffer:
    def __init__(
        self,
        *,
        device: str,
        site: str,
        boot: str,
        batch_s: float,
        max_readings: int,
        clock_synced: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        columns: bool = True,
    ) -> None:
        """``columns``: encode each series as packed columns (:func:`edge.event.pack_series`,
        about 3 B a reading instead of 18); off for a notifier that predates them."""
        self.device, self.site, self.boot = device, site, boot
        self.batch_s = batch_s
        self.max_readings = max_readings
        self.clock_synced = clock_synced
        self.clock = clock
        self.columns = columns
        self._series: dict[str, tuple[list[float], list[float]]] = {}
        self._count = 0
        self._first: float | None = None
        self._seq = 0

    def __len__(self) -> int:
        return self._count

    def add(self, name: str, value: float, at: float | None = None) -> bool:
        """Hold one reading; True when the batch is due (full)."""
        at = self.clock() if at is None else at
        ts, vs = self._series.setdefault(name, ([], []))
        ts.append(at)
        vs.append(value)
        self._count += 1
        if self._first is None:
            self._first = at
        return self._count >= self.max_readings

    def due_at(self) -> float | None:
        """Wall-clock time the current batch must be queued, or None when empty."""
        return None if self._first is None else self._first + self.batch_s

    def take(self) -> Row | None:
        """The held readings as one outbox row (and forget them); None when empty."""
        if not self._count:
            return None
        t0 = min(ts[0] for ts, _ in self._series.values())
        self._seq += 1
        row_id = new_event_id()
        batch = TelemetryBatch(
            id=row_id,
            device=self.device,
            site=self.site,
            boot=self.boot,
            seq=self._seq,
            t0=round(t0, 3),
            clock_synced=self.clock_synced(),
            series={
                name: Series(t=[round(t - t0, 3) for t in ts], v=vs)
                for name, (ts, vs) in self._series.items()
            },
        )
        self._series.clear()
        self._count = 0
        self._first = None
        return Row(
            id=row_id,
            seq=0,
            rank=TELEMETRY_RANK,
            kind="telemetry",
            channel="telemetry",
            created=self.clock(),
            payload=encode_telemetry(batch, columns=self.columns),
        )


class Telemetry:
    """The device's telemetry: readings held in a :class:`TelemetryBuffer`, queued in the
    outbox as one row when the batch is due (:meth:`run`), full, or flushed."""

    def __init__(self, buffer: TelemetryBuffer, outbox: Outbox) -> None:
        self.buffer = buffer
        self.outbox = outbox
        self._due = asyncio.Event()

    def __len__(self) -> int:
        return len(self.buffer)

    def add(self, name: str, value: float, at: float | None = None) -> None:
        """Hold one reading (``"<sensor>.<quantity>"``); sent in the next batch."""
        if self.buffer.add(name, value, at) or len(self.buffer) == 1:
            self._due.set()

    async def flush(self) -> None:
        """Queue what is held now (nothing when empty)."""
        row = self.buffer.take()
        if row is not None:
            await self.outbox.put_rows([row])

    async def run(self) -> None:
        """Queue each batch when it is due (``batch_s`` after its first reading) or full."""
        buffer = self.buffer
        while True:
            self._due.clear()
            due = buffer.due_at()
            if due is None:
                await self._due.wait()
                continue
            full = len(buffer) >= buffer.max_readings
            if not full and due > time.time():
                await wait_set(self._due, due - time.time())
                continue
            await self.flush()
