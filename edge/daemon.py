"""The daemon: wires configuration, devices, watches, outbox and uplink on one asyncio loop.

It builds each capability's watch, hands it what it needs (its configuration, its
devices from :mod:`edge.devices.factory`, a ``record`` function, the telemetry
sink) and runs it as a supervised task; it decides nothing itself.  Who does what:

* wildlife (:mod:`edge.wildlife.watch`): detectors drive the deterrents on
  gpiozero's thread, then the event is recorded on the loop; traps are watched;
* water (:mod:`edge.water.watch`), mats and naps (:mod:`edge.nursery`);
* health: :mod:`edge.health.heartbeat` (heartbeats, every sensor's state),
  :mod:`edge.health.supervisor` (a failed task is reported and started again);
* link: the outbox's storage (:mod:`edge.link.storage`), telemetry
  (:mod:`edge.link.telemetry`), commands (:mod:`edge.link.commands`), the
  updater's event spool (:mod:`edge.link.spool`), the uplink.

Start order is the architecture's first principle: actuators and detectors
first, so a detection acts however long the outbox (its backlog, a damaged
file) takes to open.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config import (
    WATER_SENSORS,
    Config,
    DeterrentRuleConfig,
    MatSensorConfig,
    NapRuleConfig,
    PirSensorConfig,
    TrapSensorConfig,
    WaterRuleConfig,
)
from edge.devices.actuators import Actuator
from edge.devices.factory import (
    PinFactory,
    build_ack_button,
    build_actuator,
    build_gate_input,
    build_level_sensor,
    make_pin_factory,
)
from edge.devices.level import I2cBusFactory
from edge.health.anomaly_watch import AnomalyWatch, cadence_warnings
from edge.health.heartbeat import Heartbeat, SensorBoard
from edge.health.supervisor import Supervisor, TaskFactory
from edge.link.commands import CommandRunner, NapAckCommand
from edge.link.outbox import Outbox
from edge.link.recorder import PlacedRecord, Recorder
from edge.link.spool import SpoolDrain
from edge.link.storage import StorageWatch
from edge.link.telemetry import Telemetry, TelemetryBuffer
from edge.link.uplink import Uplink

if TYPE_CHECKING:
    from gpiozero import Button, DigitalInputDevice

    from drivers.pir import PirDetector
    from edge.nursery.mat_watch import MatWatch
    from edge.nursery.watch import NapWatch
    from edge.water.watch import WaterWatch
    from edge.wildlife.watch import Wildlife

log = logging.getLogger(__name__)

#: How long a thread may hold the GIL while another waits.  gpiozero's edge
#: callbacks (lgpio's thread on a Pi) need the GIL to switch the siren; with
#: CPython's default of 5 ms a busy event loop could delay the siren by that
#: much.  The daemon owns its process, so it sets this once at start.
GIL_SWITCH_INTERVAL_S = 0.0005
STOP_ROUNDS = 20
"""How often close() cancels a task that has not ended (one cancellation can be lost)."""
STOP_ROUND_S = 0.5


def has_wildlife(config: Config) -> bool:
    """Whether the configuration has detectors, traps or deterrent rules (a wildlife site)."""
    return any(
        isinstance(s, PirSensorConfig | TrapSensorConfig) for s in config.sensors.values()
    ) or any(isinstance(rc, DeterrentRuleConfig) for rc in config.rules.values())


class Daemon:
    """One device's daemon.  ``await start()``, then ``await close()``."""

    def __init__(
        self,
        config: Config,
        *,
        pin_factory: PinFactory = None,
        i2c_bus: I2cBusFactory | None = None,
    ) -> None:
        """``pin_factory``: gpiozero's (default: from ``[gpio]``); ``i2c_bus``: bus
        number -> an SMBus-compatible object (default: the kernel's /dev/i2c-N)."""
        self.config = config
        self.pin_factory = pin_factory
        self.i2c_bus = i2c_bus
        self.state_dir = Path(config.outbox.path).parent
        """Where small state that outlives a restart is kept: beside the outbox file
        (the anomaly model's water windows, today's link usage, the nap log)."""
        self.outbox = Outbox(
            config.outbox.path,
            max_events=config.outbox.max_events,
            memory_max_events=config.outbox.memory_max_events,
        )
        self.recorder: Recorder | None = None
        self.uplink: Uplink | None = None
        self.telemetry: Telemetry | None = None
        self.heartbeat: Heartbeat | None = None
        self.actuators: dict[str, Actuator] = {}
        self.wildlife: Wildlife | None = None
        self.water: dict[str, WaterWatch] = {}
        self.mats: dict[str, MatWatch] = {}
        self.naps: dict[str, NapWatch] = {}
        self._inputs: list[Button | DigitalInputDevice] = []
        """The inputs people and machines operate: nap rooms' buttons, gates' switches."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self.record = PlacedRecord(config.device.description)
        """What every watch records with; it writes once the outbox is open."""
        self.supervisor = Supervisor(self.record)
        """Starts a failed long-running task again, reports it, marks its sensor "fault"."""
        self.sensors = SensorBoard(self.record, self.supervisor)
        """Every sensor's state, as the heartbeat reports it."""
        self.started_at = 0.0
        self.armed_at = 0.0
        """``time.monotonic()`` when actuators and detectors were ready (before the outbox)."""

    @property
    def detectors(self) -> dict[str, PirDetector]:
        return {} if self.wildlife is None else self.wildlife.detectors

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        self.started_at = time.monotonic()
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        for warning in cadence_warnings(cfg):
            log.warning("%s", warning)
        if self.pin_factory is None:
            self.pin_factory = make_pin_factory(cfg.gpio.pin_factory)
        # Siren and detectors first: the outbox (however big its backlog, however
        # damaged its file) is opened only once a detection can already act.
        try:
            for name, act in cfg.actuators.items():
                self.actuators[name] = build_actuator(act, self.pin_factory)
            if has_wildlife(cfg):
                from edge.wildlife.watch import Wildlife

                self.wildlife = Wildlife(
                    cfg, self.actuators, pin_factory=self.pin_factory, record=self.record,
                    spawn=self._spawn, loop=loop,
                )  # fmt: skip
        except Exception:
            self._close_hardware()
            raise
        if self.wildlife is not None:
            for name, detector in self.wildlife.detectors.items():
                self.sensors.detectors[name] = detector
            for name in self.wildlife.traps:
                self.sensors.sensor(name)
        self.armed_at = time.monotonic()
        self.outbox.open()
        recorder = self.recorder = self.record.recorder = Recorder(cfg, self.outbox)
        heartbeat_wanted = asyncio.Event()
        has_naps = any(isinstance(rc, NapRuleConfig) for rc in cfg.rules.values())
        commands = CommandRunner(
            record=recorder.record, spawn=self._spawn, heartbeat_now=heartbeat_wanted.set,
            request_path=Path(cfg.updates.request_path),
            nap_ack=self._nap_ack if has_naps else None,
        )  # fmt: skip
        try:
            uplink = self.uplink = Uplink(
                cfg, self.outbox, boot=recorder.boot, on_command=commands,
                usage_path=self.state_dir / "link-usage.json",
                keepalive_path=self.state_dir / "keepalive.json",
            )  # fmt: skip
        except Exception:
            self._close_hardware()
            self.outbox.close()
            raise
        telemetry = self.telemetry = Telemetry(
            TelemetryBuffer(
                device=cfg.device.id, site=cfg.device.site, boot=recorder.boot,
                batch_s=cfg.telemetry.batch_s, max_readings=cfg.telemetry.max_readings,
                clock_synced=recorder.clock_synced,
                # Packed columns need a notifier that reads them: one that acknowledges.
                columns=cfg.uplink.delivery == "cloud_ack",
            ),
            self.outbox,
        )  # fmt: skip
        self.heartbeat = Heartbeat(
            cfg.health, outbox=self.outbox, recorder=recorder, sensors=self.sensors,
            telemetry=telemetry, usage=uplink.usage, started_at=self.started_at,
            wanted=heartbeat_wanted,
        )  # fmt: skip
        wildlife = self.wildlife
        if wildlife is not None:
            for name, deterrent in wildlife.deterrents.items():
                self._spawn(deterrent.run, f"rule {name}")
        self._start_water(loop, telemetry)
        self._start_naps(loop, telemetry)
        if wildlife is not None:
            for name, trap in wildlife.traps.items():
                self._spawn(trap.run, f"trap {name}", sensor=name)
        storage = StorageWatch(
            self.outbox, record=recorder.record, retry_s=cfg.health.storage_retry_s
        )
        spool = SpoolDrain(
            Path(cfg.updates.spool_path),
            # Root's spool is read-only to us: we say how far we got in our own drop folder.
            ack=Path(cfg.updates.request_path).with_name("events.ack"),
            record=recorder.record,
            poll_s=cfg.updates.spool_poll_s,
        )
        # Supervised (a coroutine function): a bug in one of these loops is reported as a
        # sensor_fault and the loop started again, never a silent stop.  The uplink and the
        # heartbeat catch their own failures and retry.
        self._spawn(uplink.run(), "uplink")
        self._spawn(storage.run, "storage watch")
        self._spawn(self.heartbeat.run(), "heartbeat")
        self._spawn(telemetry.run, "telemetry")
        self._spawn(spool.run, "event spool")
        depth = await self.outbox.depth()
        log.info(
            "daemon started: device %s at %s; %d sensor(s), %d actuator(s); "
            "%d event(s) waiting in the outbox",
            cfg.device.id, cfg.device.site, len(cfg.sensors), len(self.actuators), depth,
        )  # fmt: skip
        # The full integrity check after start: READY is not held up by it.
        self._spawn(storage.check(), "outbox integrity check")

    def _start_water(self, loop: asyncio.AbstractEventLoop, telemetry: Telemetry) -> None:
        rules = {n: rc for n, rc in self.config.rules.items() if isinstance(rc, WaterRuleConfig)}
        if not rules:
            return
        from edge.water.pair_watch import PairWatch
        from edge.water.watch import WaterWatch, patience_s

        for rule_name, rc in rules.items():
            sensor = self.config.sensors[rc.sensor]
            assert isinstance(sensor, WATER_SENSORS)
            level = build_level_sensor(
                sensor, i2c_bus=self.i2c_bus, patience_s=patience_s(rc), name=rc.sensor
            )
            watch = self.water[rc.sensor] = WaterWatch(
                rc.sensor, level, rc, record=self.record, health=self.sensors.sensor(rc.sensor),
                telemetry=telemetry,
                anomaly=self._anomaly_watch(
                    rc.sensor, "water", steps_expected=rc.level_steps == "expected"
                ),
            )  # fmt: skip
            self._spawn(watch.run, f"water {rule_name}", sensor=rc.sensor)
            if rc.gate_pin is not None:
                self._watch_gate(loop, rule_name, rc.gate_pin, watch.anomaly)
        for rc in rules.values():
            if rc.same_water_as is not None:
                pair = PairWatch(rc.sensor, rc.same_water_as, rc.disagree_cm,
                                 record=self.record, state_dir=self.state_dir)  # fmt: skip
                self.water[rc.sensor].pairs.append(pair)
                self.water[rc.same_water_as].pairs.append(pair)

    def _watch_gate(
        self, loop: asyncio.AbstractEventLoop, rule: str, pin: int, anomaly: AnomalyWatch | None
    ) -> None:
        """A water rule's gate input: each change of its state tells the level's fault checks
        that the gate or pump was operated (gpiozero's thread, into the loop)."""
        if anomaly is None:
            log.warning("rules.%s.gate_pin: the sensor fault checks are off "
                        "(health.anomaly_models): the gate input is not watched", rule)
            return
        anomaly.gate_input()
        gate = build_gate_input(pin, self.pin_factory)

        def operated() -> None:
            now = time.monotonic()
            loop.call_soon_threadsafe(anomaly.gate_moved, now)

        gate.when_activated = operated
        gate.when_deactivated = operated
        self._inputs.append(gate)

    def _start_naps(self, loop: asyncio.AbstractEventLoop, telemetry: Telemetry) -> None:
        cfg = self.config
        if not any(isinstance(s, MatSensorConfig) for s in cfg.sensors.values()) and not any(
            isinstance(rc, NapRuleConfig) for rc in cfg.rules.values()
        ):
            return
        from edge.nursery.log import nap_log_path
        from edge.nursery.mat_watch import MatWatch
        from edge.nursery.watch import NapWatch

        for name, sensor_cfg in self.config.sensors.items():
            if not isinstance(sensor_cfg, MatSensorConfig):
                continue
            mat = self.mats[name] = MatWatch(
                name, sensor_cfg, health=self.sensors.sensor(name), telemetry=telemetry,
                anomaly=self._anomaly_watch(name, "mat_load"),
            )  # fmt: skip
            self._spawn(mat.run, f"mat {name}", sensor=name)
        for rule_name, rc in self.config.rules.items():
            if not isinstance(rc, NapRuleConfig):
                continue
            nap = self.naps[rule_name] = NapWatch(
                rule_name, rc, self.mats, self.actuators[rc.buzzer], record=self.record,
                log_path=nap_log_path(self.config, rc),
            )  # fmt: skip
            button = build_ack_button(rc.ack_pin, self.pin_factory)
            button.when_pressed = functools.partial(nap.acknowledge_from_thread, loop)
            self._inputs.append(button)
            # Supervised: a nap rule that crashes is reported and started again (its
            # cots' state and the nap log survive; the buzzer keeps what it was doing).
            self._spawn(nap.run, f"nap {rule_name}", sensor=rule_name)

    def _nap_ack(self, command: NapAckCommand) -> bool:
        """``cmd/nap_ack``: written on the sheet by the nap room with the cot, nothing else
        (:meth:`NapWatch.remote_acknowledge`); False: no such cot."""
        return any(
            nap.remote_acknowledge(command.cot, by=command.by, at=command.at.timestamp(),
                                   ident=command.id)
            for nap in self.naps.values()
        )

    def _anomaly_watch(
        self, sensor: str, series: str, *, steps_expected: bool = False
    ) -> AnomalyWatch | None:
        """The series fault rules for one sensor (``steps_expected``: a level a gate or pump
        moves, whose sudden steps are no fault); their state is kept across restarts."""
        if not self.config.health.anomaly_models:
            return None
        watch = AnomalyWatch(
            sensor, series, self.record, state_dir=self.state_dir, steps_expected=steps_expected
        )
        self._spawn(watch.start(), f"anomaly model for {sensor}")
        return watch

    async def close(self) -> None:
        """Stop tasks, switch actuators off, release pins, close the outbox.  Idempotent."""
        tasks, self._tasks = self._tasks, set()
        if self.uplink is not None:
            self.uplink.request_close()
        # Cancel again until each has ended: on Python 3.11 a cancellation that
        # lands inside asyncio.wait_for (aiomqtt uses it) can be swallowed, and a
        # looping task would then run on and hold the stop forever.
        pending = set(tasks)
        rounds = 0
        while pending and rounds < STOP_ROUNDS:
            rounds += 1
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=STOP_ROUND_S)
        if pending:
            log.error("tasks still running after %d cancellations: %s", STOP_ROUNDS,
                      ", ".join(sorted(t.get_name() for t in pending)))  # fmt: skip
        await asyncio.gather(*(tasks - pending), return_exceptions=True)
        if self.uplink is not None:
            self.uplink.usage.save()
        if self.wildlife is not None:
            self.wildlife.close()  # deterrents off first
        for nap in self.naps.values():
            nap.close()
        self._close_hardware()
        self.outbox.close()

    def _close_hardware(self) -> None:
        if self.wildlife is not None:
            self.wildlife.close()
        for dev in [*self.actuators.values(), *self._inputs]:
            try:
                dev.close()
            except Exception:
                log.exception("could not close %r", dev)
        self.actuators.clear()
        self._inputs.clear()

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- tasks ----------------------------------------------------------------------

    def _spawn(
        self,
        coro: Coroutine[Any, Any, Any] | TaskFactory,
        what: str,
        *,
        sensor: str | None = None,
    ) -> asyncio.Task[Any]:
        """Run ``coro`` as a task.  A coroutine *function* is a long-running task: the
        supervisor starts it again whenever it fails and reports it as ``sensor``'s fault."""
        if not asyncio.iscoroutine(coro):
            coro = self.supervisor.supervise(coro, what, sensor=sensor)
        task = asyncio.get_running_loop().create_task(coro, name=what)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s failed: %r", task.get_name(), exc, exc_info=exc)
