"""The keepalive rule (edge/link/keepalive.py): step down on idle deaths, probe up when stable."""

from __future__ import annotations

import pytest

from edge.link.keepalive import IDLE_FRACTION, MAX_PROBE_BACKOFF, KeepaliveRule, KeepaliveState

DAY = 86400.0


def rule(state: KeepaliveState | None = None, **kw: float) -> KeepaliveRule:
    args: dict[str, float] = {"configured_s": 1800, "min_s": 240, "probe_after_s": 3 * DAY}
    args.update(kw)
    return KeepaliveRule(
        configured_s=int(args["configured_s"]),
        min_s=int(args["min_s"]),
        probe_after_s=args["probe_after_s"],
        state=state,
    )


def die_idle(r: KeepaliveRule, *, connected_s: float = 3700.0) -> bool:
    """The connection died with a ping unanswered (silent for twice its keepalive)."""
    k = r.keepalive_s
    changed = r.ended(connected_s=connected_s, idle_s=2 * k, keepalive_s=k)
    r.connected()  # the reconnect opened at once: the network was up
    return changed


def hold(r: KeepaliveRule, seconds: float) -> bool:
    """A connection that lived ``seconds`` and then dropped while busy."""
    return r.ended(connected_s=seconds, idle_s=1.0, keepalive_s=r.keepalive_s)


def test_starts_at_the_configured_keepalive() -> None:
    assert rule().keepalive_s == 1800


def test_an_idle_death_halves_it_down_to_the_floor_and_no_further() -> None:
    r = rule()
    seen = []
    for _ in range(6):
        die_idle(r)
        seen.append(r.keepalive_s)
    assert seen == [900, 450, 240, 240, 240, 240]


def test_a_death_while_busy_changes_nothing() -> None:
    r = rule()
    assert not r.ended(connected_s=50, idle_s=IDLE_FRACTION * 1800 - 1, keepalive_s=1800)
    assert r.keepalive_s == 1800


def test_a_reset_when_the_ping_goes_out_counts_as_idle() -> None:
    """Some NATs answer a packet of a forgotten flow with a reset: dead at once."""
    r = rule()
    assert r.ended(connected_s=1800, idle_s=1800, keepalive_s=1800)
    assert r.keepalive_s == 900


def test_the_step_down_is_undone_when_the_network_itself_was_down() -> None:
    """A lost cell tower also kills an idle connection; then reconnecting fails too."""
    r = rule()
    r.ended(connected_s=5000, idle_s=3600, keepalive_s=1800)
    assert r.keepalive_s == 900
    assert r.connect_failed()
    assert r.keepalive_s == 1800
    assert not r.connect_failed()  # nothing left to undo


def test_a_stable_keepalive_is_probed_upwards_halfway_to_what_died() -> None:
    r = rule()
    die_idle(r)  # 1800 died: 900
    assert not hold(r, 2 * DAY)
    assert hold(r, 1 * DAY)  # three days connected in all
    assert r.keepalive_s == 1350  # halfway between 900 (held) and 1800 (died)
    assert r.state.probing


def test_a_failed_probe_returns_to_the_stable_value_and_waits_twice_as_long() -> None:
    r = rule()
    die_idle(r)
    hold(r, 3 * DAY)
    assert r.keepalive_s == 1350
    die_idle(r)  # the carrier forgets flows idle 20 min
    assert r.keepalive_s == 900
    assert not hold(r, 5 * DAY)
    assert hold(r, 1 * DAY)
    assert r.keepalive_s == 1125  # halfway to 1350, the shortest known to die


def test_it_converges_below_the_carriers_timeout() -> None:
    """A carrier that forgets flows idle for 1,000 s: the device ends just under it, and
    once it has learned, probing costs at most a reconnect per MAX_PROBE_BACKOFF days."""
    nat_s = 1000
    r = rule(probe_after_s=DAY)
    deaths = []
    for day in range(400):  # connections of a day each, or dying at the first idle ping
        if r.keepalive_s >= nat_s:
            deaths.append(day)
            die_idle(r)
        else:
            hold(r, DAY)
        if day >= 100:
            assert 900 <= r.keepalive_s < nat_s or r.state.probing
    assert 900 <= r.keepalive_s < nat_s or r.state.probing
    late = [d for d in deaths if d >= 100]
    assert len(late) <= 300 / MAX_PROBE_BACKOFF + 1


def test_it_climbs_back_to_the_configured_keepalive_when_the_carrier_allows() -> None:
    r = rule(probe_after_s=DAY)
    die_idle(r)
    die_idle(r)
    assert r.keepalive_s == 450
    for _ in range(30):
        hold(r, DAY)
    assert r.keepalive_s == 1800


def test_a_connection_from_before_a_change_is_not_counted_twice() -> None:
    r = rule()
    die_idle(r)
    assert not r.ended(connected_s=10, idle_s=3600, keepalive_s=1800)
    assert r.keepalive_s == 900


def test_state_round_trips_and_a_state_for_other_settings_is_ignored() -> None:
    r = rule()
    die_idle(r)
    hold(r, DAY)
    saved = KeepaliveRule.decode(r.encode())
    assert saved is not None
    again = rule(saved)
    assert again.keepalive_s == 900 and again.state.connected_s == DAY
    assert rule(KeepaliveRule.decode(r.encode()), configured_s=1200).keepalive_s == 1200
    assert rule(KeepaliveRule.decode(r.encode()), min_s=600).keepalive_s == 1800
    assert KeepaliveRule.decode(b"{not json") is None


def test_a_fixed_keepalive_never_moves() -> None:
    r = rule(min_s=1800)
    die_idle(r)
    hold(r, 10 * DAY)
    assert r.keepalive_s == 1800


def test_min_above_configured_is_refused() -> None:
    with pytest.raises(ValueError, match="min_s"):
        rule(min_s=2000)
