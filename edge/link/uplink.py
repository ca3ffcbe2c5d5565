"""The uplink: drains the outbox to the MQTT broker, QoS 1, across a link that drops.

* One connection at a time; on any failure it reconnects with exponential
  backoff and full jitter (a fleet that lost its cell tower does not come back
  in lock-step).
* The retained ``status`` topic says ``online`` once connected; the broker's
  last will sets it ``offline`` when the device vanishes.
* Up to ``publish_window`` rows are in flight (published, PUBACK not yet
  received) at once.
* **End-to-end acknowledgement** (``uplink.delivery = "cloud_ack"``, the
  default): a PUBACK only means the broker holds the row in memory, so the
  row stays in the outbox until the cloud notifier, having committed it,
  names its id on ``PREFIX/DEVICE/ack``.  Rows awaiting that are skipped when
  reading the outbox and sent again as :class:`~edge.link.ack_tracker.AckTracker`
  decides (a timeout, a probe while the cloud is silent, a broker that lost
  its session).  With ``delivery = "puback"`` (a cloud side that predates the
  acknowledgement) a row is deleted on its PUBACK, as before: weaker, since a
  broker crash can lose what it acknowledged.
* Whatever was in flight when the link dropped is sent again on the next
  connection (at least once; the cloud de-duplicates by event id).
* The cloud's acknowledgements come at QoS 0 (:data:`ACK_QOS`): no PUBACK of
  ours per acknowledgement; a lost one costs a resend after ``ack_timeout_s``.
* The keepalive is learned (:class:`~edge.link.keepalive.KeepaliveRule`): a
  connection that dies idle (a carrier NAT that forgot the flow) shortens it
  for the next connection, a long stable spell lengthens it again at the next
  reconnect; what was learned is kept in ``keepalive.json``.  Into a session
  the broker kept (``session_present``) the uplink does not subscribe again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from edge import __version__
from edge.backoff import Backoff
from edge.config import Config, TlsConfig
from edge.errors import EdgeError
from edge.event import (
    EnvelopeError,
    Status,
    ack_topic,
    channel_topic,
    command_topic,
    decode_ack,
    encode_status,
    status_topic,
)
from edge.files import loose_mode, write_atomic
from edge.link.ack_tracker import AckTracker
from edge.link.keepalive import KeepaliveRule, KeepaliveState
from edge.link.linkstats import SAVE_EVERY_S, DailyUsage, read_counters
from edge.link.outbox import Outbox, Pending
from edge.link.tlsresume import ResumingContext
from edge.timed_wait import wait_set

log = logging.getLogger(__name__)

ACK_QOS: Final = 0
"""QoS of our subscription to ``PREFIX/DEVICE/ack``: 0, so that we owe the broker no
PUBACK per acknowledgement (184 B over mutual TLS).  A lost acknowledgement only
means the row is sent again after ``ack_timeout_s``; the cloud de-duplicates it."""

CommandHandler = Callable[[str, bytes], None]
"""Called with (command name, payload) for each message on ``PREFIX/DEVICE/cmd/NAME``."""


class UplinkSetupError(EdgeError, ValueError):
    """The uplink cannot be set up as configured (key readable by others, missing file)."""


def check_private_file(path: str, key: str) -> None:
    """Refuse a secret that other users can read (and say how to fix it)."""
    try:
        mode = loose_mode(path)
    except OSError as exc:
        raise UplinkSetupError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if mode is not None:
        raise UplinkSetupError(
            f"{key}: {path} is readable by other users (mode {mode:04o}); run: chmod 600 {path}"
        )


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """Client TLS: only the pinned fleet CA is trusted; our certificate proves who we are."""
    check_private_file(tls.key_file, "uplink.tls.key_file")
    for key, path in (("uplink.tls.ca_file", tls.ca_file), ("uplink.tls.cert_file", tls.cert_file)):
        if not Path(path).is_file():
            raise UplinkSetupError(f"{key}: {path} does not exist")
    ctx = ResumingContext()  # PROTOCOL_TLS_CLIENT; offers the last TLS session on reconnect
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=tls.ca_file)
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise UplinkSetupError(f"uplink.tls: cannot load certificates: {exc}") from None
    return ctx


class Uplink:
    def __init__(
        self,
        config: Config,
        outbox: Outbox,
        *,
        boot: str = "",
        on_published: Callable[[Pending], None] | None = None,
        on_command: CommandHandler | None = None,
        usage_path: Path | None = None,
        keepalive_path: Path | None = None,
    ) -> None:
        """``usage_path``: where today's byte count is kept across restarts (None: nowhere);
        ``keepalive_path``: where the learned keepalive is kept (None: nowhere)."""
        self.config = config
        self.outbox = outbox
        self.boot = boot
        self.on_published = on_published
        self.on_command = on_command
        up = config.uplink
        device = config.device.id
        self.topic_prefix = up.topic_prefix
        self.status_topic = status_topic(up.topic_prefix, device)
        self.command_topic = command_topic(up.topic_prefix, device)
        self.ack_topic = ack_topic(up.topic_prefix, device)
        self.cloud_ack = up.delivery == "cloud_ack"
        self.awaiting = AckTracker(
            timeout_s=up.ack_timeout_s,
            probe_max_s=up.ack_probe_max_s,
            max_awaiting=up.unacked_max,
        )
        """Rows the broker acknowledged that the cloud has not yet said it stored."""
        self._deleting: set[str] = set()
        """Ids the cloud acknowledged whose delete from the outbox is not committed yet."""
        self._recently_acked: dict[str, None] = {}
        """Ids the cloud acknowledged before their PUBACK arrived (bounded)."""
        self._room = asyncio.Event()
        """Set (for the drain) when the tracker has room again or rows were released."""
        self._kick = asyncio.Event()
        """Set (for the resend timer) when the earliest deadline may have changed."""
        self.backoff = Backoff(up.reconnect_min_s, up.reconnect_max_s, jitter="full")
        self._tls = tls_context(up.tls) if up.tls is not None else None
        self.connected = asyncio.Event()
        self.published = 0
        """Rows the broker acknowledged (PUBACK)."""
        self.delivered = 0
        """Rows deleted from the outbox: acknowledged by the cloud (or by the broker,
        with ``delivery = "puback"``)."""
        self.connections = 0
        self.session_present: bool | None = None
        """Whether the broker still had this device's session at the last CONNACK."""
        self._summary = _DrainSummary()
        self.closing = False
        """Set by :meth:`request_close` before the task is cancelled.  Not the task's
        ``cancelling()``: on Python 3.11 a TaskGroup whose child failed while it was
        exiting leaves the parent marked as cancelling for good (fixed in 3.12)."""
        self.usage = DailyUsage(usage_path)
        self._client_now: aiomqtt.Client | None = None
        self._subscribed: list[tuple[str, int]] | None = None
        """What this process subscribed to, all granted, in the broker's session."""
        self._keepalive_path = keepalive_path
        self.keepalive = KeepaliveRule(
            configured_s=up.keepalive_s,
            min_s=min(up.keepalive_min_s, up.keepalive_s),
            probe_after_s=up.keepalive_probe_s,
            state=_load_keepalive(keepalive_path),
        )
        """Which keepalive the next CONNECT asks for, learned from how connections died."""

    def request_close(self) -> None:
        """Say goodbye and stop at the next cancellation, whatever the link raises then."""
        self.closing = True

    def _status(self, state: str, reason: str = "") -> bytes:
        return encode_status(
            Status(
                device=self.config.device.id,
                state=state,  # type: ignore[arg-type]
                reason=reason,
                boot=self.boot,
                version=__version__,
            )
        )

    def _client(self) -> aiomqtt.Client:
        client = self._make_client()
        self.session_present = None
        on_connect = client._client.on_connect

        def remember_session(mqttc: paho.Client, userdata: object, flags: Any, *rest: Any) -> None:
            # aiomqtt drops CONNACK's flags; whether the broker kept our session
            # says whether it may have lost what it acknowledged (a restart).
            self.session_present = bool(getattr(flags, "session_present", False))
            on_connect(mqttc, userdata, flags, *rest)  # type: ignore[misc]

        client._client.on_connect = remember_session
        return client

    def _make_client(self) -> aiomqtt.Client:
        up = self.config.uplink
        return aiomqtt.Client(
            up.host,
            up.port,
            identifier=self.config.client_id,
            username=up.username,
            password=up.password,
            keepalive=self.keepalive.keepalive_s,
            clean_session=False,
            tls_context=self._tls,
            tls_insecure=False if self._tls is not None else None,
            timeout=up.connect_timeout_s,
            will=aiomqtt.Will(
                self.status_topic, self._status("offline", "connection lost"), qos=1, retain=True
            ),
            max_inflight_messages=up.publish_window,
        )

    async def run(self) -> None:
        """Connect, drain, reconnect; until cancelled."""
        up = self.config.uplink
        while True:
            opened = False
            try:
                client = self._client()
                client.pending_calls_threshold = up.publish_window + 10
                keepalive_s = self.keepalive.keepalive_s
                async with client:
                    opened = True
                    opened_at = time.monotonic()
                    self.connections += 1
                    self.backoff.reset()
                    self.keepalive.connected()
                    log.info("uplink connected to %s:%d (keepalive %d s)", up.host, up.port,
                             keepalive_s)  # fmt: skip
                    try:
                        await self._session(client)
                    finally:
                        self.connected.clear()
                        self._connection_ended(client, opened_at, keepalive_s)
                        if self.closing:
                            await self._say_goodbye(client)
            except Exception as exc:  # the uplink must never die
                if not opened and self.keepalive.connect_failed():
                    log.info("uplink: the network itself is down; keepalive back to %d s",
                             self.keepalive.keepalive_s)  # fmt: skip
                    self._save_keepalive()
                if self.closing:
                    # Cancelled, but closing the connection raised instead (aiomqtt's
                    # disconnect on a dying link): stop, or close() waits forever.
                    raise asyncio.CancelledError from exc
                leaf = _first_leaf(exc)
                delay = self.backoff.next_delay()
                if isinstance(leaf, aiomqtt.MqttError):
                    log.warning(
                        "uplink to %s:%d lost or refused (%s); retrying in %.1f s",
                        up.host,
                        up.port,
                        leaf,
                        delay,
                    )
                else:
                    log.error(
                        "uplink failed unexpectedly (%r); retrying in %.1f s",
                        leaf,
                        delay,
                        exc_info=leaf,
                    )
                await asyncio.sleep(delay)

    def _connection_ended(self, client: aiomqtt.Client, opened_at: float, keepalive_s: int) -> None:
        """Tell the keepalive rule how the connection ended; keep what it learned."""
        now = time.monotonic()
        idle_s = 0.0
        if not self.closing:  # our own goodbye says nothing about the carrier's NAT
            idle_s = _silent_for(client._client, now, keepalive_s)
        changed = self.keepalive.ended(
            connected_s=now - opened_at, idle_s=idle_s, keepalive_s=keepalive_s
        )
        if changed:
            died = self.keepalive.idle_death(idle_s=idle_s, keepalive_s=keepalive_s)
            log.warning(
                "uplink: %s; keepalive %d s -> %d s",
                f"the connection died after {idle_s:.0f} s without traffic (a carrier NAT "
                "that forgets idle flows sooner?)" if died
                else "the keepalive held long enough to try a longer one",
                keepalive_s,
                self.keepalive.keepalive_s,
            )
        self._save_keepalive()

    def _save_keepalive(self) -> None:
        path = self._keepalive_path
        if path is None:
            return
        try:
            write_atomic(path, self.keepalive.encode(), durable=False)
        except OSError as exc:
            log.warning("uplink: cannot keep the learned keepalive in %s: %s", path, exc)

    async def _say_goodbye(self, client: aiomqtt.Client) -> None:
        """On a clean shutdown, mark the device offline ourselves (no last will is sent)."""
        try:
            await asyncio.shield(
                client.publish(
                    self.status_topic, self._status("offline", "shutdown"), qos=1, retain=True,
                    timeout=2,
                )
            )
        except (aiomqtt.MqttError, asyncio.CancelledError):
            pass

    async def _session(self, client: aiomqtt.Client) -> None:
        self.usage.new_connection()
        self._client_now = client
        try:
            if self.cloud_ack and not self.session_present and len(self.awaiting):
                # A broker without our session restarted (or expired it): what it
                # acknowledged before may have died with it.
                released = self.awaiting.release_all()
                log.warning(
                    "uplink: the broker has no session for us; sending %d row(s) again that "
                    "the cloud had not acknowledged",
                    len(released),
                )
            await client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
            topics = [(self.command_topic, 1)]
            if self.cloud_ack:
                topics.append((self.ack_topic, ACK_QOS))
            # A session the broker kept keeps its subscriptions: subscribing again to
            # what this process subscribed would only cost the link a round trip.
            if not (self.session_present and self._subscribed == topics):
                self._subscribed = None
                granted: Sequence[int | ReasonCode] = await client.subscribe(topics)
                refused = False
                for (topic, _), code in zip(topics, granted, strict=False):
                    if (code.value if isinstance(code, ReasonCode) else int(code)) >= 0x80:
                        refused = True
                        log.error(
                            "uplink: the broker refused our subscription to %s: check its ACL%s",
                            topic,
                            " (no row can leave the outbox until the cloud's acknowledgements "
                            "arrive; see docs/security.md)" if topic == self.ack_topic else "",
                        )
                if not refused and len(granted) == len(topics):
                    self._subscribed = topics
            # Connected means: status published and subscribed.  Before that, a broker
            # that dies unnoticed holds the session in a publish until its timeout
            # (aiomqtt does not fail pending publishes on a disconnect); from here on
            # the message watch sees a drop at once.
            self.connected.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(client))
                tg.create_task(self._drain(client, tg))
                tg.create_task(self._count_bytes(client))
                if self.cloud_ack:
                    tg.create_task(self._resend_overdue())
        finally:
            self.sample_usage(client)
            self._client_now = None

    def sample_usage(self, client: aiomqtt.Client | None = None) -> None:
        """Add what crossed the socket since the last sample to today's count."""
        client = client or self._client_now
        if client is None:
            return
        try:
            sock = client._client.socket()  # paho's socket (aiomqtt keeps paho in _client)
        except AttributeError:
            sock = None
        self.usage.sample(read_counters(sock))  # type: ignore[arg-type]

    async def _count_bytes(self, client: aiomqtt.Client) -> None:
        saved = time.monotonic()
        while True:
            self.sample_usage(client)
            if time.monotonic() - saved >= SAVE_EVERY_S:
                saved = time.monotonic()
                await asyncio.to_thread(self.usage.save)
            await asyncio.sleep(5)

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Hand commands to the daemon; raises MqttError when the link drops (ends the session)."""
        prefix = self.command_topic.removesuffix("#")
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if message.topic.value == self.ack_topic:
                await self._cloud_acked(payload)
                continue
            name = message.topic.value.removeprefix(prefix)
            if self.on_command is None:
                log.warning("uplink: no command handler; ignoring %s", name)
                continue
            try:
                self.on_command(name, payload)
            except Exception:  # a bad command must not end the session
                log.exception("command %s failed", name)

    async def _cloud_acked(self, payload: bytes) -> None:
        """The cloud stored these rows: delete them from the outbox."""
        try:
            ack = decode_ack(payload)
        except EnvelopeError as exc:
            log.warning("uplink: ignoring an invalid acknowledgement (%d bytes): %s",
                        len(payload), exc)  # fmt: skip
            return
        now = time.monotonic()
        # Skipped by the drain until the delete is committed: once they stop
        # awaiting, a read of the outbox in between would send them again.
        deleting = set(ack.ids)
        self._deleting |= deleting
        self.awaiting.acked(ack.ids, now)
        for i in ack.ids:  # PUBACK may still be on its way: do not await these then
            self._recently_acked[i] = None
        while len(self._recently_acked) > 4 * self.config.uplink.unacked_max:
            del self._recently_acked[next(iter(self._recently_acked))]
        try:
            await self.outbox.ack(ack.ids)  # ids it no longer holds are ignored
        finally:
            self._deleting -= deleting
        self.delivered += len(ack.ids)
        self._summary.delivered += len(ack.ids)
        self._room.set()
        self._kick.set()

    async def _resend_overdue(self) -> None:
        """Release rows the cloud did not acknowledge in time (AckTracker decides which)."""
        while True:
            self._kick.clear()
            wait = self.awaiting.next_check(time.monotonic())
            if wait > 0:
                # Woken early when rows start awaiting or are acknowledged.
                await wait_set(self._kick, min(wait, 60.0))
                continue
            released = self.awaiting.overdue(time.monotonic())
            if released:
                silent = self.awaiting.cloud_silent(time.monotonic())
                log.log(
                    logging.INFO if silent else logging.WARNING,
                    "uplink: %d row(s) not acknowledged by the cloud in %.0f s; sending %s again",
                    len(released),
                    self.awaiting.timeout_s,
                    "one as a probe (the cloud is silent)" if silent else "them",
                )
                self._room.set()
                self.outbox.changed.set()

    async def _drain(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        window = self.config.uplink.publish_window
        slots = asyncio.Semaphore(window)
        in_flight: set[str] = set()
        while True:
            self.outbox.changed.clear()
            self._room.clear()
            limit = window
            if self.cloud_ack:
                room = self.awaiting.max_awaiting - len(self.awaiting) - len(in_flight)
                if room <= 0:
                    # As many rows as allowed await the cloud: wait for acknowledgements
                    # or releases rather than filling the broker's queue.
                    await self._room.wait()
                    continue
                limit = min(window, room)
                skip = in_flight | self.awaiting.ids() | self._deleting
            else:
                skip = in_flight
            batch = await self.outbox.pending(limit, skip=skip)
            if not batch:
                self._summary.maybe_log(len(self.awaiting), self.cloud_ack)
                waits = [asyncio.ensure_future(self.outbox.changed.wait())]
                if self.cloud_ack:
                    waits.append(asyncio.ensure_future(self._room.wait()))
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
                continue
            for item in batch:
                await slots.acquire()
                in_flight.add(item.id)
                tg.create_task(self._publish(client, item, slots, in_flight))
            self._summary.maybe_log(len(self.awaiting), self.cloud_ack)

    async def _publish(
        self, client: aiomqtt.Client, item: Pending, slots: asyncio.Semaphore, in_flight: set[str]
    ) -> None:
        try:
            await client.publish(
                channel_topic(self.topic_prefix, self.config.device.id, item.channel),
                item.payload,
                qos=1,
                timeout=self.config.uplink.publish_timeout_s,
            )
            _sent_traffic(client._client)
            if self.cloud_ack:
                if item.id in self._recently_acked:  # the cloud was faster than the PUBACK
                    del self._recently_acked[item.id]
                else:
                    self.awaiting.sent(item.id, time.monotonic())
                    if len(self.awaiting) == 1:
                        self._kick.set()  # the resend timer has something to time now
            else:
                await self.outbox.ack([item.id])
                self.delivered += 1
                self._summary.delivered += 1
            self.published += 1
            self._summary.published += 1
            log.debug("%s %s published: %s (PUBACK received)", item.channel, item.id, item.kind)
            if self.on_published is not None:
                self.on_published(item)
        finally:
            in_flight.discard(item.id)
            slots.release()
            self._room.set()


class _DrainSummary:
    """One log line per ``every_s`` while rows leave, instead of one line per row."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self.published = 0
        self.delivered = 0
        self._since = time.monotonic()

    def maybe_log(self, awaiting: int, cloud_ack: bool) -> None:
        now = time.monotonic()
        if now - self._since < self.every_s:
            return
        if self.published or self.delivered:
            log.info(
                "uplink: %d row(s) published, %d %s in the last %.0f s; %d awaiting the cloud",
                self.published,
                self.delivered,
                "acknowledged by the cloud" if cloud_ack else "removed on PUBACK",
                now - self._since,
                awaiting,
            )
        self.published = self.delivered = 0
        self._since = now


def _sent_traffic(mqttc: paho.Client) -> None:
    """A publish went out (and its PUBACK came back): the next ping is a keepalive away.

    MQTT's keepalive bounds the time between two packets of the client, so a
    publish resets it; paho 2.2 only moves its outbound clock when it pings,
    and so pings every keepalive however busy the link (48 pings a day at
    1800 s instead of 40 with a heartbeat every 3 h: 50 kB a month).
    """
    mutex = getattr(mqttc, "_msgtime_mutex", None)
    if mutex is None or not hasattr(mqttc, "_last_msg_out"):
        return
    with mutex:
        mqttc._last_msg_out = time.monotonic()  # paho's own clock (time.monotonic)


def _silent_for(mqttc: paho.Client, now: float, keepalive_s: int) -> float:
    """Seconds the connection carried nothing before it ended (paho's own clocks).

    paho sends a PINGREQ after ``keepalive_s`` without traffic, and counts it as
    traffic; a ping still unanswered at the end means the link had been silent
    for the keepalive before it, and since.
    """
    ping_t = float(getattr(mqttc, "_ping_t", 0.0) or 0.0)
    if ping_t:
        return max(0.0, now - ping_t) + keepalive_s
    last = float(getattr(mqttc, "_last_bytes_received", now))
    return max(0.0, now - last)


def _load_keepalive(path: Path | None) -> KeepaliveState | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    state = KeepaliveRule.decode(data)
    if state is None:
        log.warning("uplink: %s is not a keepalive state; starting afresh", path)
    return state


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
