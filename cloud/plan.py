"""What to mail to whom for one event: recipients, rendering, bursts and traps.

The receiver hands each new event to :meth:`Planner.plan_event`, which returns
the finished mails (rendered on a thread of their own, see
:meth:`Planner.render_each`) and what the event does to a burst
(:class:`~cloud.store.CoalescePlan`, ``[[coalesce]]``) and to a trap
(:class:`~cloud.store.TrapPlan`).  The store commits them with the event.

What the cloud reads from an event's ``data`` is read here and nowhere else in
the notifier (the store keeps a burst's statistics from it too): the sensor,
the heartbeat interval, when a trap closed, the water level for the chart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeGuard

import msgspec

from cloud.chart import WINDOW_S, LevelChart, level_chart, stage_lines
from cloud.config import NotifierConfig, Recipient, SiteConfig
from cloud.mime import Mail, ready_for_data
from cloud.render import CHART_KINDS, JST, MESSAGE_ID_DOMAIN, as_bytes, render_mail
from cloud.render_workers import RenderWorkers, WorkerLost
from cloud.staticmap import StaticMaps
from cloud.stats import NotifierStats
from cloud.store import CoalescePlan, OutgoingMail, Store, TrapPlan
from edge.event import (
    CotData,
    Event,
    HeartbeatData,
    SensorData,
    TrapData,
    WaterLevelAlert,
    WaterRiseAlert,
    event_data,
)

log = logging.getLogger("cloud.notifier")  # the name its log lines had before the split

#: One rendering for a worker process: what renders, for whom, at which place, what.
_Job = tuple[Callable[[Recipient, int, bool], Mail], Recipient, int, str]
#: A rendered mail: its bytes, and whether SMTP's DATA carries them as they are
#: (:func:`cloud.mime.ready_for_data`, checked where it renders: off the notifier's GIL).
_Rendered = tuple[bytes, bool]


class Planner:
    """Plans and renders the mails of events and notices (one renderer thread)."""

    def __init__(
        self, config: NotifierConfig, stats: NotifierStats, maps: StaticMaps | None
    ) -> None:
        self.config = config
        self.stats = stats
        self.maps = maps
        """The map picture at the top of a mail (``[maps]``); ``None``: map links only."""
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifier-render")
        self._processes: RenderWorkers | None = None
        """``delivery.render_processes`` worker processes for events' mails (else None)."""
        self._jobs: list[tuple[_Job, asyncio.Future[_Rendered | None]]] = []
        """Renderings asked for in this turn of the loop: one hand-over to a worker."""
        self._handing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """A fresh renderer thread (the notifier's :meth:`~cloud.notifier.Notifier.run`)."""
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifier-render")

    async def start_workers(self) -> None:
        """Start ``delivery.render_processes`` worker processes (none with ``[maps]``:
        the map picture's cache lives in the notifier, so events render on the thread)."""
        count = self.config.delivery.render_processes
        if count and self.maps is None and self._processes is None:
            workers = RenderWorkers(count)
            try:
                await workers.start()
            except OSError as exc:
                log.error("cannot start render workers (%s): rendering on a thread", exc)
                await workers.close()
                return
            self._processes = workers

    async def close_workers(self) -> None:
        workers, self._processes = self._processes, None
        if workers is not None:
            await workers.close()

    def close(self) -> None:
        self._renderer.shutdown(wait=False)

    def mailed(self, event: Event) -> bool:
        """Whether ``event`` is of a kind its site mails (so it is rendered)."""
        site = self.config.sites.get(event.site)
        return site is not None and self.config.mails_kind(site, event.kind)

    async def plan_event(
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
        # A partial of a module-level function (not a closure): a worker process can take it.
        render = functools.partial(_render_event, PackedEvent(event), site, cfg.smtp.sender, now,
                                   chart, self.maps)  # fmt: skip
        mails = await self.render_each(recipients, render, event.id, portable=True)
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

    async def render_each(
        self,
        recipients: Sequence[Recipient],
        render: Callable[[Recipient, int, bool], Mail],
        what: str,
        *,
        portable: bool = False,
    ) -> list[OutgoingMail]:
        """One mail per recipient; a template bug costs the data fields, not the mail.

        Rendering (~0.25 ms of CPU a mail, cloud/mime.py) runs on a thread of its
        own: meanwhile the loop answers at once when the SMTP server takes a mail,
        so that it is marked sent without delay (until then, a kill would mail it
        twice after the restart).  ``portable`` renderings (``render`` can be
        pickled) run in the worker processes where there are some
        (``delivery.render_processes``): off this process's GIL, all those asked
        for in one turn of the loop in one hand-over.
        """
        loop = asyncio.get_running_loop()
        mails = []
        # One full rendering per language: (bytes, ready, for whom, at which place).
        model: dict[str, tuple[bytes, bool, Recipient, int]] = {}
        for index, recipient in enumerate(recipients, start=1):
            rendered: _Rendered | None = None
            if recipient.language in model:
                first, ready, whom, place = model[recipient.language]
                message = _readdress(first, whom, place, recipient, index)
                if message is not None:
                    # Only its To line (the address) and digits of its ids changed.
                    rendered = (message, ready and _one_line(recipient.address))
            if rendered is None:
                if portable and self._processes is not None:
                    rendered = await self._in_worker((render, recipient, index, what))
                else:
                    rendered = await loop.run_in_executor(
                        self._renderer, _render_one, render, recipient, index, what
                    )
                self.stats.rendered += 1
                if rendered is not None:
                    model.setdefault(recipient.language, (*rendered, recipient, index))
            if rendered is not None:
                message, ready = rendered
                mails.append(OutgoingMail(recipient.address, message, recipient.language, ready))
        return mails

    def _in_worker(self, job: _Job) -> asyncio.Future[_Rendered | None]:
        """``_render_one(*job)`` in a worker process, with the others of this turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Rendered | None] = loop.create_future()
        self._jobs.append((job, future))
        if len(self._jobs) == 1:
            loop.call_soon(self._hand_over)
        return future

    def _hand_over(self) -> None:
        jobs, self._jobs = self._jobs, []
        task = asyncio.get_running_loop().create_task(self._render_many(jobs))
        self._handing.add(task)
        task.add_done_callback(self._handing.discard)

    async def _render_many(
        self, jobs: list[tuple[_Job, asyncio.Future[_Rendered | None]]]
    ) -> None:
        workers = self._processes
        try:
            if workers is None:  # closed meanwhile, or lost
                raise WorkerLost("no render worker")
            messages = await workers.run(_render_many, [job for job, _ in jobs])
        except Exception as exc:  # noqa: BLE001 - worker died / unpicklable job
            if workers is not None and not workers.alive and self._processes is workers:
                log.error("render workers lost (%s): rendering on a thread from now on", exc)
                self._processes = None
                await workers.close()
            elif workers is not None:
                log.warning("rendering in a worker failed (%s): on the thread instead", exc)
            loop = asyncio.get_running_loop()
            for job, future in jobs:
                if not future.done():
                    rendered = loop.run_in_executor(self._renderer, _render_one, *job)
                    rendered.add_done_callback(functools.partial(_settle, future))
            return
        for (_, future), message in zip(jobs, messages, strict=True):
            if not future.done():
                future.set_result(message)

    async def _chart(self, store: Store, event: Event, now: float) -> LevelChart | None:
        """The last 24 h of ``<data.sensor>.level_cm`` up to the alert (with its own reading)."""
        typed = event_data(event)
        sensor: object
        level: object
        threshold: object
        if isinstance(typed, WaterLevelAlert):
            sensor, level, threshold = typed.sensor, typed.level_cm, typed.threshold_cm
        elif isinstance(typed, WaterRiseAlert):
            sensor, level, threshold = typed.sensor, typed.level_cm, None
        else:  # data that does not fit its kind (an older device): what can be read of it
            sensor = event.data.get("sensor")
            level, threshold = event.data.get("level_cm"), event.data.get("threshold_cm")
        if not isinstance(sensor, str) or not sensor:
            return None
        series = f"{sensor}.level_cm"
        end = _event_time(event, now)
        try:
            points = await store.series(event.device, series, end - WINDOW_S, end)
            if finite(level) and not any(abs(t - end) < 1.0 for t, _ in points):
                points.append((end, float(level)))
            return await asyncio.to_thread(
                level_chart, series, points, end=end, mark=end, tz=JST,
                stages=stage_lines(event.data),
                threshold=float(threshold) if finite(threshold) else None,
            )  # fmt: skip
        except Exception:
            log.exception("cannot draw the chart for event %s; mailing it without", event.id)
            return None


class PackedEvent:
    """An event as a render job carries it to a worker process: pickled as msgpack
    (~1 us to write, ~3 to read) rather than as a struct with datetimes (~17 us to
    write, as much to read: the notifier's own CPU, for every mailed event).

    Only where the round trip gives back the same event: a timestamp in UTC (as
    devices send it) and data msgpack can carry; any other event is pickled as is.
    """

    __slots__ = ("event",)

    def __init__(self, event: Event) -> None:
        self.event = event

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self.event.ts.tzinfo is dt.UTC:
            try:
                return _unpacked, (_PACK.encode(self.event),)
            except (msgspec.EncodeError, TypeError, ValueError, OverflowError):
                pass  # an integer past 64 bits, a lone surrogate: pickled as it is
        return PackedEvent, (self.event,)


_PACK: Final = msgspec.msgpack.Encoder()
_UNPACK: Final = msgspec.msgpack.Decoder(Event)


def _unpacked(blob: bytes) -> PackedEvent:
    return PackedEvent(_UNPACK.decode(blob))


def _render_event(
    event: PackedEvent,
    site: SiteConfig,
    sender: str,
    received: float,
    chart: LevelChart | None,
    maps: StaticMaps | None,
    recipient: Recipient,
    index: int,
    with_data: bool,
) -> Mail:
    """An event's mail for ``recipient`` (what :meth:`Planner.plan_event` renders);
    ``received``: when the notifier got it (Unix time, a float pickles in no time)."""
    return render_mail(
        event.event, site, language=recipient.language, sender=sender,
        recipient=recipient.address, index=index,
        received_at=dt.datetime.fromtimestamp(received, dt.UTC),
        with_data=with_data, chart=chart if with_data else None, maps=maps,
    )  # fmt: skip


def _settle(
    future: asyncio.Future[_Rendered | None], source: asyncio.Future[_Rendered | None]
) -> None:
    """``future`` gets ``source``'s outcome."""
    if future.done():
        return
    if source.cancelled():
        future.cancel()
    elif (exc := source.exception()) is not None:
        future.set_exception(exc)
    else:
        future.set_result(source.result())


def _render_many(jobs: list[_Job]) -> list[_Rendered | None]:
    """:func:`_render_one` for each job (in a worker process)."""
    return [_render_one(*job) for job in jobs]


def _render_one(
    render: Callable[[Recipient, int, bool], Mail],
    recipient: Recipient,
    index: int,
    what: str,
) -> _Rendered | None:
    """One recipient's mail as bytes, and whether DATA carries them as they are (on the
    renderer's thread, or in a worker process); ``None``: cannot render."""
    try:
        message = as_bytes(render(recipient, index, True))
    except Exception:
        log.exception("cannot render %s in full; mailing it without data", what)
        try:
            message = as_bytes(render(recipient, index, False))
        except Exception:
            # Still failing: record the event rather than crash on it again
            # and again (the broker would redeliver it after every restart).
            log.exception("cannot render %s at all: recorded, NOT mailed", what)
            return None
    return message, ready_for_data(message)


def _one_line(address: str) -> bool:
    """Whether ``address`` in a ``To:`` line leaves that one line (no CR, no LF)."""
    return "\r" not in address and "\n" not in address


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


def heartbeat_interval(event: Event) -> float | None:
    """A heartbeat's ``interval_s`` (the device's promise of its next sign of life)."""
    if event.kind == "heartbeat":
        typed = event_data(event)
        interval = (
            typed.interval_s if isinstance(typed, HeartbeatData) else event.data.get("interval_s")
        )
        if positive(interval):
            return float(interval)
    return None


def _sensor_of(event: Event) -> str:
    """The sensor (or cot) an event is about, from its kind's type; "" when it is about the
    device itself.  Kinds this version does not know and data that does not fit its kind
    (older devices named a trap ``trap``, a detector ``detector``): the first of those keys."""
    typed = event_data(event)
    if isinstance(typed, SensorData):
        return typed.sensor[:128]
    if isinstance(typed, CotData):
        return typed.cot[:128]
    if typed is not None:
        return ""
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
    typed = event_data(event)
    value = typed.closed_since if isinstance(typed, TrapData) else event.data.get("closed_since")
    if event.clock_synced and isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                return min(moment.timestamp(), now)
        except (ValueError, OverflowError):
            pass
    closed_s = typed.closed_s if isinstance(typed, TrapData) else event.data.get("closed_s")
    if finite(closed_s) and float(closed_s) >= 0:
        return now - float(closed_s)
    return _event_time(event, now)


def finite(value: object) -> TypeGuard[float]:
    """A real number (not a bool, not NaN or infinite): what a reading must be."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def positive(value: object) -> TypeGuard[float]:
    return finite(value) and float(value) > 0
