"""Wildlife as daemon tasks: detectors drive the deterrents, traps are watched, both recorded.

The order of work on a detection is the architecture's first principle:

1. gpiozero's callback thread (:func:`detection_handler`): every deterrent rule
   the detector serves switches its actuators on before anything else happens;
2. the event loop, reached only through ``loop.call_soon_threadsafe``:
   :meth:`DeterrentWatch.after_detection` wakes the rule's timer and records
   ``animal_detected`` (in a task of its own: the callback cannot wait);
3. the uplink publishes it whenever the link allows.

A trap's switch reports raw edges on gpiozero's thread; :class:`TrapWatch`
feeds them to its :class:`~edge.wildlife.trap.TrapRule` and records what the rule
decides (closed, still closed, reopened, armed) at the times the rule asks for.

What an event says is decided by the pure functions :func:`detection_data` and
:func:`trap_event`; what sounded is read from the configuration (an actuator's
``type``), never from the class of its driver: a buzzer is a steady-on load
like a siren, but it is not a siren.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from edge.config import (
    ActuatorConfig,
    Config,
    DeterrentRuleConfig,
    PirSensorConfig,
    SirenConfig,
    StrobeConfig,
    TrapSensorConfig,
)
from edge.devices.actuators import Actuator
from edge.devices.factory import PinFactory, build_detector, build_trap_switch
from edge.event import AnimalDetected, TrapArmed, TrapReset, TrapTriggered
from edge.link.recorder import Record
from edge.timed_wait import wait_set
from edge.wildlife.deterrent import DeterrentRule, Outcome
from edge.wildlife.trap import TrapOutcome, TrapRule

if TYPE_CHECKING:
    from drivers.pir import DetectCallback, PirDetector
    from drivers.trap_switch import TrapSwitch

log = logging.getLogger(__name__)


Spawn = Callable[[Coroutine[Any, Any, Any], str], object]
"""``spawn(coroutine, what)``: run a one-off task the daemon keeps and stops."""


# -- the pure part: what an event says --------------------------------------------------


def detection_data(
    sensor: str, rule: str, outcome: Outcome, sounded: Sequence[ActuatorConfig]
) -> AnimalDetected | None:
    """``animal_detected``'s data for one rule's verdict, or None when nothing is reported
    (a detection that only extends a sounding, or another during the same rest).

    ``sounded``: the configuration of the actuators the rule drives; they count as
    having run only when this detection switched them on."""
    if outcome not in (Outcome.SOUNDED, Outcome.RESTING):
        return None
    ran = list(sounded) if outcome is Outcome.SOUNDED else []
    return AnimalDetected(
        sensor=sensor,
        rule=rule,
        deterrent=outcome.value,
        siren=any(isinstance(a, SirenConfig) for a in ran),
        strobe=any(isinstance(a, StrobeConfig) for a in ran),
    )


def trap_event(
    name: str, outcome: TrapOutcome, *, wall: float, mono: float
) -> TrapTriggered | TrapReset | TrapArmed:
    """The event of one trap outcome; ``wall``/``mono``: the clocks now."""
    since: str | msgspec.UnsetType = msgspec.UNSET
    closed_s: float | msgspec.UnsetType = msgspec.UNSET
    if outcome.closed_since is not None:
        closed_at = wall - (mono - outcome.closed_since)
        since = dt.datetime.fromtimestamp(closed_at, dt.UTC).isoformat().replace("+00:00", "Z")
    if outcome.closed_s is not None:
        closed_s = round(outcome.closed_s, 1)
    if outcome.kind == "trap_triggered":
        return TrapTriggered(
            sensor=name, closed_since=since, closed_s=closed_s, reminder=outcome.reminder
        )
    if outcome.kind == "trap_reset":
        return TrapReset(sensor=name, closed_since=since, closed_s=closed_s)
    return TrapArmed(sensor=name, closed_since=since, closed_s=closed_s)


# -- the tasks --------------------------------------------------------------------------


class DeterrentWatch:
    """One ``[rules.NAME] type = "deterrent"``: its rule, its switch-off timer, its events."""

    def __init__(
        self,
        name: str,
        config: DeterrentRuleConfig,
        actuators: Mapping[str, tuple[Actuator, ActuatorConfig]],
        *,
        record: Record,
        spawn: Spawn,
    ) -> None:
        """``actuators``: name -> (driver, its configuration), for every actuator the rule
        drives."""
        self.name = name
        self.rule = DeterrentRule(
            name,
            [(a, actuators[a][0]) for a in config.actuators],
            on_s=config.on_s,
            max_on_s=config.max_on_s,
            cooldown_s=config.cooldown_s,
        )
        self.sounds = [actuators[a][1] for a in config.actuators]
        self._record = record
        self._spawn = spawn
        self._wake = asyncio.Event()

    def after_detection(self, sensor: str, outcome: Outcome, wall: float) -> None:
        """On the event loop, after the rule switched (or not): wake the timer, record."""
        log.info("detection by %s: %s (rule %s)", sensor, outcome.value, self.name)
        self._wake.set()
        data = detection_data(sensor, self.name, outcome, self.sounds)
        if data is not None:
            self._spawn(
                self._record(data, at=wall),
                f"record detection by {sensor}",
            )

    async def run(self) -> None:
        """Switch the actuators off when the rule says; sleep until a detection otherwise."""
        while True:
            self._wake.clear()
            deadline = self.rule.tick()
            if deadline is None:
                await self._wake.wait()
                continue
            await wait_set(self._wake, max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self.rule.stop()


def detection_handler(
    sensor: str, watches: Sequence[DeterrentWatch], loop: asyncio.AbstractEventLoop
) -> DetectCallback:
    """The detector's callback (gpiozero's thread): actuators first, nothing that can block;
    the rest crosses into ``loop`` with ``call_soon_threadsafe``."""

    def after(outcomes: list[tuple[DeterrentWatch, Outcome]], wall: float) -> None:
        for watch, outcome in outcomes:
            watch.after_detection(sensor, outcome, wall)

    def on_detect(mono: float) -> None:
        wall = time.time()
        outcomes = [(w, w.rule.detected(mono)) for w in watches]
        loop.call_soon_threadsafe(after, outcomes, wall)

    return on_detect


class TrapWatch:
    """One box trap's switch: edges into its rule, the rule's outcomes into events."""

    def __init__(
        self,
        name: str,
        switch: TrapSwitch,
        config: TrapSensorConfig,
        *,
        record: Record,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.name = name
        self.switch = switch
        self.rule = TrapRule(
            name,
            debounce_s=config.debounce_s,
            reminder_s=config.reminder_s,
            armed_report_s=config.armed_report_s,
            closed_now=switch.closed,
            now=time.monotonic(),
        )
        self._record = record
        self._loop = loop
        self._wake = asyncio.Event()
        switch.on_edge = self._on_edge

    def _on_edge(self, closed: bool, mono: float) -> None:  # gpiozero's thread
        self.rule.edge(closed, mono)
        self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            for outcome in self.rule.tick(time.monotonic()):
                data = trap_event(self.name, outcome, wall=time.time(), mono=time.monotonic())
                if isinstance(data, TrapTriggered):
                    log.info("trap %s %s", self.name,
                             "still closed" if outcome.reminder else "CLOSED")  # fmt: skip
                elif isinstance(data, TrapReset):
                    log.info("trap %s reopened", self.name)
                await self._record(data)
            delay = max(0.0, self.rule.next_deadline() - time.monotonic())
            await wait_set(self._wake, delay)

    def close(self) -> None:
        self.switch.on_edge = None
        self.switch.close()


class Wildlife:
    """A site's detectors, deterrent rules and traps, built from the configuration.

    Built before the outbox is opened (a detection must act however long the outbox
    takes); the tasks to spawn are each :class:`DeterrentWatch`'s and :class:`TrapWatch`'s
    ``run``.  :meth:`close` switches everything off and releases the pins.
    """

    def __init__(
        self,
        config: Config,
        actuators: Mapping[str, Actuator],
        *,
        pin_factory: PinFactory,
        record: Record,
        spawn: Spawn,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.deterrents: dict[str, DeterrentWatch] = {}
        self.detectors: dict[str, PirDetector] = {}
        self.traps: dict[str, TrapWatch] = {}
        try:
            self._build(config, actuators, pin_factory, record, spawn, loop)
        except BaseException:
            self.close()
            raise

    def _build(
        self,
        config: Config,
        actuators: Mapping[str, Actuator],
        pin_factory: PinFactory,
        record: Record,
        spawn: Spawn,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        drivers = {n: (actuators[n], config.actuators[n]) for n in actuators}
        for name, rc in config.rules.items():
            if isinstance(rc, DeterrentRuleConfig):
                self.deterrents[name] = DeterrentWatch(
                    name, rc, drivers, record=record, spawn=spawn
                )
        for name, s in config.sensors.items():
            if isinstance(s, TrapSensorConfig):
                switch = build_trap_switch(s, pin_factory)
                self.traps[name] = TrapWatch(name, switch, s, record=record, loop=loop)
            elif isinstance(s, PirSensorConfig):
                watches = [
                    self.deterrents[r]
                    for r, rc in config.rules.items()
                    if isinstance(rc, DeterrentRuleConfig) and name in rc.detectors
                ]
                self.detectors[name] = build_detector(
                    s, pin_factory, on_detect=detection_handler(name, watches, loop)
                )
                if s.warmup_s > 0:
                    log.info("detector %s warming up for %.0f s; detections ignored",
                             name, s.warmup_s)  # fmt: skip

    def close(self) -> None:
        """Switch the deterrents off and release the detectors' and traps' pins.  Idempotent."""
        for watch in self.deterrents.values():
            watch.stop()
        self.deterrents.clear()
        devices: list[PirDetector | TrapWatch] = [*self.detectors.values(), *self.traps.values()]
        for dev in devices:
            try:
                dev.close()
            except Exception:
                log.exception("could not close %r", dev)
        self.detectors.clear()
        self.traps.clear()
