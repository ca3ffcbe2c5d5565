"""``GET /api/live``: new events and changed device states, pushed as Server-Sent Events.

One background task (:meth:`LiveHub.run`) asks the read model every second for
what the notifier stored since the last time (``ConsoleState.catch_up`` and
``changed_states``, on the console's database thread) and fans it out:

* each message is encoded once per language (the event's ``summary`` is in the
  reader's language) and the same bytes go to every connection that may see it;
* each connection sees only its user's sites (an operator: all);
* each connection has a bounded queue: a browser that cannot keep up is dropped
  (its queue is emptied and the stream ended; ``EventSource`` reconnects and the
  page reloads the map) instead of being buffered without end;
* every ``ping_every_s`` a comment line (``: ping``) goes to every connection, so
  proxies keep it open and a dead one is noticed; there is no timer per connection.

A connection costs a coroutine waiting on its queue and the queue itself, so
a thousand open pages cost little; the database is asked once a second whatever
the number of readers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import msgspec
from aiohttp import web

from cloud.console.i18n import kind_name
from cloud.console.model import DeviceState, EventRow

log = logging.getLogger(__name__)

PING: Final = b": ping\n\n"
HELLO: Final = b"retry: 5000\n: connected\n\n"
QUEUE_SIZE: Final = 256
"""Messages one connection may have waiting before it is dropped."""

Poll = Callable[[], Awaitable[tuple[list[EventRow], list[DeviceState]]]]
Revalidate = Callable[[frozenset[str]], Awaitable[frozenset[str]]]
"""Given the session hashes of the open streams, the ones still valid (not expired, not
ended by a password change or the user's removal)."""
PER_SESSION: Final = 8
"""Open streams one session may hold (a page, a few tabs); more are refused."""


def sse(name: str, data: bytes) -> bytes:
    """One Server-Sent Event (the JSON has no newlines: one ``data:`` line)."""
    return b"event: " + name.encode("ascii") + b"\ndata: " + data + b"\n\n"


def labelled(row: EventRow, language: str) -> EventRow:
    """The event with its one-line summary in ``language``."""
    return msgspec.structs.replace(row, summary=row.summary or kind_name(language, row.kind))


@dataclass(eq=False, slots=True)
class Subscriber:
    """One open ``/api/live`` connection."""

    sites: frozenset[str] | None
    """What its user may see; ``None``: every site."""
    language: str
    session: str
    """The session's token hash (logout ends its streams)."""
    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE)
    )
    dropped: bool = False

    def may_see(self, site: str) -> bool:
        return self.sites is None or site in self.sites


class LiveHub:
    """The one poller and its subscribers."""

    def __init__(
        self,
        poll: Poll,
        *,
        revalidate: Revalidate | None = None,
        interval_s: float = 1.0,
        ping_every_s: float = 15.0,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._poll = poll
        self._revalidate = revalidate
        self.interval_s = interval_s
        self.ping_every_s = ping_every_s
        self.queue_size = queue_size
        self._subscribers: set[Subscriber] = set()
        self.dropped = 0
        """Connections dropped for being too slow, since start."""
        self.rounds = 0

    # --- subscribers

    def full(self, session: str) -> bool:
        """Whether ``session`` already holds :data:`PER_SESSION` open streams."""
        return sum(1 for s in self._subscribers if s.session == session) >= PER_SESSION

    def subscribe(self, *, sites: frozenset[str] | None, language: str, session: str) -> Subscriber:
        sub = Subscriber(
            sites=sites,
            language=language,
            session=session,
            queue=asyncio.Queue(maxsize=self.queue_size),
        )
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    @property
    def connections(self) -> int:
        return len(self._subscribers)

    def end_session(self, session: str) -> None:
        """End the streams of a session that logged out."""
        for sub in [s for s in self._subscribers if s.session == session]:
            self._end(sub)

    def close_all(self) -> None:
        for sub in list(self._subscribers):
            self._end(sub)

    def _end(self, sub: Subscriber) -> None:
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)
        self._subscribers.discard(sub)

    def _send(self, sub: Subscriber, message: bytes) -> None:
        try:
            sub.queue.put_nowait(message)
        except asyncio.QueueFull:
            sub.dropped = True
            self.dropped += 1
            log.info("live: dropped a connection that fell %d messages behind", self.queue_size)
            self._end(sub)

    # --- fan-out

    def publish(self, events: list[EventRow], states: list[DeviceState]) -> None:
        """Send each state and event to every subscriber that may see its site."""
        if not self._subscribers or not (events or states):
            return
        encoded_states = [(s.site, sse("state", msgspec.json.encode(s))) for s in states]
        by_language: dict[str, list[tuple[str, bytes]]] = {}
        for sub in list(self._subscribers):
            encoded_events = by_language.get(sub.language)
            if encoded_events is None:
                encoded_events = [
                    (e.site, sse("event", msgspec.json.encode(labelled(e, sub.language))))
                    for e in events
                ]
                by_language[sub.language] = encoded_events
            for site, message in (*encoded_states, *encoded_events):
                if sub.may_see(site) and not sub.dropped:
                    self._send(sub, message)

    async def _drop_ended_sessions(self) -> None:
        """End the streams of sessions that expired, or were ended by a password change or
        the user's removal (logout ends its own at once)."""
        if self._revalidate is None or not self._subscribers:
            return
        sessions = frozenset(s.session for s in self._subscribers)
        try:
            valid = await self._revalidate(sessions)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database away: keep the streams, look again next time
            log.exception("live: checking the open streams' sessions failed")
            return
        for session in sessions - valid:
            self.end_session(session)

    def ping(self) -> None:
        for sub in list(self._subscribers):
            self._send(sub, PING)

    async def run(self) -> None:
        """Poll, publish and ping until cancelled."""
        last_ping = time.monotonic()
        while True:
            started = time.monotonic()
            try:
                events, states = await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed round (database away) must not end the stream
                log.exception("live: reading new events failed; trying again")
                events, states = [], []
            self.rounds += 1
            self.publish(events, states)
            if started - last_ping >= self.ping_every_s:
                last_ping = started
                await self._drop_ended_sessions()
                self.ping()
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))


async def stream(request: web.Request, hub: LiveHub, sub: Subscriber) -> web.StreamResponse:
    """Write ``sub``'s messages to the response until it ends or the browser goes."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await response.prepare(request)
        await response.write(HELLO)
        while True:
            message = await sub.queue.get()
            if message is None:
                break
            await response.write(message)
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        hub.unsubscribe(sub)
    return response
