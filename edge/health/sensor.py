"""One sensor's health: a fault is reported once, its recovery once.

A sensor that fails (a bus error, garbage on its line, an unplugged cable, a
broken 4-20 mA loop) is an event, not a crash: ``sensor_fault`` when it first
fails (or fails in a new way), ``sensor_recovered`` when it works again, and
nothing in between however often it is retried.  Heartbeats carry the state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edge.event import SensorFault, SensorRecovered
from edge.link.recorder import Record

log = logging.getLogger(__name__)



class SensorHealth:
    def __init__(
        self, name: str, record: Record, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self._record = record
        self._clock = clock
        self.state = "ok"
        self.fault_code: str | None = None
        self.fault_since: float | None = None
        self.failures = 0

    async def fault(self, code: str, message: str) -> None:
        """The sensor failed; reported only when it was fine or failed differently."""
        self.failures += 1
        if self.fault_code == code:
            return
        first = self.fault_code is None
        self.fault_code = code
        self.state = "fault"
        if first:
            self.fault_since = self._clock()
        log.warning("sensor %s: %s (%s)", self.name, message, code)
        await self._record(SensorFault(sensor=self.name, fault=code, message=message))

    async def ok(self) -> None:
        """The sensor answered properly; reports recovery after a fault."""
        if self.fault_code is None:
            return
        since = self.fault_since or self._clock()
        code = self.fault_code
        self.fault_code = None
        self.fault_since = None
        self.state = "ok"
        log.info("sensor %s recovered from %s", self.name, code)
        await self._record(
            SensorRecovered(sensor=self.name, fault=code, down_s=round(self._clock() - since, 1))
        )
