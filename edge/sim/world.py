"""A small world model that drives every emulator of a site coherently.

Scenarios can script stimuli one by one; a world instead says what happens in
the field and derives what each sensor would feel:

* **rain** raises one river (or paddy) level along a simple unit hydrograph
  (a linear rise to the peak, then an exponential recession), and every water
  sensor of the site sees that same level (the probe's loop current and the
  ranger's distance are both derived from it);
* an **animal** that visits passes every detector (a motion pulse each, a
  little apart, as it walks along the fence) and, if it takes the bait, walks
  into a trap, whose door then falls (with a bounce);
* the **infant** on each mat lies down, turns and (for the apnea cases) stops
  breathing, through the mat emulator's own body model.

Times are scene seconds from the start; the bench plays them in real time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from edge.config import WATER_SENSORS, MatSensorConfig, PirSensorConfig, TrapSensorConfig

_s = {"forbid_unknown_fields": True, "kw_only": True, "frozen": True}


class Rain(msgspec.Struct, **_s):
    at_s: Annotated[float, Meta(ge=0)]
    rise_cm: Annotated[float, Meta(gt=0)]
    """Peak rise of the level above its base."""
    time_to_peak_s: Annotated[float, Meta(gt=0)] = 2.0
    recession_s: Annotated[float, Meta(gt=0)] = 10.0
    """Time constant of the fall after the peak."""


class Animal(msgspec.Struct, **_s):
    at_s: Annotated[float, Meta(ge=0)]
    kind: str = "wild boar"
    takes_bait: bool = False
    """Walks into the first trap after passing the detectors."""


class InfantStep(msgspec.Struct, **_s):
    at_s: Annotated[float, Meta(ge=0)]
    do: Literal["lie_down", "roll_to", "stop_breathing", "breathe", "leave"]
    posture: str | None = None
    mat: str | None = None
    """Which mat (default: every mat of the site)."""


class WorldSpec(msgspec.Struct, **_s):
    base_level_cm: float = 80.0
    rain: list[Rain] = []
    animals: list[Animal] = []
    infant: list[InfantStep] = []
    tick_s: Annotated[float, Meta(gt=0, le=5)] = 0.2


def level_at(spec: WorldSpec, t: float) -> float:
    """The water level at scene time ``t``: the base plus every rain's hydrograph."""
    level = spec.base_level_cm
    for r in spec.rain:
        dt = t - r.at_s
        if dt <= 0:
            continue
        if dt < r.time_to_peak_s:
            level += r.rise_cm * dt / r.time_to_peak_s
        else:
            level += r.rise_cm * math.exp(-(dt - r.time_to_peak_s) / r.recession_s)
    return level


class World:
    def __init__(self, spec: WorldSpec, config: Any, site: Any = None) -> None:
        self.spec = spec
        self.site = site
        cfg = config
        self.water = [n for n, s in cfg.sensors.items() if isinstance(s, WATER_SENSORS)]
        self.detectors = [n for n, s in cfg.sensors.items() if isinstance(s, PirSensorConfig)]
        self.traps = [n for n, s in cfg.sensors.items() if isinstance(s, TrapSensorConfig)]
        self.mats = [n for n, s in cfg.sensors.items() if isinstance(s, MatSensorConfig)]
        self.log: list[tuple[float, str]] = []
        """What happened in the field, in scene seconds."""
        self.on_say: Callable[[str, float], None] | None = None
        """Told each line of :attr:`log` as it happens (the bench's narration)."""

    def _say(self, t: float, text: str) -> None:
        self.log.append((t, text))
        if self.on_say is not None:
            self.on_say(text, t)

    def initial(self) -> list[tuple[str, str, float]]:
        """(target, action, value) for the emulators before the daemon starts."""
        return [(name, "level_cm", level_at(self.spec, 0.0)) for name in self.water]

    async def run(self, t0: float) -> None:
        """Play the world from ``t0`` (the loop's monotonic time of scene second 0)."""
        tasks = [asyncio.create_task(self._water(t0))]
        tasks += [asyncio.create_task(self._rain(t0, r)) for r in self.spec.rain]
        tasks += [asyncio.create_task(self._animal(t0, a)) for a in self.spec.animals]
        tasks += [asyncio.create_task(self._infant(t0, step)) for step in self.spec.infant]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _at(self, t0: float, t: float) -> None:
        delay = t0 + t - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _water(self, t0: float) -> None:
        if not self.water:
            return
        loop = asyncio.get_running_loop()
        while True:
            level = level_at(self.spec, loop.time() - t0)
            for name in self.water:
                await self.site.apply(name, "level_cm", round(level, 1))
            await asyncio.sleep(self.spec.tick_s)

    async def _rain(self, t0: float, r: Rain) -> None:
        if not self.water:
            return
        await self._at(t0, r.at_s)
        self._say(
            r.at_s,
            f"rain: the water rises {r.rise_cm:g} cm over {r.time_to_peak_s:g} s "
            f"(seen by {', '.join(self.water)})",
        )

    async def _animal(self, t0: float, a: Animal) -> None:
        await self._at(t0, a.at_s)
        self._say(a.at_s, f"a {a.kind} comes out of the forest")
        for i, name in enumerate(self.detectors):
            t = a.at_s + 0.5 * i
            await self._at(t0, t)
            self._say(t, f"the {a.kind} passes {name}")
            await self.site.apply(name, "motion", 0.3)
        if a.takes_bait and self.traps:
            t = a.at_s + 0.5 * len(self.detectors) + 0.5
            await self._at(t0, t)
            self._say(t, f"the {a.kind} walks into {self.traps[0]}")
            await self.site.apply(self.traps[0], "bounce_close")

    async def _infant(self, t0: float, step: InfantStep) -> None:
        await self._at(t0, step.at_s)
        mats = [step.mat] if step.mat else self.mats
        what = step.do.replace("_", " ") + (f" {step.posture}" if step.posture else "")
        self._say(step.at_s, f"the infant on {', '.join(mats)}: {what}")
        for name in mats:
            await self.site.apply(name, step.do, step.posture)
