"""The notifier service: MQTT events in, e-mails out, nothing lost in between.

Three tasks share one event loop and one :class:`~cloud.store.Store`:

* the **receiver** holds a persistent MQTT session (``clean_session=False``,
  a fixed client id) subscribed to ``PREFIX/+/events`` at QoS 1.  For each
  message it decodes the envelope, renders one mail per recipient, and
  commits event and mails in one transaction; only *then* does it send the
  PUBACK.  A crash anywhere before the commit leaves the message unacknowledged
  and the broker delivers it again.  Duplicates (the device's at-least-once
  retries, or the broker's redelivery) are refused by the store by event id.
* the **sender** waits on an :class:`asyncio.Event` that the receiver sets
  after each commit, so a new mail leaves within milliseconds; otherwise it
  sleeps exactly until the next retry is due.  Transient SMTP failures are
  retried with capped exponential backoff and jitter; permanent refusals are
  marked ``failed`` and logged; nothing is dropped.
* the **pruner** forgets events older than ``store.keep_days`` once a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from cloud.backoff import Backoff
from cloud.config import NotifierConfig
from cloud.errors import PermanentDeliveryError, TransientDeliveryError
from cloud.mailer import Mailer
from cloud.render import as_bytes, render_mail
from cloud.store import OutgoingMail, QueuedMail, Store
from edge.event import EnvelopeError, Event, decode

log = logging.getLogger(__name__)

#: MQTT reconnect delays (full jitter): spread out, but back within a minute.
RECONNECT_INITIAL_S: Final = 0.5
RECONNECT_MAX_S: Final = 60.0
#: How many due mails one SMTP session sends before the queue is looked at again.
BATCH: Final = 50
PRUNE_EVERY_S: Final = 24 * 3600.0
#: On a graceful stop, how long the sender may take to finish the mail in hand.
STOP_GRACE_S: Final = 10.0


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
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    connections: int = 0


class Notifier:
    """Turns device events into e-mails until :meth:`stop` is called or it is cancelled."""

    def __init__(self, config: NotifierConfig) -> None:
        self.config = config
        self.stats = NotifierStats()
        self.subscribed = asyncio.Event()
        """Set while the MQTT subscription is active (tests and health checks wait on it)."""
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._mailer: Mailer | None = None
        self._reconnect = Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S, jitter="full")
        d = config.delivery
        self._retry = Backoff(d.retry_initial_s, d.retry_max_s, jitter="equal")
        self.topic = f"{config.mqtt.topic_prefix}/+/events"

    # --- life cycle -------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return: stop receiving, finish the mail in hand, close."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Run until :meth:`stop` (returns) or cancellation (raises ``CancelledError``).

        A failure the notifier cannot handle by itself (the store is broken or
        the disk is full) propagates, with every unstored message still
        unacknowledged, so that a supervisor can restart the process.
        """
        cfg = self.config
        log.info(
            "notifier starting: mqtt=%s:%d topic=%s client_id=%s smtp=%s:%d store=%s sites=%d",
            cfg.mqtt.host,
            cfg.mqtt.port,
            self.topic,
            cfg.mqtt.client_id,
            cfg.smtp.host,
            cfg.smtp.port,
            cfg.store.path,
            len(cfg.sites),
        )
        local_hostname = await asyncio.to_thread(socket.getfqdn)  # once: it may query DNS
        self._mailer = Mailer(cfg.smtp, local_hostname=local_hostname)
        async with await Store.open(cfg.store.path) as store:
            counts = await store.counts()
            log.info(
                "store open: %d events known, %d mails pending, %d failed",
                counts.events,
                counts.pending,
                counts.failed,
            )
            try:
                async with asyncio.TaskGroup() as tasks:
                    receiver = tasks.create_task(self._receive_forever(store), name="receiver")
                    sender = tasks.create_task(self._deliver_forever(store), name="sender")
                    pruner = tasks.create_task(self._prune_forever(store), name="pruner")
                    await self._stopping.wait()
                    receiver.cancel()
                    pruner.cancel()
                    try:
                        await asyncio.wait_for(asyncio.shield(sender), STOP_GRACE_S)
                    except TimeoutError:
                        sender.cancel()
            except BaseExceptionGroup as group:
                # One task failed and the TaskGroup cancelled the others: report that one.
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
            finally:
                self.subscribed.clear()
        log.info("notifier stopped")

    # --- receiving ----------------------------------------------------------------

    async def _receive_forever(self, store: Store) -> None:
        attempt = 0
        while True:
            client = self._mqtt_client()
            try:
                async with client:
                    granted = await client.subscribe(self.topic, qos=1)
                    self._check_granted(granted)
                    self.stats.connections += 1
                    attempt = 0
                    log.info(
                        "mqtt connected to %s:%d, subscribed to %s",
                        self.config.mqtt.host,
                        self.config.mqtt.port,
                        self.topic,
                    )
                    self.subscribed.set()
                    async for message in client.messages:
                        await self._handle(client, store, message)
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
                await asyncio.sleep(delay)
            # Messages this client received but did not acknowledge die with it;
            # the broker keeps them in our session and delivers them again.

    def _check_granted(self, granted: Sequence[int | ReasonCode]) -> None:
        """Refuse to sit on a subscription the broker did not grant at QoS 1."""
        codes = [code.value if isinstance(code, ReasonCode) else int(code) for code in granted]
        if not codes or any(code >= 0x80 for code in codes):
            log.error(
                "broker refused the subscription to %s (reason %s): check its ACL for %s",
                self.topic,
                codes,
                self.config.mqtt.username or "anonymous clients",
            )
            raise aiomqtt.MqttError(f"subscription to {self.topic} refused")
        if codes[0] < 1:
            log.warning(
                "broker granted QoS %d for %s: events may be lost while the notifier is away",
                codes[0],
                self.topic,
            )

    def _mqtt_client(self) -> aiomqtt.Client:
        m = self.config.mqtt
        client = aiomqtt.Client(
            m.host,
            m.port,
            username=m.username,
            password=m.password.reveal() if m.password is not None else None,
            identifier=m.client_id,
            clean_session=False,  # the broker queues events for us while we are away
            keepalive=m.keepalive,
        )
        # aiomqtt (through paho) acknowledges a QoS 1 message as soon as it is
        # received, before we have stored it: a crash right then would lose the
        # event.  paho 2's manual ack mode (public API, on the paho client that
        # aiomqtt 2 keeps in `_client`) lets us send the PUBACK ourselves, after
        # the commit.  Set before connecting, so that messages the broker
        # replays on session resume are not acknowledged either.
        client._client.manual_ack_set(True)
        return client

    async def _handle(self, client: aiomqtt.Client, store: Store, message: aiomqtt.Message) -> None:
        self.stats.received += 1
        received_at = time.time()
        payload = message.payload  # bytes: paho hands over what came on the wire
        try:
            if not isinstance(payload, bytes):
                raise EnvelopeError(f"payload of type {type(payload).__name__}")
            event = decode(payload)
        except EnvelopeError as exc:
            self.stats.invalid += 1
            log.warning(
                "dropping invalid message on %s (%d bytes): %s",
                message.topic.value,
                len(payload) if isinstance(payload, bytes) else 0,
                exc,
            )
            _ack(client, message)  # redelivery would not make it valid
            return

        topic_device = message.topic.value.split("/")[-2]
        if topic_device != event.device:
            log.warning(
                "event %s says device=%s but came on the topic of device %s",
                event.id,
                event.device,
                topic_device,
            )
        mails = self._mails_for(event, received_at)
        accepted = await store.accept(event, mails, now=received_at)
        _ack(client, message)  # only now: the event and its mails are on disk
        if not accepted:
            self.stats.duplicates += 1
            log.info(
                "duplicate event ignored event=%s kind=%s device=%s",
                event.id,
                event.kind,
                event.device,
            )
            return
        self.stats.accepted += 1
        if mails:
            self._wake.set()
        log.info(
            "event accepted event=%s kind=%s severity=%s site=%s device=%s mails=%d",
            event.id,
            event.kind,
            event.severity,
            event.site,
            event.device,
            len(mails),
        )

    def _mails_for(self, event: Event, received_at: float) -> list[OutgoingMail]:
        """One rendered mail per recipient of the event's site (none for an unknown site)."""
        cfg = self.config
        site = cfg.sites.get(event.site)
        if site is None:
            self.stats.unknown_site += 1
            log.warning(
                "event from unknown site event=%s site=%r device=%s kind=%s: recorded, no mail",
                event.id,
                event.site,
                event.device,
                event.kind,
            )
            return []
        if not cfg.mails_kind(site, event.kind):
            log.debug(
                "kind %s is not mailed for site %s: event %s recorded only",
                event.kind,
                event.site,
                event.id,
            )
            return []
        when = dt.datetime.fromtimestamp(received_at, dt.UTC)
        language = cfg.language_for(site)
        mails = []
        for index, recipient in enumerate(site.recipients, start=1):

            def render(with_data: bool, recipient: str = recipient, index: int = index) -> bytes:
                message = render_mail(
                    event,
                    site,
                    language=language,
                    sender=cfg.smtp.sender,
                    recipient=recipient,
                    index=index,
                    received_at=when,
                    with_data=with_data,
                )
                return as_bytes(message)

            try:
                message = render(with_data=True)
            except Exception:
                # A template bug or data the renderer chokes on must not cost the
                # mail: send it without the device's data fields.
                log.exception("cannot render event %s in full; mailing it without data", event.id)
                try:
                    message = render(with_data=False)
                except Exception:
                    # Still failing: record the event rather than crash on it again
                    # and again (the broker would redeliver it after every restart).
                    log.exception("cannot render event %s at all: recorded, NOT mailed", event.id)
                    continue
            mails.append(OutgoingMail(recipient=recipient, message=message))
        return mails

    # --- sending -------------------------------------------------------------------

    async def _deliver_forever(self, store: Store) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before looking, so a commit after the look still wakes us
            due = await store.due_mails(limit=BATCH)
            if due:
                await self._deliver(store, due)
                continue
            next_due = await store.next_due()
            timeout = None if next_due is None else max(0.0, next_due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _deliver(self, store: Store, batch: list[QueuedMail]) -> None:
        assert self._mailer is not None
        done = 0
        try:
            async with self._mailer.session() as session:
                for mail in batch:
                    if self._stopping.is_set():
                        return  # still pending: sent after the restart
                    try:
                        await session.send(mail.recipient, mail.message)
                    except PermanentDeliveryError as exc:
                        done += 1
                        await self._failed(store, mail, exc.reason)
                    except TransientDeliveryError as exc:
                        done += 1
                        await self._defer(store, mail, exc.reason)
                        if not session.usable:
                            raise
                    else:
                        done += 1
                        await store.mark_sent(mail.id)
                        self.stats.sent += 1
                        log.info(
                            "mail sent event=%s kind=%s to=%s attempts=%d after=%.0fms",
                            mail.event_id,
                            mail.kind,
                            mail.recipient,
                            mail.attempts + 1,
                            (time.time() - mail.created_at) * 1000.0,
                        )
        except TransientDeliveryError as exc:
            # Could not connect, or the connection died: the rest of the batch waits too.
            for mail in batch[done:]:
                await self._defer(store, mail, exc.reason)

    async def _defer(self, store: Store, mail: QueuedMail, reason: str) -> None:
        attempt = mail.attempts + 1
        delay = self._retry.delay(attempt)
        await store.reschedule(mail.id, time.time() + delay, reason)
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
        await store.mark_failed(mail.id, reason)
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

    async def _prune_forever(self, store: Store) -> None:
        keep_s = self.config.store.keep_days * 86400.0
        while True:
            removed = await store.prune(time.time() - keep_s)
            if removed:
                log.info(
                    "forgot %d events older than %d days", removed, self.config.store.keep_days
                )
            await asyncio.sleep(PRUNE_EVERY_S)


def _ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK for ``message`` (manual ack mode, see ``Notifier._mqtt_client``)."""
    if message.qos == 0:
        return
    rc = client._client.ack(message.mid, message.qos)
    if rc != paho.MQTT_ERR_SUCCESS:
        # The connection is gone; the broker will deliver the message again and
        # the store will recognise it as a duplicate.
        log.debug("could not acknowledge mid=%d (rc=%s); it will be redelivered", message.mid, rc)
