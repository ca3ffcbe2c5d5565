"""Receiving: device messages from MQTT into the store, acknowledged only once stored.

The receiver holds a persistent MQTT session (fixed client id; MQTT 5 with a
session expiry, or 3.1.1 with ``clean_session=False``) subscribed at QoS 1 to
``PREFIX/+/events`` and ``PREFIX/+/telemetry`` (both through ``$share/GROUP/``
when several instances share the work) and to ``PREFIX/+/status`` (never
shared: every instance sees every device's retained state).  For each event it
has :class:`~cloud.plan.Planner` render what must be mailed, and commits event,
mails and the state they touch (a burst, a trap, a device) in one transaction
(runs of events in one group commit); only *then* does it send the PUBACK.  A
crash before the commit leaves the message unacknowledged and the broker
delivers it again; the store refuses a duplicate by event id.

The receive window: at most ``mqtt.receive_maximum`` messages are in flight to
the notifier (MQTT 5 Receive Maximum, and :class:`~cloud.receive_gate.ReceiveGate`
for brokers that ignore it).  A message that speaks for another device or site
than its topic's is refused (acknowledged, not stored).  The devices' own acks
go out on a connection of their own (:meth:`Receiver.acknowledge_forever`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections.abc import Sequence
from typing import Any, Final

import aiomqtt
import msgspec
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.clock import Clock
from cloud.config import NotifierConfig
from cloud.device_acks import DeviceAcks
from cloud.notices import NOTICE_PREFIX, Notices
from cloud.plan import Planner, finite, heartbeat_interval
from cloud.receive_gate import ReceiveGate
from cloud.send import Handoff
from cloud.stats import NotifierStats
from cloud.store import AcceptResult, CoalescePlan, OutgoingMail, QueuedMail, Store, TrapPlan
from edge.backoff import Backoff
from edge.event import (
    EnvelopeError,
    Event,
    decode,
    decode_status,
    decode_telemetry,
    events_topic,
    salvage_id,
    status_topic,
    telemetry_topic,
)

log = logging.getLogger("cloud.notifier")  # the name its log lines had before the split

#: MQTT reconnect delays (full jitter): spread out, but back within a minute.
RECONNECT_INITIAL_S: Final = 0.5
RECONNECT_MAX_S: Final = 60.0
#: Most event messages committed in one transaction (group commit).
GROUP_MAX: Final = 64
#: A group is committed early once its events queue this many mails.
GROUP_MAILS: Final = 48
#: Events whose mails are rendered in one go (then committed, see GROUP_MAILS).
PLAN_AT_ONCE: Final = 12
#: Readings one telemetry batch may add (a bigger one is cut, and logged).
MAX_POINTS_PER_BATCH: Final = 20000
#: Event ids are unique per device, but the store keys events by id alone: an event
#: whose id another device's stored event holds is stored as ``DEVICE<SEP>ID``.
#: No device id can contain it (a topic level) and device event ids that do are refused.
SCOPE_SEP: Final = "\x1f"

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


class Receiver:
    """Takes device messages off MQTT, has them planned and stored, then acknowledges them."""

    def __init__(
        self,
        config: NotifierConfig,
        clock: Clock,
        stats: NotifierStats,
        planner: Planner,
        notices: Notices,
        *,
        wake_sender: asyncio.Event,
        wake_timers: asyncio.Event,
        subscribed: asyncio.Event,
        handoff: Handoff | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.stats = stats
        self.planner = planner
        self.notices = notices
        self.instance = config.mqtt.client_id
        self._wake = wake_sender
        self._timers = wake_timers
        self.handoff = handoff
        """Where the mails of events go to this instance's senders in memory, queued
        claimed for them (``None``: the senders claim them from the store)."""
        self.subscribed = subscribed
        """Set while the MQTT subscriptions are active."""
        self._reconnect = Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S, jitter="full")
        m = config.mqtt
        share = f"$share/{m.shared_group}/" if m.shared_group else ""
        self.topic = share + events_topic(m.topic_prefix, "+")
        self.telemetry_topic = share + telemetry_topic(m.topic_prefix, "+")
        self.status_topic = status_topic(m.topic_prefix, "+")
        self._prefix_depth = len(m.topic_prefix.split("/"))
        self.acks: DeviceAcks | None = (
            DeviceAcks(m.topic_prefix, delay_s=m.ack_delay_s) if m.device_acks else None
        )
        """What this instance committed, on its way back to the devices (``None``: off)."""
        self.gate: ReceiveGate | None = None
        """The receive window of the current MQTT connection."""

    async def run(self, store: Store) -> None:
        """Receive until cancelled, reconnecting with backoff (messages not acknowledged
        when a connection dies are the broker's to deliver again)."""
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

    async def acknowledge_forever(self, acks: DeviceAcks) -> None:
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
        # Each group's commit (the store's thread, an fsync) runs while the next chunk
        # renders (the render workers); the commits, and so the PUBACKs, stay in order.
        committing: asyncio.Task[None] | None = None
        try:
            for start in range(0, len(new), PLAN_AT_ONCE):
                chunk = new[start : start + PLAN_AT_ONCE]
                plans_of = (
                    self.planner.plan_event(store, event, self.config.sites.get(event.site), now)
                    for _, _, event in chunk
                )
                if sum(self.planner.mailed(event) for _, _, event in chunk) > 1:
                    # Planned together: their mails are rendered in one hand-over
                    # (to a render worker, or back to back on the renderer's thread).
                    planned = await asyncio.gather(*plans_of)
                else:  # nothing to render (heartbeats): no task per event
                    planned = [await plan for plan in plans_of]
                for (message, topic_device, event), (mails, coalesce, trap) in zip(
                    chunk, planned, strict=True
                ):
                    plans.append(
                        (message, topic_device, event, mails, coalesce, trap,
                         heartbeat_interval(event))
                    )  # fmt: skip
                    mails_planned += len(mails)
                if mails_planned >= GROUP_MAILS:
                    # Mailed events: commit sooner, so that the transaction stays short
                    # (a mail the SMTP server took waits behind it to be marked sent).
                    if committing is not None:
                        await committing
                    committing = asyncio.create_task(
                        self._commit_group(client, store, plans, now), name="group-commit"
                    )
                    plans, mails_planned = [], 0
            if committing is not None:
                await committing
                committing = None
            if plans:
                await self._commit_group(client, store, plans, now)
        finally:
            if committing is not None and not committing.done():
                committing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await committing

    async def _commit_group(
        self, client: aiomqtt.Client, store: Store, plans: list[_Planned], now: float
    ) -> None:
        self.stats.group_commits += 1
        claim = self._claim(store, sum(len(mails) for _, _, _, mails, _, _, _ in plans))
        results = await store.accept_many(
            [(event, mails, c, t, hb) for _, _, event, mails, c, t, hb in plans], now=now,
            claim=claim,
        )  # fmt: skip
        if claim is not None:
            self._hand_over(
                [(event, mails, result) for (_, _, event, mails, *_), result
                 in zip(plans, results, strict=True)], now, claim[1],
            )  # fmt: skip
        # One log record for the group (its items separated by " | "), as for sent marks:
        # a record per event cost more than the event's SQL.
        lines: list[str] | None = [] if log.isEnabledFor(logging.INFO) else None
        # The group's PUBACKs go out together (one write, see _ack_all), not one a message.
        pubacks: list[aiomqtt.Message] = []
        try:
            for n, ((message, topic_device, event, _, coalesce, trap, _), result) in enumerate(
                zip(plans, results, strict=True)
            ):
                if n % 4 == 3 and result.queued:
                    # Let an SMTP server's "250" be read now (and journaled, see
                    # SentJournal), not after the whole group's PUBACKs.
                    _ack_all(client, pubacks)
                    await asyncio.sleep(0)
                await self._after_accept(
                    client, store, message, topic_device, event, coalesce, trap, result, lines,
                    handed=claim is not None, pubacks=pubacks,
                )  # fmt: skip
        finally:
            _ack_all(client, pubacks)
            if lines:
                log.info("%s", " | ".join(lines))

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
        mails, coalesce, trap = await self.planner.plan_event(store, event, site, now)
        claim = self._claim(store, len(mails))
        result = await store.accept(
            event, mails, now=now, coalesce=coalesce, trap=trap,
            heartbeat_interval=heartbeat_interval(event), claim=claim,
        )  # fmt: skip
        if claim is not None:
            self._hand_over([(event, mails, result)], now, claim[1])
        await self._after_accept(
            client, store, message, topic_device, event, coalesce, trap, result,
            handed=claim is not None,
        )  # fmt: skip

    def _claim(self, store: Store, mails: int) -> tuple[str, float] | None:
        """``(instance, until)`` to queue ``mails`` mails claimed for this instance's
        senders, if the hand-off has room for them all (else ``None``: the store's queue).

        Never with a shared store (PostgreSQL): there the mails of an instance that
        dies are another's to send within ``delivery.poll_s``, not after a claim."""
        handoff = self.handoff
        if handoff is None or store.shared or not mails or handoff.room() < mails:
            return None
        return self.instance, self.clock.time() + handoff.lease_s

    def _hand_over(
        self,
        accepted: Sequence[tuple[Event, Sequence[OutgoingMail], AcceptResult]],
        now: float,
        claim_until: float,
    ) -> None:
        """The mails just queued claimed for us, to the senders (their bytes are here)."""
        assert self.handoff is not None
        queued: list[QueuedMail] = []
        for event, mails, result in accepted:
            if not result.mails:
                continue
            mail_to = {m.recipient: m for m in reversed(mails)}  # the first wins
            queued += (
                QueuedMail(
                    id=mail_id, event_id=event.id, kind=event.kind, site=event.site,
                    recipient=recipient, status="pending", attempts=0, next_attempt=now,
                    last_error=None, created_at=now, finished_at=None,
                    message=mail_to[recipient].message, ready=mail_to[recipient].ready,
                )
                for mail_id, recipient in result.mails
            )  # fmt: skip
        self.handoff.put(queued, claim_until)

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
        lines: list[str] | None = None,
        *,
        handed: bool = False,
        pubacks: list[aiomqtt.Message] | None = None,
    ) -> None:
        """Acknowledge, count and log an event the store has just been given (its log
        item goes to ``lines`` where given, for one record of a group; ``handed``: its
        mails went to the senders in memory, see :meth:`_hand_over`; ``pubacks``: its
        PUBACK goes there, for the caller to send with the group's, see :func:`_ack_all`)."""
        if not result.accepted:  # another instance stored it meanwhile
            self._duplicate(client, message, event, topic_device)
            return
        # Only now: the event and its mails are stored.
        if pubacks is not None:
            pubacks.append(message)
        else:
            _ack(client, message)
        if self.acks is not None:
            self.acks.add(topic_device, (_device_id(event.id),))
        self.stats.accepted += 1
        if result.folded:
            self.stats.folded += 1
        if result.queued and not handed:
            self._wake.set()
        if coalesce is not None or trap is not None:
            # A burst or a trap may now have the earliest deadline.  Other events
            # move deadlines (a heartbeat's) at least heartbeat_timeout_s away, which
            # the timekeeper's next look (every delivery.poll_s) finds: waking it
            # for each of them cost five queries per event under a backlog.
            self._timers.set()
        if lines is not None or log.isEnabledFor(logging.INFO):
            line = (
                f"event accepted event={event.id} kind={event.kind} severity={event.severity} "
                f"site={event.site} device={event.device} mails={result.queued}"
                + (" (folded into a burst already mailed)" if result.folded else "")
            )
            if lines is not None:
                lines.append(line)
            else:
                log.info("%s", line)
        row = result.device
        if row is not None and row.state == "offline" and row.cause == "heartbeat":
            await self.notices.back_online(store, row)

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
                if finite(ts) and finite(v):
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
            await self.notices.back_online(store, row)

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
        row = await store.record_status(
            device, status.state, status.reason, now=now, version=status.version
        )
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
                await self.notices.back_online(store, row)


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


def _ack_all(client: aiomqtt.Client, messages: list[aiomqtt.Message]) -> None:
    """Send the PUBACKs of ``messages`` (all committed) in one write, and empty the list.

    paho writes each packet it queues with a ``send`` of its own (a system call, and
    a moment for another thread to take the GIL); the PUBACKs of a group go to it as
    one packet of their bytes, the same bytes paho's ``ack`` writes for each.
    """
    mids = [m.mid for m in messages if m.qos == 1]
    # paho's packet queue is not public API: a paho without it gets one PUBACK a message.
    queue = getattr(client._client, "_packet_queue", None)
    if len(mids) < 2 or len(mids) < len(messages) or queue is None:
        for message in messages:
            _ack(client, message)
    else:
        blob = b"".join([_PUBACK.pack(paho.PUBACK, 2, mid) for mid in mids])
        rc = queue(paho.PUBACK, blob, 0, 0)
        if rc != paho.MQTT_ERR_SUCCESS:
            log.debug("could not acknowledge %d messages (rc=%s); they will be redelivered",
                      len(mids), rc)  # fmt: skip
    messages.clear()


#: A PUBACK: its type, remaining length 2, the packet id (MQTT 3.1.1, and 5 with
#: reason 0 and no properties; what paho's ``ack`` sends).
_PUBACK: Final = struct.Struct("!BBH")


def _ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK for ``message`` (manual ack mode, see ``Receiver._mqtt_client``)."""
    if message.qos == 0:
        return
    rc = client._client.ack(message.mid, message.qos)
    if rc != paho.MQTT_ERR_SUCCESS:
        # The connection is gone; the broker will deliver the message again and
        # the store will recognise it as a duplicate.
        log.debug("could not acknowledge mid=%d (rc=%s); it will be redelivered", message.mid, rc)
