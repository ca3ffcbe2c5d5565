"""wait_set: a timed wait for an event that never swallows a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from edge.timed_wait import wait_set


async def test_set_timeout_and_none() -> None:
    ev = asyncio.Event()
    assert await wait_set(ev, 0.01) is False
    ev.set()
    assert await wait_set(ev, 0.01) is True
    assert await wait_set(ev, None) is True


async def test_a_cancellation_arriving_as_the_event_is_set_stops_the_loop() -> None:
    """The race behind daemon stops that hung: the event is set and the task is cancelled
    in the same loop iteration.  asyncio.wait_for on Python 3.11 returns normally then,
    and a ``while True`` loop around it never ends; wait_set raises CancelledError."""
    for _ in range(50):
        ev = asyncio.Event()
        rounds = 0

        async def loop_forever(ev: asyncio.Event = ev) -> None:
            nonlocal rounds
            while True:
                rounds += 1
                await wait_set(ev, 10)
                ev.clear()

        task = asyncio.create_task(loop_forever())
        await asyncio.sleep(0)  # the task is now waiting on the event
        ev.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
        assert task.cancelled()
