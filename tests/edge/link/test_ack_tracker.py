"""AckTracker: when rows the broker holds but the cloud never confirmed are sent again."""

from __future__ import annotations

import itertools

from edge.link.ack_tracker import AckTracker


def tracker(**kw: float) -> AckTracker:
    args = {"timeout_s": 60.0, "probe_max_s": 900.0, "max_awaiting": 4} | kw
    return AckTracker(
        timeout_s=args["timeout_s"], probe_max_s=args["probe_max_s"],
        max_awaiting=int(args["max_awaiting"]),
    )  # fmt: skip


def test_acknowledged_rows_stop_awaiting_and_nothing_is_resent() -> None:
    t = tracker()
    t.sent("a", 0)
    t.sent("b", 0)
    assert t.acked(["a", "zzz"], 1) == ["a"]  # an id it never held is harmless
    t.acked(["b"], 2)
    assert len(t) == 0
    assert t.overdue(1000) == []


def test_a_live_cloud_gets_every_overdue_row_again_at_once() -> None:
    t = tracker()
    for i in "abc":
        t.sent(i, 0)
    t.sent("d", 30)
    t.acked(["x"], 59)  # the cloud is acknowledging (other rows)
    assert t.overdue(59) == []
    assert t.overdue(60) == ["a", "b", "c"]  # lost by the broker or the cloud
    assert t.overdue(89) == []
    assert t.overdue(90) == ["d"]
    assert t.released == 4


def test_a_silent_cloud_gets_one_probe_at_growing_intervals_until_it_answers() -> None:
    t = tracker(max_awaiting=10)
    for i in "abcde":
        t.sent(i, 0)
    probes = []
    now = 0.0
    while now < 1000:
        for row in t.overdue(now):
            probes.append((now, row))
            t.sent(row, now)  # the uplink sends it again
        now += 1
    times = [at for at, _ in probes]
    assert times[:4] == [60, 120, 240, 480]  # doubling from the ack timeout...
    assert all(b - a <= 900 for a, b in itertools.pairwise(times))  # ...capped
    assert len(probes) <= 6  # not the whole backlog every minute
    assert len({row for _, row in probes[:5]}) >= 4  # each probe a different row
    # The cloud answers the last probe: everything overdue goes at once.
    t.acked([probes[-1][1]], now)
    assert sorted(t.overdue(now)) == sorted(set("abcde") - {probes[-1][1]})


def test_a_row_the_cloud_never_acknowledges_backs_off_while_others_flow() -> None:
    t = tracker(max_awaiting=10)
    sends = []
    now = 0.0
    t.sent("poison", now)
    while now < 7200:
        t.acked([f"ok{now}"], now)  # the cloud acknowledges other rows all the time
        for row in t.overdue(now):
            sends.append(now)
            t.sent(row, now)
        now += 10
    # 60, +120, +240, +480, then every 900 s: about 10 sends in two hours, not 120.
    assert sends[:4] == [60, 180, 420, 900]
    assert 8 <= len(sends) <= 12


def test_a_broker_that_lost_its_session_gets_everything_again() -> None:
    t = tracker()
    t.sent("a", 0)
    t.sent("b", 5)
    assert t.release_all() == ["a", "b"]
    assert len(t) == 0 and not t.full


def test_full_and_next_check() -> None:
    t = tracker(max_awaiting=2)
    assert t.next_check(0) == float("inf")
    t.sent("a", 0)
    assert not t.full
    t.sent("b", 10)
    assert t.full
    assert t.next_check(10) == 50  # "a" is due at 60
    t.forget(["a"])  # evicted from the outbox meanwhile
    assert not t.full
    assert t.next_check(10) == 60
