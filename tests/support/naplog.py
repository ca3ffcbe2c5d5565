"""Reading a device's nap log in tests that take a few steps."""

from __future__ import annotations

import datetime as dt

from edge.nursery.log import NapEntry, NapLog
from edge.nursery.sheet import JST


def entries_since(log: NapLog, started: dt.date) -> list[NapEntry]:
    """The entries of the day a test started and of the day it is now: a run can cross
    midnight JST (CI at 15:00 UTC), and the device files each entry under its own day."""
    days = sorted({started, dt.datetime.now(JST).date()})
    return [e for d in days for e in log.day(d, JST)]
