"""The notifier service: MQTT in, e-mails out, nothing lost or doubled in between.

Four tasks share one event loop and one :class:`~cloud.store.Store`:

* the **receiver** holds a persistent MQTT session (fixed client id; MQTT 5
  with a session expiry, or 3.1.1 with ``clean_session=False``) subscribed
  at QoS 1 to ``PREFIX/+/events`` and ``PREFIX/+/telemetry`` (both through
  ``$share/GROUP/`` when several instances share the work) and to
  ``PREFIX/+/status`` (never shared: every instance sees every device's
  retained state).  For each message it renders what must be mailed, and
  commits event, mails and the state they touch (a burst, a trap, a device)
  in one transaction; only *then* does it send the PUBACK.  A crash before
  the commit leaves the message unacknowledged and the broker delivers it
  again; the store refuses a duplicate by event id.
* the **sender** claims due mails and hands them to the SMTP server; it is
  woken by the receiver after each commit, and otherwise looks at the store
  every ``delivery.poll_s`` (mails another instance left behind) or when the
  next retry is due.  Transient failures are retried with capped exponential
  backoff and jitter; permanent refusals are marked ``failed``.
* the **timekeeper** queues what time alone causes: the summary of a burst
  (an animal that lingered), trap reminders, and "device offline" mails
  (status offline past the grace period, or no heartbeat past the timeout).
  Each is a compare-and-set in the store, so several instances queue it once.
* the **housekeeper** records that this instance is alive and prunes old
  events and telemetry.

Time comes from an injectable :class:`~cloud.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import math
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeGuard

import aiomqtt
import msgspec
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.backoff import Backoff
from cloud.chart import WINDOW_S, LevelChart, level_chart, stage_lines
from cloud.clock import Clock, SystemClock
from cloud.config import (
    DEVICE_OFFLINE,
    DEVICE_ONLINE,
    TRAP_REMINDER,
    NotifierConfig,
    Recipient,
    SiteConfig,
)
from cloud.device_acks import DeviceAcks
from cloud.errors import PermanentDeliveryError, TransientDeliveryError
from cloud.mailer import DryRunSession, Mailer, MailSession
from cloud.mime import Mail
from cloud.receive_gate import ReceiveGate
from cloud.render import (
    CHART_KINDS,
    JST,
    MESSAGE_ID_DOMAIN,
    as_bytes,
    message_id,
    render_device,
    render_mail,
    render_reminder,
    render_summary,
)
from cloud.staticmap import StaticMaps
from cloud.store import (
    AcceptResult,
    CoalescePlan,
    DeviceRow,
    EpisodeRow,
    Notice,
    OutgoingMail,
    QueuedMail,
    SentJournal,
    Store,
    TrapPlan,
    TrapRow,
)
from edge.event import (
    EnvelopeError,
    Event,
    decode,
    decode_status,
    decode_telemetry,
    salvage_id,
)

log = logging.getLogger(__name__)

#: MQTT reconnect delays (full jitter): spread out, but back within a minute.
RECONNECT_INITIAL_S: Final = 0.5
RECONNECT_MAX_S: Final = 60.0
#: How many due mails one SMTP session sends before the queue is looked at again.
BATCH: Final = 20
PRUNE_EVERY_S: Final = 3600.0
#: Telemetry is kept a little longer than the chart shows.
TELEMETRY_KEEP_S: Final = WINDOW_S + 3600.0
#: On a graceful stop, how long the sender may take to finish the mail in hand.
STOP_GRACE_S: Final = 10.0
#: Most event messages committed in one transaction (group commit).
GROUP_MAX: Final = 64
#: A group is committed early once its events queue this many mails.
GROUP_MAILS: Final = 24
#: Events whose mails are rendered in one go (then committed, see GROUP_MAILS).
PLAN_AT_ONCE: Final = 12
#: Readings one telemetry batch may add (a bigger one is cut, and logged).
MAX_POINTS_PER_BATCH: Final = 20000
#: The store's thread hands each result back to the loop: with CPython's default
#: 5 ms GIL switch interval, each hand-over could wait that long while the loop
#: parses MQTT packets (as the daemon found; see edge.daemon).
GIL_SWITCH_INTERVAL_S: Final = 0.0005
#: The ids of the notifier's own notices (summaries, reminders, offline / online)
#: begin with this; an event from a device whose id does too is refused, so that
#: no device can pre-empt (and so suppress) a notice by sending its id.
NOTICE_PREFIX: Final = "notice:"
#: Event ids are unique per device, but the store keys events by id alone: an event
#: whose id another device's stored event holds is stored as ``DEVICE<SEP>ID``.
#: No device id can contain it (a topic level) and device event ids that do are refused.
SCOPE_SEP: Final = "\x1f"


@dataclass
class NotifierStats:
    """Counters since start (for logs, the status line and tests)."""

    received: int = 0
    """MQTT messages taken off the events topic (including invalid and duplicates)."""
    accepted: int = 0
    """Events new to the store."""
    duplicates: int = 0
    invalid: int = 0
    unknown_site: int = 0
    folded: int = 0
    """Events that joined a burst already mailed (counted for its summary)."""
    sent: int = 0
    mark_window_max_s: float = 0.0
    """Longest time from the SMTP server accepting a mail to the store marking it sent:
    a kill in that window mails it again after the restart."""
    mark_window_total_s: float = 0.0
    deferred: int = 0
    failed: int = 0
    connections: int = 0
    statuses: int = 0
    telemetry: int = 0
    ticks: int = 0
    """Timekeeper rounds completed (tests wait on it after moving the clock)."""
    notices: int = 0
    """Summaries, reminders and offline / online notices this instance queued."""
    group_commits: int = 0
    """Transactions that stored several events at once (a backlog is committed in groups)."""
    rendered: int = 0
    """Mails rendered in full (a readdressed copy for another recipient does not count)."""
    refused_acked: int = 0
    """Messages refused for good whose id was still acknowledged to the device."""
    spoofed: int = 0
    """Events and telemetry batches refused because they spoke for another device or
    site than the topic's device may (or used an id of the notifier's own notices)."""
    id_collisions: int = 0
    """Events stored under a device-scoped id because another device's event holds their id."""


#: An event planned for a group commit: message, topic device, event, mails, burst,
#: trap, heartbeat interval.
_Planned = tuple[
    aiomqtt.Message,
    str,
    Event,
    list[OutgoingMail],
    CoalescePlan | None,
    TrapPlan | None,
    float | None,
]


class MailerLike(Protocol):
    """What the sender needs: :class:`~cloud.mailer.Mailer` or the dry run's file writer."""

    def session(self) -> MailSession | DryRunSession: ...


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
        self._timers = asyncio.Event()
        self._stopping = asyncio.Event()
        self._mailer: MailerLike | None = mailer
        self._reconnect = Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S, jitter="full")
        d = config.delivery
        self._retry = Backoff(d.retry_initial_s, d.retry_max_s, jitter="equal")
        m = config.mqtt
        share = f"$share/{m.shared_group}/" if m.shared_group else ""
        self.topic = f"{share}{m.topic_prefix}/+/events"
        self.telemetry_topic = f"{share}{m.topic_prefix}/+/telemetry"
        self.status_topic = f"{m.topic_prefix}/+/status"
        self._prefix_depth = len(m.topic_prefix.split("/"))
        self.acks: DeviceAcks | None = (
            DeviceAcks(m.topic_prefix, delay_s=m.ack_delay_s) if m.device_acks else None
        )
        """What this instance committed, on its way back to the devices (``None``: off)."""
        self.gate: ReceiveGate | None = None
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifier-render")
        self.maps: StaticMaps | None = None
        """The map picture at the top of a mail (``[maps]``); ``None``: map links only."""
        if config.maps.enabled:
            c = config.maps
            self.maps = StaticMaps(url_template=c.tile_url, cache_dir=c.cache_dir,
                                   credit=c.credit, zoom=c.zoom, timeout_s=c.timeout_s)  # fmt: skip
        """The receive window of the current MQTT connection."""

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
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifier-render")
        log.info(
            "notifier starting: instance=%s mqtt=%s:%d protocol=%s topics=%s,%s,%s smtp=%s:%d "
            "store=%s sites=%d",
            self.instance,
            cfg.mqtt.host,
            cfg.mqtt.port,
            cfg.mqtt.protocol,
            self.topic,
            self.telemetry_topic,
            self.status_topic,
            cfg.smtp.host,
            cfg.smtp.port,
            cfg.store.describe(),
            len(cfg.sites),
        )
        if cfg.fleet is None:
            log.warning(
                "no [fleet] table in the configuration: any device may speak for any site "
                "(add [fleet.<device_id>] site = \"...\" for each device)"
            )
        if self._mailer is None:
            local_hostname = await asyncio.to_thread(socket.getfqdn)  # once: it may query DNS
            self._mailer = Mailer(cfg.smtp, local_hostname=local_hostname)
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
                async with asyncio.TaskGroup() as tasks:
                    receiver = tasks.create_task(self._receive_forever(store), name="receiver")
                    sender = tasks.create_task(self._deliver_forever(store), name="sender")
                    tasks.create_task(self._timers_forever(store), name="timekeeper")
                    keeper = tasks.create_task(self._housekeeping(store), name="housekeeper")
                    acker = None
                    if self.acks is not None:
                        acker = tasks.create_task(
                            self._acknowledge_forever(self.acks), name="acknowledger"
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
            except BaseExceptionGroup as group:
                # One task failed and the TaskGroup cancelled the others: report that one.
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
            finally:
                self.subscribed.clear()
                self._renderer.shutdown(wait=False)
        log.info("notifier stopped")

    # --- receiving ----------------------------------------------------------------

    async def _receive_forever(self, store: Store) -> None:
        attempt = 0
        while True:
            client = self._mqtt_client()
            # Before connecting: a resumed session's backlog arrives right after CONNACK.
            gate = ReceiveGate(client, self.config.mqtt.receive_maximum)
            self.gate = gate
            try:
                async with client:
                    topics = [(self.topic, 1), (self.telemetry_topic, 1), (self.status_topic, 1)]
                    granted = await client.subscribe(topics)
                    self._check_granted(granted, [t for t, _ in topics])
                    self.stats.connections += 1
                    attempt = 0
                    log.info(
                        "mqtt connected to %s:%d as %s, subscribed to %s",
                        self.config.mqtt.host,
                        self.config.mqtt.port,
                        self.instance,
                        ", ".join(t for t, _ in topics),
                    )
                    self.subscribed.set()
                    gate.arm()
                    group = max(1, min(self.config.mqtt.receive_maximum, GROUP_MAX))
                    async for message in client.messages:
                        gate.taken()
                        batch = [message]
                        # Whatever else has arrived is handled with it: its events
                        # are committed in one transaction (one fsync for the lot).
                        while len(batch) < group and not client._queue.empty():
                            batch.append(client._queue.get_nowait())
                            gate.taken()
                        await self._handle_all(client, store, batch)
            except aiomqtt.MqttError as exc:
                self.subscribed.clear()
                attempt += 1
                delay = self._reconnect.delay(attempt)
                log.warning(
                    "mqtt connection to %s:%d lost or refused (%s); retrying in %.1f s",
                    self.config.mqtt.host,
                    self.config.mqtt.port,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)  # real time: the broker's, not the notifier's clock
            # Messages this client received but did not acknowledge die with it;
            # the broker keeps them in our session and delivers them again.

    def _check_granted(self, granted: Sequence[int | ReasonCode], topics: list[str]) -> None:
        """Refuse to sit on a subscription the broker did not grant at QoS 1."""
        codes = [code.value if isinstance(code, ReasonCode) else int(code) for code in granted]
        if len(codes) != len(topics) or any(code >= 0x80 for code in codes):
            log.error(
                "broker refused a subscription to %s (reasons %s): check its ACL for %s",
                topics,
                codes,
                self.config.mqtt.username or "anonymous clients",
            )
            raise aiomqtt.MqttError(f"subscription to {topics} refused")
        for topic, code in zip(topics, codes, strict=True):
            if code < 1:
                log.warning(
                    "broker granted QoS %d for %s: messages may be lost while the notifier is away",
                    code,
                    topic,
                )

    async def _acknowledge_forever(self, acks: DeviceAcks) -> None:
        """Publish the devices' acks on a connection of their own, reconnecting as needed.

        Not on the receiving connection: mosquitto answers our publishes there
        behind everything it has queued for us, so while a backlog drains
        (100,000 events: two minutes) no ack would be confirmed, and devices
        would time out and send it all again.  Ids not yet published when the
        connection drops stay in ``acks`` for the next one.
        """
        m = self.config.mqtt
        attempt = 0
        while True:
            tls = m.tls
            client = aiomqtt.Client(
                m.host, m.port, identifier=m.ack_client_id, keepalive=m.keepalive,
                username=m.username,
                password=m.password.reveal() if m.password is not None else None,
                protocol=aiomqtt.ProtocolVersion.V5 if m.protocol == "5" else None,
                tls_context=None if tls is None or tls.ack_cert_file is None
                else _tls_context(tls.ca_file, tls.ack_cert_file, tls.ack_key_file),
            )  # fmt: skip
            try:
                async with client:
                    attempt = 0
                    await acks.publish_forever(client)
            except aiomqtt.MqttError as exc:
                attempt += 1
                delay = self._reconnect.delay(attempt)
                log.warning("mqtt connection for the devices' acks lost or refused (%s); "
                            "retrying in %.1f s", exc, delay)  # fmt: skip
                await asyncio.sleep(delay)

    def _mqtt_client(self) -> aiomqtt.Client:
        m = self.config.mqtt
        common: dict[str, Any] = {
            "username": m.username,
            "password": m.password.reveal() if m.password is not None else None,
            "identifier": m.client_id,
            "keepalive": m.keepalive,
        }
        if m.tls is not None:
            common["tls_context"] = _tls_context(m.tls.ca_file, m.tls.cert_file, m.tls.key_file)
        if m.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            # The broker queues messages for us while we are away, this long.
            properties.SessionExpiryInterval = m.session_expiry_s
            # At most this many unacknowledged messages in flight to us.  We send
            # the PUBACK only after the commit, so this bounds what is in memory:
            # without it mosquitto pushes up to 65,535 (a whole backlog) at once.
            properties.ReceiveMaximum = m.receive_maximum
            client = aiomqtt.Client(
                m.host, m.port, protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=m.session_expiry_s == 0, properties=properties, **common,
            )  # fmt: skip
        else:
            # The broker queues events for us while we are away.
            client = aiomqtt.Client(m.host, m.port, clean_session=False, **common)
        # aiomqtt (through paho) acknowledges a QoS 1 message as soon as it is
        # received, before we have stored it: a crash right then would lose the
        # event.  paho 2's manual ack mode (public API, on the paho client that
        # aiomqtt 2 keeps in `_client`) lets us send the PUBACK ourselves, after
        # the commit.  Set before connecting, so that messages the broker
        # replays on session resume are not acknowledged either.
        client._client.manual_ack_set(True)
        return client

    def _route(self, message: aiomqtt.Message) -> tuple[str, str, bytes]:
        """``(channel, device, payload)`` of a message (``""`` for an unexpected topic)."""
        parts = message.topic.value.split("/")
        channel = parts[-1] if len(parts) == self._prefix_depth + 2 else ""
        device = parts[-2] if channel else ""
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = b"" if payload is None else str(payload).encode()
        return channel, device, payload

    async def _handle_all(
        self, client: aiomqtt.Client, store: Store, batch: list[aiomqtt.Message]
    ) -> None:
        """Handle ``batch`` in order; runs of events are committed together."""
        run: list[tuple[aiomqtt.Message, str, bytes]] = []
        for message in batch:
            channel, device, payload = self._route(message)
            if channel == "events":
                run.append((message, device, payload))
                continue
            if run:
                await self._handle_events(client, store, run)
                run = []
            await self._handle(client, store, message)
        if run:
            await self._handle_events(client, store, run)

    async def _handle_events(
        self, client: aiomqtt.Client, store: Store, run: list[tuple[aiomqtt.Message, str, bytes]]
    ) -> None:
        """Several event messages: one look-up for duplicates, one commit for the new ones."""
        if len(run) == 1:
            await self._handle_event(client, store, *run[0])
            return
        now = self.clock.time()
        decoded: list[tuple[aiomqtt.Message, str, Event]] = []
        for message, topic_device, payload in run:
            event = self._decode_event(client, message, topic_device, payload)
            if event is not None:
                decoded.append((message, topic_device, event))
        known = await store.event_owners(
            [i for _, d, event in decoded for i in (event.id, _scoped(d, event.id))]
        )
        new: list[tuple[aiomqtt.Message, str, Event]] = []
        for message, topic_device, event in decoded:
            stored = self._stored_as(event, known)
            if stored is None:
                self._duplicate(client, message, event, topic_device)
                continue
            known[stored.id] = stored.device  # the same event twice in one batch
            new.append((message, topic_device, stored))
        plans: list[_Planned] = []
        mails_planned = 0
        for start in range(0, len(new), PLAN_AT_ONCE):
            chunk = new[start : start + PLAN_AT_ONCE]
            plans_of = (
                self._plan_event(store, event, self.config.sites.get(event.site), now)
                for _, _, event in chunk
            )
            if sum(map(self._mailed, chunk)) > 1:
                # Planned together: their mails are rendered back to back on the
                # renderer's thread, not one hand-over (and GIL switch) at a time.
                planned = await asyncio.gather(*plans_of)
            else:  # nothing to render (heartbeats): no task per event
                planned = [await plan for plan in plans_of]
            for (message, topic_device, event), (mails, coalesce, trap) in zip(
                chunk, planned, strict=True
            ):
                plans.append(
                    (message, topic_device, event, mails, coalesce, trap,
                     _heartbeat_interval(event))
                )  # fmt: skip
                mails_planned += len(mails)
            if mails_planned >= GROUP_MAILS:
                # Mailed events: commit sooner, so that the transaction stays short
                # (a mail the SMTP server took waits behind it to be marked sent).
                await self._commit_group(client, store, plans, now)
                plans, mails_planned = [], 0
        if plans:
            await self._commit_group(client, store, plans, now)

    def _mailed(self, item: tuple[aiomqtt.Message, str, Event]) -> bool:
        """Whether the event of ``item`` is of a kind its site mails (so it is rendered)."""
        event = item[2]
        site = self.config.sites.get(event.site)
        return site is not None and self.config.mails_kind(site, event.kind)

    async def _commit_group(
        self, client: aiomqtt.Client, store: Store, plans: list[_Planned], now: float
    ) -> None:
        self.stats.group_commits += 1
        results = await store.accept_many(
            [(event, mails, c, t, hb) for _, _, event, mails, c, t, hb in plans], now=now
        )
        for n, ((message, topic_device, event, _, coalesce, trap, _), result) in enumerate(
            zip(plans, results, strict=True)
        ):
            if n % 4 == 3 and result.queued:
                # Let an SMTP server's "250" be read now (and journaled, see
                # SentJournal), not after the whole group's PUBACKs and log lines.
                await asyncio.sleep(0)
            await self._after_accept(
                client, store, message, topic_device, event, coalesce, trap, result
            )

    def _decode_event(
        self, client: aiomqtt.Client, message: aiomqtt.Message, topic_device: str, payload: bytes
    ) -> Event | None:
        """The event in ``payload``; ``None`` (acknowledged, refused) if it is not one."""
        self.stats.received += 1
        try:
            event = decode(payload)
        except EnvelopeError as exc:
            self.stats.invalid += 1
            log.warning(
                "dropping invalid message on %s (%d bytes): %s",
                message.topic.value,
                len(payload),
                exc,
            )
            _ack(client, message)  # redelivery would not make it valid
            self._refused(topic_device, salvage_id(payload))
            return None
        problem = self._impersonation(topic_device, event.device, event.site)
        if problem is None and event.id.startswith(NOTICE_PREFIX):
            problem = f"its id is in the notifier's own namespace ({NOTICE_PREFIX!r})"
        if problem is None and SCOPE_SEP in event.id:
            problem = "its id contains a control character (U+001F)"
        if problem is not None:
            self._spoofed(client, message, topic_device, "event", event.id, problem)
            return None
        return event

    def _impersonation(self, topic_device: str, device: str, site: str) -> str | None:
        """Why a message on ``topic_device``'s topic may not say ``device`` and ``site``."""
        if device != topic_device:
            return f"it says device={device!r}"
        fleet = self.config.fleet
        if fleet is None:
            return None
        entry = fleet.get(topic_device)
        if entry is None:
            return "the device is not in [fleet]"
        if site != entry.site:
            return f"it says site={site!r}, but [fleet] gives the device site {entry.site!r}"
        return None

    def _spoofed(
        self,
        client: aiomqtt.Client,
        message: aiomqtt.Message,
        topic_device: str,
        what: str,
        message_id: str | None,
        problem: str,
    ) -> None:
        """Refuse a message that speaks for another device or site: not stored, not mailed.

        Still acknowledged (PUBACK and the device ack), so the device does not send it
        again and again.
        """
        self.stats.spoofed += 1
        log.warning(
            "refusing %s %s on %s: %s (not stored, not mailed)",
            what,
            message_id,
            message.topic.value,
            problem,
        )
        _ack(client, message)
        self._refused(topic_device, message_id)

    async def _handle(self, client: aiomqtt.Client, store: Store, message: aiomqtt.Message) -> None:
        channel, device, payload = self._route(message)
        if channel == "events":
            await self._handle_event(client, store, message, device, payload)
        elif channel == "telemetry":
            await self._handle_telemetry(client, store, message, device, payload)
        elif channel == "status":
            await self._handle_status(client, store, message, device, payload)
        else:
            log.warning("ignoring a message on unexpected topic %s", message.topic.value)
            _ack(client, message)

    async def _handle_event(
        self,
        client: aiomqtt.Client,
        store: Store,
        message: aiomqtt.Message,
        topic_device: str,
        payload: bytes,
    ) -> None:
        now = self.clock.time()
        event = self._decode_event(client, message, topic_device, payload)
        if event is None:
            return
        owners = await store.event_owners([event.id, _scoped(topic_device, event.id)])
        stored = self._stored_as(event, owners)
        if stored is None:
            # Seen before (a redelivery, or the device's resend after a lost ack):
            # nothing to render.  The store's accept() refuses it anyway; this
            # cheap look-up only saves the work.
            self._duplicate(client, message, event, topic_device)
            return
        event = stored
        site = self.config.sites.get(event.site)
        mails, coalesce, trap = await self._plan_event(store, event, site, now)
        result = await store.accept(
            event, mails, now=now, coalesce=coalesce, trap=trap,
            heartbeat_interval=_heartbeat_interval(event),
        )  # fmt: skip
        await self._after_accept(
            client, store, message, topic_device, event, coalesce, trap, result
        )

    async def _after_accept(
        self,
        client: aiomqtt.Client,
        store: Store,
        message: aiomqtt.Message,
        topic_device: str,
        event: Event,
        coalesce: CoalescePlan | None,
        trap: TrapPlan | None,
        result: AcceptResult,
    ) -> None:
        """Acknowledge, count and log an event the store has just been given."""
        if not result.accepted:  # another instance stored it meanwhile
            self._duplicate(client, message, event, topic_device)
            return
        _ack(client, message)  # only now: the event and its mails are stored
        if self.acks is not None:
            self.acks.add(topic_device, (_device_id(event.id),))
        self.stats.accepted += 1
        if result.folded:
            self.stats.folded += 1
        if result.queued:
            self._wake.set()
        if coalesce is not None or trap is not None:
            # A burst or a trap may now have the earliest deadline.  Other events
            # move deadlines (a heartbeat's) at least heartbeat_timeout_s away, which
            # the timekeeper's next look (every delivery.poll_s) finds: waking it
            # for each of them cost five queries per event under a backlog.
            self._timers.set()
        log.info(
            "event accepted event=%s kind=%s severity=%s site=%s device=%s mails=%d%s",
            event.id,
            event.kind,
            event.severity,
            event.site,
            event.device,
            result.queued,
            " (folded into a burst already mailed)" if result.folded else "",
        )
        row = result.device
        if row is not None and row.state == "offline" and row.cause == "heartbeat":
            await self._back_online(store, row)

    def _duplicate(
        self, client: aiomqtt.Client, message: aiomqtt.Message, event: Event, topic_device: str
    ) -> None:
        """An event stored before: acknowledged again (its first ack may have been lost)."""
        _ack(client, message)
        if self.acks is not None:
            self.acks.add(topic_device, (_device_id(event.id),))
        self.stats.duplicates += 1
        log.info(
            "duplicate event ignored event=%s kind=%s device=%s",
            event.id,
            event.kind,
            event.device,
        )

    def _stored_as(self, event: Event, owners: dict[str, str]) -> Event | None:
        """``event`` as the store is to keep it; ``None``: its device sent it before.

        ``owners``: the device of each stored id among ``event.id`` and its scoped
        form.  The same id from another device is another event: it is stored
        under ``DEVICE<SEP>ID`` (and still acknowledged to its device by its own id).
        """
        scoped = _scoped(event.device, event.id)
        if owners.get(event.id) == event.device or owners.get(scoped) == event.device:
            return None
        if event.id not in owners:
            return event
        self.stats.id_collisions += 1
        log.warning(
            "event %s from device %s: device %s sent an event with this id before; "
            "stored as a separate event",
            event.id,
            event.device,
            owners[event.id],
        )
        return msgspec.structs.replace(event, id=scoped)

    def _refused(self, topic_device: str, message_id: str | None) -> None:
        """A message refused for good: acknowledge its id if it has one, so it is not resent."""
        if self.acks is not None and message_id is not None:
            self.acks.add(topic_device, (message_id,))
            self.stats.refused_acked += 1

    async def _plan_event(
        self, store: Store, event: Event, site: SiteConfig | None, now: float
    ) -> tuple[list[OutgoingMail], CoalescePlan | None, TrapPlan | None]:
        """The mails for ``event`` and what it does to bursts and traps."""
        cfg = self.config
        sensor = _sensor_of(event)
        trap: TrapPlan | None = None
        if event.kind == "trap_reset":
            trap = TrapPlan("close", _trap_key(event, sensor), sensor, now, 0.0)
        if site is None:
            self.stats.unknown_site += 1
            log.warning(
                "event from unknown site event=%s site=%r device=%s kind=%s: recorded, no mail",
                event.id,
                event.site,
                event.device,
                event.kind,
            )
            return [], None, trap
        if not cfg.mails_kind(site, event.kind):
            log.debug(
                "kind %s is not mailed for site %s: event %s recorded only",
                event.kind,
                event.site,
                event.id,
            )
            return [], None, trap
        recipients = cfg.recipients_for(site, event.kind, event.severity)
        if not recipients:
            log.warning(
                "no recipient for kind %s (%s) at site %s: event %s recorded, no mail",
                event.kind,
                event.severity,
                event.site,
                event.id,
            )
            return [], None, trap
        chart = await self._chart(store, event, now) if event.kind in CHART_KINDS else None
        when = dt.datetime.fromtimestamp(now, dt.UTC)

        def render(recipient: Recipient, index: int, with_data: bool) -> Mail:
            return render_mail(
                event, site, language=recipient.language, sender=cfg.smtp.sender,
                recipient=recipient.address, index=index, received_at=when,
                with_data=with_data, chart=chart if with_data else None, maps=self.maps,
            )  # fmt: skip

        mails = await self._render_each(recipients, render, event.id)
        coalesce = None
        rule = cfg.coalesce_rule(event.kind)
        if rule is not None:
            by = sensor if rule.per == "sensor" else ""
            key = "|".join((event.site, event.device, ",".join(sorted(rule.kinds)), by))
            coalesce = CoalescePlan(key, rule.quiet_s, rule.summary_every_s, sensor)
        if event.kind == "trap_triggered":
            trap = TrapPlan(
                "open", _trap_key(event, sensor), sensor, _closed_since(event, now),
                cfg.traps.reminder_every_s,
            )  # fmt: skip
        return mails, coalesce, trap

    async def _render_each(
        self,
        recipients: Sequence[Recipient],
        render: Callable[[Recipient, int, bool], Mail],
        what: str,
    ) -> list[OutgoingMail]:
        """One mail per recipient; a template bug costs the data fields, not the mail.

        Rendering (~0.25 ms of CPU a mail, cloud/mime.py) runs on a thread of its
        own: meanwhile the loop answers at once when the SMTP server takes a mail,
        so that it is marked sent without delay (until then, a kill would mail it
        twice after the restart).
        """
        loop = asyncio.get_running_loop()
        mails = []
        model: dict[str, tuple[bytes, Recipient, int]] = {}  # one full rendering per language
        for index, recipient in enumerate(recipients, start=1):
            message = None
            if recipient.language in model:
                first, whom, place = model[recipient.language]
                message = _readdress(first, whom, place, recipient, index)
            if message is None:
                message = await loop.run_in_executor(
                    self._renderer, _render_one, render, recipient, index, what
                )
                self.stats.rendered += 1
                if message is not None:
                    model.setdefault(recipient.language, (message, recipient, index))
            if message is not None:
                mails.append(OutgoingMail(recipient.address, message, recipient.language))
        return mails

    async def _chart(self, store: Store, event: Event, now: float) -> LevelChart | None:
        """The last 24 h of ``<data.sensor>.level_cm`` up to the alert (with its own reading)."""
        sensor = event.data.get("sensor")
        if not isinstance(sensor, str) or not sensor:
            return None
        series = f"{sensor}.level_cm"
        end = _event_time(event, now)
        try:
            points = await store.series(event.device, series, end - WINDOW_S, end)
            level = event.data.get("level_cm")
            if _finite(level) and not any(abs(t - end) < 1.0 for t, _ in points):
                points.append((end, float(level)))
            threshold = event.data.get("threshold_cm")
            return await asyncio.to_thread(
                level_chart, series, points, end=end, mark=end, tz=JST,
                stages=stage_lines(event.data),
                threshold=float(threshold) if _finite(threshold) else None,
            )  # fmt: skip
        except Exception:
            log.exception("cannot draw the chart for event %s; mailing it without", event.id)
            return None

    async def _handle_telemetry(
        self,
        client: aiomqtt.Client,
        store: Store,
        message: aiomqtt.Message,
        topic_device: str,
        payload: bytes,
    ) -> None:
        now = self.clock.time()
        try:
            batch = decode_telemetry(payload)
        except EnvelopeError as exc:
            log.warning(
                "dropping invalid telemetry on %s (%d bytes): %s",
                message.topic.value,
                len(payload),
                exc,
            )
            _ack(client, message)
            self._refused(topic_device, salvage_id(payload, msgpack=True))
            return
        problem = self._impersonation(topic_device, batch.device, batch.site)
        if problem is not None:
            self._spoofed(client, message, topic_device, "telemetry", batch.id or None, problem)
            return
        points: list[tuple[str, float, float]] = []
        for name, series in batch.series.items():
            if len(series.t) != len(series.v) or not series.t:
                log.warning("telemetry %s from %s: %d times, %d values: skipped",
                            name, batch.device, len(series.t), len(series.v))  # fmt: skip
                continue
            last = max(series.t)
            for t, v in zip(series.t, series.v, strict=True):
                # A device whose clock is not set: place the readings by when they arrived.
                ts = batch.t0 + t if batch.clock_synced else now - (last - t)
                if _finite(ts) and _finite(v):
                    points.append((name, float(ts), float(v)))
        if len(points) > MAX_POINTS_PER_BATCH:
            log.warning("telemetry batch from %s has %d readings; keeping the last %d",
                        batch.device, len(points), MAX_POINTS_PER_BATCH)  # fmt: skip
            points = points[-MAX_POINTS_PER_BATCH:]
        added = await store.add_telemetry(topic_device, batch.site, points, now=now)
        _ack(client, message)
        if self.acks is not None and batch.id:  # older devices send no id: nothing to ack
            self.acks.add(topic_device, (batch.id,))
        self.stats.telemetry += 1
        log.debug("telemetry from %s: %d readings, %d new", batch.device, len(points), added)
        row = await store.device(topic_device)
        if row is not None and row.state == "offline" and row.cause == "heartbeat":
            await self._back_online(store, row)

    async def _handle_status(
        self,
        client: aiomqtt.Client,
        store: Store,
        message: aiomqtt.Message,
        topic_device: str,
        payload: bytes,
    ) -> None:
        now = self.clock.time()
        if not payload:  # a retained status being cleared
            _ack(client, message)
            return
        try:
            status = decode_status(payload)
        except EnvelopeError as exc:
            log.warning("dropping invalid status on %s: %s", message.topic.value, exc)
            _ack(client, message)
            return
        device = topic_device  # the topic is what the broker's ACL vouches for
        if self.config.fleet is not None and device not in self.config.fleet:
            self.stats.spoofed += 1
            log.warning("ignoring status %s on %s: the device is not in [fleet]",
                        status.state, message.topic.value)  # fmt: skip
            _ack(client, message)
            return
        if status.device != device:
            log.warning("status on the topic of %s says device=%s", device, status.device)
        row = await store.record_status(device, status.state, status.reason, now=now)
        _ack(client, message)
        self.stats.statuses += 1
        log.info(
            "device status device=%s state=%s reason=%r retained=%s",
            device,
            status.state,
            status.reason,
            bool(message.retain),
        )
        self._timers.set()
        if status.state == "online" and row.state == "offline":
            # A retained "online" is as old as the device's connection: it proves
            # nothing against a missed heartbeat, only a live one does.
            if row.cause == "status" or not message.retain:
                await self._back_online(store, row)

    # --- device offline / online ------------------------------------------------------

    async def _back_online(self, store: Store, row: DeviceRow) -> None:
        """Compare-and-set ``row`` back online; mail those who were told it went offline."""
        now = self.clock.time()
        site = self.config.sites.get(row.site)
        notice = Notice(f"{NOTICE_PREFIX}{row.device}.on{row.transitions + 1}", DEVICE_ONLINE, "info",
                        row.site, row.device)  # fmt: skip
        mails: list[OutgoingMail] = []
        if row.notified and site is not None and self.config.mails_kind(site, DEVICE_ONLINE):
            offline_id = f"{NOTICE_PREFIX}{row.device}.off{row.transitions}"
            when = dt.datetime.fromtimestamp(now, dt.UTC)

            def render(recipient: Recipient, index: int, with_data: bool) -> Mail:
                return render_device(
                    notice_id=notice.id, online=True, site_id=row.site, site=site,
                    device=row.device, reason="", since=row.since, last_seen=row.last_seen,
                    lat=row.lat, lon=row.lon, language=recipient.language,
                    sender=self.config.smtp.sender, recipient=recipient.address, index=index,
                    now=when, references=message_id(offline_id, index),
                )  # fmt: skip

            mails = await self._render_each(_stored(row.recipients), render, notice.id)
        if await store.device_back_online(row, notice, mails, now=now):
            self.stats.notices += 1
            log.info("device back online device=%s site=%s offline_for=%.0fs mails=%d",
                     row.device, row.site, now - row.since, len(mails))  # fmt: skip
            if mails:
                self._wake.set()

    async def _device_offline(self, store: Store, row: DeviceRow, by_heartbeat: bool) -> None:
        now = self.clock.time()
        site = self.config.sites.get(row.site)
        transitions = row.transitions + 1 if by_heartbeat else row.transitions
        notice = Notice(f"{NOTICE_PREFIX}{row.device}.off{transitions}", DEVICE_OFFLINE, "warning",
                        row.site, row.device)  # fmt: skip
        reason = "no heartbeat" if by_heartbeat else row.reason
        since = now if by_heartbeat else row.since
        mails: list[OutgoingMail] = []
        if site is None:
            log.warning("device %s is offline but its site %r is not configured: no mail",
                        row.device, row.site)  # fmt: skip
        elif self.config.mails_kind(site, DEVICE_OFFLINE):
            when = dt.datetime.fromtimestamp(now, dt.UTC)

            def render(recipient: Recipient, index: int, with_data: bool) -> Mail:
                return render_device(
                    notice_id=notice.id, online=False, site_id=row.site, site=site,
                    device=row.device, reason=reason, since=since, last_seen=row.last_seen,
                    lat=row.lat, lon=row.lon, language=recipient.language,
                    sender=self.config.smtp.sender, recipient=recipient.address, index=index,
                    now=when,
                )  # fmt: skip

            recipients = self.config.recipients_for(site, DEVICE_OFFLINE, "warning")
            mails = await self._render_each(recipients, render, notice.id)
        if await store.device_offline_notified(
            row, notice, mails, now=now, by_heartbeat=by_heartbeat
        ):
            self.stats.notices += 1
            log.warning("device offline device=%s site=%s reason=%r last_seen=%.0fs ago mails=%d",
                        row.device, row.site, reason, now - row.last_seen, len(mails))  # fmt: skip
            if mails:
                self._wake.set()

    # --- timers ---------------------------------------------------------------------

    async def _timers_forever(self, store: Store) -> None:
        d = self.config.devices
        while not self._stopping.is_set():
            self._timers.clear()  # before looking, so a change after the look still wakes us
            await self._tick(store)
            self.stats.ticks += 1
            next_at = await store.next_timer(
                grace_s=d.offline_grace_s, heartbeat_timeout_s=d.heartbeat_timeout_s
            )
            timeout = self.config.delivery.poll_s
            if next_at is not None:
                timeout = min(timeout, max(0.0, next_at - self.clock.time()))
            await self._wait(self._timers, timeout)

    async def _tick(self, store: Store) -> None:
        """Queue every summary, reminder and offline notice that is due now."""
        now = self.clock.time()
        d = self.config.devices
        overdue = await store.overdue_devices(
            now=now, grace_s=d.offline_grace_s, heartbeat_timeout_s=d.heartbeat_timeout_s
        )
        for row, by_heartbeat in overdue:
            await self._device_offline(store, row, by_heartbeat)
        for row in await store.returned_devices():
            await self._back_online(store, row)
        for episode in await store.due_episodes(now):
            await self._summarise(store, episode, now)
        for trap in await store.due_traps(now):
            await self._remind(store, trap, now)

    async def _summarise(self, store: Store, row: EpisodeRow, now: float) -> None:
        over = (not row.open) or now >= row.last_at + row.quiet_s
        if row.folded == 0:
            if over:
                await store.episode_summarised(row, None, [], now=now, close=True)
            return
        site = self.config.sites.get(row.site)
        notice = Notice(f"{NOTICE_PREFIX}{row.id}.s{row.summaries + 1}", f"{row.kind}_summary", "info",
                        row.site, row.device)  # fmt: skip
        mails: list[OutgoingMail] = []
        if site is not None:
            when = dt.datetime.fromtimestamp(now, dt.UTC)
            severity = str(row.stats.get("severity") or "info")

            def render(recipient: Recipient, index: int, with_data: bool) -> Mail:
                return render_summary(
                    notice_id=notice.id, first_id=row.id, kind=row.kind, severity=severity,
                    site_id=row.site, site=site, device=row.device, count=row.folded,
                    total=row.folded_total, stats=row.stats if with_data else {}, over=over,
                    quiet_s=row.quiet_s, every_s=row.summary_every_s, lat=row.lat,
                    lon=row.lon, language=recipient.language, sender=self.config.smtp.sender,
                    recipient=recipient.address, index=index, now=when, maps=self.maps,
                )  # fmt: skip

            mails = await self._render_each(_stored(row.recipients), render, notice.id)
        if await store.episode_summarised(row, notice, mails, now=now, close=over):
            self.stats.notices += 1
            log.info("summary queued notice=%s kind=%s device=%s folded=%d over=%s mails=%d",
                     notice.id, row.kind, row.device, row.folded, over, len(mails))  # fmt: skip
            if mails:
                self._wake.set()

    async def _remind(self, store: Store, row: TrapRow, now: float) -> None:
        site = self.config.sites.get(row.site)
        number = row.reminders + 1
        notice = Notice(f"{NOTICE_PREFIX}{row.trigger_id}.r{number}", TRAP_REMINDER, "alarm",
                        row.site, row.device)  # fmt: skip
        mails: list[OutgoingMail] = []
        if site is not None and self.config.mails_kind(site, TRAP_REMINDER):
            when = dt.datetime.fromtimestamp(now, dt.UTC)

            def render(recipient: Recipient, index: int, with_data: bool) -> Mail:
                return render_reminder(
                    notice_id=notice.id, trigger_id=row.trigger_id, site_id=row.site,
                    site=site, device=row.device, sensor=row.sensor,
                    closed_since=row.closed_since, number=number, lat=row.lat, lon=row.lon,
                    language=recipient.language, sender=self.config.smtp.sender,
                    recipient=recipient.address, index=index, now=when, maps=self.maps,
                )  # fmt: skip

            mails = await self._render_each(_stored(row.recipients), render, notice.id)
        every = self.config.traps.reminder_every_s
        if await store.trap_reminded(row, notice, mails, now=now, every_s=every):
            self.stats.notices += 1
            log.info("trap reminder queued notice=%s device=%s sensor=%s closed_for=%.0fs mails=%d",
                     notice.id, row.device, row.sensor, now - row.closed_since,
                     len(mails))  # fmt: skip
            if mails:
                self._wake.set()

    # --- sending -------------------------------------------------------------------

    async def _deliver_forever(self, store: Store) -> None:
        """Up to ``smtp.connections`` senders, each with an SMTP session of its own."""
        marks = SentMarks(store, store.journal, self._sent)
        count = self.config.smtp.connections if isinstance(self._mailer, Mailer) else 1
        try:
            async with asyncio.TaskGroup() as senders:
                for number in range(count):
                    senders.create_task(self._send_forever(store, marks), name=f"sender-{number}")
        finally:
            await marks.close()

    async def _send_forever(self, store: Store, marks: SentMarks) -> None:
        poll_s = self.config.delivery.poll_s
        while not self._stopping.is_set():
            marks.raise_failure()  # the store could not record what was sent: stop
            self._wake.clear()  # before looking, so a commit after the look still wakes us
            batch = await self._claim(store)
            if batch:
                await self._deliver(store, marks, batch)
                continue
            if marks.since_sync:
                await store.sync()  # idle: the marks reach the disk (a power cut keeps them)
                marks.since_sync = 0
            journal = store.journal
            if journal is not None and journal.written and not journal.unmarked:
                journal.clear()  # the store has caught up with every line
            next_due = await store.next_due()
            timeout = poll_s
            if next_due is not None:
                timeout = min(timeout, max(0.0, next_due - self.clock.time()))
            await self._wait(self._wake, timeout)

    async def _claim(self, store: Store) -> list[QueuedMail]:
        lease_s = self.config.delivery.claim_timeout_s
        now = self.clock.time()
        return await store.claim_due(self.instance, now=now, lease_s=lease_s, limit=BATCH)

    async def _deliver(self, store: Store, marks: SentMarks, batch: list[QueuedMail]) -> None:
        """Send ``batch``, then whatever else is due, on one SMTP session (one connection)."""
        assert self._mailer is not None
        done = 0
        try:
            async with self._mailer.session() as session:
                while batch:
                    done = 0
                    for mail in batch:
                        if self._stopping.is_set():
                            return  # still pending: sent after the restart
                        journal = store.journal
                        accepted_hook = None if journal is None else functools.partial(
                            journal.record, mail.id, mail.event_id, mail.recipient
                        )  # fmt: skip
                        try:
                            await session.send(mail.recipient, mail.message, accepted_hook)
                        except PermanentDeliveryError as exc:
                            done += 1
                            await self._failed(store, mail, exc.reason)
                        except TransientDeliveryError as exc:
                            done += 1
                            await self._defer(store, mail, exc.reason)
                            if not session.usable:
                                raise
                        else:
                            accepted = time.perf_counter()
                            done += 1
                            now = self.clock.time()
                            committed = marks.mark(mail, now, accepted)
                            if store.journal is None:
                                # No journal (PostgreSQL): the mark is the only record,
                                # so it is committed before the next mail goes.
                                await asyncio.shield(committed)
                    if self._stopping.is_set():
                        return
                    # More due (a burst): keep the connection rather than open another.
                    self._wake.clear()
                    batch = await self._claim(store)
        except TransientDeliveryError as exc:
            # Could not connect, or the connection died: the rest of the batch waits too.
            for mail in batch[done:]:
                await self._defer(store, mail, exc.reason)

    def _sent(self, mail: QueuedMail, now: float, window: float) -> None:
        self.stats.sent += 1
        self.stats.mark_window_total_s += window
        self.stats.mark_window_max_s = max(self.stats.mark_window_max_s, window)
        log.info(
            "mail sent event=%s kind=%s to=%s attempts=%d after=%.0fms marked_in=%.2fms",
            mail.event_id,
            mail.kind,
            mail.recipient,
            mail.attempts + 1,
            (now - mail.created_at) * 1000.0,
            window * 1000.0,
        )

    async def _defer(self, store: Store, mail: QueuedMail, reason: str) -> None:
        attempt = mail.attempts + 1
        delay = self._retry.delay(attempt)
        await store.reschedule(mail.id, self.clock.time() + delay, reason)
        self.stats.deferred += 1
        log.warning(
            "mail deferred event=%s kind=%s to=%s attempts=%d retry_in=%.3gs: %s",
            mail.event_id,
            mail.kind,
            mail.recipient,
            attempt,
            delay,
            reason,
        )

    async def _failed(self, store: Store, mail: QueuedMail, reason: str) -> None:
        await store.mark_failed(mail.id, reason, now=self.clock.time())
        self.stats.failed += 1
        log.error(
            "mail failed permanently event=%s kind=%s to=%s attempts=%d: %s",
            mail.event_id,
            mail.kind,
            mail.recipient,
            mail.attempts + 1,
            reason,
        )

    # --- housekeeping ----------------------------------------------------------------

    async def _housekeeping(self, store: Store) -> None:
        keep_s = self.config.store.keep_days * 86400.0
        host, pid = socket.gethostname(), os.getpid()
        last_prune: float | None = None
        while True:
            now = self.clock.time()
            await store.instance_alive(self.instance, now=now, host=host, pid=pid)
            if last_prune is None or now - last_prune >= PRUNE_EVERY_S:
                last_prune = now
                s = self.config.store
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
            await self.clock.sleep(max(self.config.delivery.poll_s, 1.0))

    async def _wait(self, event: asyncio.Event, timeout: float) -> None:
        """Until ``event`` is set or ``timeout`` seconds pass on the notifier's clock."""
        if event.is_set():
            return
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.clock.sleep(timeout))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(waiter, sleeper, return_exceptions=True)


class SentMarks:
    """Marks mails sent, committing the marks that wait together (group commit).

    A mark is committed as soon as the store's thread is free, with every mark
    that arrived meanwhile; nothing is held back to fill a group, under load
    the commits simply carry more marks each.  The SMTP session does not wait
    for it: it goes on with its next mail (the mail stays claimed by this
    instance meanwhile, and a kill before the commit is covered by the
    :class:`~cloud.store.SentJournal` where there is one).  A failed commit
    is raised by the next :meth:`mark` and by :meth:`close`.
    """

    def __init__(
        self,
        store: Store,
        journal: SentJournal | None = None,
        on_marked: Callable[[QueuedMail, float, float], None] | None = None,
    ) -> None:
        self._store = store
        self._journal = journal
        self._on_marked = on_marked
        self._waiting: list[tuple[QueuedMail, float, float, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.since_sync = 0
        """Marks committed since the last :meth:`Store.sync`."""

    def raise_failure(self) -> None:
        """Raise the error of a failed commit, if one failed."""
        if self._error is not None:
            raise self._error

    def mark(self, mail: QueuedMail, now: float, accepted: float) -> asyncio.Future[None]:
        """The SMTP server accepted ``mail`` at ``accepted`` (``perf_counter``): commit it
        soon; the future is done once it is committed."""
        self.raise_failure()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((mail, now, accepted, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="sent-marks")
        return done

    @property
    def idle(self) -> bool:
        return not self._waiting and (self._flusher is None or self._flusher.done())

    async def _flush(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await self._store.mark_sent_many([(mail.id, now) for mail, now, _, _ in group])
            except BaseException as exc:
                self._error = exc
                for *_, done in group + self._waiting:
                    if not done.done():
                        done.set_exception(exc)
                        done.exception()  # retrieved: a sender may not wait for it
                self._waiting = []
                raise
            committed = time.perf_counter()
            self.since_sync += len(group)
            if self._journal is not None:
                self._journal.marked(len(group))
            for mail, now, accepted, done in group:
                if self._on_marked is not None:
                    self._on_marked(mail, now, committed - accepted)
                if not done.done():
                    done.set_result(None)

    async def close(self) -> None:
        """Wait until the marks in hand are committed (at a stop); raise a failed commit."""
        if self._flusher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._flusher)
        if self._error is not None and not isinstance(self._error, asyncio.CancelledError):
            raise self._error


def _scoped(device: str, event_id: str) -> str:
    """The id an event is stored under when another device's event holds its own."""
    return f"{device}{SCOPE_SEP}{event_id}"


def _device_id(stored_id: str) -> str:
    """The id the device gave an event (what it is acknowledged by)."""
    return stored_id.partition(SCOPE_SEP)[2] or stored_id


def _tls_context(ca_file: str, cert_file: str, key_file: str | None) -> ssl.SSLContext:
    """Mutual TLS: trust only ``ca_file`` (the fleet CA), show ``cert_file``."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def _ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK for ``message`` (manual ack mode, see ``Notifier._mqtt_client``)."""
    if message.qos == 0:
        return
    rc = client._client.ack(message.mid, message.qos)
    if rc != paho.MQTT_ERR_SUCCESS:
        # The connection is gone; the broker will deliver the message again and
        # the store will recognise it as a duplicate.
        log.debug("could not acknowledge mid=%d (rc=%s); it will be redelivered", message.mid, rc)


def _render_one(
    render: Callable[[Recipient, int, bool], Mail],
    recipient: Recipient,
    index: int,
    what: str,
) -> bytes | None:
    """One recipient's mail as bytes (on the renderer's thread); ``None``: cannot render."""
    try:
        return as_bytes(render(recipient, index, True))
    except Exception:
        log.exception("cannot render %s in full; mailing it without data", what)
        try:
            return as_bytes(render(recipient, index, False))
        except Exception:
            # Still failing: record the event rather than crash on it again
            # and again (the broker would redeliver it after every restart).
            log.exception("cannot render %s at all: recorded, NOT mailed", what)
            return None


def _readdress(
    message: bytes, old: Recipient, old_index: int, new: Recipient, new_index: int
) -> bytes | None:
    """``message`` (rendered for ``old``, place ``old_index``) as it would be for ``new``.

    The mails of one notice in one language differ only in ``To:`` and in the
    recipient's place in the message ids (``Message-ID``, ``In-Reply-To``,
    ``References``); rendering costs ~0.25 ms each (it was ~3 ms with Python's
    email package), this a few microseconds.  ``None`` when the header block is
    not as expected (then the caller renders it in full).
    """
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep or old.language != new.language:
        return None
    lines = head.split(b"\r\n")
    to_old = b"To: " + old.address.encode("ascii", "replace")
    if lines.count(to_old) != 1:
        return None
    lines[lines.index(to_old)] = b"To: " + new.address.encode("ascii", "replace")
    head = b"\r\n".join(lines)
    old_tail = f".{old_index}@{MESSAGE_ID_DOMAIN}>".encode()
    if head.count(b"\r\nMessage-ID: ") != 1 or old_tail not in head:
        return None
    head = head.replace(old_tail, f".{new_index}@{MESSAGE_ID_DOMAIN}>".encode())
    return head + sep + body


def _stored(recipients: Sequence[tuple[str, str]]) -> list[Recipient]:
    """Recipients kept with a burst, trap or device, as they were when it began."""
    return [Recipient(address, "en" if lang == "en" else "ja") for address, lang in recipients]


def _heartbeat_interval(event: Event) -> float | None:
    """A heartbeat's ``interval_s`` (the device's promise of its next sign of life)."""
    if event.kind == "heartbeat":
        interval = event.data.get("interval_s")
        if _positive(interval):
            return float(interval)
    return None


def _sensor_of(event: Event) -> str:
    for key in ("sensor", "cot", "trap", "detector"):
        value = event.data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)[:128]
    return ""


def _trap_key(event: Event, sensor: str) -> str:
    return f"{event.site}|{event.device}|{sensor}"


def _event_time(event: Event, now: float) -> float:
    """When the event happened, as Unix time (the notifier's receipt if the clock is unset)."""
    if not event.clock_synced:
        return now
    try:
        return event.ts.timestamp()
    except (OverflowError, ValueError, OSError):
        return now


def _closed_since(event: Event, now: float) -> float:
    """When a trap closed: ``closed_since`` by a synced clock, else ``closed_s`` before now."""
    value = event.data.get("closed_since")
    if event.clock_synced and isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                return min(moment.timestamp(), now)
        except (ValueError, OverflowError):
            pass
    closed_s = event.data.get("closed_s")
    if _finite(closed_s) and float(closed_s) >= 0:
        return now - float(closed_s)
    return _event_time(event, now)


def _finite(value: object) -> TypeGuard[float]:
    """A real number (not a bool, not NaN or infinite): what a reading must be."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: object) -> TypeGuard[float]:
    return _finite(value) and float(value) > 0
