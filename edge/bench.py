"""``edge bench run``: scripted scenarios against the emulated site (or a bench rig).

A scenario is a TOML file: a device configuration (a bundled site profile or a
file), a timeline of stimuli (the boar walks past, the trap closes, the river
rises, the infant rolls over, a cable is unplugged) and the outcomes expected
with their tolerances (actuator states at given times, events published, their
kinds, data and order).  The runner starts a private mosquitto, the daemon and
the emulators, plays the timeline, checks every expectation, prints a pass/fail
report and writes it as JSON.

Scenarios shipped with the package live in ``edge/sim/scenarios``; the test
suite runs every one of them.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

SCENARIOS = Path(__file__).parent / "sim" / "scenarios"
SITES = Path(__file__).parent / "sim" / "sites"


class ScenarioError(ValueError):
    """The scenario file is invalid; the message names the key."""


_s = {"forbid_unknown_fields": True, "kw_only": True, "frozen": True}


class Stimulus(msgspec.Struct, **_s):
    at_s: Annotated[float, Meta(ge=0)]
    target: str
    """A sensor or actuator name from the configuration."""
    action: str
    value: float | str | None = None
    say: str = ""


class Expect(msgspec.Struct, **_s):
    after_s: Annotated[float, Meta(ge=0)] = 0.0
    """The expectation's window starts this long after the scenario starts ..."""
    within_s: Annotated[float, Meta(gt=0)] = 5.0
    """... and lasts this long."""
    actuator: str | None = None
    state: Literal["on", "off"] | None = None
    event: str | None = None
    data: dict[str, Any] = {}
    count: int | None = None
    """Exactly this many matching events in the window (default: at least one)."""
    absent: bool = False
    """No matching event in the window."""


class Scenario(msgspec.Struct, **_s):
    name: str
    site: str
    """A bundled site profile (``edge/sim/sites/NAME.toml``) or a path to a config file."""
    duration_s: Annotated[float, Meta(gt=0, le=3600)]
    description: str = ""
    initial: list[Stimulus] = []
    """Emulator states before the daemon starts (e.g. the water level at power-on)."""
    stimulus: list[Stimulus] = []
    expect: list[Expect] = []
    order: list[str] = []
    """Event kinds that must first appear in this order."""
    world: Any = None
    """A world model (``edge.sim.world.WorldSpec``) that drives the emulators coherently."""
    rig: dict[str, Any] = {}
    """For a device on the bench (``--device``): ``[rig.NAME] pin = N`` lines (see edge.bench_rig)."""


def load_scenario(path: Path) -> Scenario:
    from edge.sim.world import WorldSpec

    try:
        scenario = msgspec.toml.decode(path.read_bytes(), type=Scenario)
        if scenario.world is not None:
            world = msgspec.convert(scenario.world, WorldSpec)
            scenario = msgspec.structs.replace(scenario, world=world)
        if scenario.rig:
            from edge.bench_rig import RigLine

            rig = {k: msgspec.convert(v, RigLine) for k, v in scenario.rig.items()}
            scenario = msgspec.structs.replace(scenario, rig=rig)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    for i, e in enumerate(scenario.expect):
        if (e.actuator is None) == (e.event is None):
            raise ScenarioError(f"{path}: expect[{i}]: give either actuator or event")
        if e.actuator is not None and e.state is None:
            raise ScenarioError(f"{path}: expect[{i}].state: required with actuator")
    return scenario


def find_scenario(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = SCENARIOS / f"{name_or_path.removesuffix('.toml')}.toml"
    if bundled.exists():
        return bundled
    raise ScenarioError(
        f"no scenario {name_or_path!r} (bundled: "
        f"{', '.join(sorted(p.stem for p in SCENARIOS.glob('*.toml')))})"
    )


@dataclass
class Check:
    what: str
    passed: bool
    detail: str


@dataclass
class Report:
    scenario: str
    passed: bool
    checks: list[Check] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, default=str)

    def render(self) -> str:
        lines = [f"scenario: {self.scenario}"]
        for c in self.checks:
            lines.append(f"  [{'PASS' if c.passed else 'FAIL'}] {c.what}: {c.detail}")
        verdict = "PASS" if self.passed else "FAIL"
        failed = sum(not c.passed for c in self.checks)
        lines.append(
            f"{verdict}: {len(self.checks) - failed}/{len(self.checks)} checks passed "
            f"in {self.duration_s:.1f} s"
        )
        return "\n".join(lines)


def _matches(event: dict[str, Any], expect: Expect) -> bool:
    if event["kind"] != expect.event:
        return False
    data = event.get("data", {})
    return all(data.get(k) == v for k, v in expect.data.items())


async def run_scenario(
    scenario: Scenario,
    workdir: Path,
    *,
    device: Any = None,
    pin_factory: Any = None,
    prompt: Any = print,
) -> Report:
    """Play ``scenario`` against the emulated site built in ``workdir``, or, with
    ``device`` (a validated Config), against that device on the bench through the
    scenario's rig (:mod:`edge.bench_rig`)."""
    if device is not None:
        if scenario.world is not None or scenario.initial:
            raise ScenarioError(
                f"{scenario.name}: world and initial need the emulated site, not a device"
            )
        from edge.bench_rig import RigSite

        site = RigSite(device, scenario.rig, pin_factory=pin_factory, prompt=prompt)
        return await _play(scenario, site, None, time.monotonic())
    from edge.sim.emulated import EmulatedSite

    from edge.config import ConfigError, parse

    t_start = time.monotonic()
    site_config = _site_config(scenario.site)
    try:
        config = parse(site_config, f"site {scenario.site}")
    except ConfigError as exc:
        raise ScenarioError(str(exc)) from None
    initial = list(scenario.initial)
    world = None
    if scenario.world is not None:
        from edge.sim.world import World

        world = World(scenario.world, config)
        initial += [Stimulus(at_s=0, target=t, action=a, value=v) for t, a, v in world.initial()]
    return await _play(
        scenario, EmulatedSite(site_config, workdir, initial=initial), world, t_start
    )


async def _play(scenario: Scenario, site: Any, world: Any, t_start: float) -> Report:
    report = Report(scenario=scenario.name, passed=False)
    actuator_log: dict[str, list[tuple[float, bool]]] = {}
    async with site:
        t0 = time.monotonic()
        pending = sorted(scenario.stimulus, key=lambda s: s.at_s)
        watch = asyncio.create_task(_watch_actuators(site, t0, actuator_log))
        world_task = None
        if world is not None:
            world.site = site
            world_task = asyncio.create_task(world.run(asyncio.get_running_loop().time()))
        try:
            for stim in pending:
                delay = t0 + stim.at_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await site.apply(stim.target, stim.action, stim.value)
            end = t0 + scenario.duration_s
            while time.monotonic() < end:
                await asyncio.sleep(0.05)
        finally:
            watch.cancel()
            if world_task is not None:
                world_task.cancel()
                await asyncio.gather(world_task, return_exceptions=True)
        events = [dict(e, t=round(e["t"] - t0, 3)) for e in site.events()]
    report.events = events
    for i, e in enumerate(scenario.expect):
        lo, hi = e.after_s, e.after_s + e.within_s
        if e.actuator is not None:
            report.checks.append(_check_actuator(i, e, actuator_log.get(e.actuator, []), lo, hi))
            continue
        hits = [ev for ev in events if _matches(ev, e) and lo <= ev["t"] <= hi]
        what = f"event {e.event}{' ' + json.dumps(e.data, ensure_ascii=False) if e.data else ''}"
        if e.absent:
            ok, detail = not hits, f"none in [{lo:g}, {hi:g}] s" if not hits else f"{len(hits)} seen"
        elif e.count is not None:
            ok = len(hits) == e.count
            detail = f"{len(hits)} in [{lo:g}, {hi:g}] s, expected {e.count}"
        else:
            ok = bool(hits)
            detail = f"first at {hits[0]['t']:.3f} s" if hits else f"none in [{lo:g}, {hi:g}] s"
        report.checks.append(Check(what, ok, detail))
    if scenario.order:
        firsts: list[tuple[float, str]] = []
        for kind in scenario.order:
            t = next((ev["t"] for ev in events if ev["kind"] == kind), None)
            if t is not None:
                firsts.append((t, kind))
        seen = [k for _, k in sorted(firsts)]
        ok = seen == scenario.order
        report.checks.append(Check("order", ok, " -> ".join(seen) or "no events"))
    report.passed = all(c.passed for c in report.checks)
    report.duration_s = time.monotonic() - t_start
    return report


def _check_actuator(
    i: int, e: Expect, log: list[tuple[float, bool]], lo: float, hi: float
) -> Check:
    want = e.state == "on"
    # The state at `lo` and every change in the window: the expectation holds if
    # the actuator is in the wanted state at some moment in the window.
    state_at_lo = False
    for t, on in log:
        if t <= lo:
            state_at_lo = on
    ok = state_at_lo == want or any(lo <= t <= hi and on == want for t, on in log)
    first = next((t for t, on in log if lo <= t <= hi and on == want), None)
    detail = (
        f"{e.state} at {first:.3f} s"
        if first is not None
        else (f"{e.state} already at {lo:g} s" if ok else f"not {e.state} in [{lo:g}, {hi:g}] s")
    )
    return Check(f"actuator {e.actuator} {e.state}", ok, detail)


async def _watch_actuators(site: Any, t0: float, log: dict[str, list[tuple[float, bool]]]) -> None:
    last: dict[str, bool] = {}
    while True:
        for name, on in site.actuator_states().items():
            if last.get(name) != on:
                last[name] = on
                log.setdefault(name, []).append((time.monotonic() - t0, on))
        await asyncio.sleep(0.005)


def _site_config(site: str) -> str:
    path = Path(site)
    if not path.exists():
        path = SITES / f"{site.removesuffix('.toml')}.toml"
    if not path.exists():
        raise ScenarioError(
            f"no site {site!r} (bundled: {', '.join(sorted(p.stem for p in SITES.glob('*.toml')))})"
        )
    return path.read_text(encoding="utf-8")
