"""Detection -> siren and strobe: at once, for the configured time, then rest.

Real drivers on gpiozero's MockFactory pins; time is an injected clock.
"""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from drivers.pir import PirDetector
from drivers.siren import Siren
from drivers.strobe import Strobe
from edge.wildlife.deterrent import DeterrentRule, Outcome
from tests.support.waiting import until_sync


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def site(pins: MockFactory):  # type: ignore[no-untyped-def]
    clock = Clock()
    siren = Siren(27, pin_factory=pins)
    strobe = Strobe(22, pin_factory=pins, flash_hz=20)
    rule = DeterrentRule(
        "chase",
        [("siren", siren), ("strobe", strobe)],
        on_s=30,
        max_on_s=120,
        cooldown_s=60,
        clock=clock,
    )
    outcomes: list[Outcome] = []
    pir = PirDetector(
        17,
        pin_factory=pins,
        warmup_s=60,
        clock=clock,
        on_detect=lambda now: outcomes.append(rule.detected(now)),
    )
    yield clock, pins, rule, pir, outcomes
    for dev in (pir, siren, strobe):
        dev.close()


def test_detection_sounds_siren_before_the_edge_handler_returns(site) -> None:  # type: ignore[no-untyped-def]
    clock, pins, _rule, _pir, outcomes = site
    clock.t += 61  # past the detector's warm-up
    pir_pin, siren_pin = pins.pin(17), pins.pin(27)
    assert siren_pin.state is False
    pir_pin.drive_high()
    # MockFactory delivers the edge synchronously: the siren is on already, no polling.
    assert siren_pin.state is True
    assert outcomes == [Outcome.SOUNDED]
    assert siren_pin._last_change >= pir_pin._last_change  # the edge came first
    # The strobe flashes: its pin toggles on its own, it is not merely on.
    strobe_pin = pins.pin(22)
    until_sync(lambda: len(strobe_pin.states) >= 5, 5, "the strobe to flash")
    levels = [s.state for s in strobe_pin.states[1:5]]
    assert levels in ([True, False, True, False], [False, True, False, True])


def test_warmup_detections_are_ignored(site) -> None:  # type: ignore[no-untyped-def]
    clock, pins, _rule, pir, outcomes = site
    clock.t += 59
    pins.pin(17).drive_high()
    pins.pin(17).drive_low()
    assert pins.pin(27).state is False
    assert outcomes == []
    assert pir.ignored_warmup == 1
    clock.t += 2
    pins.pin(17).drive_high()
    assert pins.pin(27).state is True
    assert outcomes == [Outcome.SOUNDED]


def test_on_for_duration_extended_by_new_detections(site) -> None:  # type: ignore[no-untyped-def]
    clock, pins, rule, _pir, _outcomes = site
    clock.t += 100
    start = clock.t
    assert rule.detected() is Outcome.SOUNDED
    assert rule.tick() == start + 30
    clock.t = start + 20
    assert rule.detected() is Outcome.EXTENDED
    clock.t = start + 31  # the first detection alone would have ended now
    assert rule.tick() == start + 50
    assert pins.pin(27).state is True
    clock.t = start + 50
    assert rule.tick() is None
    assert pins.pin(27).state is False
    assert pins.pin(22).state is False
    assert not rule.sounding


def test_lingering_animal_cannot_keep_the_siren_on_forever(site) -> None:  # type: ignore[no-untyped-def]
    clock, pins, rule, _pir, _outcomes = site
    clock.t += 100
    start = clock.t
    rule.detected()
    for step in range(1, 200):  # a detection every 5 s
        clock.t = start + 5 * step
        rule.tick()
        if not rule.sounding:
            break
        rule.detected()
    assert clock.t - start == pytest.approx(120)  # max_on_s
    assert pins.pin(27).state is False
    # Resting: the animal is still reported (once), the siren stays off.
    clock.t += 5
    assert rule.detected() is Outcome.RESTING
    assert rule.detected() is Outcome.RESTING_AGAIN
    assert pins.pin(27).state is False
    # After the cool-down a detection sounds again.
    clock.t = start + 120 + 60
    assert rule.detected() is Outcome.SOUNDED
    assert pins.pin(27).state is True


def test_zero_cooldown_sounds_again_at_once(pins: MockFactory) -> None:
    clock = Clock()
    with Siren(27, pin_factory=pins) as siren:
        rule = DeterrentRule("r", [("siren", siren)], on_s=1, max_on_s=1, cooldown_s=0, clock=clock)
        assert rule.detected() is Outcome.SOUNDED
        clock.t += 1
        assert rule.tick() is None
        assert rule.detected() is Outcome.SOUNDED


@pytest.mark.parametrize(("cooldown_s", "expected"), [(0, Outcome.SOUNDED), (60, Outcome.RESTING)])
def test_a_detection_after_an_overdue_switch_off_is_not_an_extension(
    pins: MockFactory, cooldown_s: float, expected: Outcome
) -> None:
    # The loop's tick that ends a sounding can run late (a stalled SD card, a busy
    # core).  A detection then comes after the sounding's end: it must sound anew
    # (or rest), not "extend" a sounding already past its cap -- which the late
    # tick would then switch off at once, leaving the new animal in silence.
    clock = Clock()
    with Siren(27, pin_factory=pins) as siren:
        rule = DeterrentRule(
            "r", [("siren", siren)], on_s=0.2, max_on_s=0.2, cooldown_s=cooldown_s, clock=clock
        )
        assert rule.detected() is Outcome.SOUNDED
        clock.t += 5  # no tick ran meanwhile
        assert rule.detected() is expected
        assert rule.tick() == (clock.t + 0.2 if expected is Outcome.SOUNDED else None)
        assert pins.pin(27).state is (expected is Outcome.SOUNDED)


def test_rule_without_actuators_only_reports(pins: MockFactory) -> None:
    clock = Clock()
    rule = DeterrentRule("quiet", [], on_s=10, max_on_s=10, cooldown_s=10, clock=clock)
    assert rule.detected() is Outcome.SOUNDED
    assert rule.detected() is Outcome.EXTENDED


def test_active_low_siren_and_pull_up_detector(pins: MockFactory) -> None:
    """Relay boards that switch on a low level, and detectors that pull the line low."""
    clock = Clock()
    with Siren(5, pin_factory=pins, active_high=False) as siren, PirDetector(
        6, pin_factory=pins, pull="up", active_high=False, warmup_s=0, clock=clock,
        on_detect=lambda now: siren.on(),
    ):
        assert pins.pin(5).state is True  # off = high on an active-low relay
        pins.pin(6).drive_low()
        assert pins.pin(5).state is False


def test_detector_refuses_contradictory_wiring(pins: MockFactory) -> None:
    with pytest.raises(ValueError, match="active-high detector needs pull='down'"):
        PirDetector(6, pin_factory=pins, pull="up", active_high=True)
