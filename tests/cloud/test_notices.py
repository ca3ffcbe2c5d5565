"""The pieces the notifier is wired from, on a real store (SQLite and PostgreSQL):
what to mail for an event (``cloud.plan``), the notifier's own notices
(``cloud.notices``) and waiting on its clock (``cloud.timers``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloud.clock import ManualClock
from cloud.config import NotifierConfig, StoreConfig, load_config
from cloud.notices import Notices
from cloud.plan import Planner
from cloud.render import message_id
from cloud.stats import NotifierStats
from cloud.store import CoalescePlan, OutgoingMail, Store
from cloud.timers import wait_or_timeout
from tests.cloud.conftest import RECIPIENTS, make_event
from tests.cloud.conftest import config_text as notifier_toml
from tests.support.waiting import until

NOW = 1_000_000.0


@pytest.fixture
def notifier_config(tmp_path: Path) -> NotifierConfig:
    """A notifier configuration (its broker and SMTP server are never dialled here)."""
    path = tmp_path / "notifier.toml"
    path.write_text(
        notifier_toml(mqtt_port=1, smtp_port=1, store=tmp_path / "unused.sqlite3"),
        encoding="utf-8",
    )
    return load_config(path)


def notices_of(config: NotifierConfig, clock: ManualClock) -> tuple[Notices, asyncio.Event]:
    """One instance's notices, and the wake-up of its sender."""
    stats = NotifierStats()
    wake = asyncio.Event()
    return Notices(config, clock, stats, Planner(config, stats, None), wake), wake


def mails(*recipients: str) -> list[OutgoingMail]:
    return [OutgoingMail(r, f"To: {r}\r\n\r\nbody".encode()) for r in recipients]


async def test_two_instances_summarising_one_burst_queue_one_summary(
    notifier_config: NotifierConfig, store_config: StoreConfig
) -> None:
    plan = CoalescePlan("burst", quiet_s=600, summary_every_s=3600, sensor="pir")
    clock = ManualClock(NOW + 900)
    async with await Store.open(store_config) as one, await Store.open(store_config) as two:
        await one.accept(make_event(), mails(*RECIPIENTS), now=NOW, coalesce=plan)
        for minute in (1, 2):
            folded = await one.accept(make_event(), mails(*RECIPIENTS), now=NOW + 60 * minute,
                                      coalesce=plan)  # fmt: skip
            assert folded.folded
        [row] = await one.due_episodes(NOW + 900)
        a, wake_a = notices_of(notifier_config, clock)
        b, wake_b = notices_of(notifier_config, clock)
        await asyncio.gather(a.summarise(one, row, NOW + 900), b.summarise(two, row, NOW + 900))
        notice_id = f"notice:{row.id}.s1"
        queued = await one.mails(event_id=notice_id)
        assert sorted(m.recipient for m in queued) == sorted(RECIPIENTS), "one each, not two"
        assert a.stats.notices + b.stats.notices == 1
        assert [wake_a.is_set(), wake_b.is_set()].count(True) == 1, "only the winner's sender"
        assert await one.episodes() == [], "the quiet burst is over"


async def test_back_online_mails_those_told_it_went_offline_as_a_reply(
    notifier_config: NotifierConfig, store_config: StoreConfig
) -> None:
    clock = ManualClock(NOW)
    notices, wake = notices_of(notifier_config, clock)
    timeout = notifier_config.devices.heartbeat_timeout_s
    async with await Store.open(store_config) as store:
        heartbeat = make_event("heartbeat", "info", data={"interval_s": 60})
        await store.accept(heartbeat, [], now=NOW, heartbeat_interval=60)
        clock.advance(timeout + 1)
        [(row, by_heartbeat)] = await store.overdue_devices(
            now=clock.time(), grace_s=60, heartbeat_timeout_s=timeout
        )
        await notices.device_offline(store, row, by_heartbeat)
        offline = await store.mails(event_id="notice:pi-east-01.off1")
        assert sorted(m.recipient for m in offline) == sorted(RECIPIENTS)
        assert wake.is_set()
        wake.clear()
        clock.advance(30)
        back = await store.accept(make_event("heartbeat", "info", data={"interval_s": 60}), [],
                                  now=clock.time(), heartbeat_interval=60)  # fmt: skip
        assert back.device is not None and back.device.state == "offline"
        await notices.back_online(store, back.device)
        online = await store.mails(event_id="notice:pi-east-01.on2")
        assert sorted(m.recipient for m in online) == sorted(RECIPIENTS)
        for mail in online:  # threaded under the offline mail that recipient got
            place = RECIPIENTS.index(mail.recipient) + 1
            reply_to = message_id("notice:pi-east-01.off1", place)
            assert f"In-Reply-To: {reply_to}".encode() in mail.message
        assert wake.is_set()
        assert (await store.device("pi-east-01")).state == "online"  # type: ignore[union-attr]
        # Decided again (another instance, a retry): nothing more is queued.
        await notices.back_online(store, back.device)
        assert len(await store.mails(event_id="notice:pi-east-01.on2")) == len(RECIPIENTS)
        assert notices.stats.notices == 2


async def test_an_event_is_rendered_once_per_language_and_addressed_to_each(
    notifier_config: NotifierConfig, tmp_path: Path
) -> None:
    stats = NotifierStats()
    planner = Planner(notifier_config, stats, None)
    try:
        async with await Store.open(tmp_path / "n.sqlite3") as store:
            site = notifier_config.sites.get(make_event().site)
            planned, coalesce, trap = await planner.plan_event(store, make_event(), site, NOW)
            assert [m.recipient for m in planned] == list(RECIPIENTS)
            for mail in planned:
                assert f"To: {mail.recipient}".encode() in mail.message
            assert stats.rendered == 1, "the second recipient's copy is readdressed"
            assert coalesce is None and trap is None  # no [[coalesce]] in this config

            stranger = make_event(site="nowhere")
            nothing = await planner.plan_event(store, stranger, None, NOW)
            assert nothing == ([], None, None)
            assert stats.unknown_site == 1
    finally:
        planner.close()


async def test_waiting_ends_when_woken_or_when_the_clock_passes() -> None:
    clock = ManualClock(NOW)
    woken = asyncio.Event()
    waiting = asyncio.create_task(wait_or_timeout(woken, 60.0, clock))
    await asyncio.sleep(0)
    woken.set()
    await asyncio.wait_for(waiting, 5)

    timed = asyncio.create_task(wait_or_timeout(asyncio.Event(), 60.0, clock))
    advanced = 0

    async def one_second_later() -> bool:
        nonlocal advanced
        clock.advance(1.0)
        advanced += 1
        await asyncio.sleep(0)  # a turn of the loop for the sleeper (not a wait for time)
        return timed.done()

    await until(one_second_later, 5.0, "the wait to end with the clock")
    assert 60 <= advanced <= 63, f"ended after {advanced} s on its clock, not 60"
    assert timed.exception() is None


async def test_a_deadline_worked_out_before_an_await_is_not_pushed_back_by_it() -> None:
    """The timekeeper and the sender read the clock, ask the store for their next deadline
    (an await), then wait.  Time that passed during that await counts: had the clock moved
    past the deadline meanwhile, the wait ends at once (it used to start counting again from
    the moved clock, and with a manual clock waited for a move that never came)."""
    clock = ManualClock(NOW)
    looked = clock.time()
    clock.advance(60.0)  # while the store was being asked
    await asyncio.wait_for(wait_or_timeout(asyncio.Event(), 30.0, clock, since=looked), 5)
    await asyncio.wait_for(clock.sleep_until(NOW + 59.0), 5)

    later = asyncio.create_task(wait_or_timeout(asyncio.Event(), 90.0, clock, since=looked))
    await asyncio.sleep(0)  # a turn of the loop for the sleeper (not a wait for time)
    assert not later.done(), "30 s still to go on the clock"
    clock.advance(30.0)
    await asyncio.wait_for(later, 5)
