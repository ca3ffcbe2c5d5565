"""The heartbeat: the device's health for the cloud, every ``[health] heartbeat_s``.

:class:`SensorBoard` is what every sensor's state is read from (a detector still
warming up, a sensor whose :class:`~edge.health.sensor.SensorHealth` reports a
fault, a supervised task that failed); :func:`heartbeat_data` is the pure part
(what a heartbeat says); :class:`Heartbeat` is the task that sends one each
period, or at once when asked (``cmd/heartbeat``).  Telemetry readings held on
the device leave with the heartbeat: one flight over the link, one
acknowledgement from the cloud for both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from edge.config import HealthConfig
from edge.event import HeartbeatData
from edge.health.sensor import SensorHealth
from edge.health.supervisor import Supervisor
from edge.link.linkstats import DailyUsage
from edge.link.modem import modem_status
from edge.link.outbox import Outbox, OutboxStats
from edge.link.recorder import Record, Recorder
from edge.link.telemetry import Telemetry
from edge.timed_wait import wait_set

log = logging.getLogger(__name__)


class Detector(Protocol):
    @property
    def warming_up(self) -> bool: ...


class SensorBoard:
    """Every sensor's state (``ok``, ``fault``, ``warming_up``) for the heartbeat."""

    def __init__(self, record: Record, supervisor: Supervisor) -> None:
        self._record = record
        self._supervisor = supervisor
        self.detectors: dict[str, Detector] = {}
        self.health: dict[str, SensorHealth] = {}

    def sensor(self, name: str) -> SensorHealth:
        """``name``'s health (made on first use): its faults are reported through ``record``."""
        health = self.health.get(name)
        if health is None:
            health = self.health[name] = SensorHealth(name, self._record)
        return health

    def states(self) -> dict[str, str]:
        states = {
            name: "warming_up" if det.warming_up else "ok" for name, det in self.detectors.items()
        }
        states.update({name: h.state for name, h in self.health.items()})
        states.update(self._supervisor.sensor_states())  # a failed task: "fault" until recovered
        return states


def heartbeat_data(
    config: HealthConfig,
    stats: OutboxStats,
    *,
    uptime_s: float,
    sensors: dict[str, str],
    bytes_sent_today: int,
    link: dict[str, Any] | None,
    now: float,
) -> HeartbeatData:
    """A heartbeat's ``data`` (fields without a value are left out on the wire)."""
    return HeartbeatData(
        interval_s=config.heartbeat_s,
        uptime_s=round(uptime_s, 1),
        outbox_depth=stats.depth,
        oldest_undelivered_s=None
        if stats.oldest_created is None
        else round(now - stats.oldest_created, 1),
        evicted=stats.evicted,
        sensors=sensors,
        bytes_sent_today=bytes_sent_today,
        link=link,
    )


class Heartbeat:
    def __init__(
        self,
        config: HealthConfig,
        *,
        outbox: Outbox,
        recorder: Recorder,
        sensors: SensorBoard,
        telemetry: Telemetry,
        usage: DailyUsage,
        started_at: float,
        wanted: asyncio.Event | None = None,
        modem: Callable[[], Awaitable[dict[str, Any] | None]] = modem_status,
    ) -> None:
        """``usage``: the uplink's count of bytes sent today; ``started_at``:
        ``time.monotonic()`` of the daemon's start (for ``uptime_s``); ``wanted``: set to
        send one now (``cmd/heartbeat``) instead of at the end of the period."""
        self.config = config
        self.outbox = outbox
        self.recorder = recorder
        self.sensors = sensors
        self.telemetry = telemetry
        self.usage = usage
        self.started_at = started_at
        self._modem = modem
        self._now = asyncio.Event() if wanted is None else wanted

    async def beat(self) -> None:
        """Record one heartbeat now, and the telemetry held with it."""
        stats = await self.outbox.stats()
        link = await self._modem() if self.config.modem == "auto" else None
        payload = heartbeat_data(
            self.config,
            stats,
            uptime_s=time.monotonic() - self.started_at,
            sensors=self.sensors.states(),
            bytes_sent_today=self.usage.today,
            link=link,
            now=time.time(),
        )
        event = self.recorder.make(payload)
        if await self.outbox.put(event) and stats.evicted:
            # Reported in a durable heartbeat: stop counting these.
            await self.outbox.forget_evictions(stats.evicted)
        if len(self.telemetry):
            # Readings held leave with the heartbeat (never later than batch_s): one
            # flight over the link, and one acknowledgement from the cloud for both.
            await self.telemetry.flush()

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception:
                log.exception("heartbeat failed")
            self._now.clear()
            await wait_set(self._now, self.config.heartbeat_s)
