"""The daemon: wires configuration, drivers, rules, outbox and uplink on one asyncio loop.

The order of work on a detection is the architecture's first principle:

1. gpiozero's callback thread: the deterrent rule switches siren and strobe on;
2. the event loop (via ``call_soon_threadsafe``): the event is made and
   committed to the outbox;
3. the uplink publishes it whenever the link allows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec

from drivers.pir import PirDetector
from drivers.siren import Siren
from drivers.strobe import Strobe
from drivers.trap_switch import TrapSwitch
from edge.link import spool
from edge.devices.actuators import build_actuator, test_pattern
from edge.health.anomaly_watch import AnomalyWatch, cadence_warnings
from edge.link.commands import CommandError, HeartbeatCommand, UpdateCommand, parse_command
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
from edge.wildlife.deterrent import DeterrentRule, Outcome
from edge.event import HeartbeatData
from edge.nursery.mat_watch import MatWatch
from edge.link.modem import modem_status
from edge.nursery.watch import NapWatch
from edge.nursery.log import nap_log_path
from edge.link.outbox import Notice, Outbox
from edge.link.recorder import Recorder
from edge.health.sensor import SensorHealth
from edge.health.supervisor import Supervisor, TaskFactory
from edge.link.telemetry import TelemetryBuffer
from edge.timed_wait import wait_set
from edge.wildlife.trap import TrapOutcome, TrapRule
from edge.link.uplink import Uplink
from edge.water.watch import WaterWatch

log = logging.getLogger(__name__)

#: How long a thread may hold the GIL while another waits.  gpiozero's edge
#: callbacks (lgpio's thread on a Pi) need the GIL to switch the siren; with
#: CPython's default of 5 ms a busy event loop could delay the siren by that
#: much.  The daemon owns its process, so it sets this once at start.
GIL_SWITCH_INTERVAL_S = 0.0005
STOP_ROUNDS = 20
"""How often close() cancels a task that has not ended (one cancellation can be lost)."""
STOP_ROUND_S = 0.5


def make_pin_factory(name: str) -> Any:
    """The gpiozero pin factory named in ``[gpio] pin_factory`` (None: gpiozero's default)."""
    if name == "auto":
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    if name == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    if name == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    if name == "pigpio":
        from gpiozero.pins.pigpio import PiGPIOFactory

        return PiGPIOFactory()
    if name == "native":
        from gpiozero.pins.native import NativeFactory

        return NativeFactory()
    raise ValueError(f"unknown pin factory {name!r}")


class Daemon:
    """One device's daemon.  ``await start()``, then ``await close()``."""

    def __init__(
        self,
        config: Config,
        *,
        pin_factory: Any = None,
        i2c_bus: Callable[[int], Any] | None = None,
    ) -> None:
        """``pin_factory``: gpiozero's (default: from ``[gpio]``); ``i2c_bus``: bus
        number -> an SMBus-compatible object (default: the kernel's /dev/i2c-N)."""
        self.config = config
        self.pin_factory = pin_factory
        self.i2c_bus = i2c_bus
        self.outbox = Outbox(
            config.outbox.path,
            max_events=config.outbox.max_events,
            memory_max_events=config.outbox.memory_max_events,
        )
        self.recorder: Recorder | None = None
        self.uplink: Uplink | None = None
        self.telemetry: TelemetryBuffer | None = None
        self._telemetry_due = asyncio.Event()
        self._heartbeat_now = asyncio.Event()
        self.detectors: dict[str, PirDetector] = {}
        self.traps: dict[str, tuple[TrapSwitch, TrapRule]] = {}
        self.water: dict[str, WaterWatch] = {}
        self.mats: dict[str, MatWatch] = {}
        self.naps: dict[str, NapWatch] = {}
        self._buttons: list[Any] = []
        self.health: dict[str, SensorHealth] = {}
        self.actuators: dict[str, Siren | Strobe] = {}
        self.rules: dict[str, DeterrentRule] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.supervisor = Supervisor(self._record)
        """Starts a failed long-running task again, reports it, marks its sensor "fault"."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started_at = 0.0
        self.armed_at = 0.0
        """``time.monotonic()`` when actuators and detectors were ready (before the outbox)."""
        self._started = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """Where small state that outlives a restart is kept: beside the outbox file
        (the anomaly model's water windows, today's link usage)."""
        return Path(self.config.outbox.path).parent

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.started_at = time.monotonic()
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        for warning in cadence_warnings(self.config):
            log.warning("%s", warning)
        if self.pin_factory is None:
            self.pin_factory = make_pin_factory(self.config.gpio.pin_factory)
        # Siren and detectors first: the outbox (however big its backlog, however
        # damaged its file) is opened only once a detection can already act.
        try:
            self._build_hardware()
        except Exception:
            self._close_hardware()
            raise
        self.armed_at = time.monotonic()
        self.outbox.open()
        self.recorder = Recorder(self.config, self.outbox)
        try:
            self.uplink = Uplink(
                self.config,
                self.outbox,
                boot=self.recorder.boot,
                on_command=self._on_command,
                usage_path=self.state_dir / "link-usage.json",
                keepalive_path=self.state_dir / "keepalive.json",
            )
        except Exception:
            self._close_hardware()
            self.outbox.close()
            raise
        self.telemetry = TelemetryBuffer(
            device=self.config.device.id,
            site=self.config.device.site,
            boot=self.recorder.boot,
            batch_s=self.config.telemetry.batch_s,
            max_readings=self.config.telemetry.max_readings,
            clock_synced=self.recorder.clock_synced,
            # Packed columns need a notifier that reads them: one that acknowledges.
            columns=self.config.uplink.delivery == "cloud_ack",
        )
        for name, rule in self.rules.items():
            self._wake[name] = asyncio.Event()
            self._spawn(
                functools.partial(self._rule_timer, rule, self._wake[name]), f"rule {name}"
            )
        for rule_name, rc in self.config.rules.items():
            if not isinstance(rc, WaterRuleConfig):
                continue
            sensor = self.config.sensors[rc.sensor]
            assert isinstance(sensor, WATER_SENSORS)
            self.health[rc.sensor] = SensorHealth(rc.sensor, self._record)
            anomaly = self._anomaly_watch(rc.sensor, "water")
            watch = self.water[rc.sensor] = WaterWatch(
                rc.sensor,
                sensor,
                rc,
                record=self._record,
                health=self.health[rc.sensor],
                add_reading=self.add_reading,
                flush_telemetry=self.flush_telemetry,
                i2c_bus=self.i2c_bus,
                anomaly=anomaly,
            )
            self._spawn(watch.run, f"water {rule_name}", sensor=rc.sensor)
        for name, sensor_cfg in self.config.sensors.items():
            if not isinstance(sensor_cfg, MatSensorConfig):
                continue
            self.health[name] = SensorHealth(name, self._record)
            mat = self.mats[name] = MatWatch(
                name,
                sensor_cfg,
                health=self.health[name],
                add_reading=self.add_reading,
                anomaly=self._anomaly_watch(name, "mat_load"),
            )
            self._spawn(mat.run, f"mat {name}", sensor=name)
        for rule_name, rc in self.config.rules.items():
            if not isinstance(rc, NapRuleConfig):
                continue
            nap = self.naps[rule_name] = NapWatch(
                rule_name, rc, self.mats, self.actuators[rc.buzzer], record=self._record,
                log_path=nap_log_path(self.config, rc),
            )
            self._buttons.append(self._ack_button(rc.ack_pin, nap))
            # Supervised: a nap rule that crashes is reported and started again (its
            # cots' state and the nap log survive; the buzzer keeps what it was doing).
            self._spawn(nap.run, f"nap {rule_name}", sensor=rule_name)
        for name, (_, trap_rule) in self.traps.items():
            self._wake[f"trap:{name}"] = asyncio.Event()
            self._spawn(
                functools.partial(self._trap_timer, name, trap_rule), f"trap {name}", sensor=name
            )
        self._spawn(self.uplink.run(), "uplink")
        self._spawn(self._watch_storage(), "storage watch")
        self._spawn(self._heartbeats(), "heartbeat")
        self._spawn(self._telemetry_flusher(), "telemetry")
        self._spawn(self._drain_spool(), "event spool")
        self._spawn(self._check_outbox(), "outbox integrity check")
        depth = await self.outbox.depth()
        log.info(
            "daemon started: device %s at %s; %d sensor(s), %d actuator(s); "
            "%d event(s) waiting in the outbox",
            self.config.device.id,
            self.config.device.site,
            len(self.config.sensors),
            len(self.actuators),
            depth,
        )
        self._started.set()

    def _build_hardware(self) -> None:
        cfg = self.config
        for name, act in cfg.actuators.items():
            self.actuators[name] = build_actuator(act, self.pin_factory)
        for name, r in cfg.rules.items():
            if not isinstance(r, DeterrentRuleConfig):
                continue
            self.rules[name] = DeterrentRule(
                name,
                [(a, self.actuators[a]) for a in r.actuators],
                on_s=r.on_s,
                max_on_s=r.max_on_s,
                cooldown_s=r.cooldown_s,
            )
        for name, s in cfg.sensors.items():
            if isinstance(s, TrapSensorConfig):
                self._build_trap(name, s)
                continue
            if not isinstance(s, PirSensorConfig):
                continue
            rules = [self.rules[r] for r in self._deterrents_of(name)]
            self.detectors[name] = PirDetector(
                s.pin,
                pin_factory=self.pin_factory,
                pull=s.pull,
                active_high=s.active_high,
                warmup_s=s.warmup_s,
                on_detect=self._detection_handler(name, rules),
            )
            if s.warmup_s > 0:
                log.info("detector %s warming up for %.0f s; detections ignored", name, s.warmup_s)

    def _anomaly_watch(self, sensor: str, series: str) -> AnomalyWatch | None:
        if not self.config.health.anomaly_models:
            return None
        # a water window (10 h 40 min) is kept across restarts
        watch = AnomalyWatch(sensor, series, self._record, state_dir=self.state_dir)
        self._spawn(watch.start(), f"anomaly model for {sensor}")
        return watch

    def _ack_button(self, pin: int, nap: NapWatch) -> Any:
        from gpiozero import Button

        loop = self._loop
        assert loop is not None
        button = Button(pin, pull_up=True, bounce_time=0.05, pin_factory=self.pin_factory)
        button.when_pressed = lambda: nap.acknowledge_from_thread(loop)
        return button

    def _deterrents_of(self, sensor: str) -> list[str]:
        return [
            r
            for r, rc in self.config.rules.items()
            if isinstance(rc, DeterrentRuleConfig) and sensor in rc.detectors
        ]

    def _build_trap(self, name: str, cfg: TrapSensorConfig) -> None:
        loop = self._loop
        assert loop is not None
        switch = TrapSwitch(
            cfg.pin, pin_factory=self.pin_factory, closed_level=cfg.closed_level, pull=cfg.pull
        )
        rule = TrapRule(
            name,
            debounce_s=cfg.debounce_s,
            reminder_s=cfg.reminder_s,
            armed_report_s=cfg.armed_report_s,
            closed_now=switch.closed,
            now=time.monotonic(),
        )

        def on_edge(closed: bool, mono: float) -> None:  # gpiozero's thread
            rule.edge(closed, mono)
            loop.call_soon_threadsafe(self._wake[f"trap:{name}"].set)

        switch.on_edge = on_edge
        self.traps[name] = (switch, rule)
        self.health[name] = SensorHealth(name, self._record)

    async def _record(self, kind: str, severity: str, data: dict[str, Any]) -> Any:
        assert self.recorder is not None
        return await self.recorder.record(kind, severity, self._placed(data))  # type: ignore[arg-type]

    def _placed(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with the place's own name (``device.description``) for the e-mail."""
        place = " ".join(self.config.device.description.split())[:80]
        if not place or "place" in data:
            return data
        return {**data, "place": place}

    async def _trap_timer(self, name: str, rule: TrapRule) -> None:
        wake = self._wake[f"trap:{name}"]
        while True:
            wake.clear()
            for outcome in rule.tick(time.monotonic()):
                await self._trap_event(name, outcome)
            delay = max(0.0, rule.next_deadline() - time.monotonic())
            await wait_set(wake, delay)

    async def _trap_event(self, name: str, outcome: TrapOutcome) -> None:
        data: dict[str, Any] = {"sensor": name}
        if outcome.closed_since is not None:
            wall = time.time() - (time.monotonic() - outcome.closed_since)
            data["closed_since"] = dt.datetime.fromtimestamp(wall, dt.UTC).isoformat().replace(
                "+00:00", "Z"
            )
        if outcome.closed_s is not None:
            data["closed_s"] = round(outcome.closed_s, 1)
        if outcome.kind == "trap_triggered":
            data["reminder"] = outcome.reminder
            log.info("trap %s %s", name, "still closed" if outcome.reminder else "CLOSED")
            await self._record("trap_triggered", "alarm", data)
        elif outcome.kind == "trap_reset":
            log.info("trap %s reopened", name)
            await self._record("trap_reset", "info", data)
        else:
            await self._record("trap_armed", "info", data)

    # -- actuators' test patterns (the installer's self-test) ----------------------

    async def test_actuator(self, name: str) -> None:
        """Run an actuator's test pattern: siren 1 s, strobe 3 s flashing, buzzer 3 beeps."""
        await test_pattern(self.actuators[name], self.config.actuators[name])

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
        for rule in self.rules.values():
            rule.stop()
        for nap in self.naps.values():
            nap.close()
        self._close_hardware()
        self.outbox.close()

    def _close_hardware(self) -> None:
        devices: list[Any] = [*self.detectors.values(), *self.actuators.values()]
        devices += [switch for switch, _ in self.traps.values()]
        devices += self._buttons
        for dev in devices:
            try:
                dev.close()
            except Exception:  # noqa: BLE001 - closing must go on for the others
                log.exception("could not close %r", dev)
        self.detectors.clear()
        self.actuators.clear()
        self.traps.clear()
        self._buttons.clear()

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the detection path --------------------------------------------------

    def _detection_handler(self, sensor: str, rules: list[DeterrentRule]) -> Any:
        loop = self._loop
        assert loop is not None

        def on_detect(mono: float) -> None:
            # gpiozero's thread: actuators first, nothing that can block.
            wall = time.time()
            outcomes = [(rule, rule.detected(mono)) for rule in rules]
            loop.call_soon_threadsafe(self._after_detection, sensor, outcomes, wall)

        return on_detect

    def _after_detection(
        self, sensor: str, outcomes: list[tuple[DeterrentRule, Outcome]], wall: float
    ) -> None:
        assert self.recorder is not None
        for rule, outcome in outcomes:
            log.info("detection by %s: %s (rule %s)", sensor, outcome.value, rule.name)
            self._wake[rule.name].set()
            if outcome in (Outcome.SOUNDED, Outcome.RESTING):
                ran = [a for _, a in rule.actuators] if outcome is Outcome.SOUNDED else []
                data = {
                    "sensor": sensor,
                    "rule": rule.name,
                    "deterrent": outcome.value,
                    "siren": any(isinstance(a, Siren) for a in ran),
                    "strobe": any(isinstance(a, Strobe) for a in ran),
                }
                self._spawn(
                    self.recorder.record("animal_detected", "alarm", self._placed(data), at=wall),
                    f"record detection by {sensor}",
                )

    # -- health ---------------------------------------------------------------

    async def _watch_storage(self) -> None:
        """Report each of the outbox's notices once; retry a failing disk until it works.

        The outbox queues its notices (a fault, its recovery, quarantined rows, a
        salvaged file, a set-aside ``-wal``, evictions, rows lost from memory), so
        none is missed however briefly the trouble lasted.
        """
        outbox = self.outbox
        while True:
            outbox.notice_ready.clear()
            for notice in outbox.take_notices():
                await self._report_notice(notice)
            if outbox.fault is None:
                await outbox.notice_ready.wait()
                continue
            if await outbox.retry():
                continue  # its recovery notice is waiting
            await wait_set(outbox.notice_ready, self.config.health.storage_retry_s)

    async def _report_notice(self, notice: Notice) -> None:
        assert self.recorder is not None
        if notice.kind == "recovered":
            await self.recorder.record(
                "sensor_recovered",
                "info",
                {
                    "sensor": "storage",
                    "down_s": notice.data.get("down_s"),
                    "lost_in_memory": notice.data.get("lost_in_memory", {}),
                },
            )
            return
        sensor = "storage" if notice.kind in ("fault", "memory_full") else "outbox"
        fault = {
            "fault": notice.code,
            "memory_full": "memory_full",
            "corrupt": "corrupt",
            "quarantined": "quarantined",
            "wal": f"wal_{notice.code}",
            "empty_file": "empty_file",
            "evicting": "full",
        }.get(notice.kind, notice.kind)
        data: dict[str, Any] = {**notice.data, "sensor": sensor, "fault": fault}
        data["message"] = notice.message
        await self.recorder.record("sensor_fault", "warning", data)

    async def _check_outbox(self) -> None:
        """The outbox's full integrity check, after start (READY is not held up by it)."""
        await self._started.wait()
        result = await self.outbox.check_integrity()
        if result != "ok":
            log.warning("outbox integrity check: %s", result)

    def sensor_health(self) -> dict[str, str]:
        states = {
            name: "warming_up" if det.warming_up else "ok" for name, det in self.detectors.items()
        }
        states.update({name: h.state for name, h in self.health.items()})
        states.update(self.supervisor.sensor_states())  # a failed task: "fault" until recovered
        return states

    async def heartbeat(self) -> None:
        """Record one heartbeat now: the device's health for the cloud."""
        assert self.recorder is not None and self.uplink is not None
        stats = await self.outbox.stats()
        link = await modem_status() if self.config.health.modem == "auto" else None
        now = time.time()
        data = HeartbeatData(
            interval_s=self.config.health.heartbeat_s,
            uptime_s=round(time.monotonic() - self.started_at, 1),
            outbox_depth=stats.depth,
            oldest_undelivered_s=None
            if stats.oldest_created is None
            else round(now - stats.oldest_created, 1),
            evicted=stats.evicted,
            sensors=self.sensor_health(),
            bytes_sent_today=self.uplink.usage.today,
            link=link,
        )
        payload = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
        event = self.recorder.make("heartbeat", "info", payload)
        if await self.outbox.put(event) and stats.evicted:
            # Reported in a durable heartbeat: stop counting these.
            await self.outbox.forget_evictions(stats.evicted)
        if self.telemetry is not None and len(self.telemetry):
            # Readings held leave with the heartbeat (never later than batch_s): one
            # flight over the link, and one acknowledgement from the cloud for both.
            await self.flush_telemetry()

    async def _heartbeats(self) -> None:
        period = self.config.health.heartbeat_s
        while True:
            try:
                await self.heartbeat()
            except Exception:  # noqa: BLE001 - the next one may work
                log.exception("heartbeat failed")
            self._heartbeat_now.clear()
            await wait_set(self._heartbeat_now, period)

    # -- telemetry ------------------------------------------------------------

    def add_reading(self, name: str, value: float, at: float | None = None) -> None:
        """Queue one telemetry reading (``"<sensor>.<quantity>"``); sent in the next batch."""
        assert self.telemetry is not None
        if self.telemetry.add(name, value, at) or len(self.telemetry) == 1:
            self._telemetry_due.set()

    async def flush_telemetry(self) -> None:
        assert self.telemetry is not None
        row = self.telemetry.take()
        if row is not None:
            await self.outbox.put_rows([row])

    async def _telemetry_flusher(self) -> None:
        assert self.telemetry is not None
        while True:
            self._telemetry_due.clear()
            due = self.telemetry.due_at()
            if due is None:
                await self._telemetry_due.wait()
                continue
            full = len(self.telemetry) >= self.telemetry.max_readings
            if not full and due > time.time():
                await wait_set(self._telemetry_due, due - time.time())
                continue
            await self.flush_telemetry()

    # -- commands -------------------------------------------------------------

    def _on_command(self, name: str, payload: bytes) -> None:
        assert self.recorder is not None
        try:
            command = parse_command(name, payload)
        except CommandError as exc:
            log.warning("command %s rejected: %s", name[:64], exc)
            self._spawn(
                self.recorder.record(
                    "command_rejected", "warning", {"command": name[:64], "reason": str(exc)}
                ),
                "record rejected command",
            )
            return
        log.info("command %s accepted", name)
        if isinstance(command, HeartbeatCommand):
            self._heartbeat_now.set()
        elif isinstance(command, UpdateCommand):
            self._spawn(self._request_update(command), "update request")

    async def _request_update(self, command: UpdateCommand) -> None:
        """Hand ``cmd/update`` to the updater: the request file, written atomically."""
        path = Path(self.config.updates.request_path)
        payload = msgspec.json.encode(command)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            log.error("cannot write the update request %s: %s", path, exc)
            return
        log.info("update to %s requested (%s): handed to the updater", command.version, path)

    async def _drain_spool(self) -> None:
        """Send the events the updater left in the spool (docs/ota.md)."""
        path = Path(self.config.updates.spool_path)
        # Root's spool is read-only to us: we say how far we got in our own drop folder.
        ack = Path(self.config.updates.request_path).with_name("events.ack")
        while True:
            try:
                lines, taken = await asyncio.to_thread(spool.read, path, ack=ack)
                for line in lines:
                    await self._spooled_event(line)
                await asyncio.to_thread(spool.remove_prefix, path, taken, ack=ack)
            except OSError as exc:
                log.warning("event spool %s unreadable: %s", path, exc)
            await asyncio.sleep(self.config.updates.spool_poll_s)

    async def _spooled_event(self, line: dict[str, Any]) -> None:
        assert self.recorder is not None
        severity = line.get("severity")
        kind = line.get("kind")
        if severity not in ("alarm", "warning", "info") or not isinstance(kind, str) or not kind:
            log.warning("event spool: dropped a line without a valid kind or severity")
            return
        raw = line.get("data")
        data: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
        data["source"] = str(line.get("source", "spool"))
        at = None
        ts = line.get("ts")
        if isinstance(ts, str):
            try:
                at = dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
            except ValueError:
                at = None
        event_id = line.get("id") if isinstance(line.get("id"), str) else None
        await self.recorder.record(kind, severity, data, at=at, event_id=event_id)

    # -- rules ----------------------------------------------------------------

    async def _rule_timer(self, rule: DeterrentRule, wake: asyncio.Event) -> None:
        while True:
            wake.clear()
            deadline = rule.tick()
            if deadline is None:
                await wake.wait()
                continue
            await wait_set(wake, max(0.0, deadline - time.monotonic()))

    # -- tasks ---------------------------------------------------------------

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
