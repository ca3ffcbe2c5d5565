"""The recorder: makes events (id, sequence, timestamps) and commits them to the outbox.

An event "is recorded" exactly when :meth:`Recorder.record` returns: the
outbox transaction holding it is durable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Coroutine
from typing import Any, Protocol

import msgspec

from edge.boot import boot_id as kernel_boot_id
from edge.config import Config
from edge.event import Event, EventData, Location, Severity, new_event_id
from edge.link.outbox import Outbox

log = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised


def _load_libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_libc = _load_libc()


def kernel_clock_synced() -> bool:
    """Whether the kernel considers the wall clock NTP-synchronised.

    The same test as systemd's ``timedatectl`` (``adjtimex() != TIME_ERROR``).
    A Pi has no real-time clock: until NTP has run, the wall clock can be years
    off, and events made then say so.
    """
    if _libc is None:
        return False
    buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
    try:
        state = _libc.adjtimex(buf)
    except AttributeError:
        return False
    return bool(state >= 0 and state != _TIME_ERROR)


def boot_id() -> str:
    """The kernel's id of this boot (changes at every power-on), or a random id for the life
    of this process where the kernel offers none."""
    return kernel_boot_id() or str(uuid.uuid4())


class Recorder:
    def __init__(self, config: Config, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.boot = boot_id()
        self.location = Location(lat=config.device.latitude, lon=config.device.longitude)
        self._seq_lock = threading.Lock()
        self._seq = outbox.last_seq
        self._synced_checked_at = float("-inf")
        self._synced = False

    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def clock_synced(self) -> bool:
        now = time.monotonic()
        if now - self._synced_checked_at > 10:
            self._synced = kernel_clock_synced()
            self._synced_checked_at = now
        return self._synced

    def make(
        self,
        data: EventData,
        *,
        severity: Severity | None = None,
        at: float | None = None,
        event_id: str | None = None,
    ) -> Event:
        """A new event of ``data``'s kind; ``severity`` where the kind has none of its own
        (or to override it); ``at`` is the wall-clock time (``time.time()``) it happened;
        ``event_id`` keeps an id given elsewhere (the spool's), for de-duplication."""
        level = severity or data.severity
        if level is None:
            raise ValueError(f"{data.kind}: a severity is needed (the kind has none of its own)")
        ts = dt.datetime.fromtimestamp(time.time() if at is None else at, dt.UTC)
        return Event(
            id=event_id or new_event_id(),
            device=self.config.device.id,
            site=self.config.device.site,
            kind=data.kind,
            severity=level,
            ts=ts,
            clock_synced=self.clock_synced(),
            seq=self._next_seq(),
            boot=self.boot,
            location=self.location,
            data=data.to_data(),
        )

    async def record(
        self,
        data: EventData,
        *,
        severity: Severity | None = None,
        at: float | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Make an event and return it once it is durable in the outbox.

        When the disk refuses it (full, read-only, failing) the event is kept
        in the outbox's bounded memory buffer and still sent; it is written to
        disk once the disk works again.
        """
        event = self.make(data, severity=severity, at=at, event_id=event_id)
        if await self.outbox.put(event):
            log.info(
                "event %s stored: %s (%s) seq=%d", event.id, event.kind, event.severity, event.seq
            )
        else:
            log.warning(
                "event %s kept in memory only (storage failing): %s (%s) seq=%d",
                event.id,
                event.kind,
                event.severity,
                event.seq,
            )
        return event


class Record(Protocol):
    """``record(AnimalDetected(...), severity=None, at=None)`` as the watches call it:
    the event is durable when it returns."""

    def __call__(
        self, data: EventData, *, severity: Severity | None = None, at: float | None = None
    ) -> Coroutine[Any, Any, object]: ...


class PlacedRecord:
    """A :class:`Record` whose events carry the place's own name (``device.description``)
    for the e-mail.  Made before the outbox is open (the detectors are armed first);
    :attr:`recorder` is set once it is."""

    def __init__(self, description: str) -> None:
        self.place = " ".join(description.split())[:80]
        self.recorder: Recorder | None = None

    async def __call__(
        self, data: EventData, *, severity: Severity | None = None, at: float | None = None
    ) -> Event:
        assert self.recorder is not None, "recorded before the outbox was opened"
        if self.place and data.place is msgspec.UNSET:
            data = msgspec.structs.replace(data, place=self.place)
        return await self.recorder.record(data, severity=severity, at=at)
