"""Waiting on a condition with a deadline: the one way tests synchronise.

The condition is polled every few milliseconds; the test fails with ``what``
when the deadline passes.  ``until`` takes a plain predicate or one that
returns an awaitable (e.g. a query of the outbox); ``until_sync`` is for
threads and synchronous tests.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_S = 0.01


async def until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float,  # noqa: ASYNC109 - a deadline that names what it waited for
    what: str,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_S)


def until_sync(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_S / 10)
