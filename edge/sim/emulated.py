"""An emulated site: the real daemon on emulated hardware, a private broker, a listener.

Every sensor in the configuration gets the emulator of its kind: gpiozero's
MockFactory pins for the detector and the trap switch, an SMBus-compatible bus
with a register-level ADS1115 for the pressure probe, and devices on real
pseudo-terminals for the ultrasonic ranger and the body-motion mat.  The bench
(``edge bench run``), ``edge check --emulated`` and the tests drive them
through :meth:`EmulatedSite.apply`.

The broker is a private mosquitto started with the site, or, with ``broker=``
(``edge bench run --broker HOST:PORT``), one that is already running elsewhere:
then the site's events reach whatever listens there (a cloud notifier that mails
them), under the site profile's own device id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiomqtt
import msgspec

from edge.config import (
    Config,
    GpioConfig,
    MatSensorConfig,
    NapRuleConfig,
    OutboxConfig,
    PirSensorConfig,
    PressureProbeConfig,
    TrapSensorConfig,
    UltrasonicConfig,
    parse,
)
from edge.devices.actuators import test_pattern
from edge.errors import EdgeError
from edge.event import decode, events_topic
from edge.sim.actions import EmulationError, check_action
from edge.sim.broker import Mosquitto

if TYPE_CHECKING:
    from edge.daemon import Daemon


class SiteSetupError(EdgeError, RuntimeError):
    """The emulated site could not be built (no pseudo-terminal, no broker, ...).

    Everything already started has been stopped again when this is raised."""


@dataclass(frozen=True)
class ExistingBroker:
    """A broker someone else runs (``--broker HOST:PORT``): nothing to start or stop.

    Plain MQTT without credentials, as the private one; the site's daemon and its
    event listener connect to it like any client."""

    host: str
    port: int

    def start(self) -> None:
        """Nothing to start: whether it answers shows when the listener connects."""

    def close(self) -> None:
        """Nothing to stop: it is not ours."""


async def _wait_started(ready: asyncio.Event, task: asyncio.Task[Any], limit_s: float) -> None:
    """Wait until ``task`` sets ``ready``; its error at once if it ends first."""
    waiter = asyncio.ensure_future(ready.wait())
    try:
        async with asyncio.timeout(limit_s):
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not ready.is_set():
        task.result()  # raises what ended it
        raise SiteSetupError("the event listener ended before it subscribed")


class EmulatedSite:
    def __init__(
        self,
        config_text: str,
        workdir: Path,
        *,
        initial: Sequence[Any] = (),
        broker: tuple[str, int] | None = None,
    ) -> None:
        """``initial``: stimuli (``target``, ``action``, ``value``) applied to the
        emulators before the daemon starts, such as the water level at power-on.
        ``broker``: (host, port) of a running broker to use instead of a private
        mosquitto (which is then neither needed nor started)."""
        self.initial = list(initial)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.base = parse(config_text, "site profile")
        self.broker: Mosquitto | ExistingBroker = (
            Mosquitto(workdir=workdir / "broker") if broker is None else ExistingBroker(*broker)
        )
        self.daemon: Daemon | None = None
        self.emulators: dict[str, Any] = {}
        self._events: list[dict[str, Any]] = []
        self._spy_task: asyncio.Task[None] | None = None
        self._spy_ready = asyncio.Event()
        self.i2c_buses: dict[int, Any] = {}
        self._chips: dict[tuple[int, int], Any] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # -- building -----------------------------------------------------------------

    def _emulate(self) -> Config:
        """The configuration with every bus, port and broker pointed at emulators."""
        cfg = self.base
        sensors: dict[str, Any] = {}
        for name, s in cfg.sensors.items():
            if isinstance(s, UltrasonicConfig):
                from edge.sim.serial_device import UltrasonicModel

                model = UltrasonicModel(
                    distance_mm=int(max(s.mount_height_cm - 50, 30) * 10)
                ).start()
                self.emulators[name] = model
                sensors[name] = msgspec.structs.replace(s, port=model.port)
            elif isinstance(s, MatSensorConfig):
                from edge.sim.mat_emulator import MatModel

                mat = MatModel(seed=len(self.emulators) + 1).start()
                self.emulators[name] = mat
                sensors[name] = msgspec.structs.replace(s, port=mat.port)
            elif isinstance(s, PressureProbeConfig):
                from edge.sim.i2c import ADS1115Model, EmulatedI2CBus

                bus = self.i2c_buses.get(s.bus)
                if bus is None:
                    bus = self.i2c_buses[s.bus] = EmulatedI2CBus(s.bus)
                chip = self._chips.get((s.bus, s.address))
                if chip is None:
                    chip = self._chips[(s.bus, s.address)] = ADS1115Model()
                    bus.attach(s.address, chip)
                chip.set_current_ma(s.channel, 4.0, s.shunt_ohm)
                self.emulators[name] = (chip, s)
                sensors[name] = s
            else:
                sensors[name] = s
        uplink = msgspec.structs.replace(
            cfg.uplink,
            host=self.broker.host,
            port=self.broker.port,
            tls=None,
            username=None,
            password=None,
            reconnect_min_s=0.1,
            reconnect_max_s=1.0,
        )
        return msgspec.structs.replace(
            cfg,
            sensors=sensors,
            uplink=uplink,
            outbox=OutboxConfig(path=str(self.workdir / "outbox.sqlite3")),
            gpio=GpioConfig(pin_factory="mock"),
        )

    async def start(self) -> None:
        """Start the broker, the emulators, the listener and the daemon.

        If any step fails, whatever had started is stopped again before the error
        propagates (a pty that cannot be opened must not leave a broker running)."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        from edge.daemon import Daemon
        from edge.sim.broker import BrokerError

        try:
            self.broker.start()
        except BrokerError as exc:
            raise SiteSetupError(f"the private broker would not start: {exc}") from None
        try:
            config = self._emulate()
        except OSError as exc:
            raise SiteSetupError(
                f"could not open a pseudo-terminal for an emulated serial device ({exc}); "
                "is /dev/pts mounted?"
            ) from None
        self._spy_task = asyncio.create_task(self._listen(config))
        where = f"{self.broker.host}:{self.broker.port}"
        try:
            await _wait_started(self._spy_ready, self._spy_task, 10)
        except TimeoutError:
            raise SiteSetupError(
                f"the event listener could not subscribe at {where} within 10 s"
            ) from None
        except aiomqtt.MqttError as exc:
            raise SiteSetupError(f"the broker at {where} did not answer: {exc}") from None
        for stim in self.initial:
            sensor = self.base.sensors.get(stim.target)
            if sensor is None or stim.target not in self.emulators:
                raise EmulationError(
                    f"initial: {stim.target!r} is not an emulated bus or port sensor"
                )
            value = check_action(self.base, stim.target, stim.action, stim.value)
            await self._apply_emulator(stim.target, sensor, self.emulators[stim.target],
                                       stim.action, value)
        self.daemon = Daemon(config, i2c_bus=self.i2c_buses.__getitem__)
        await self.daemon.start()

    async def _listen(self, config: Config) -> None:
        topic = events_topic(config.uplink.topic_prefix, config.device.id)
        async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
            await client.subscribe(topic, qos=1)
            self._spy_ready.set()
            async for msg in client.messages:
                if isinstance(msg.payload, bytes):
                    event = decode(msg.payload)
                    self._events.append(
                        {
                            "t": time.monotonic(),
                            "kind": event.kind,
                            "severity": event.severity,
                            "data": event.data,
                            "id": event.id,
                        }
                    )

    async def close(self) -> None:
        """Stop everything that was started, in reverse order; safe after a partial
        :meth:`start` and idempotent.  The broker is stopped whatever else fails."""
        try:
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            daemon, self.daemon = self.daemon, None
            if daemon is not None:
                await daemon.close()
        finally:
            try:
                spy, self._spy_task = self._spy_task, None
                if spy is not None:
                    spy.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await spy
            finally:
                try:
                    with contextlib.ExitStack() as stack:
                        for emu in self.emulators.values():
                            close = getattr(emu, "close", None)  # an ADS1115 has nothing to close
                            if close is not None:
                                stack.callback(close)
                finally:
                    self.broker.close()

    async def __aenter__(self) -> EmulatedSite:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- observing ------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        return list(self._events)

    def _started(self) -> Daemon:
        if self.daemon is None:
            raise RuntimeError("the site's daemon is not running")
        return self.daemon

    def actuator_states(self) -> dict[str, bool]:
        return {name: bool(a.is_on) for name, a in self._started().actuators.items()}

    # -- stimuli ----------------------------------------------------------------------

    def _background_task(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def apply(self, target: str, action: str, value: Any = None) -> None:
        """One stimulus: ``target`` is a sensor or actuator name from the configuration.

        Returns at once; stimuli that last (a motion, a test pattern) go on in the
        background, so a timeline's next step is not delayed.
        """
        cfg = self.base
        try:
            value = check_action(cfg, target, action, value)
        except EmulationError as exc:
            raise EmulationError(f"{target}: {exc}") from None
        rule = cfg.rules.get(target)
        if isinstance(rule, NapRuleConfig):
            pin = self._started().pin_factory.pin(rule.ack_pin)  # a button to ground, pulled up
            await asyncio.to_thread(pin.drive_low)
            await asyncio.to_thread(pin.drive_high)
            return
        if target in cfg.actuators:
            device = self._started().actuators[target]
            self._background_task(test_pattern(device, cfg.actuators[target]))
            return
        sensor = cfg.sensors[target]
        if isinstance(sensor, PirSensorConfig):
            pin = self._started().pin_factory.pin(sensor.pin)
            if action == "motion":
                on, off = (
                    (pin.drive_high, pin.drive_low) if sensor.active_high
                    else (pin.drive_low, pin.drive_high)
                )

                async def motion() -> None:
                    await asyncio.to_thread(on)
                    await asyncio.sleep(float(value or 0.5))
                    await asyncio.to_thread(off)

                self._background_task(motion())
                return
            raise EmulationError(f"{target}: a pir detector knows the action 'motion'")
        if isinstance(sensor, TrapSensorConfig):
            pin = self._started().pin_factory.pin(sensor.pin)
            closed_high = sensor.closed_level == "high"
            close = pin.drive_high if closed_high else pin.drive_low
            open_ = pin.drive_low if closed_high else pin.drive_high
            if action in ("close", "bounce_close"):
                if action == "bounce_close":
                    for _ in range(6):
                        await asyncio.to_thread(close)
                        await asyncio.to_thread(open_)
                await asyncio.to_thread(close)
                return
            if action == "open":
                await asyncio.to_thread(open_)
                return
            raise EmulationError(f"{target}: a trap knows 'close', 'bounce_close', 'open'")
        emu = self.emulators.get(target)
        await self._apply_emulator(target, sensor, emu, action, value)

    async def _apply_emulator(
        self, target: str, sensor: Any, emu: Any, action: str, value: Any
    ) -> None:
        if isinstance(sensor, PressureProbeConfig):
            chip, s = emu
            if action == "level_cm":
                depth = float(value) - s.offset_cm
                chip.set_current_ma(s.channel, 4.0 + 16.0 * depth / s.range_cm, s.shunt_ohm)
            elif action == "current_ma":
                chip.set_current_ma(s.channel, float(value), s.shunt_ohm)
            elif action == "i2c_errors":
                chip.fail_next(int(value or 3))
            elif action in ("stop_answering", "unplug"):
                chip.stop_answering()
            elif action in ("resume", "plug"):
                chip.resume()
            else:
                raise EmulationError(f"{target}: unknown action {action!r} for a pressure probe")
            return
        if isinstance(sensor, UltrasonicConfig):
            if action == "level_cm":
                emu.set_distance_mm(round((sensor.mount_height_cm - float(value)) * 10))
            elif action == "garbage":
                emu.inject_garbage(int(value or 32))
            elif action == "unplug":
                emu.unplug()
            elif action == "plug":
                emu.plug()
            else:
                raise EmulationError(
                    f"{target}: unknown action {action!r} for an ultrasonic ranger"
                )
            return
        if isinstance(sensor, MatSensorConfig):
            method = getattr(emu, action, None)
            if method is None or action.startswith("_"):
                raise EmulationError(f"{target}: unknown action {action!r} for a mat")
            if value is None:
                method()
            else:
                method(value)
            return
        raise EmulationError(f"{target}: no emulator for this sensor")
