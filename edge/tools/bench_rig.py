"""A device on the bench: the scenario's stimuli through a rig, the real daemon observed.

``edge bench run SCENARIO --device CONFIG`` runs the daemon with the device's own
configuration (its real pins, buses, ports and broker) and delivers the
scenario's stimuli through the bench rig: GPIO outputs of the bench computer
wired to the device's inputs, named in the scenario's ``[rig]`` table::

    [rig.pir_north]          # drives the detector's signal line
    pin = 23
    [rig."level_bridge.power"]   # a relay that cuts the ranger's power: unplug / plug
    pin = 24

``motion`` makes a detector's line active for ``value`` seconds; ``close`` /
``bounce_close`` / ``open`` drive a trap line; ``unplug`` / ``plug`` switch a
``<target>.power`` relay.  Stimuli the rig cannot deliver (a water level, an
infant rolling over) are printed as prompts for the person at the bench, on
time.  Events are observed as the uplink publishes them (PUBACK received);
actuator states are the device's own outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta

from edge.config import Config
from edge.devices.actuators import test_pattern
from edge.devices.factory import PinFactory
from edge.event import decode

if TYPE_CHECKING:
    from gpiozero import DigitalOutputDevice

    from edge.daemon import Daemon
    from edge.link.outbox import Pending


class RigLine(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pin: Annotated[int, Meta(ge=0, le=27)]
    active_high: bool = True


class RigSite:
    def __init__(
        self,
        config: Config,
        rig: dict[str, RigLine],
        *,
        pin_factory: PinFactory = None,
        prompt: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.rig = rig
        self.pin_factory = pin_factory
        self.prompt = prompt
        self.daemon: Daemon | None = None
        self.lines: dict[str, DigitalOutputDevice] = {}
        self._events: list[dict[str, Any]] = []
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Start the daemon and claim the rig's lines; on any failure, release what
        was started before the error propagates."""
        from gpiozero import DigitalOutputDevice

        from edge.daemon import Daemon

        try:
            daemon = self.daemon = Daemon(self.config, pin_factory=self.pin_factory)
            await daemon.start()
            assert daemon.uplink is not None  # started
            daemon.uplink.on_published = self._published
            for name, line in self.rig.items():
                self.lines[name] = DigitalOutputDevice(
                    line.pin, active_high=line.active_high, initial_value=False,
                    pin_factory=daemon.pin_factory,
                )
        except BaseException:
            await self.close()
            raise

    def _published(self, item: Pending) -> None:
        if item.channel != "events":
            return
        event = decode(item.payload)
        self._events.append(
            {"t": time.monotonic(), "kind": event.kind, "severity": event.severity,
             "data": event.data, "id": event.id}
        )

    def events(self) -> list[dict[str, Any]]:
        return list(self._events)

    def _started(self) -> Daemon:
        if self.daemon is None:
            raise RuntimeError("the site's daemon is not running")
        return self.daemon

    def actuator_states(self) -> dict[str, bool]:
        return {name: bool(a.is_on) for name, a in self._started().actuators.items()}

    async def apply(self, target: str, action: str, value: Any = None) -> None:
        if target in self.config.actuators and action == "test":
            device = self._started().actuators[target]
            task = asyncio.create_task(test_pattern(device, self.config.actuators[target]))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        line = self.lines.get(target)
        power = self.lines.get(f"{target}.power")
        if action == "motion" and line is not None:
            async def pulse() -> None:
                line.on()
                await asyncio.sleep(float(value or 0.5))
                line.off()

            task = asyncio.create_task(pulse())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        elif action in ("close", "bounce_close") and line is not None:
            if action == "bounce_close":
                for _ in range(6):
                    line.on()
                    line.off()
            line.on()
        elif action == "open" and line is not None:
            line.off()
        elif action == "unplug" and power is not None:
            power.on()
        elif action == "plug" and power is not None:
            power.off()
        else:
            shown = (
                "" if value is None else f" {value:g}" if isinstance(value, float) else f" {value}"
            )
            self.prompt(f"NOW: {target} {action}{shown}")

    async def close(self) -> None:
        """Release the lines and stop the daemon; safe after a partial start, idempotent."""
        try:
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            lines, self.lines = self.lines, {}
            with contextlib.ExitStack() as stack:
                for line in lines.values():
                    stack.callback(line.close)
        finally:
            daemon, self.daemon = self.daemon, None
            if daemon is not None:
                await daemon.close()

    async def __aenter__(self) -> RigSite:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
