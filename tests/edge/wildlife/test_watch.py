"""Wildlife as the daemon runs it: a detector's edge on gpiozero's thread sounds the
deterrent at once, and the detection is recorded (durably, in a real outbox) with what
actually sounded, read from the configuration; a trap's door becomes events.

Real drivers on gpiozero's MockFactory pins, a real SQLite outbox and recorder.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from edge.config import Config, parse
from edge.devices.actuators import Actuator
from edge.devices.factory import build_actuator
from edge.event import Event, decode
from edge.link.outbox import Outbox
from edge.link.recorder import Recorder
from edge.sim import site_text
from edge.wildlife.watch import Wildlife
from tests.support.waiting import until

SIREN_AND_STROBE = """
[sensors.pir_north]
type = "pir"
pin = 17
warmup_s = 0

[actuators.siren]
type = "siren"
pin = 27

[actuators.strobe]
type = "strobe"
pin = 22

[rules.chase]
type = "deterrent"
detectors = ["pir_north"]
actuators = ["siren", "strobe"]
on_s = 0.3
max_on_s = 1
cooldown_s = 60
"""

BUZZER = """
[sensors.pir_shed]
type = "pir"
pin = 17
warmup_s = 0

[actuators.beeper]
type = "buzzer"
pin = 12

[rules.chase]
type = "deterrent"
detectors = ["pir_shed"]
actuators = ["beeper"]
on_s = 0.3
max_on_s = 1
cooldown_s = 60
"""

TRAP = """
[sensors.trap_a]
type = "trap"
pin = 5
debounce_s = 0.05
"""


@dataclass
class Site:
    config: Config
    outbox: Outbox
    wildlife: Wildlife
    actuators: dict[str, Actuator]
    tasks: list[asyncio.Task[None]]

    async def events(self, kind: str) -> list[Event]:
        rows = await self.outbox.pending(1000)
        return [e for e in (decode(r.payload) for r in rows) if e.kind == kind]


Make = Callable[[str], Awaitable[Site]]


@pytest.fixture
async def make_site(tmp_path: Path, pins: MockFactory) -> AsyncIterator[Make]:
    sites: list[Site] = []
    spawned: set[asyncio.Task[Any]] = set()

    def spawn(coro: Coroutine[Any, Any, Any], what: str) -> object:
        task = asyncio.create_task(coro, name=what)
        spawned.add(task)
        return task

    async def make(text: str) -> Site:
        config = parse(site_text.device(tmp_path / "outbox.sqlite3") + text, "test")
        outbox = Outbox(config.outbox.path)
        outbox.open()
        actuators = {n: build_actuator(a, pins) for n, a in config.actuators.items()}
        wildlife = Wildlife(
            config, actuators, pin_factory=pins, record=Recorder(config, outbox).record,
            spawn=spawn, loop=asyncio.get_running_loop(),
        )  # fmt: skip
        tasks = [asyncio.create_task(w.run()) for w in wildlife.deterrents.values()]
        tasks += [asyncio.create_task(w.run()) for w in wildlife.traps.values()]
        site = Site(config, outbox, wildlife, actuators, tasks)
        sites.append(site)
        return site

    yield make
    for site in sites:
        for task in [*site.tasks, *spawned]:
            task.cancel()
        await asyncio.gather(*site.tasks, *spawned, return_exceptions=True)
        site.wildlife.close()
        for a in site.actuators.values():
            a.close()
        site.outbox.close()


async def test_a_detection_sounds_at_once_and_is_recorded_with_what_sounded(
    make_site: Make, pins: MockFactory
) -> None:
    site = await make_site(SIREN_AND_STROBE)
    await asyncio.to_thread(pins.pin(17).drive_high)  # gpiozero's callback runs on this thread
    # The actuators were switched on the detector's thread, before it returned.
    assert site.actuators["siren"].is_on and site.actuators["strobe"].is_on
    await until(lambda: _count(site.events("animal_detected")), 5, "the detection recorded")
    [event] = await site.events("animal_detected")
    assert event.severity == "alarm"
    assert event.data == {
        "sensor": "pir_north", "rule": "chase", "deterrent": "sounded",
        "siren": True, "strobe": True,
    }  # fmt: skip
    # The rule's timer switches them off after on_s.
    await until(lambda: not site.actuators["siren"].is_on, 5, "the siren off after on_s")
    assert not site.actuators["strobe"].is_on
    # A detection during the rest is reported once, with nothing sounding.
    await asyncio.to_thread(pins.pin(17).drive_low)
    await asyncio.to_thread(pins.pin(17).drive_high)
    await until(lambda: _count(site.events("animal_detected"), 2), 5, "the resting detection")
    resting = (await site.events("animal_detected"))[1]
    assert resting.data["deterrent"] == "resting"
    assert resting.data["siren"] is False and resting.data["strobe"] is False
    assert not site.actuators["siren"].is_on


async def test_a_deterrent_that_drives_a_buzzer_does_not_report_a_siren(
    make_site: Make, pins: MockFactory
) -> None:
    # A buzzer is a steady-on load like a siren (the same driver), but the farmer's
    # e-mail must not say a siren sounded where there is none.
    site = await make_site(BUZZER)
    await asyncio.to_thread(pins.pin(17).drive_high)
    assert site.actuators["beeper"].is_on
    await until(lambda: _count(site.events("animal_detected")), 5, "the detection recorded")
    [event] = await site.events("animal_detected")
    assert event.data["deterrent"] == "sounded"
    assert event.data["siren"] is False
    assert event.data["strobe"] is False


async def test_a_trap_door_closing_and_reopening_is_recorded(
    make_site: Make, pins: MockFactory
) -> None:
    site = await make_site(TRAP)
    await until(lambda: _count(site.events("trap_armed")), 5, "armed at start")
    pin = pins.pin(5)  # pulled up; the door closing pulls it low
    await asyncio.to_thread(pin.drive_low)
    await until(lambda: _count(site.events("trap_triggered")), 5, "the closure")
    [closed] = await site.events("trap_triggered")
    assert closed.severity == "alarm"
    assert closed.data["sensor"] == "trap_a" and closed.data["reminder"] is False
    assert closed.data["closed_since"].endswith("Z")
    await asyncio.to_thread(pin.drive_high)
    await until(lambda: _count(site.events("trap_reset")), 5, "the reopening")
    [reset] = await site.events("trap_reset")
    assert reset.severity == "info" and reset.data["closed_s"] >= 0



def _count(events: Awaitable[list[Event]], n: int = 1) -> Awaitable[bool]:
    async def enough() -> bool:
        return len(await events) >= n

    return enough()
