"""The cloud's end-to-end acknowledgement: ids the store has committed, back to their devices.

A device keeps each event and telemetry batch in its outbox until the id
arrives on ``PREFIX/DEVICE/ack`` (:class:`edge.event.CloudAck`); a broker's
PUBACK only means the broker has it.  The notifier calls :meth:`DeviceAcks.add`
*after* the commit (or for a duplicate, or for a message refused for good);
ids of one device are collected for ``mqtt.ack_delay_s`` or until
:data:`~edge.event.MAX_ACK_IDS`, then published in one QoS 0 message, not
retained (:data:`ACK_QOS`).

QoS 0 because every byte on the device's cellular link counts: the device
subscribes to its ack topic at QoS 0 too, so it sends no PUBACK per
acknowledgement (184 B a message over mutual TLS).  An acknowledgement lost
on the way (a dropped link, a broker that does not queue QoS 0 messages for a
disconnected device) only means the device sends that row again after its
``ack_timeout_s``; the store recognises it as a duplicate and it is
acknowledged again.

Ids not yet published when the MQTT connection drops stay here and go out
after the reconnect.  They live in memory only: if the notifier process
dies, the device resends those messages after its own timeout, the store
recognises them as duplicates, and they are acknowledged again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Final

import aiomqtt

from edge.event import MAX_ACK_IDS, ack_topic, encode_ack

log = logging.getLogger(__name__)

#: QoS of the acknowledgements (see the module docstring).
ACK_QOS: Final = 0
#: Ack messages published at once (below paho's default of 20 in flight).
CONCURRENCY: Final = 16
#: Most ids kept waiting (about 10 MB): beyond it new ones are dropped (and
#: counted); their devices send those messages again and they are acked then.
MAX_WAITING: Final = 100_000


class DeviceAcks:
    """Ids waiting to be acknowledged, per device; :meth:`publish_forever` sends them."""

    def __init__(
        self,
        prefix: str,
        *,
        delay_s: float,
        max_ids: int = MAX_ACK_IDS,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self._prefix = prefix
        self._delay_s = delay_s
        self._max_ids = max_ids
        self._pending: dict[str, list[str]] = {}
        self._first: dict[str, float] = {}
        """When the oldest waiting id of each device came (monotonic seconds)."""
        self._wake = asyncio.Event()
        self._failed: aiomqtt.MqttError | None = None
        self._max_waiting = max_waiting
        self._waiting = 0
        self.dropped = 0
        """Ids not kept because ``max_waiting`` were waiting already."""
        self.acked = 0
        """Ids published (written to the broker's connection, QoS 0) since start."""
        self.messages = 0
        """Ack messages published since start."""

    @property
    def waiting(self) -> int:
        """Ids not yet published."""
        return self._waiting

    def add(self, device: str, ids: Iterable[str]) -> None:
        """Acknowledge ``ids`` to ``device`` soon.  Call only once they are committed."""
        fresh = [i for i in ids if i]
        if not fresh or not device:
            return
        if self._waiting + len(fresh) > self._max_waiting:
            if self.dropped % 10_000 == 0:
                log.warning("%d acks waiting to be published: dropping new ones (%d so far); "
                            "their devices will send them again", self._waiting,
                            self.dropped + len(fresh))  # fmt: skip
            self.dropped += len(fresh)
            return
        self._waiting += len(fresh)
        pending = self._pending.get(device)
        if pending is None:
            pending = self._pending[device] = []
            self._first[device] = time.monotonic()
            self._wake.set()  # a new deadline for the publisher
        pending.extend(fresh)
        if len(pending) >= self._max_ids or self._delay_s == 0:
            self._wake.set()

    async def publish_forever(self, client: aiomqtt.Client) -> None:
        """Publish due acks on ``client`` until cancelled, or until a publish fails
        (raises its :class:`aiomqtt.MqttError`: reconnect, the ids are kept)."""
        slots = asyncio.Semaphore(CONCURRENCY)
        tasks: set[asyncio.Task[None]] = set()
        self._failed = None
        try:
            while True:
                self._wake.clear()
                if self._failed is not None:
                    raise self._failed
                due, next_at = self._take_due(time.monotonic())
                for device, ids in due:
                    await slots.acquire()
                    task = asyncio.create_task(self._publish(client, device, ids, slots))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if due:
                    continue  # more may have become due meanwhile
                timeout = None if next_at is None else max(0.0, next_at - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    # Not wait_for: on Python 3.11 it can swallow a cancellation
                    # that arrives as the event is set, and the stop waits forever.
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _take_due(self, now: float) -> tuple[list[tuple[str, list[str]]], float | None]:
        """The chunks to publish now, and when the next device falls due."""
        due: list[tuple[str, list[str]]] = []
        next_at: float | None = None
        for device in list(self._pending):
            ids = self._pending[device]
            at = self._first[device] + self._delay_s
            if len(ids) < self._max_ids and at > now:
                next_at = at if next_at is None else min(next_at, at)
                continue
            chunk, rest = ids[: self._max_ids], ids[self._max_ids :]
            self._waiting -= len(chunk)
            if rest:
                self._pending[device] = rest  # due again at once: same first time
            else:
                del self._pending[device], self._first[device]
            due.append((device, chunk))
        return due, next_at

    async def _publish(
        self, client: aiomqtt.Client, device: str, ids: list[str], slots: asyncio.Semaphore
    ) -> None:
        done = False
        try:
            await client.publish(ack_topic(self._prefix, device), encode_ack(ids), qos=ACK_QOS)
            done = True
            self.acked += len(ids)
            self.messages += 1
            log.debug("acknowledged %d ids to device %s", len(ids), device)
        except aiomqtt.MqttError as exc:
            log.warning("could not acknowledge %d ids to device %s (%s): kept, sent again "
                        "after reconnecting", len(ids), device, exc)  # fmt: skip
            self._failed = exc
        finally:
            slots.release()
            if not done:
                self._requeue(device, ids)

    def _requeue(self, device: str, ids: list[str]) -> None:
        self._waiting += len(ids)
        self._pending[device] = ids + self._pending.get(device, [])
        self._first[device] = min(self._first.get(device, time.monotonic()), time.monotonic())
        self._wake.set()
