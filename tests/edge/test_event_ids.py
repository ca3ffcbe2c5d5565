"""Event ids: RFC 9562 UUIDv7, time-ordered, unique, made without the ``uuid6`` package.

The cloud de-duplicates on the id and the outbox orders by it, so the checks here read
the ids with two parsers that are not ours: the stdlib's ``uuid`` (version and variant
bits) and the ``uuid6`` package's ``UUID`` (the 48-bit Unix-millisecond timestamp), the
package whose ``uuid7()`` the daemon used before.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import uuid6

from edge.event import new_event_id
from tests.support.waiting import until_sync


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_an_id_is_a_uuid7_with_the_time_it_was_made() -> None:
    # Ids made faster than one a millisecond run ahead of the clock (each takes the
    # millisecond after the last): wait until the clock has caught up with the last one.
    last = uuid6.UUID(new_event_id()).time
    until_sync(lambda: _now_ms() > last, 30, "the clock past the last id's millisecond")
    before = _now_ms()
    ident = new_event_id()
    after = _now_ms()
    parsed = uuid.UUID(ident)
    assert str(parsed) == ident  # canonical lower-case 8-4-4-4-12 form
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= uuid6.UUID(ident).time <= after


def test_ids_made_in_one_millisecond_still_increase_and_differ() -> None:
    ids = [new_event_id() for _ in range(3_000)]  # several per millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    stamps = [uuid6.UUID(i).time for i in ids]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    # the random part is random: no two of these share their last 62 bits
    assert len({uuid.UUID(i).int & ((1 << 62) - 1) for i in ids}) == len(ids)


def test_ids_made_on_several_threads_are_unique() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(new_event_id() for _ in range(500))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in made for i in out]
    assert len(set(every)) == len(every)
    stamps = [uuid6.UUID(i).time for i in every]
    assert len(set(stamps)) == len(stamps)  # each id its own millisecond, as before
    for out in made:
        assert out == sorted(out)
