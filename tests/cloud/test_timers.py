"""What time alone causes: summaries of bursts, trap reminders, devices going offline.

A real mosquitto, a real SMTP server and a real SQLite store; the notifier's
clock is a :class:`~cloud.clock.ManualClock` that the test moves forward, so
an hour-long visit of a wild boar takes milliseconds.  Devices go offline by
their broker-side last will: a real client process killed with SIGKILL.
"""

# ruff: noqa: RUF001

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from cloud.clock import ManualClock
from cloud.config import NotifierConfig, load_config
from cloud.notifier import Notifier
from cloud.store import Store
from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox, ReceivedMail
from tests.cloud.conftest import (
    PLACE,
    RECIPIENTS,
    SITE,
    Publisher,
    config_text,
    eventually,
    mails,
    make_event,
    running,
)

REPO = Path(__file__).resolve().parents[2]
OPERATOR = "op@example.jp"


def timed_config(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, *, top: str = "", extra: str = ""
) -> NotifierConfig:
    path = tmp_path / "timed.toml"
    text = config_text(
        mqtt_port=broker.port, smtp_port=mailbox.port, store=tmp_path / "n.sqlite3",
        top=top, extra=f'operators = ["{OPERATOR}"]\n{extra}',
    )  # fmt: skip
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def plain(mail: ReceivedMail) -> str:
    body = mail.message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def settled(notifier: Notifier, accepted: int) -> None:
    await eventually(lambda: _true(notifier.stats.accepted >= accepted),
                     what=f"{accepted} events accepted")  # fmt: skip


async def ticked(notifier: Notifier, clock: ManualClock, seconds: float) -> None:
    """Move the clock and wait until the timekeeper has looked at the new time."""
    before = notifier.stats.ticks
    clock.advance(seconds)
    # A generous deadline: on two loaded cores a round has taken over 5 s (a failure then
    # said nothing about the timers); one that never comes still fails.
    await eventually(lambda: _true(notifier.stats.ticks > before), within=20.0,
                     what="a timekeeper round")  # fmt: skip


async def marked(notifier: Notifier, sent: int) -> None:
    """Wait until ``sent`` mails are marked sent in the store.  A mail the SMTP server has
    but whose mark is still in its group commit is claimed under a lease measured on this
    test's clock: moving the clock an hour before the mark lands expires the lease and
    sends it again."""
    await eventually(lambda: _true(notifier.stats.sent >= sent), within=20.0,
                     what=f"{sent} mails marked sent")  # fmt: skip


async def _true(value: bool) -> bool:
    return value


async def stored_mails(config: NotifierConfig) -> int:
    async with await Store.open(config.store, readonly=True) as store:
        return len(await store.mails())


async def test_an_animal_lingering_for_an_hour_is_one_mail_and_a_summary(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    config = timed_config(tmp_path, broker, mailbox)
    clock = ManualClock()
    first = make_event(data={"sensor": "pir_north", "rule": "chase", "deterrent": "sounded",
                             "siren": True, "strobe": True})  # fmt: skip
    async with running(config, clock) as notifier:
        await publisher.event(first)
        await mails(mailbox, 2)
        await marked(notifier, 2)
        for minute in range(1, 60):  # a detection every minute for an hour
            clock.advance(60)
            sensor = "pir_north" if minute % 3 else "pir_south"
            deterrent = "sounded" if minute in (20, 40) else "resting"
            await publisher.event(make_event(seq=minute + 1, data={
                "sensor": sensor, "rule": "chase", "deterrent": deterrent,
                "siren": deterrent == "sounded", "strobe": deterrent == "sounded"}))  # fmt: skip
            await settled(notifier, minute + 1)
        assert notifier.stats.folded == 59
        assert len(mailbox.mails) == 2 and await stored_mails(config) == 2
        clock.advance(899)  # not quite quiet for 15 minutes
        await ticked(notifier, clock, 0)
        assert await stored_mails(config) == 2
        await ticked(notifier, clock, 1)
        received = await mails(mailbox, 4)
    summaries = [m for m in received if "まとめ" in m.message["Subject"]]
    assert sorted(r for m in summaries for r in m.rcpt_tos) == sorted(RECIPIENTS)
    for mail in summaries:
        assert mail.message["Subject"].startswith(f"【動物検知・まとめ】{PLACE} ほか59件")
        assert mail.message["In-Reply-To"].startswith(f"<{first.id}.")
        text = plain(mail)
        assert "■ 件数: 59回" in text
        assert "■ センサー別: pir_north: 40回, pir_south: 19回" in text
        assert "■ 威嚇装置の作動: 2回" in text
        assert "新たな記録はありません" in text


async def test_a_flapping_sensor_is_one_mail_per_window_and_nothing_is_lost(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    top = """\
[[coalesce]]
kinds = ["sensor_fault", "sensor_recovered"]
per = "sensor"
quiet_s = 1800
summary_every_s = 600
"""
    config = timed_config(tmp_path, broker, mailbox, top=top)
    clock = ManualClock()
    flaps = 40  # a fault or a recovery every 30 s for 20 minutes
    async with running(config, clock) as notifier:
        for n in range(flaps):
            kind = "sensor_fault" if n % 2 == 0 else "sensor_recovered"
            data = {"sensor": "level_east", "fault": "wire_break", "message": "2.1 mA"}
            await publisher.event(make_event(kind, "warning", seq=n, data=data if n % 2 == 0
                                             else {"sensor": "level_east", "down_s": 30.0}))
            await settled(notifier, n + 1)
            clock.advance(30)
        await ticked(notifier, clock, 1800)  # quiet: the last summary goes
        await eventually(lambda: _true(notifier.stats.sent == notifier.stats.notices + 1),
                         what="every mail sent")  # fmt: skip
    received = list(mailbox.mails)
    assert {r for m in received for r in m.rcpt_tos} == {OPERATOR}  # health: operators only
    assert "センサー異常" in received[0].message["Subject"]
    summaries = received[1:]
    # 20 minutes of flapping, a window of 10: the first mail and one per window (+ the end).
    assert 2 <= len(summaries) <= 4, [m.message["Subject"] for m in received]
    counted = 0
    for mail in summaries:
        for line in plain(mail).splitlines():
            if line.startswith("■ 件数: "):
                counted += int(line.removeprefix("■ 件数: ").removesuffix("回"))
    assert counted == flaps - 1  # every folded fault and recovery is in some summary
    assert "■ 最新の状態: センサー復旧" in plain(summaries[-1])


async def test_trap_reminders_until_the_trap_is_reset(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    config = timed_config(tmp_path, broker, mailbox, top="[traps]\nreminder_every_s = 3600\n")
    clock = ManualClock()
    trigger = make_event("trap_triggered", data={"sensor": "box_trap_2", "closed_s": 4.0})
    async with running(config, clock) as notifier:
        await publisher.event(trigger)
        await mails(mailbox, 2)
        await marked(notifier, 2)
        await ticked(notifier, clock, 3599)
        assert await stored_mails(config) == 2
        clock.advance(1)
        first = (await mails(mailbox, 4))[2:]
        await marked(notifier, 4)
        clock.advance(3600)
        second = (await mails(mailbox, 6))[4:]
        await marked(notifier, 6)
        await publisher.event(make_event("trap_reset", "info", seq=2,
                                         data={"sensor": "box_trap_2", "closed_s": 7204.0}))
        await mails(mailbox, 8)
        await ticked(notifier, clock, 3 * 3600)
        assert await stored_mails(config) == 8  # no reminder after the reset
    for n, batch in ((1, first), (2, second)):
        for mail in batch:
            subject = mail.message["Subject"]  # the sensor's id is small print (issue 14)
            assert subject.startswith(f"【緊急】【わな未解除】{PLACE} {n}時間経過 ")
            assert mail.message["In-Reply-To"].startswith(f"<{trigger.id}.")
            assert f"■ リマインダー: {n}回目" in plain(mail)
            assert f"■ 閉じてからの時間: {n}時間" in plain(mail)  # closed 4 s before + n hours


@contextlib.asynccontextmanager
async def device_process(broker: Mosquitto, device: str) -> AsyncIterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(  # noqa: ASYNC220 - only starts it; its output is read off the loop
        [sys.executable, "-m", "tests.cloud.device_stub", str(broker.port), device],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 10)
        assert line.strip() == "online"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


async def test_offline_by_last_will_after_the_grace_period_then_back_online(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    config = timed_config(tmp_path, broker, mailbox, top="[devices]\noffline_grace_s = 300\n")
    clock = ManualClock()
    async with running(config, clock) as notifier:
        # The device is known to the notifier by its events (site and position).
        await publisher.event(make_event("heartbeat", "info", data={"interval_s": 60.0}))
        await settled(notifier, 1)
        async with device_process(broker, "pi-east-01") as device:
            await eventually(lambda: _true(notifier.stats.statuses >= 1), what="online status")
            device.kill()  # SIGKILL: the broker publishes the will
            await eventually(lambda: _true(notifier.stats.statuses >= 2), what="the last will")
        await ticked(notifier, clock, 299)
        assert await stored_mails(config) == 0  # a short drop is no news
        clock.advance(1)
        [offline] = await mails(mailbox, 1)
        async with device_process(broker, "pi-east-01"):
            [_, online] = await mails(mailbox, 2)
    assert offline.rcpt_tos == (OPERATOR,)
    assert offline.message["Subject"].startswith(f"【端末オフライン】{PLACE} pi-east-01 ")
    assert "■ 理由: 通信が切れました（ブローカーが検知）" in plain(offline)
    assert "maps.gsi.go.jp" in plain(offline)
    assert online.rcpt_tos == (OPERATOR,)
    assert online.message["Subject"].startswith(f"【端末復旧】{PLACE} pi-east-01 ")
    assert online.message["In-Reply-To"] == offline.message["Message-ID"]
    assert "■ 通信が途絶えていた時間: 5分" in plain(online)


async def test_a_short_drop_within_the_grace_period_is_not_mailed(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    config = timed_config(tmp_path, broker, mailbox, top="[devices]\noffline_grace_s = 300\n")
    clock = ManualClock()
    async with running(config, clock) as notifier:
        await publisher.event(make_event("heartbeat", "info", data={"interval_s": 60.0}))
        await settled(notifier, 1)
        async with device_process(broker, "pi-east-01") as device:
            device.kill()
            await eventually(lambda: _true(notifier.stats.statuses >= 2), what="the last will")
        clock.advance(120)
        async with device_process(broker, "pi-east-01"):
            await eventually(lambda: _true(notifier.stats.statuses >= 3), what="online again")
            await ticked(notifier, clock, 200)  # past the grace period since the drop
        assert await stored_mails(config) == 0


async def test_a_missing_heartbeat_is_offline_and_the_next_one_back_online(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    config = timed_config(tmp_path, broker, mailbox,
                          top="[devices]\nheartbeat_timeout_s = 600\n")  # fmt: skip
    clock = ManualClock()
    beat = {"interval_s": 60.0, "uptime_s": 10.0, "outbox_depth": 0, "oldest_undelivered_s": None}
    async with running(config, clock) as notifier:
        await publisher.event(make_event("heartbeat", "info", data=beat))
        await settled(notifier, 1)
        await ticked(notifier, clock, 599)
        assert await stored_mails(config) == 0
        clock.advance(1)
        [offline] = await mails(mailbox, 1)
        clock.advance(60)
        await publisher.event(make_event("heartbeat", "info", seq=2, data=beat))
        [_, online] = await mails(mailbox, 2)
    assert "■ 理由: 定期通知（ハートビート）が届きません" in plain(offline)
    assert online.message["Subject"].startswith(f"【端末復旧】{PLACE}")
    assert "■ 通信が途絶えていた時間: 1分" in plain(online)


async def test_routes_send_each_kind_to_its_people_in_their_language(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    top = """\
coalesce = []

[contacts.hunters]
address = "ryoyukai@example.jp"
language = "en"

[contacts.office]
address = "office@example.jp"
"""
    routes = """\
[[sites.kataoka-east.routes]]
kinds = ["trap_triggered", "trap_reset", "trap_reminder"]
to = ["hunters"]

[[sites.kataoka-east.routes]]
min_severity = "alarm"
kinds = ["animal_detected", "trap_triggered", "water_level_alert"]
to = ["office"]
"""
    path = tmp_path / "routed.toml"
    text = config_text(mqtt_port=broker.port, smtp_port=mailbox.port,
                       store=tmp_path / "n.sqlite3", top=top, extra=routes)  # fmt: skip
    text = text.replace('"farmer@example.jp", "ryoyukai@example.jp"', '"farmer@example.jp"')
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    trap = make_event("trap_triggered", "alarm", seq=1, data={"sensor": "box"})
    animal = make_event("animal_detected", "alarm", seq=2)
    water = make_event("water_level_alert", "warning", seq=3,
                       data={"sensor": "level_east", "level_cm": 5.0, "stage": "too_high"})
    async with running(config):
        for event in (trap, animal, water):
            await publisher.event(event)
        received = await mails(mailbox, 6)
    by_event: dict[str, dict[str, str]] = {}
    for mail in received:
        by_event.setdefault(str(mail.message["X-Satoyama-Event"]), {})[mail.rcpt_tos[0]] = str(
            mail.message["Subject"]
        )
    assert by_event[trap.id]["ryoyukai@example.jp"].startswith("[ALARM] [Trap triggered] ")
    assert by_event[trap.id]["farmer@example.jp"].startswith("【緊急】【わな作動】")
    assert by_event[trap.id]["office@example.jp"].startswith("【緊急】【わな作動】")
    assert set(by_event[animal.id]) == {"farmer@example.jp", "office@example.jp"}
    assert set(by_event[water.id]) == {"farmer@example.jp"}  # a warning: not the office


async def test_a_water_alert_carries_the_telemetry_of_the_last_24_hours(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    from edge.event import Series, TelemetryBatch, encode_telemetry, telemetry_topic

    config = timed_config(tmp_path, broker, mailbox)
    clock = ManualClock()
    alert_at = clock.time()
    event = make_event("water_level_alert", "alarm", ts=_utc(alert_at), data={
        "sensor": "level_east", "level_cm": 182.5, "stage": "flood_warning",
        "threshold_cm": 180.0, "direction": "rising"})  # fmt: skip
    t0 = alert_at - 6 * 3600
    batch = TelemetryBatch(
        device="pi-east-01", site=SITE, boot="b", seq=1, t0=t0, clock_synced=True,
        series={"level_east.level_cm": Series(t=[i * 600.0 for i in range(36)],
                                              v=[100.0 + i * 2 for i in range(36)]),
                "level_east.current_ma": Series(t=[0.0], v=[12.0])},
    )  # fmt: skip
    async with running(config, clock) as notifier:
        await publisher.client.publish(
            telemetry_topic("satoyama/v1", "pi-east-01"), encode_telemetry(batch), qos=1
        )
        await eventually(lambda: _true(notifier.stats.telemetry == 1), what="telemetry stored")
        await publisher.event(event)
        received = await mails(mailbox, 2)
    message = received[0].message
    assert message["Subject"].startswith(f"【緊急】【水位警報】{PLACE} 182.5cm 氾濫注意水位 ")
    text = plain(received[0])
    assert "  最高: 182.5cm" in text
    assert "  最低: 100cm" in text
    assert "  記録数: 37" in text  # 36 readings and the alert's own
    images = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0]["Content-ID"]


def _utc(t: float) -> __import__("datetime").datetime:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC)


async def test_housekeeping_keeps_a_weeks_telemetry_for_the_hydrograph(tmp_path: Path) -> None:
    """The console draws 7 days of water levels: a reading 7 days old survives the
    hourly prune; one older than :data:`cloud.timers.TELEMETRY_KEEP_S` (8 days) is gone."""
    from cloud.timers import TELEMETRY_KEEP_S, housekeeping

    assert TELEMETRY_KEEP_S >= 8 * 86400
    path = tmp_path / "keep.toml"
    path.write_text(
        config_text(mqtt_port=1883, smtp_port=25, store=tmp_path / "n.sqlite3"), encoding="utf-8"
    )
    config = load_config(path)
    clock = ManualClock(1_800_000_000.0)
    now = clock.time()
    ages = {"week": 7 * 86400.0, "day": 86400.0, "old": TELEMETRY_KEEP_S + 3600.0}
    points = [("level.level_cm", now - age, float(n)) for n, age in enumerate(ages.values())]
    async with await Store.open(config.store) as store:
        await store.add_telemetry("gauge", SITE, points, now=now)
        task = asyncio.create_task(housekeeping(store, config, clock, "test"))
        try:

            async def kept() -> list[float]:
                rows = await store.series("gauge", "level.level_cm", 0.0, now)
                return [now - t for t, _ in rows]

            left: list[float] = []

            async def pruned() -> bool:
                left[:] = await kept()
                return len(left) < len(points) or task.done()

            await eventually(pruned, what="the first prune")
            assert sorted(left) == sorted([ages["day"], ages["week"]])
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
