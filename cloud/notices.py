"""The notifier's own mails: a device offline or back online, a burst's summary, a
trap reminder.

Each is made the same way (:meth:`Notices._queue`): a notice id derived from
the row it comes from (so that several instances make the same one), the mails
rendered for the row's recipients, then a compare-and-set in the store that
queues them only if the row is still as it was read.  The timekeeper
(:mod:`cloud.timers`) calls these when a deadline passes; the receiver calls
:meth:`Notices.back_online` when a device it had given up on speaks again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from cloud.clock import Clock
from cloud.config import DEVICE_OFFLINE, DEVICE_ONLINE, TRAP_REMINDER, NotifierConfig, Recipient
from cloud.mime import Mail
from cloud.plan import Planner
from cloud.render import message_id, render_device, render_reminder, render_summary
from cloud.stats import NotifierStats
from cloud.store import DeviceRow, EpisodeRow, Notice, OutgoingMail, Store, TrapRow

log = logging.getLogger("cloud.notifier")  # the name its log lines had before the split

#: The ids of the notifier's own notices (summaries, reminders, offline / online)
#: begin with this; an event from a device whose id does too is refused, so that
#: no device can pre-empt (and so suppress) a notice by sending its id.
NOTICE_PREFIX: Final = "notice:"

Render = Callable[[Recipient, int, bool], Mail]


class Notices:
    """Queues the notifier's own notices, each once however many instances try."""

    def __init__(
        self,
        config: NotifierConfig,
        clock: Clock,
        stats: NotifierStats,
        planner: Planner,
        wake_sender: asyncio.Event,
    ) -> None:
        self.config = config
        self.clock = clock
        self.stats = stats
        self.planner = planner
        self._wake = wake_sender

    async def _queue(
        self,
        notice: Notice,
        recipients: Sequence[Recipient],
        render: Render,
        commit: Callable[[list[OutgoingMail]], Awaitable[bool]],
    ) -> list[OutgoingMail] | None:
        """Render ``notice`` for ``recipients`` (none: no mail), then ``commit`` it (a
        compare-and-set in the store, queueing the mails).  Returns the mails queued,
        or ``None`` when the store's row had changed (another instance, or the device,
        was first): nothing was queued."""
        mails = await self.planner.render_each(recipients, render, notice.id) if recipients else []
        if not await commit(mails):
            return None
        self.stats.notices += 1
        if mails:
            self._wake.set()
        return mails

    async def back_online(self, store: Store, row: DeviceRow) -> None:
        """Compare-and-set ``row`` back online; mail those who were told it went offline."""
        now = self.clock.time()
        site = self.config.sites.get(row.site)
        notice_id = f"{NOTICE_PREFIX}{row.device}.on{row.transitions + 1}"
        notice = Notice(notice_id, DEVICE_ONLINE, "info", row.site, row.device)
        recipients: Sequence[Recipient] = []
        if row.notified and site is not None and self.config.mails_kind(site, DEVICE_ONLINE):
            recipients = _stored(row.recipients)
        offline_id = f"{NOTICE_PREFIX}{row.device}.off{row.transitions}"
        when = dt.datetime.fromtimestamp(now, dt.UTC)

        def render(recipient: Recipient, index: int, with_data: bool) -> Mail:
            assert site is not None
            return render_device(
                notice_id=notice.id, online=True, site_id=row.site, site=site,
                device=row.device, reason="", since=row.since, last_seen=row.last_seen,
                lat=row.lat, lon=row.lon, language=recipient.language,
                sender=self.config.smtp.sender, recipient=recipient.address, index=index,
                now=when, references=message_id(offline_id, index),
            )  # fmt: skip

        mails = await self._queue(
            notice, recipients, render,
            lambda mails: store.device_back_online(row, notice, mails, now=now),
        )  # fmt: skip
        if mails is not None:
            log.info("device back online device=%s site=%s offline_for=%.0fs mails=%d",
                     row.device, row.site, now - row.since, len(mails))  # fmt: skip

    async def device_offline(self, store: Store, row: DeviceRow, by_heartbeat: bool) -> None:
        """Compare-and-set ``row`` offline-notified (``by_heartbeat``: silent past its
        deadline, else offline by its status past the grace period); mail the site."""
        now = self.clock.time()
        site = self.config.sites.get(row.site)
        transitions = row.transitions + 1 if by_heartbeat else row.transitions
        notice_id = f"{NOTICE_PREFIX}{row.device}.off{transitions}"
        notice = Notice(notice_id, DEVICE_OFFLINE, "warning", row.site, row.device)
        reason = "no heartbeat" if by_heartbeat else row.reason
        since = now if by_heartbeat else row.since
        recipients: Sequence[Recipient] = []
        if site is None:
            log.warning("device %s is offline but its site %r is not configured: no mail",
                        row.device, row.site)  # fmt: skip
        elif self.config.mails_kind(site, DEVICE_OFFLINE):
            recipients = self.config.recipients_for(site, DEVICE_OFFLINE, "warning")
        when = dt.datetime.fromtimestamp(now, dt.UTC)

        def render(recipient: Recipient, index: int, with_data: bool) -> Mail:
            assert site is not None
            return render_device(
                notice_id=notice.id, online=False, site_id=row.site, site=site,
                device=row.device, reason=reason, since=since, last_seen=row.last_seen,
                lat=row.lat, lon=row.lon, language=recipient.language,
                sender=self.config.smtp.sender, recipient=recipient.address, index=index,
                now=when,
            )  # fmt: skip

        mails = await self._queue(
            notice, recipients, render,
            lambda mails: store.device_offline_notified(
                row, notice, mails, now=now, by_heartbeat=by_heartbeat
            ),
        )  # fmt: skip
        if mails is not None:
            log.warning("device offline device=%s site=%s reason=%r last_seen=%.0fs ago mails=%d",
                        row.device, row.site, reason, now - row.last_seen, len(mails))  # fmt: skip

    async def summarise(self, store: Store, row: EpisodeRow, now: float) -> None:
        """The summary of a burst (events folded since its last mail); ends it if over."""
        over = (not row.open) or now >= row.last_at + row.quiet_s
        if row.folded == 0:
            if over:
                await store.episode_summarised(row, None, [], now=now, close=True)
            return
        site = self.config.sites.get(row.site)
        notice_id = f"{NOTICE_PREFIX}{row.id}.s{row.summaries + 1}"
        notice = Notice(notice_id, f"{row.kind}_summary", "info", row.site, row.device)
        recipients = _stored(row.recipients) if site is not None else []
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        severity = str(row.stats.get("severity") or "info")

        def render(recipient: Recipient, index: int, with_data: bool) -> Mail:
            assert site is not None
            return render_summary(
                notice_id=notice.id, first_id=row.id, kind=row.kind, severity=severity,
                site_id=row.site, site=site, device=row.device, count=row.folded,
                total=row.folded_total, stats=row.stats if with_data else {}, over=over,
                quiet_s=row.quiet_s, every_s=row.summary_every_s, lat=row.lat,
                lon=row.lon, language=recipient.language, sender=self.config.smtp.sender,
                recipient=recipient.address, index=index, now=when, maps=self.planner.maps,
            )  # fmt: skip

        mails = await self._queue(
            notice, recipients, render,
            lambda mails: store.episode_summarised(row, notice, mails, now=now, close=over),
        )  # fmt: skip
        if mails is not None:
            log.info("summary queued notice=%s kind=%s device=%s folded=%d over=%s mails=%d",
                     notice.id, row.kind, row.device, row.folded, over, len(mails))  # fmt: skip

    async def remind(self, store: Store, row: TrapRow, now: float) -> None:
        """Reminder number ``row.reminders + 1`` that a trap is still closed."""
        site = self.config.sites.get(row.site)
        number = row.reminders + 1
        notice_id = f"{NOTICE_PREFIX}{row.trigger_id}.r{number}"
        notice = Notice(notice_id, TRAP_REMINDER, "alarm", row.site, row.device)
        recipients: Sequence[Recipient] = []
        if site is not None and self.config.mails_kind(site, TRAP_REMINDER):
            recipients = _stored(row.recipients)
        when = dt.datetime.fromtimestamp(now, dt.UTC)

        def render(recipient: Recipient, index: int, with_data: bool) -> Mail:
            assert site is not None
            return render_reminder(
                notice_id=notice.id, trigger_id=row.trigger_id, site_id=row.site,
                site=site, device=row.device, sensor=row.sensor,
                closed_since=row.closed_since, number=number, lat=row.lat, lon=row.lon,
                language=recipient.language, sender=self.config.smtp.sender,
                recipient=recipient.address, index=index, now=when, maps=self.planner.maps,
            )  # fmt: skip

        every = self.config.traps.reminder_every_s
        mails = await self._queue(
            notice, recipients, render,
            lambda mails: store.trap_reminded(row, notice, mails, now=now, every_s=every),
        )  # fmt: skip
        if mails is not None:
            log.info("trap reminder queued notice=%s device=%s sensor=%s closed_for=%.0fs mails=%d",
                     notice.id, row.device, row.sensor, now - row.closed_since,
                     len(mails))  # fmt: skip


def _stored(recipients: Sequence[tuple[str, str]]) -> list[Recipient]:
    """Recipients kept with a burst, trap or device, as they were when it began."""
    return [Recipient(address, "en" if lang == "en" else "ja") for address, lang in recipients]
