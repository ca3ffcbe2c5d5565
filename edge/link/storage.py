"""The outbox's storage, watched: each of its notices reported once, a failing disk retried.

The outbox queues its notices (a fault, its recovery, quarantined rows, a
salvaged file, a set-aside ``-wal``, evictions, rows lost from memory), so none
is missed however briefly the trouble lasted.  :func:`notice_event` is the pure
part (which event a notice becomes); :class:`StorageWatch` is the task.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from edge.event import EnvelopeError, EventData, SensorFault, SensorRecovered, data_as
from edge.link.outbox import Notice, Outbox
from edge.timed_wait import wait_set

log = logging.getLogger(__name__)

_FAULTS = {
    "memory_full": "memory_full",
    "corrupt": "corrupt",
    "quarantined": "quarantined",
    "empty_file": "empty_file",
    "evicting": "full",
}


def notice_event(notice: Notice) -> SensorFault | SensorRecovered:
    """The event that reports ``notice``."""
    if notice.kind == "recovered":
        return SensorRecovered(
            sensor="storage",
            down_s=notice.data.get("down_s"),
            lost_in_memory=notice.data.get("lost_in_memory", {}),
        )
    sensor = "storage" if notice.kind in ("fault", "memory_full") else "outbox"
    if notice.kind == "fault":
        fault = notice.code
    elif notice.kind == "wal":
        fault = f"wal_{notice.code}"
    else:
        fault = _FAULTS.get(notice.kind, notice.kind)
    data: dict[str, Any] = {**notice.data, "sensor": sensor, "fault": fault}
    data["message"] = notice.message
    try:
        return data_as(data, SensorFault)
    except EnvelopeError as exc:
        # A notice may fill a field with None for "unknown" (a garbage file's unreadable
        # rows) or with what the vocabulary does not type: the report must go out anyway,
        # without what has no value, or at the least with what failed and the message.
        log.warning("storage notice %s: %s", notice.kind, exc)
        try:
            return data_as({k: v for k, v in data.items() if v is not None}, SensorFault)
        except EnvelopeError:
            return SensorFault(sensor=sensor, fault=fault, message=notice.message)


class StorageWatch:
    def __init__(
        self,
        outbox: Outbox,
        *,
        record: Callable[[EventData], Awaitable[Any]],
        retry_s: float,
    ) -> None:
        """``retry_s``: how often a failing disk is tried again (``[health] storage_retry_s``)."""
        self.outbox = outbox
        self._record = record
        self.retry_s = retry_s

    async def run(self) -> None:
        """Report each notice once; retry a failing disk until it works."""
        outbox = self.outbox
        while True:
            outbox.notice_ready.clear()
            for notice in outbox.take_notices():
                await self._record(notice_event(notice))
            if outbox.fault is None:
                await outbox.notice_ready.wait()
                continue
            if await outbox.retry():
                continue  # its recovery notice is waiting
            await wait_set(outbox.notice_ready, self.retry_s)

    async def check(self) -> None:
        """The outbox's full integrity check (run after start: READY is not held up by it)."""
        result = await self.outbox.check_integrity()
        if result != "ok":
            log.warning("outbox integrity check: %s", result)
