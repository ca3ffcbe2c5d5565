"""What time alone causes: the timekeeper's notices and the housekeeper's rounds.

* the **timekeeper** queues the summary of a burst (an animal that lingered),
  trap reminders, and "device offline" mails (status offline past the grace
  period, or no heartbeat past the timeout), through :mod:`cloud.notices`.
  Each is a compare-and-set in the store, so several instances queue it once.
  It sleeps until the store's next deadline, or until woken (a new burst or
  trap, a status message, a stop).
* the **housekeeper** records that this instance is alive and prunes old
  events and telemetry.

Time comes from the notifier's injectable :class:`~cloud.clock.Clock`
(:func:`wait_or_timeout` waits on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Final

from cloud.clock import Clock
from cloud.config import NotifierConfig
from cloud.notices import Notices
from cloud.stats import NotifierStats
from cloud.store import Store

log = logging.getLogger("cloud.notifier")  # the name its log lines had before the split

PRUNE_EVERY_S: Final = 3600.0
#: Telemetry is kept 8 days: the console's device page draws a 7-day hydrograph (and the
#: alert mail's chart, :data:`cloud.chart.WINDOW_S`, shows the last 24 hours of it).
TELEMETRY_KEEP_S: Final = 8 * 86400.0


async def wait_or_timeout(
    event: asyncio.Event | tuple[asyncio.Event, ...],
    seconds: float,
    clock: Clock,
    *,
    since: float | None = None,
) -> None:
    """Until ``event`` (or one of several) is set or ``seconds`` pass on ``clock``,
    counted from ``since`` (a clock reading taken before the caller's last ``await``;
    default: now)."""
    events = event if isinstance(event, tuple) else (event,)
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    start = clock.time() if since is None else since
    sleeper = asyncio.ensure_future(clock.sleep_until(start + seconds))
    try:
        await asyncio.wait({*waiters, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        sleeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, sleeper, return_exceptions=True)


class Timekeeper:
    """Queues every summary, reminder and offline notice when it falls due."""

    def __init__(
        self,
        config: NotifierConfig,
        clock: Clock,
        stats: NotifierStats,
        notices: Notices,
        wake: asyncio.Event,
        stopping: asyncio.Event,
    ) -> None:
        self.config = config
        self.clock = clock
        self.stats = stats
        self.notices = notices
        self._wake = wake
        """Set when a deadline may have moved closer (a new burst, trap or status)."""
        self._stopping = stopping

    async def run(self, store: Store) -> None:
        """Until the notifier stops (returns by itself: cancelling it mid-wait could
        leave it stuck, as seen under load)."""
        d = self.config.devices
        while not self._stopping.is_set():
            self._wake.clear()  # before looking, so a change after the look still wakes us
            looked = self.clock.time()  # time that passes while it looks is not skipped
            await self.tick(store)
            self.stats.ticks += 1
            next_at = await store.next_timer(
                grace_s=d.offline_grace_s, heartbeat_timeout_s=d.heartbeat_timeout_s
            )
            timeout = self.config.delivery.poll_s
            if next_at is not None:
                timeout = min(timeout, max(0.0, next_at - looked))
            await wait_or_timeout(self._wake, timeout, self.clock, since=looked)

    async def tick(self, store: Store) -> None:
        """Queue every summary, reminder and offline notice that is due now."""
        now = self.clock.time()
        d = self.config.devices
        overdue = await store.overdue_devices(
            now=now, grace_s=d.offline_grace_s, heartbeat_timeout_s=d.heartbeat_timeout_s
        )
        for row, by_heartbeat in overdue:
            await self.notices.device_offline(store, row, by_heartbeat)
        for row in await store.returned_devices():
            await self.notices.back_online(store, row)
        for episode in await store.due_episodes(now):
            await self.notices.summarise(store, episode, now)
        for trap in await store.due_traps(now):
            await self.notices.remind(store, trap, now)


async def housekeeping(store: Store, config: NotifierConfig, clock: Clock, instance: str) -> None:
    """Forever: record that ``instance`` is alive; prune the store every hour."""
    keep_s = config.store.keep_days * 86400.0
    host, pid = socket.gethostname(), os.getpid()
    last_prune: float | None = None
    while True:
        now = clock.time()
        await store.instance_alive(instance, now=now, host=host, pid=pid)
        if last_prune is None or now - last_prune >= PRUNE_EVERY_S:
            last_prune = now
            s = config.store
            pruned = await store.prune(
                now - keep_s, telemetry_before=now - TELEMETRY_KEEP_S,
                max_events=s.max_events, max_mails=s.max_mails,
            )  # fmt: skip
            if pruned.events or pruned.mails or pruned.telemetry:
                log.info(
                    "store pruned: forgot %d events and %d sent or failed mails (older than "
                    "%d days, or beyond the newest %d events / %d mails), %d readings older "
                    "than %.0f h",
                    pruned.events, pruned.mails, s.keep_days, s.max_events, s.max_mails,
                    pruned.telemetry, TELEMETRY_KEEP_S / 3600,
                )  # fmt: skip
        await clock.sleep(max(config.delivery.poll_s, 1.0))
