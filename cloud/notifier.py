"""The notifier service: MQTT in, e-mails out, nothing lost or doubled in between.

:class:`Notifier` only wires; each job has a module of its own:

* :mod:`cloud.receive` -- the **receiver**: a persistent MQTT session, the
  receive window, refusing messages that speak for another device; each
  event's mails planned, committed with it, and only then acknowledged.
* :mod:`cloud.plan` -- what to mail to whom for an event (recipients,
  rendering on a thread of its own, bursts to coalesce, traps).
* :mod:`cloud.notices` -- the notifier's own mails: device offline / back
  online, burst summaries, trap reminders (one compare-and-set each).
* :mod:`cloud.send` -- the **sender**: SMTP sessions, retries, the sent
  journal and the marks.
* :mod:`cloud.timers` -- the **timekeeper** (notices that time alone causes)
  and the **housekeeper** (this instance is alive; pruning).

They share one event loop, one :class:`~cloud.store.Store`, the counters in
:class:`~cloud.stats.NotifierStats`, and three wake-ups: the sender's (mails
were queued), the timekeeper's (a deadline moved) and the stop.  Time comes
from an injectable :class:`~cloud.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import Final

from cloud.clock import Clock, SystemClock
from cloud.config import NotifierConfig
from cloud.device_acks import DeviceAcks
from cloud.mailer import Mailer
from cloud.notices import Notices
from cloud.plan import Planner
from cloud.receive import Receiver
from cloud.receive_gate import ReceiveGate
from cloud.send import STOP_GRACE_S, Handoff, MailerLike, Sender
from cloud.staticmap import StaticMaps
from cloud.stats import NotifierStats
from cloud.store import Store
from cloud.timers import Timekeeper, housekeeping

__all__ = ["MailerLike", "Notifier", "NotifierStats"]

log = logging.getLogger(__name__)

#: The store's thread hands each result back to the loop: with CPython's default
#: 5 ms GIL switch interval, each hand-over could wait that long while the loop
#: parses MQTT packets (as the daemon found; see edge.daemon).
GIL_SWITCH_INTERVAL_S: Final = 0.0005


class Notifier:
    """Turns device messages into e-mails until :meth:`stop` is called or it is cancelled."""

    def __init__(
        self,
        config: NotifierConfig,
        *,
        clock: Clock | None = None,
        mailer: MailerLike | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.stats = NotifierStats()
        self.instance = config.mqtt.client_id
        """This instance's name in the store (claims, ``status``): its MQTT client id."""
        self.subscribed = asyncio.Event()
        """Set while the MQTT subscriptions are active (tests and health checks wait on it)."""
        self._wake = asyncio.Event()
        """The sender's: mails were queued (or the notifier stops)."""
        self._timers = asyncio.Event()
        """The timekeeper's: a deadline may have moved closer (or the notifier stops)."""
        self._stopping = asyncio.Event()
        maps = None
        if config.maps.enabled:
            c = config.maps
            maps = StaticMaps(url_template=c.tile_url, cache_dir=c.cache_dir,
                              credit=c.credit, zoom=c.zoom, timeout_s=c.timeout_s)  # fmt: skip
        self.planner = Planner(config, self.stats, maps)
        self.notices = Notices(config, self.clock, self.stats, self.planner, self._wake)
        handoff = Handoff(config.delivery.claim_timeout_s)
        self.receiver = Receiver(
            config, self.clock, self.stats, self.planner, self.notices,
            wake_sender=self._wake, wake_timers=self._timers, subscribed=self.subscribed,
            handoff=handoff,
        )  # fmt: skip
        self.sender = Sender(
            config, self.clock, self.stats, self.instance, self._wake, self._stopping, mailer,
            handoff,
        )  # fmt: skip
        self.timekeeper = Timekeeper(
            config, self.clock, self.stats, self.notices, self._timers, self._stopping
        )

    @property
    def acks(self) -> DeviceAcks | None:
        """What this instance committed, on its way back to the devices (``None``: off)."""
        return self.receiver.acks

    @property
    def gate(self) -> ReceiveGate | None:
        """The receive window of the current MQTT connection."""
        return self.receiver.gate

    @property
    def maps(self) -> StaticMaps | None:
        """The map picture at the top of a mail (``[maps]``); ``None``: map links only."""
        return self.planner.maps

    # --- life cycle -------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return: stop receiving, finish the mail in hand, close."""
        self._stopping.set()
        self._wake.set()
        self._timers.set()

    async def run(self) -> None:
        """Run until :meth:`stop` (returns) or cancellation (raises ``CancelledError``).

        A failure the notifier cannot handle by itself (the store is broken or
        the disk is full) propagates, with every unstored message still
        unacknowledged, so that a supervisor can restart the process.
        """
        cfg = self.config
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        self.planner.start()
        log.info(
            "notifier starting: instance=%s mqtt=%s:%d protocol=%s topics=%s,%s,%s smtp=%s:%d "
            "store=%s sites=%d",
            self.instance,
            cfg.mqtt.host,
            cfg.mqtt.port,
            cfg.mqtt.protocol,
            self.receiver.topic,
            self.receiver.telemetry_topic,
            self.receiver.status_topic,
            cfg.smtp.host,
            cfg.smtp.port,
            cfg.store.describe(),
            len(cfg.sites),
        )
        if cfg.fleet is None:
            log.warning(
                "no [fleet] table in the configuration: any device may speak for any site "
                '(add [fleet.<device_id>] site = "..." for each device)'
            )
        if self.sender.mailer is None:
            local_hostname = await asyncio.to_thread(socket.getfqdn)  # once: it may query DNS
            self.sender.mailer = Mailer(cfg.smtp, local_hostname=local_hostname)
        async with await Store.open(cfg.store) as store:
            # Claims this instance held when it died are ours to redo now; with
            # SQLite no other instance can hold any.
            released = await store.release_claims(self.instance if store.shared else None)
            if store.journal is not None:
                # Mails the server took just before a kill, and their marks with them.
                recorded = store.journal.read()
                marked = await store.apply_sent_journal(recorded)
                store.journal.clear()
                if recorded:
                    log.info("sent journal %s: %d mails the SMTP server had accepted, %d of "
                             "them not yet marked sent: marked now, not sent again",
                             store.journal.path, len(recorded), marked)  # fmt: skip
            await store.instance_alive(
                self.instance, now=self.clock.time(), host=socket.gethostname(),
                pid=os.getpid(), starting=True,
            )  # fmt: skip
            counts = await store.counts()
            log.info(
                "store open: %s, %d events known, %d mails pending, %d failed, %d claims released",
                store.where,
                counts.events,
                counts.pending,
                counts.failed,
                released,
            )
            try:
                await self.planner.start_workers()
                async with asyncio.TaskGroup() as tasks:
                    receiver = tasks.create_task(self.receiver.run(store), name="receiver")
                    sender = tasks.create_task(self.sender.run(store), name="sender")
                    tasks.create_task(self.timekeeper.run(store), name="timekeeper")
                    keeper = tasks.create_task(
                        housekeeping(store, cfg, self.clock, self.instance), name="housekeeper"
                    )
                    acker = None
                    if self.acks is not None:
                        acker = tasks.create_task(
                            self.receiver.acknowledge_forever(self.acks), name="acknowledger"
                        )
                    await self._stopping.wait()
                    receiver.cancel()
                    keeper.cancel()
                    if acker is not None:
                        acker.cancel()  # what is not published yet, devices send again
                    # The timekeeper ends by itself once stopping (stop() wakes it);
                    # cancelling it mid-wait could leave it stuck (seen under load).
                    try:
                        await asyncio.wait_for(asyncio.shield(sender), STOP_GRACE_S)
                    except TimeoutError:
                        sender.cancel()
                await store.release_claims(self.instance)
                self.sender.handoff.clear()  # their claims given back: pending in the store
            except BaseExceptionGroup as group:
                # One task failed and the TaskGroup cancelled the others: report that one.
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
            finally:
                self.subscribed.clear()
                self.planner.close()
                await self.planner.close_workers()
        log.info("notifier stopped")
