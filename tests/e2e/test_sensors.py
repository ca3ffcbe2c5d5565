"""Every field sensor through the real daemon: events at a real broker, faults reported."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edge.config import parse
from edge.daemon import Daemon
from edge.sim.broker import Mosquitto
from edge.sim.site import device_config
from tests.support.spy import spy_on

pytestmark = pytest.mark.slow
DEVICE = "shiojiri-kataoka-01"

TRAP = """
[sensors.trap_a]
type = "trap"
pin = 5
closed_level = "low"
pull = "up"
debounce_s = 0.1
"""


def base(tmp_path: Path, port: int) -> str:
    return device_config(tmp_path / "outbox.sqlite3", port, warmup_s=0) + (
        '\n[health]\nmodem = "none"\n'
    )


async def test_trap_closure_bouncing_is_one_alarm_and_reopening_resets(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with Daemon(parse(base(tmp_path, broker.port) + TRAP)) as daemon:
            await spy.wait(lambda: bool(spy.of_kind("trap_armed")), 10, "the armed report")
            pin = daemon.pin_factory.pin(5)
            for _ in range(5):  # the door rattles shut
                await asyncio.to_thread(pin.drive_low)
                await asyncio.to_thread(pin.drive_high)
            await asyncio.to_thread(pin.drive_low)
            await spy.wait(lambda: bool(spy.of_kind("trap_triggered")), 10, "the closure")
            t_closed = time.monotonic()
            await asyncio.to_thread(pin.drive_high)
            await spy.wait(lambda: bool(spy.of_kind("trap_reset")), 10, "the reset")
            assert time.monotonic() - t_closed < 10
            assert daemon.sensors.states()["trap_a"] == "ok"
    [closed] = spy.of_kind("trap_triggered")
    assert closed.severity == "alarm"
    assert closed.data["sensor"] == "trap_a" and closed.data["reminder"] is False
    assert closed.data["closed_since"].endswith("Z")
    [reset] = spy.of_kind("trap_reset")
    assert reset.data["closed_s"] >= 0
    # the device's own description of the place travels for the e-mail (issue 14)
    place = "simulated paddy edge, north fence"
    assert closed.data["place"] == reset.data["place"] == place
    assert spy.of_kind("trap_armed")[0].data == {"sensor": "trap_a", "place": place}
