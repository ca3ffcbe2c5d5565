"""The notifier's receive window, enforced on our side of the socket.

The notifier sends a message's PUBACK only after its commit, and asks the
broker for at most ``mqtt.receive_maximum`` unacknowledged messages at once
(MQTT 5 Receive Maximum; under 3.1.1 the broker's own ``max_inflight_messages``).
That should bound what waits in memory, but mosquitto 2.0.11 does not keep to
it for a resumed persistent session: measured here, each PUBACK for a message
queued while the notifier was away released another whole window, so a
100,000-event backlog arrived at once (100+ MB, never given back to the OS).

:class:`ReceiveGate` bounds it whatever the broker does: when ``limit``
received messages wait to be handled, it stops reading the socket (TCP flow
control then holds the rest in the broker), and reads again once half of
them are handled.  Nothing is dropped and nothing is acknowledged early.

It reaches into aiomqtt 2 (pinned ``<3``): the paho client it keeps in
``_client``, its message queue ``_queue`` and the future ``_disconnected``,
and replaces aiomqtt's socket reader with an equivalent one when it resumes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

log = logging.getLogger(__name__)


class ReceiveGate:
    """Pause reading ``client``'s socket while ``limit`` messages wait in its queue."""

    def __init__(self, client: aiomqtt.Client, limit: int) -> None:
        self._client = client
        self._paho: paho.Client = client._client
        self._limit = max(1, limit)
        self._resume_at = self._limit // 2
        self._paused_fd: int | None = None
        self._armed = False
        self.pauses = 0
        """How often reading was paused (for tests and the benchmark)."""
        delivered = self._paho.on_message  # aiomqtt's: puts the message in its queue

        def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
            assert delivered is not None
            delivered(client, userdata, message)
            if self._armed and self._paused_fd is None and self.waiting >= self._limit:
                self._pause()

        self._paho.on_message = on_message

    @property
    def waiting(self) -> int:
        """Messages received and not yet taken by the notifier."""
        return self._client._queue.qsize()

    @property
    def paused(self) -> bool:
        return self._paused_fd is not None

    def arm(self) -> None:
        """Start gating, once subscribed: until the SUBACK is read, reading must go on.

        (Before it, the broker sends at most its window, without our PUBACKs.)
        """
        self._armed = True
        if self._paused_fd is None and self.waiting >= self._limit:
            self._pause()

    def taken(self) -> None:
        """The notifier took a message from the queue: read again if few are left."""
        if self._paused_fd is not None and self.waiting <= self._resume_at:
            self._resume()

    def _pause(self) -> None:
        sock = self._paho.socket()
        if sock is None:
            return
        fd = sock.fileno()
        if fd < 0:
            return
        asyncio.get_running_loop().remove_reader(fd)
        self._paused_fd = fd
        self.pauses += 1
        log.debug("receive window full (%d messages waiting): not reading for now", self.waiting)

    def _resume(self) -> None:
        fd, self._paused_fd = self._paused_fd, None
        sock = self._paho.socket()
        if sock is None or fd is None or sock.fileno() != fd:
            return  # the connection is gone; the next one starts unpaused
        asyncio.get_running_loop().add_reader(fd, self._read)

    def _read(self) -> None:
        """What aiomqtt's own reader does: read, and report a broken connection."""
        try:
            while True:
                self._paho.loop_read()
                if self._paused_fd is not None:
                    return  # paused while reading: the rest waits
                sock = self._paho.socket()
                pending = getattr(sock, "pending", None)
                if pending is not None and pending() > 0:  # TLS: decoded bytes left
                    continue
                return
        except Exception as exc:  # noqa: BLE001 - handed to the client, not swallowed
            disconnected: asyncio.Future[None] = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)
