"""``GET /api/live``: new events and changed device states, pushed as Server-Sent Events.

One background task (:meth:`LiveHub.run`) asks the read model every second for
what the notifier stored since the last time (``ConsoleState.catch_up`` and
``changed_states``, on the console's database thread) and fans it out:

* each message is encoded once per language (the event's ``summary`` is in the
  reader's language), and a round's messages are gathered once per kind of reader
  (language and sites): every stream of that kind is handed the same tuple of bytes;
* each connection sees only its user's sites (an operator: all);
* a stream falls behind by **rounds**, never by a message count that one device's
  burst could fill: it takes each round whole, or, when the round would bring it
  more than :data:`QUEUE_SIZE` messages (alone, or behind what still waits), one
  ``event: reload`` in place of everything waiting (the page fetches the map and the
  event list again: nothing is lost, and the browser does less);
* a stream that has taken nothing of what waited for :data:`STALL_S` is dropped (its
  connection closed; ``EventSource`` reconnects and the page reloads);
* every ``ping_every_s`` a comment line (``: ping``) goes to every idle connection, so
  proxies keep it open and a dead one is noticed; there is no timer per connection;
* a session holds at most :data:`PER_SESSION` streams and a user :data:`PER_USER`
  (however many sessions they open).

A connection costs a coroutine waiting on its queue and the queue itself (references
to bytes every stream shares), so a thousand open pages cost little; the database is
asked once a second whatever the number of readers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
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
RELOAD: Final = b"event: reload\ndata: {}\n\n"
"""Fetch the map and the event list again: what this stream would have been sent did
not fit (a burst, or a reader that fell behind)."""
QUEUE_SIZE: Final = 1024
"""Messages one stream may have waiting (each a reference to bytes all streams share)."""
STALL_S: Final = 60.0
"""A stream that took nothing of what waited for this long is dropped."""
PER_SESSION: Final = 8
"""Open streams one session may hold (a page, a few tabs); more are refused."""
PER_USER: Final = 16
"""Open streams one user may hold, over all their sessions (two devices' tabs)."""

Poll = Callable[[], Awaitable[tuple[list[EventRow], list[DeviceState]]]]
Revalidate = Callable[[frozenset[str]], Awaitable[frozenset[str]]]
"""Given the session hashes of the open streams, the ones still valid (not expired, not
ended by a password change or the user's removal)."""
Entry = tuple[bytes, ...]
"""What a stream is handed at once: a round's messages (written in one go), a reload or
a ping."""
_RELOAD_ENTRY: Final[Entry] = (RELOAD,)
_PING_ENTRY: Final[Entry] = (PING,)


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
    user: str = ""
    queue: asyncio.Queue[Entry | None] = field(default_factory=asyncio.Queue)
    """Unbounded as a queue: the hub keeps :attr:`waiting` within its ``queue_size``."""
    waiting: int = 0
    """Messages in :attr:`queue`."""
    waiting_since: float | None = None
    """Since when something has waited without the writer taking anything (hub clock)."""
    reloads: int = 0
    dropped: bool = False
    abort: Callable[[], None] | None = None
    """Closes the connection (a writer stuck on a reader that stopped reading)."""

    def may_see(self, site: str) -> bool:
        return self.sites is None or site in self.sites

    def took(self, entry: Entry, now: float) -> None:
        """The writer took ``entry`` off the queue."""
        self.waiting -= len(entry)
        self.waiting_since = now if self.waiting > 0 else None


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
        stall_s: float = STALL_S,
        per_session: int = PER_SESSION,
        per_user: int = PER_USER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._poll = poll
        self._revalidate = revalidate
        self.interval_s = interval_s
        self.ping_every_s = ping_every_s
        self.queue_size = queue_size
        self.stall_s = stall_s
        self.per_session = per_session
        self.per_user = per_user
        self.clock = clock
        self._subscribers: set[Subscriber] = set()
        self._by_session: Counter[str] = Counter()
        self._by_user: Counter[str] = Counter()
        self.dropped = 0
        """Connections dropped for taking nothing for ``stall_s``, since start."""
        self.reloads = 0
        """Reloads sent in place of rounds that did not fit, since start."""
        self.rounds = 0

    # --- subscribers

    def refusal(self, session: str, user: str) -> str | None:
        """Why one more stream of ``session`` (of ``user``) is refused; None: it is not."""
        if self._by_session[session] >= self.per_session:
            return f"too many live streams for this session (at most {self.per_session})"
        if self._by_user[user] >= self.per_user:
            return f"too many live streams for this user (at most {self.per_user})"
        return None

    def subscribe(
        self, *, sites: frozenset[str] | None, language: str, session: str, user: str = ""
    ) -> Subscriber:
        sub = Subscriber(sites=sites, language=language, session=session, user=user)
        self._subscribers.add(sub)
        self._by_session[session] += 1
        self._by_user[user] += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            for counter, key in ((self._by_session, sub.session), (self._by_user, sub.user)):
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]

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

    @staticmethod
    def _clear(sub: Subscriber) -> None:
        """Empty ``sub``'s queue (what waited is superseded); ``waiting_since`` stays."""
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.waiting = 0

    def _end(self, sub: Subscriber) -> None:
        self._clear(sub)
        sub.queue.put_nowait(None)
        self.unsubscribe(sub)

    def _offer(self, sub: Subscriber, entry: Entry, now: float) -> None:
        """Hand ``sub`` a whole round (or a reload in place of all it has waiting)."""
        if entry is _RELOAD_ENTRY or sub.waiting + len(entry) > self.queue_size:
            # the page fetches everything again: nothing that waits is needed any more
            self._clear(sub)
            entry = _RELOAD_ENTRY
            sub.reloads += 1
            self.reloads += 1
        sub.queue.put_nowait(entry)
        sub.waiting += len(entry)
        if sub.waiting_since is None:
            sub.waiting_since = now

    def _drop_stalled(self, now: float) -> None:
        for sub in [s for s in self._subscribers if s.waiting_since is not None]:
            assert sub.waiting_since is not None
            if now - sub.waiting_since > self.stall_s:
                sub.dropped = True
                self.dropped += 1
                log.info(
                    "live: dropped a stream that took nothing for %.0f s", now - sub.waiting_since
                )
                self._end(sub)
                if sub.abort is not None:
                    sub.abort()

    # --- fan-out

    def publish(self, events: list[EventRow], states: list[DeviceState]) -> None:
        """Hand each stream the round's states and events it may see, as one entry."""
        if not self._subscribers:
            return
        now = self.clock()
        self._drop_stalled(now)
        if not (events or states):
            return
        encoded_states = [(s.site, sse("state", msgspec.json.encode(s))) for s in states]
        by_language: dict[str, list[tuple[str, bytes]]] = {}
        rounds: dict[tuple[str, frozenset[str] | None], Entry] = {}
        for sub in list(self._subscribers):
            key = (sub.language, sub.sites)
            entry = rounds.get(key)
            if entry is None:
                encoded_events = by_language.get(sub.language)
                if encoded_events is None:
                    encoded_events = [
                        (e.site, sse("event", msgspec.json.encode(labelled(e, sub.language))))
                        for e in events
                    ]
                    by_language[sub.language] = encoded_events
                entry = tuple(
                    message
                    for site, message in (*encoded_states, *encoded_events)
                    if sub.may_see(site)
                )
                if len(entry) > self.queue_size:
                    entry = _RELOAD_ENTRY  # more than a page wants one by one
                rounds[key] = entry
            if entry:
                self._offer(sub, entry, now)

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
        """A ping to every stream with nothing waiting (one that has, is busy or stalled)."""
        now = self.clock()
        self._drop_stalled(now)
        for sub in list(self._subscribers):
            if sub.waiting == 0:
                self._offer(sub, _PING_ENTRY, now)

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
    transport = request.transport
    if transport is not None:
        sub.abort = transport.abort
    try:
        await response.prepare(request)
        await response.write(HELLO)
        while True:
            entry = await sub.queue.get()
            if entry is None:
                break
            sub.took(entry, hub.clock())
            await response.write(entry[0] if len(entry) == 1 else b"".join(entry))
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        hub.unsubscribe(sub)
    return response
