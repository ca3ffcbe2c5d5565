"""Waiting for an :class:`asyncio.Event` with a timeout, without losing a cancellation.

On Python 3.11 ``asyncio.wait_for(event.wait(), t)`` swallows a cancellation
that arrives in the same loop iteration as the event being set (CPython
gh-86296, fixed in 3.12): the task carries on as if nothing had happened, and
whoever cancelled it — the daemon stopping, a TaskGroup whose connection
dropped — waits for it forever.  ``asyncio.timeout`` has no such race, so every
timed wait in a loop goes through :func:`wait_set`.
"""

from __future__ import annotations

import asyncio


async def wait_set(
    event: asyncio.Event, timeout: float | None  # noqa: ASYNC109 - the helper's point
) -> bool:
    """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False; None: never)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
