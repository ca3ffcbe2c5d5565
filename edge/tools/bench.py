"""``edge bench run``: scripted scenarios against the emulated site (or a bench rig).

A scenario is a TOML file: a device configuration (a bundled site profile or a
file), a timeline of stimuli (the boar walks past, the trap closes, the river
rises, the infant rolls over, a cable is unplugged) and the outcomes expected
with their tolerances (actuator states at given times, events published, their
kinds, data and order).  The runner starts a private mosquitto, the daemon and
the emulators, plays the timeline, checks every expectation, prints a pass/fail
report and writes it as JSON.  With ``--broker HOST:PORT`` it uses a broker
that is already running instead of a private one, so the scenario's events
reach the cloud notifier listening there and are mailed (the virtual Pi runs a
scenario this way against the host's broker).

A scenario is checked whole before anything starts, as a configuration is
(:func:`load_scenario`): its keys and types by the structs below, then every
name in it against the site it runs on (targets, actions and their values,
actuators, event kinds, cots, rig lines).  The first problem is one line naming
the file and the key.

While it runs, a :class:`Console` shows the scenario's clock and what is
happening: each stimulus with its narration, what the site answers (events,
actuators switching) and the daemon's warnings, each distinct one once (their
repeats are counted and listed at the end).

Scenarios shipped with the package live in ``edge/sim/scenarios``; the test
suite runs every one of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TextIO

import msgspec
from msgspec import Meta

from edge.config import Config, ConfigError, MatSensorConfig, explain_validation, parse
from edge.devices.factory import PinFactory
from edge.errors import EdgeError
from edge.event import KINDS
from edge.sim.actions import EmulationError, check_action, target_kind
from edge.sim.world import WorldSpec
from edge.tools.bench_rig import RigLine

if TYPE_CHECKING:
    from edge.sim.emulated import EmulatedSite
    from edge.sim.world import World
    from edge.tools.bench_rig import RigSite

SCENARIOS = Path(__file__).parents[1] / "sim" / "scenarios"
SITES = Path(__file__).parents[1] / "sim" / "sites"


class ScenarioError(EdgeError, ValueError):
    """The scenario file is invalid; the message names the file and the key."""


_s = {"forbid_unknown_fields": True, "kw_only": True, "frozen": True}


class Stimulus(msgspec.Struct, **_s):
    at_s: Annotated[float, Meta(ge=0)]
    target: str
    """A sensor, actuator or nap rule name from the configuration."""
    action: str
    """What the target is made to do (``edge.sim.actions.ACTIONS`` by the target's type)."""
    value: float | str | None = None
    say: str = ""
    """Narration: what this step means, shown while the scenario runs."""


class Expect(msgspec.Struct, **_s):
    after_s: Annotated[float, Meta(ge=0)] = 0.0
    """The expectation's window starts this long after the scenario starts ..."""
    within_s: Annotated[float, Meta(gt=0)] = 5.0
    """... and lasts this long."""
    actuator: str | None = None
    state: Literal["on", "off"] | None = None
    event: str | None = None
    data: dict[str, Any] = {}
    count: Annotated[int, Meta(ge=0)] | None = None
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
    world: WorldSpec | None = None
    """A world model that drives the emulators coherently."""
    rig: dict[str, RigLine] = {}
    """For a device on the bench (``--device``): ``[rig.NAME] pin = N`` lines
    (see :mod:`edge.tools.bench_rig`)."""


# -- loading and checking ------------------------------------------------------------------


def load_scenario(path: Path, device: Config | None = None) -> Scenario:
    """Read and check a scenario file against its site and, with ``device`` (the
    configuration of a device on the bench), its rig and actuators against that
    device.  :class:`ScenarioError` ``FILE: KEY: what is wrong``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        scenario = msgspec.toml.decode(raw, type=Scenario)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{path}: {explain_validation(exc, '')}") from None
    except msgspec.DecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    try:
        check_scenario(scenario, site_config(scenario.site), device)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return scenario


def site_config(site: str) -> Config:
    """The validated configuration of a scenario's site; :class:`ScenarioError` naming ``site``."""
    text = _site_text(site)
    try:
        return parse(text, f"site {site}")
    except ConfigError as exc:
        raise ScenarioError(str(exc)) from None


def check_scenario(scenario: Scenario, config: Config, device: Config | None = None) -> None:
    """Every name in ``scenario`` against its site's ``config``; :class:`ScenarioError`
    ``KEY: problem``.

    What the structs cannot say: that a target exists and knows the action, that
    a value suits the action, that an actuator, an event kind, a cot or a rig line
    exists, and that every step and window starts before the scenario ends.  With
    ``device``, the rig's lines must name the device's sensors and the expected
    actuators must be the device's (a stimulus the device lacks is prompted for).
    """
    end = scenario.duration_s
    for section, steps in (("initial", scenario.initial), ("stimulus", scenario.stimulus)):
        for i, step in enumerate(steps):
            key = f"{section}[{i}]"
            try:
                check_action(config, step.target, step.action, step.value)
            except EmulationError as exc:
                raise ScenarioError(f"{key}.{exc}") from None
            if section == "initial" and target_kind(config, step.target) not in (
                "pressure_probe", "ultrasonic", "mat",
            ):
                raise ScenarioError(
                    f"{key}.target: {step.target!r} is not an emulated bus or port sensor "
                    "(a pressure probe, an ultrasonic ranger or a mat)"
                )
            if step.at_s >= end and section == "stimulus":
                raise ScenarioError(
                    f"{key}.at_s: {step.at_s:g} s is not before the end (duration_s = {end:g})"
                )
    cots = {s.cot: n for n, s in config.sensors.items() if isinstance(s, MatSensorConfig)}
    for i, e in enumerate(scenario.expect):
        key = f"expect[{i}]"
        if (e.actuator is None) == (e.event is None):
            raise ScenarioError(f"{key}: give either actuator or event")
        if e.actuator is not None:
            if e.state is None:
                raise ScenarioError(f"{key}.state: required with actuator")
            if e.actuator not in config.actuators:
                raise ScenarioError(
                    f"{key}.actuator: no actuator named {e.actuator!r} "
                    f"(this site has: {', '.join(sorted(config.actuators)) or 'none'})"
                )
        if e.event is not None:
            _check_kind(f"{key}.event", e.event)
            sensor = e.data.get("sensor")
            if sensor is not None and sensor not in config.sensors:
                raise ScenarioError(
                    f"{key}.data.sensor: no sensor named {sensor!r} "
                    f"(this site has: {', '.join(sorted(config.sensors))})"
                )
            cot = e.data.get("cot")
            if cot is not None and cot not in cots:
                raise ScenarioError(
                    f"{key}.data.cot: no mat is cot {cot!r} "
                    f"(this site's cots: {', '.join(sorted(cots)) or 'none'})"
                )
        if e.after_s >= end:
            raise ScenarioError(
                f"{key}.after_s: the window starts at {e.after_s:g} s, not before the end "
                f"(duration_s = {end:g})"
            )
    for i, kind in enumerate(scenario.order):
        _check_kind(f"order[{i}]", kind)
    if scenario.world is not None:
        for i, infant in enumerate(scenario.world.infant):
            key = f"world.infant[{i}]"
            if infant.mat is not None and infant.mat not in config.sensors:
                raise ScenarioError(f"{key}.mat: no mat named {infant.mat!r}")
            if infant.mat is not None and target_kind(config, infant.mat) != "mat":
                raise ScenarioError(f"{key}.mat: sensors.{infant.mat} is not a mat")
            mats = [n for n, s in config.sensors.items() if isinstance(s, MatSensorConfig)]
            if infant.mat is None and not mats:
                raise ScenarioError(f"{key}: this site has no mat for the infant to lie on")
            try:
                check_action(config, infant.mat or mats[0], infant.do, infant.posture)
            except EmulationError as exc:
                raise ScenarioError(
                    f"{key}.posture: {str(exc).removeprefix('value: ')}"
                ) from None
    wired = device if device is not None else config
    for name in scenario.rig:
        sensor = name.removesuffix(".power")
        if sensor not in wired.sensors:
            raise ScenarioError(
                f"rig.{name}: no sensor named {sensor!r} for a rig line to drive "
                f"(the {'device' if device is not None else 'site'} has: "
                f"{', '.join(sorted(wired.sensors))})"
            )
    if device is not None:
        for i, e in enumerate(scenario.expect):
            if e.actuator is not None and e.actuator not in device.actuators:
                raise ScenarioError(
                    f"expect[{i}].actuator: the device has no actuator named {e.actuator!r} "
                    f"(it has: {', '.join(sorted(device.actuators)) or 'none'})"
                )


def _check_kind(key: str, kind: str) -> None:
    if kind not in KINDS:
        raise ScenarioError(
            f"{key}: {kind!r} is not an event kind (kinds: {', '.join(sorted(KINDS))})"
        )


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``--broker``) as (host, port); :class:`ScenarioError` naming the option."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ScenarioError(f"--broker: {text!r} is not HOST:PORT (e.g. 127.0.0.1:1883)")
    return host.strip("[]"), int(port)


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


# -- the report ----------------------------------------------------------------------------


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
    repeated_warnings: list[dict[str, Any]] = field(default_factory=list)
    """Log lines that came more than once: ``message``, ``count``, ``first_s``, ``last_s``."""

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


# -- the live view -------------------------------------------------------------------------


class Console:
    """What the bench engineer sees while a scenario runs.

    Every line carries the scenario's clock (``t=  4.0 s``).  On a terminal a
    status line under them shows the clock ticking (``[t=12.3 of 15 s]``), and is
    rewritten in place; elsewhere (a pipe, a file, a test) only the lines are written.
    Thread-safe: the daemon's warnings may arrive from gpiozero's or an emulator's thread.
    """

    def __init__(self, stream: TextIO | None = None, *, status: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.status = self.stream.isatty() if status is None else status
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._duration = 0.0
        self._status_shown = False

    def begin(self, t0: float, duration_s: float) -> None:
        """The scenario's second 0 is ``t0`` (``time.monotonic()``)."""
        self._t0, self._duration = t0, duration_s

    def now(self) -> float | None:
        return None if self._t0 is None else time.monotonic() - self._t0

    def line(self, text: str, t: float | None = None) -> None:
        """One line, stamped with the scenario's clock (``t``, or now) once it runs."""
        t = self.now() if t is None else t
        stamp = "" if t is None else f"t={t:6.1f} s  "
        with self._lock:
            self._clear()
            self.stream.write(f"{stamp}{text}\n")
            self._draw()
            self.stream.flush()

    def tick(self) -> None:
        if self.status and self._t0 is not None:
            with self._lock:
                self._clear()
                self._draw()
                self.stream.flush()

    def end(self) -> None:
        with self._lock:
            self._clear()
            self._t0 = None
            self.stream.flush()

    def _clear(self) -> None:
        if self._status_shown:
            self.stream.write("\r\x1b[K")
            self._status_shown = False

    def _draw(self) -> None:
        t = self.now()
        if self.status and t is not None:
            self.stream.write(f"[t={min(t, self._duration):5.1f} of {self._duration:g} s]")
            self._status_shown = True


class _Warnings(logging.Handler):
    """The daemon's warnings and errors on the console, each distinct line once.

    A repeat (the same level and text) is counted, not shown; :meth:`repeats`
    lists them for the end of the run.
    """

    def __init__(self, console: Console) -> None:
        super().__init__(level=logging.WARNING)
        self.console = console
        self.seen: dict[tuple[int, str], list[Any]] = {}
        """(level, text) -> [count, first_s, last_s]."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a badly formatted log call must not stop the bench
            text = str(record.msg)
        t = self.console.now() or 0.0
        key = (record.levelno, text)
        entry = self.seen.get(key)
        if entry is not None:
            entry[0] += 1
            entry[2] = t
            return
        self.seen[key] = [1, t, t]
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({record.exc_info[1]!r})"
        self.console.line(f"{record.levelname.lower()}: {text}", t)

    def repeats(self) -> list[dict[str, Any]]:
        return [
            {"level": logging.getLevelName(level).lower(), "message": text,
             "count": n, "first_s": round(first, 3), "last_s": round(last, 3)}
            for (level, text), (n, first, last) in self.seen.items()
            if n > 1
        ]


@contextmanager
def _warnings_to(console: Console | None) -> Iterator[_Warnings | None]:
    if console is None:
        yield None
        return
    handler = _Warnings(console)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _describe_event(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    fields = [
        f"{k}={json.dumps(v, ensure_ascii=False) if isinstance(v, bool) else v}"
        for k, v in data.items()
        if isinstance(v, (str, int, float, bool))
    ][:6]
    return f"event {event['kind']} ({event.get('severity', '?')})" + (
        f": {' '.join(fields)}" if fields else ""
    )


def _narrate(step: Stimulus, config: Config | None) -> str:
    shown = "" if step.value is None else f" {step.value:g}" if isinstance(
        step.value, float
    ) else f" {step.value}"
    what = f"{step.target} {step.action}{shown}"
    sensor = config.sensors.get(step.target) if config is not None else None
    if isinstance(sensor, MatSensorConfig):
        what = f"cot {sensor.cot} ({step.target}): {step.action.replace('_', ' ')}{shown}"
    return f"{step.say}  [{what}]" if step.say else what


# -- running -------------------------------------------------------------------------------


async def run_scenario(
    scenario: Scenario,
    workdir: Path,
    *,
    device: Config | None = None,
    pin_factory: PinFactory = None,
    prompt: Callable[[str], None] | None = None,
    console: Console | None = None,
    capture_log: bool = True,
    broker: tuple[str, int] | None = None,
) -> Report:
    """Play ``scenario`` against the emulated site built in ``workdir``, or, with
    ``device`` (a validated Config), against that device on the bench through the
    scenario's rig (:mod:`edge.tools.bench_rig`).

    ``broker``: (host, port) of a running broker for the emulated site instead of a
    private mosquitto; its events go wherever that broker's subscribers take them.

    ``console``: where to show the run as it happens (None: nowhere).  ``prompt``:
    where a rig prints what the person at the bench must do (default: the console,
    else stdout).  ``capture_log``: show the daemon's warnings on the console, each
    distinct line once (off when the caller shows the whole log itself).
    """
    config = site_config(scenario.site)
    check_scenario(scenario, config, device)
    if prompt is None:
        prompt = console.line if console is not None else print
    if device is not None:
        if broker is not None:
            raise ScenarioError(
                "--broker is for the emulated site; a device on the bench uses the broker "
                "its configuration names"
            )
        if scenario.world is not None or scenario.initial:
            raise ScenarioError(
                f"{scenario.name}: world and initial need the emulated site, not a device"
            )
        from edge.tools.bench_rig import RigSite

        rig = RigSite(device, scenario.rig, pin_factory=pin_factory, prompt=prompt)
        return await _play(scenario, rig, None, time.monotonic(), device, console, capture_log)
    from edge.sim.emulated import EmulatedSite

    t_start = time.monotonic()
    initial = list(scenario.initial)
    world = None
    if scenario.world is not None:
        from edge.sim.world import World

        world = World(scenario.world, config)
        initial += [Stimulus(at_s=0, target=t, action=a, value=v) for t, a, v in world.initial()]
    site = EmulatedSite(_site_text(scenario.site), workdir, initial=initial, broker=broker)
    return await _play(scenario, site, world, t_start, config, console, capture_log)


async def _play(
    scenario: Scenario,
    site: EmulatedSite | RigSite,
    world: World | None,
    t_start: float,
    config: Config | None,
    console: Console | None,
    capture_log: bool,
) -> Report:
    report = Report(scenario=scenario.name, passed=False)
    actuator_log: dict[str, list[tuple[float, bool]]] = {}
    say = console.line if console is not None else None
    if say is not None:
        say(f"scenario: {scenario.name}")
        say("starting the site (broker, emulators, daemon) ...")
    with _warnings_to(console if capture_log else None) as warnings:
        try:
            async with site:
                t0 = time.monotonic()
                if console is not None:
                    console.begin(t0, scenario.duration_s)
                    console.line(f"go: {scenario.duration_s:g} s")
                pending = sorted(scenario.stimulus, key=lambda s: s.at_s)
                watch = asyncio.create_task(
                    _watch(site, t0, actuator_log, console, scenario.duration_s)
                )
                world_task = None
                if world is not None:
                    world.site = site
                    world.on_say = say
                    world_task = asyncio.create_task(
                        world.run(asyncio.get_running_loop().time())
                    )
                try:
                    for stim in pending:
                        delay = t0 + stim.at_s - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        if say is not None:
                            say(_narrate(stim, config), stim.at_s)
                        await site.apply(stim.target, stim.action, stim.value)
                    await asyncio.sleep(max(0.0, t0 + scenario.duration_s - time.monotonic()))
                finally:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
                    if world_task is not None:
                        world_task.cancel()
                        await asyncio.gather(world_task, return_exceptions=True)
                events = [dict(e, t=round(e["t"] - t0, 3)) for e in site.events()]
        finally:
            if console is not None:
                console.end()
        if warnings is not None:
            report.repeated_warnings = warnings.repeats()
    if console is not None:
        for r in report.repeated_warnings:
            console.line(
                f"{r['level']} {r['count']} times (t={r['first_s']:.1f} to {r['last_s']:.1f} s), "
                f"shown once: {r['message']}"
            )
    report.events = events
    for e in scenario.expect:
        lo, hi = e.after_s, e.after_s + e.within_s
        if e.actuator is not None:
            report.checks.append(
                _check_actuator(e, actuator_log.get(e.actuator, []), lo, hi, scenario.duration_s)
            )
        else:
            report.checks.append(_check_event(e, events, lo, hi, scenario.duration_s))
    if scenario.order:
        report.checks.append(_check_order(scenario.order, events))
    report.passed = all(c.passed for c in report.checks)
    report.duration_s = time.monotonic() - t_start
    return report


def _times(ts: list[float]) -> str:
    shown = ", ".join(f"{t:.2f}" for t in ts[:5])
    more = f" and {len(ts) - 5} more" if len(ts) > 5 else ""
    return f"{shown} s{more}"


def _check_event(
    e: Expect, events: list[dict[str, Any]], lo: float, hi: float, duration: float
) -> Check:
    matching = [ev for ev in events if _matches(ev, e)]
    hits = [ev["t"] for ev in matching if lo <= ev["t"] <= hi]
    outside = [ev["t"] for ev in matching if not lo <= ev["t"] <= hi]
    window = f"[{lo:g}, {hi:g}] s"
    what = f"event {e.event}{' ' + json.dumps(e.data, ensure_ascii=False) if e.data else ''}"
    at = f" (at {_times(hits)})" if hits else ""
    if e.absent:
        ok = not hits
        detail = f"none in {window}" if ok else f"{len(hits)} in {window}{at}, expected none"
    elif e.count is not None:
        ok = len(hits) == e.count
        detail = f"{len(hits)} in {window}{at}, expected {e.count}"
    else:
        ok = bool(hits)
        detail = f"first at {hits[0]:.3f} s" if hits else f"none in {window}"
    if not ok and not hits:
        detail += f"; {_elsewhere(e, events, outside, duration)}"
    elif not ok and outside:
        detail += f"; also outside the window at {_times(outside)}"
    return Check(what, ok, detail)


def _elsewhere(
    e: Expect, events: list[dict[str, Any]], outside: list[float], duration: float
) -> str:
    """Where the expected event went instead: outside the window, with other data, or nowhere."""
    if outside:
        return f"it came at {_times(outside)}"
    same_kind = [ev for ev in events if ev["kind"] == e.event]
    if not same_kind:
        return f"no {e.event} at all in the {duration:g} s run"
    parts = []
    for ev in same_kind[:3]:
        data = ev.get("data") or {}
        differs = ", ".join(
            f"{k}={data.get(k)!r} (expected {v!r})"
            for k, v in e.data.items() if data.get(k) != v
        )
        parts.append(f"at {ev['t']:.2f} s with {differs}")
    more = f" and {len(same_kind) - 3} more" if len(same_kind) > 3 else ""
    return f"{e.event} came with other data: {'; '.join(parts)}{more}"


def _check_order(order: list[str], events: list[dict[str, Any]]) -> Check:
    firsts: list[tuple[float, str]] = []
    for kind in order:
        t = next((ev["t"] for ev in events if ev["kind"] == kind), None)
        if t is not None:
            firsts.append((t, kind))
    seen = [k for _, k in sorted(firsts)]
    ok = seen == order
    detail = " -> ".join(f"{k} ({t:.2f} s)" for t, k in sorted(firsts)) or "no events"
    missing = [k for k in order if k not in seen]
    if missing:
        detail += f"; never seen: {', '.join(missing)}"
    return Check("order", ok, detail)


def _matches(event: dict[str, Any], expect: Expect) -> bool:
    if event["kind"] != expect.event:
        return False
    data = event.get("data", {})
    return all(data.get(k) == v for k, v in expect.data.items())


def _check_actuator(
    e: Expect, log: list[tuple[float, bool]], lo: float, hi: float, duration: float
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
    if first is not None:
        detail = f"{e.state} at {first:.3f} s"
    elif ok:
        detail = f"{e.state} already at {lo:g} s"
    else:
        seen = _spans(log, want, e.state or "", duration)
        detail = f"not {e.state} in [{lo:g}, {hi:g}] s; {seen}"
    return Check(f"actuator {e.actuator} {e.state}", ok, detail)


def _spans(log: list[tuple[float, bool]], want: bool, state: str, duration: float) -> str:
    """When the actuator was in the wanted state during the run (``on 3.00-6.01 s``)."""
    spans: list[str] = []
    since: float | None = 0.0 if not want else None  # everything starts off
    for t, on in log:
        if on == want and since is None:
            since = t
        elif on != want and since is not None:
            spans.append(f"{since:.2f}-{t:.2f} s")
            since = None
    if since is not None:
        spans.append(f"{since:.2f} s to the end")
    if not spans:
        return f"never {state} in the {duration:g} s run"
    more = f" and {len(spans) - 4} more" if len(spans) > 4 else ""
    return f"{state} {', '.join(spans[:4])}{more}"


async def _watch(
    site: EmulatedSite | RigSite,
    t0: float,
    log: dict[str, list[tuple[float, bool]]],
    console: Console | None,
    duration: float,
) -> None:
    """Record actuator changes (every 5 ms); show them and new events on the console."""
    last: dict[str, bool] = {}
    shown = 0
    ticked = 0.0
    while True:
        now = time.monotonic() - t0
        for name, on in site.actuator_states().items():
            if last.get(name) != on:
                if console is not None and (name in last or on):
                    console.line(f"{name} {'on' if on else 'off'}", now)
                last[name] = on
                log.setdefault(name, []).append((now, on))
        if console is not None:
            events = site.events()
            for event in events[shown:]:
                console.line(_describe_event(event), event["t"] - t0)
            shown = len(events)
            if now - ticked >= 0.1:
                ticked = now
                console.tick()
        await asyncio.sleep(0.005)


def _site_text(site: str) -> str:
    path = Path(site)
    if not path.exists():
        path = SITES / f"{site.removesuffix('.toml')}.toml"
    if not path.exists():
        raise ScenarioError(
            f"site: no site {site!r} (bundled: "
            f"{', '.join(sorted(p.stem for p in SITES.glob('*.toml')))})"
        )
    return path.read_text(encoding="utf-8")
