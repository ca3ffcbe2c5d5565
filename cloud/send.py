"""Sending: due mails out over SMTP, and each marked sent the moment the server took it.

Up to ``smtp.connections`` senders each claim a batch of due mails and send it
on one SMTP session (PIPELINING where the server offers it), keeping the
connection while more are due.  They are woken by the receiver and the
timekeeper after each commit that queued mails, and otherwise look at the store
every ``delivery.poll_s`` (mails another instance left behind) or when the next
retry is due.  Transient failures are retried with capped exponential backoff
and jitter (:class:`~edge.backoff.Backoff`); permanent refusals are marked
``failed``.

A mail the server accepted is written to the :class:`~cloud.store.SentJournal`
within the callback that read the server's reply, and marked sent in the store
by :class:`SentMarks` (group commit) without holding up the next mail.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from cloud.clock import Clock
from cloud.config import NotifierConfig
from cloud.errors import PermanentDeliveryError, TransientDeliveryError
from cloud.mailer import DryRunSession, Mailer, MailSession
from cloud.stats import NotifierStats
from cloud.store import QueuedMail, SentJournal, Store
from cloud.timers import wait_or_timeout
from edge.backoff import Backoff

log = logging.getLogger("cloud.notifier")  # the name its log lines had before the split

#: How many due mails one SMTP session sends before the queue is looked at again.
BATCH: Final = 20
#: On a graceful stop, how long the sender may take to finish the mail in hand.
STOP_GRACE_S: Final = 10.0
#: With a sent journal, how long a sent mark waits for others to share its commit
#: (each commit rewrites the same index pages in the WAL), and how many may share one.
MARK_LINGER_S: Final = 0.025
MARK_GROUP_MAX: Final = 256
#: Most mails the receiver hands to the senders in memory (:class:`Handoff`) before
#: it leaves new ones in the store's queue for them to claim.
HANDOFF_MAX: Final = 256
#: A sender with nothing to send waits this long (real time) for more before it
#: settles its marks and looks at the store: within a burst the next group of mails
#: comes within milliseconds, and that idle work, done by every sender between every
#: two groups, cost more than the claims it replaced.
IDLE_AFTER_S: Final = 0.05


class Handoff:
    """Mails the receiver queued already claimed for this instance, handed to the
    senders in memory: a burst's mails are not claimed (and read back) from the
    store one batch at a time, the store's busiest work after accepting events.
    SQLite only (one instance per file; see :meth:`cloud.receive.Receiver._claim`).

    Bounded (:data:`HANDOFF_MAX`): when the senders fall behind, new mails wait in
    the store's queue (alarms first) like any other.  A mail is sent from here only
    while at least half its claim is left (``claim_timeout_s``); one older than that
    is dropped from memory and claimed from the store once its claim runs out, so no
    other sender can be sending it meanwhile.  At a stop or a crash what is here is
    still pending in the store (the claims are given back, or run out).
    """

    def __init__(self, lease_s: float, limit: int = HANDOFF_MAX) -> None:
        self.lease_s = lease_s
        self.limit = limit
        self._mails: collections.deque[tuple[QueuedMail, float]] = collections.deque()
        self.ready = asyncio.Event()
        """Set while mails wait here."""
        self._dropped = math.inf
        """When the first claim of the mails dropped (too old) since :meth:`dropped` runs out."""

    def __len__(self) -> int:
        return len(self._mails)

    def room(self) -> int:
        return max(0, self.limit - len(self._mails))

    def put(self, mails: Sequence[QueuedMail], claim_until: float) -> None:
        """``mails``, claimed in the store by this instance until ``claim_until``."""
        self._mails.extend((mail, claim_until) for mail in mails)
        if self._mails:
            self.ready.set()

    def take(self, limit: int, now: float) -> list[QueuedMail]:
        """Up to ``limit`` mails, oldest first, each with half its claim left or more."""
        out: list[QueuedMail] = []
        mails = self._mails
        while mails and len(out) < limit:
            mail, until = mails.popleft()
            if until - now >= self.lease_s / 2:
                out.append(mail)
            else:
                self._dropped = min(self._dropped, until)
        if not mails:
            self.ready.clear()
        return out

    def dropped(self) -> float:
        """When the first claim of the mails dropped since the last call runs out
        (``inf``: none was dropped): the store's queue is to be looked at then (its
        ``next_due`` finds the others)."""
        until, self._dropped = self._dropped, math.inf
        return until

    def clear(self) -> None:
        self._mails.clear()
        self.ready.clear()


class MailerLike(Protocol):
    """What the sender needs: :class:`~cloud.mailer.Mailer` or the dry run's file writer."""

    def session(self) -> MailSession | DryRunSession: ...


class Sender:
    """Claims due mails and hands them to the SMTP server until the notifier stops."""

    def __init__(
        self,
        config: NotifierConfig,
        clock: Clock,
        stats: NotifierStats,
        instance: str,
        wake: asyncio.Event,
        stopping: asyncio.Event,
        mailer: MailerLike | None = None,
        handoff: Handoff | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.stats = stats
        self.instance = instance
        self.mailer = mailer
        """Set before :meth:`run` (the notifier makes a :class:`~cloud.mailer.Mailer`)."""
        self._wake = wake
        """Set after a commit that queued mails (and at a stop)."""
        self._stopping = stopping
        d = config.delivery
        self._retry = Backoff(d.retry_initial_s, d.retry_max_s, jitter="equal")
        self.handoff = handoff if handoff is not None else Handoff(d.claim_timeout_s)
        """Mails the receiver claimed for us as it queued them."""
        self._look_at = -math.inf
        """When the store's queue is to be looked at next, unless woken before: after a
        look that found nothing due, at the next mail's due time or ``poll_s`` later."""
        self._deferred_due = math.inf
        """The earliest retry this instance queued since the last look at the store
        began (a look's ``next_due`` may have been read before it was)."""

    async def run(self, store: Store) -> None:
        """Up to ``smtp.connections`` senders, each with an SMTP session of its own."""
        marks = SentMarks(store, store.journal, self._sent)
        self.handoff.clear()  # from an earlier run: given back, pending in the store
        self._look_at = -math.inf
        count = self.config.smtp.connections if isinstance(self.mailer, Mailer) else 1
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
            batch, looked_at_store = await self._next_batch(store)
            if batch:
                await self._deliver(store, marks, batch)
                continue
            if not looked_at_store and await self._more_soon():
                continue
            await marks.settle()  # idle: the marks in hand are committed now
            if marks.since_sync:
                await store.sync()  # idle: the marks reach the disk (a power cut keeps them)
                marks.since_sync = 0
            journal = store.journal
            if journal is not None and journal.written and not journal.unmarked:
                journal.clear()  # the store has caught up with every line
            if self.handoff.ready.is_set() or self._wake.is_set():
                continue
            looked = self.clock.time()  # time that passes in the next await is not skipped
            timeout = min(poll_s, max(0.0, self._look_at - looked))
            await wait_or_timeout(
                (self._wake, self.handoff.ready), timeout, self.clock, since=looked
            )

    async def _more_soon(self) -> bool:
        """Whether mails come (handed over, or queued in the store) within
        :data:`IDLE_AFTER_S` (real time: the clock of the store's deadlines may be a
        test's manual one)."""
        handed, woken = self.handoff.ready, self._wake
        if handed.is_set() or woken.is_set():
            return True
        waiters = [asyncio.ensure_future(handed.wait()), asyncio.ensure_future(woken.wait())]
        try:
            done, _ = await asyncio.wait(waiters, timeout=IDLE_AFTER_S,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            for waiter in waiters:
                waiter.cancel()
        return bool(done) and not self._stopping.is_set()

    async def _next_batch(self, store: Store) -> tuple[list[QueuedMail], bool]:
        """The next mails to send, and whether the store's queue was looked at.

        The store's queue first when something was queued there (woken), when a mail
        there falls due, or every ``poll_s`` (what another instance left behind);
        else what the receiver handed over (:class:`Handoff`).
        """
        looked = False
        now = self.clock.time()
        if self._wake.is_set() or now >= self._look_at:
            self._wake.clear()  # before looking, so a commit after the look still wakes us
            self._deferred_due = math.inf  # before looking: a retry queued after it counts
            batch = await self._claim(store)
            looked = True
            if batch:
                self._look_at = -math.inf  # more may be due: look again next time
                return batch, looked
            # Nothing due now: look again when the next one falls due (a retry, a
            # claim that runs out), or after poll_s (what another instance left).
            next_due = await store.next_due()
            look_at = now + self.config.delivery.poll_s
            if next_due is not None:
                look_at = min(look_at, next_due)
            self._look_at = min(look_at, self._deferred_due)
        handed = self.handoff.take(BATCH, self.clock.time())
        self._look_at = min(self._look_at, self.handoff.dropped())
        return handed, looked

    async def _claim(self, store: Store) -> list[QueuedMail]:
        lease_s = self.config.delivery.claim_timeout_s
        now = self.clock.time()
        return await store.claim_due(self.instance, now=now, lease_s=lease_s, limit=BATCH)

    async def _deliver(self, store: Store, marks: SentMarks, batch: list[QueuedMail]) -> None:
        """Send ``batch``, then whatever else is due, on one SMTP session (one connection)."""
        assert self.mailer is not None
        done = 0
        try:
            async with self.mailer.session() as session:
                while batch:
                    done = 0
                    announced = False
                    for n, mail in enumerate(batch):
                        if self._stopping.is_set() and not announced:
                            return  # still pending: sent after the restart
                        journal = store.journal
                        accepted_hook = None if journal is None else functools.partial(
                            journal.record, mail.id, mail.event_id, mail.recipient
                        )  # fmt: skip
                        following = None
                        following_ready = False
                        if n + 1 < len(batch) and not self._stopping.is_set():
                            following = (batch[n + 1].recipient, batch[n + 1].message)
                            following_ready = batch[n + 1].ready
                        announced = following is not None
                        try:
                            await session.send(
                                mail.recipient, mail.message, accepted_hook, following,
                                ready=mail.ready, following_ready=following_ready,
                            )  # fmt: skip
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
                    # More due (a burst): keep the connection rather than open another,
                    # also over the moment between two groups of a burst.
                    batch, _ = await self._next_batch(store)
                    while not batch and await self._more_soon():
                        batch, _ = await self._next_batch(store)
        except TransientDeliveryError as exc:
            # Could not connect, or the connection died: the rest of the batch waits too.
            for mail in batch[done:]:
                await self._defer(store, mail, exc.reason)

    def _sent(self, group: Sequence[tuple[QueuedMail, float, float]]) -> None:
        """``(mail, when sent, accepted -> marked)`` of one committed group of marks: one
        log record for the group (a record each cost ~3 % of the CPU of a busy notifier),
        with a ``mail sent …`` item per mail."""
        stats = self.stats
        items = []
        for mail, now, window in group:
            stats.sent += 1
            stats.mark_window_total_s += window
            stats.mark_window_max_s = max(stats.mark_window_max_s, window)
            items.append(
                f"mail sent event={mail.event_id} kind={mail.kind} to={mail.recipient} "
                f"attempts={mail.attempts + 1} after={(now - mail.created_at) * 1000.0:.0f}ms "
                f"marked_in={window * 1000.0:.2f}ms"
            )
        if items and log.isEnabledFor(logging.INFO):
            log.info("%s", " | ".join(items))

    async def _defer(self, store: Store, mail: QueuedMail, reason: str) -> None:
        attempt = mail.attempts + 1
        delay = self._retry.delay(attempt)
        due = self.clock.time() + delay
        await store.reschedule(mail.id, due, reason)
        self._look_at = min(self._look_at, due)
        self._deferred_due = min(self._deferred_due, due)
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


class SentMarks:
    """Marks mails sent, committing the marks that wait together (group commit).

    Without a sent journal (PostgreSQL) a mark is committed as soon as the
    store's thread is free, with every mark that arrived meanwhile, and the
    session waits for it.  With one (SQLite), the mail is already on record
    there, so a mark waits up to :data:`MARK_LINGER_S` for others to share its
    commit (at most :data:`MARK_GROUP_MAX`), and none waits once the sender is
    idle (:meth:`settle`) or stopping: under load one commit carries tens of
    marks instead of a few, and so rewrites the queue's index pages in the WAL
    once instead of again for every few mails.  The SMTP session does not wait
    for it: it goes on with its next mail (the mail stays claimed by this
    instance meanwhile, and a kill before the commit is covered by the
    journal).  A failed commit is raised by the next :meth:`mark` and by
    :meth:`close`.
    """

    def __init__(
        self,
        store: Store,
        journal: SentJournal | None = None,
        on_marked: Callable[[Sequence[tuple[QueuedMail, float, float]]], None] | None = None,
    ) -> None:
        self._store = store
        self._journal = journal
        self._on_marked = on_marked
        self._waiting: list[tuple[QueuedMail, float, float, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._linger_s = MARK_LINGER_S if journal is not None else 0.0
        self._hurry = asyncio.Event()
        """Set: commit what waits without lingering (idle, stopping, or a full group)."""
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
        if len(self._waiting) >= MARK_GROUP_MAX:
            self._hurry.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="sent-marks")
        return done

    async def settle(self) -> None:
        """Commit the marks in hand now, and wait for that (raises a failed commit);
        marks made meanwhile by other sessions are not waited for."""
        in_hand = [done for *_, done in self._waiting]
        if in_hand:
            self._hurry.set()
            await asyncio.gather(*in_hand)
        self.raise_failure()

    @property
    def idle(self) -> bool:
        return not self._waiting and (self._flusher is None or self._flusher.done())

    async def _flush(self) -> None:
        while self._waiting:
            if self._linger_s and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger_s):
                        await self._hurry.wait()
            self._hurry.clear()
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
            if self._on_marked is not None:
                self._on_marked([(mail, now, committed - accepted) for mail, now, accepted, _
                                 in group])  # fmt: skip
            for *_, done in group:
                if not done.done():
                    done.set_result(None)

    async def close(self) -> None:
        """Wait until the marks in hand are committed (at a stop); raise a failed commit."""
        self._hurry.set()
        if self._flusher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._flusher)
        if self._error is not None and not isinstance(self._error, asyncio.CancelledError):
            raise self._error
