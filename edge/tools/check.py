"""``edge check``: the installer's self-test, on site, after wiring.

It probes every configured sensor and actuator without running the rules (a
hand waved at the detector must not sound the siren or e-mail the farmers),
shows a live table that fits an 80-column SSH terminal (columns measured in
display cells, so Japanese labels line up; long cells wrap, nothing is cut),
fires actuators' test patterns on request, checks the link to the broker and
the modem, and ends with a one-line verdict: exit 0, or 1 naming each failing
part, every error in full.

Parts that can only be proven by exercising them (the detector, the trap)
count as passed once they changed during the check, and as "not exercised"
(a warning, not a failure) otherwise; ``--require-exercise`` makes that a
failure.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import aiomqtt
from wcwidth import wcwidth

from edge.config import (
    Config,
    MatSensorConfig,
    NapRuleConfig,
    PirSensorConfig,
    PressureProbeConfig,
    TrapSensorConfig,
    UltrasonicConfig,
    WaterRuleConfig,
)
from edge.devices.actuators import Actuator, test_pattern
from edge.devices.factory import (
    PinFactory,
    build_actuator,
    build_detector,
    build_level_sensor,
    build_trap_switch,
    make_pin_factory,
    open_mat,
)
from edge.devices.level import I2cBusFactory
from edge.link.modem import modem_status
from edge.timed_wait import wait_set

if TYPE_CHECKING:
    from drivers.pir import PirDetector
    from drivers.trap_switch import TrapSwitch


@dataclass
class Part:
    name: str
    where: str
    status: str = "waiting"  # ok | fail | waiting | not exercised
    reading: str = ""
    detail: str = ""
    changes: int = 0

    @property
    def failed(self) -> bool:
        return self.status == "fail"


@dataclass
class Verdict:
    parts: list[Part] = field(default_factory=list)
    require_exercise: bool = False

    def failing(self) -> list[Part]:
        bad = [p for p in self.parts if p.failed]
        if self.require_exercise:
            bad += [p for p in self.parts if p.status == "not exercised"]
        return bad

    @property
    def passed(self) -> bool:
        return not self.failing()

    def line(self) -> str:
        bad = self.failing()
        if not bad:
            warn = [p.name for p in self.parts if p.status == "not exercised"]
            extra = f" (not exercised: {', '.join(warn)})" if warn else ""
            return f"PASS: all {len(self.parts)} parts ok{extra}"
        return "FAIL: " + "; ".join(f"{p.name} ({p.detail or p.status})" for p in bad)


PI_EXTRA_HINT = (
    "on the Raspberry Pi, install the pi extra (lgpio): bash scripts/setup.sh device, "
    "or pip install 'satoyama-edge[pi]'"
)


def _printable(text: str) -> str:
    """One line of text for a terminal: control characters (newlines, escapes) become spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def display_width(text: str) -> int:
    """Columns the text takes on a terminal: East Asian wide characters take two."""
    return sum(max(wcwidth(ch), 0) for ch in text)


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` display columns: at spaces, inside a long word when needed."""
    width = max(width, 2)
    lines: list[str] = []
    line = ""
    for word in _printable(text).split(" "):
        candidate = f"{line} {word}" if line else word
        if display_width(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while display_width(word) > width:
            piece = ""
            for ch in word:
                if display_width(piece + ch) > width:
                    break
                piece += ch
            lines.append(piece)
            word = word[len(piece) :]
        line = word
    lines.append(line)
    return lines


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def render_table(
    parts: list[Part], elapsed: float, width: int = 80, notes: list[str] | None = None
) -> str:
    """The parts as a table of at most ``width`` display columns; long cells wrap onto more
    lines (an error is never cut), wide characters are counted as the two columns they take."""
    width = max(width, 60)
    cols = [
        min(max([display_width(p.name) for p in parts] + [4]), 18) + 2,
        min(max([display_width(p.where) for p in parts] + [5]), 22) + 2,
        len("not exercised") + 2,
    ]
    cols.append(width - sum(cols))
    rows = [
        f"edge check  {elapsed:5.0f} s   (Ctrl-C to finish)",
        "".join(_pad(h, w) for h, w in zip(("part", "where", "status"), cols[:3], strict=True))
        + "reading",
        "-" * min(width, 78),
    ]
    for p in parts:
        shown = (p.detail or p.reading) if p.failed else (p.reading or p.detail)
        cells = [p.name, p.where, p.status, shown]
        wrapped = [
            wrap(c, w - 2 if i < 3 else w) for i, (c, w) in enumerate(zip(cells, cols, strict=True))
        ]
        for n in range(max(len(w) for w in wrapped)):
            line = "".join(
                _pad(w[n] if n < len(w) else "", cols[i]) for i, w in enumerate(wrapped[:3])
            )
            rows.append((line + (wrapped[3][n] if n < len(wrapped[3]) else "")).rstrip())
    for note in notes or []:
        rows += wrap(f"note: {note}", width)
    return "\n".join(rows)


class Checker:
    """Builds the drivers for every configured part and watches them."""

    def __init__(
        self,
        config: Config,
        *,
        pin_factory: PinFactory = None,
        i2c_bus: I2cBusFactory | None = None,
        models_dir: Path | None = None,
    ) -> None:
        """``models_dir``: where ``posture/`` and ``anomaly/`` are (default: the packaged
        models the daemon loads)."""
        self.config = config
        self.pin_factory = pin_factory
        self.i2c_bus = i2c_bus
        self.models_dir = models_dir
        self.pollers: list[Callable[[], Any]] = []
        """Coroutine functions that watch bus and serial sensors until cancelled."""
        self.parts: dict[str, Part] = {}
        self.devices: dict[str, PirDetector | TrapSwitch] = {}
        self.actuators: dict[str, Actuator] = {}
        self.notes: list[str] = []
        """Lines for the installer under the table (e.g. how to get the GPIO backend)."""
        self._readers: list[Callable[[], None]] = []
        self._levels: dict[str, float] = {}
        """The last level (cm) each level sensor gave, for the pairs (``same_water_as``)."""
        self._pairs: list[tuple[Part, str, str]] = []

    def build(self) -> None:
        """Open every part.  gpiozero's fallback warnings (one per pin backend it could not
        load, printed as four tracebacks-worth of lines) become one note with the fix."""
        from gpiozero.exc import PinFactoryFallback

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PinFactoryFallback)
            self._build()
        fell_back: dict[str, str] = {}  # backend -> why gpiozero could not use it
        for w in caught:
            if issubclass(w.category, PinFactoryFallback):
                name, _, why = str(w.message).removeprefix("Falling back from ").partition(": ")
                fell_back[name] = why
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        if not fell_back:
            return
        tried = ", ".join(fell_back)
        lgpio = fell_back.get("lgpio", "")
        if "lgpio" in fell_back and lgpio.startswith("No module named"):
            self.notes.append(
                f"GPIO: gpiozero could not use {tried} (no lgpio here); {PI_EXTRA_HINT}"
            )
        else:
            self.notes.append(
                f"GPIO: gpiozero could not use {tried}"
                + (f" (lgpio: {lgpio})" if lgpio else "")
                + "; is this a Raspberry Pi?"
            )

    def _build(self) -> None:
        if self.pin_factory is None:
            self.pin_factory = make_pin_factory(self.config.gpio.pin_factory)
        for name, s in self.config.sensors.items():
            if isinstance(s, PirSensorConfig):
                part = self.parts[name] = Part(name, f"GPIO{s.pin}")
                try:
                    det = build_detector(s, self.pin_factory, warmup_s=0)
                except Exception as exc:  # noqa: BLE001 - any failure is this part's, shown
                    part.status, part.detail = "fail", f"cannot open pin: {exc}"
                    continue
                self.devices[name] = det
                det.on_detect = lambda now, p=part: self._changed(p, "motion")
                self._readers.append(partial(self._show_motion, part, det))
            elif isinstance(s, TrapSensorConfig):
                part = self.parts[name] = Part(name, f"GPIO{s.pin}")
                try:
                    sw = build_trap_switch(s, self.pin_factory)
                except Exception as exc:  # noqa: BLE001 - any failure is this part's, shown
                    part.status, part.detail = "fail", f"cannot open pin: {exc}"
                    continue
                self.devices[name] = sw
                sw.on_edge = lambda closed, now, p=part: self._changed(
                    p, "closed" if closed else "open"
                )
                self._readers.append(partial(self._show_door, part, sw))
            elif isinstance(s, PressureProbeConfig):
                part = self.parts[name] = Part(name, f"i2c-{s.bus} {s.address:#04x}/{s.channel}")
                self.pollers.append(partial(self._poll_level, part, s, ""))
            elif isinstance(s, UltrasonicConfig):
                part = self.parts[name] = Part(name, s.port.rsplit("/", 1)[-1])
                self.pollers.append(partial(self._poll_level, part, s, "level "))
            elif isinstance(s, MatSensorConfig):
                part = self.parts[name] = Part(name, f"cot {s.cot}")
                self.pollers.append(partial(self._poll_mat, part, s))
        for rule in self.config.rules.values():
            if isinstance(rule, WaterRuleConfig) and rule.same_water_as is not None:
                one, other = rule.sensor, rule.same_water_as
                pair = self.parts[f"{one}-{other}"] = Part(f"{one}-{other}", "same water")
                self._pairs.append((pair, one, other))
        for name, a in self.config.actuators.items():
            part = self.parts[name] = Part(name, f"GPIO{a.pin}", "ok", "off")
            try:
                self.actuators[name] = build_actuator(a, self.pin_factory)
            except Exception as exc:  # noqa: BLE001 - any failure is this part's, shown
                part.status, part.detail = "fail", f"cannot open pin: {exc}"

    async def _poll_level(
        self, part: Part, c: PressureProbeConfig | UltrasonicConfig, label: str
    ) -> None:
        """Read a level sensor as the daemon does (:mod:`edge.devices.level`); show what the
        sensor said and the level it means."""
        from drivers.errors import DriverError, LoopFault

        sensor = build_level_sensor(c, i2c_bus=self.i2c_bus, patience_s=2.0, name=part.name)
        try:
            while True:
                try:
                    cm = await sensor.read_cm()
                    part.status, part.detail = "ok", ""
                    part.reading = f"{sensor.raw} = {label}{cm:.1f} cm"
                    self._levels[part.name] = cm
                    self._show_pairs()
                except LoopFault as exc:
                    part.status, part.detail = "fail", f"loop {exc.kind.replace('_', ' ')}"
                    part.reading = part.detail
                except DriverError as exc:
                    if isinstance(c, PressureProbeConfig):
                        part.status, part.detail = "fail", f"no answer: {exc}"
                        part.reading = "no answer"
                    else:
                        part.status, part.detail = "fail", str(exc) or type(exc).__name__
                        part.reading = "no frames"
                        await asyncio.sleep(0.5)
                        continue
                if isinstance(c, PressureProbeConfig):
                    await asyncio.sleep(1.0)
        finally:
            await sensor.aclose()

    def _show_pairs(self) -> None:
        """Two gauges on the same water: their difference now, for the installer to compare
        with a staff gauge before the daemon learns it as the usual one (its first 12 h)."""
        for part, a, b in self._pairs:
            if a in self._levels and b in self._levels:
                part.status = "ok"
                part.reading = f"{a} - {b} = {self._levels[a] - self._levels[b]:+.1f} cm now"

    async def _poll_mat(self, part: Part, c: MatSensorConfig) -> None:
        from drivers.errors import DriverError
        from edge.nursery.mat import MatSignals

        mat = open_mat(c)
        signals: MatSignals | None = None
        try:
            while True:
                try:
                    frame = await mat.read(timeout=2.0)
                except DriverError as exc:
                    part.status, part.detail = "fail", str(exc) or type(exc).__name__
                    part.reading = "no frames"
                    await asyncio.sleep(0.5)
                    continue
                if signals is None:
                    signals = MatSignals()  # self-calibrating
                r = signals.update(frame, time.monotonic())
                part.status, part.detail = "ok", ""
                stats = mat.parser.stats()
                part.reading = (
                    f"{frame.rows}x{frame.cols} "
                    + (f"occupied {r.load_kg:.1f} kg" if r.occupied else "empty")
                    + f", crc err {stats.get('crc_errors', 0)}"
                )
        finally:
            mat.close()

    def _changed(self, part: Part, what: str) -> None:
        part.changes += 1
        part.status = "ok"
        part.detail = f"{what} seen ({part.changes}x)"

    def _show_motion(self, part: Part, detector: PirDetector) -> None:
        self._show(part, "MOTION" if detector.active else "idle")

    def _show_door(self, part: Part, switch: TrapSwitch) -> None:
        self._show(part, "door CLOSED" if switch.closed else "door open")

    def _show(self, part: Part, reading: str) -> None:
        part.reading = reading
        if part.status == "waiting":
            part.reading = f"{reading} - exercise it"

    def sample(self) -> None:
        for read in self._readers:
            read()

    async def fire(self, name: str) -> None:
        """Run an actuator's test pattern: siren 1 s, strobe 3 s, buzzer 3 beeps."""
        dev = self.actuators.get(name)
        part = self.parts.get(name)
        if dev is None or part is None:
            raise KeyError(name)
        part.reading = "TEST PATTERN"
        await test_pattern(dev, self.config.actuators[name])
        part.reading = "fired, off"
        part.detail = "test pattern ran"

    async def check_uplink(self) -> Part:
        up = self.config.uplink
        part = Part("uplink", f"{up.host}:{up.port}")
        self.parts["uplink"] = part
        tls: ssl.SSLContext | None = None
        try:
            if up.tls is not None:
                from edge.link.uplink import tls_context

                tls = tls_context(up.tls)
            async with aiomqtt.Client(
                up.host, up.port, username=up.username, password=up.password,
                identifier=f"{self.config.client_id}-check", tls_context=tls,
                timeout=min(up.connect_timeout_s, 10),
            ):
                part.status, part.reading = "ok", "broker answered"
        except (aiomqtt.MqttError, OSError, ValueError) as exc:
            part.status, part.detail = "fail", str(exc) or type(exc).__name__
        return part

    async def check_models(self) -> None:
        """Load each on-device model the configuration uses and run it on a known input, and
        try the sensor fault rules the daemon runs (``health.anomaly_models``).

        The posture model must call an empty mat empty.  The fault rules need no model
        file: each series' rule must pass a calm, noisy series and flag a frozen one, and
        a water level's state (``anomaly-<sensor>.json``, beside the outbox) must be
        writable.  A model that cannot be loaded (missing, corrupt, not the file its card
        describes, no LiteRT) fails its part with the reason, as the daemon would report it.
        """
        rules = self.config.rules.values()
        if any(isinstance(r, NapRuleConfig) for r in rules):
            self.parts["posture-model"] = await asyncio.to_thread(self._probe_posture)
        series = []
        if self.config.health.anomaly_models:
            if any(isinstance(r, WaterRuleConfig) for r in rules):
                series.append("water")
            if any(isinstance(s, MatSensorConfig) for s in self.config.sensors.values()):
                series.append("mat_load")
        if series:
            self.parts["fault-rules"] = await asyncio.to_thread(self._probe_fault_rules, series)

    def _model_files(self, name: str) -> tuple[Path | None, Path | None]:
        if self.models_dir is None:
            return None, None
        return self.models_dir / name / f"{name}.tflite", self.models_dir / name / "card.json"

    def _probe_posture(self) -> Part:
        from drivers.motion_mat import MatFrame
        from edge.inference.runtime import PostureModel

        part = Part("posture-model", "models/posture")
        try:
            model = PostureModel.load(*self._model_files("posture"))
        except Exception as exc:  # noqa: BLE001 - any failure to load is this part's failure
            part.status, part.detail = "fail", str(exc) or type(exc).__name__
            return part
        try:
            t0 = time.perf_counter()
            empty = MatFrame(0, model.rows, model.cols, bytes(model.rows * model.cols))
            label, _ = model.classify(empty)
            us = (time.perf_counter() - t0) * 1e6
        finally:
            model.close()
        version = model.model.card.get("version", "?")
        if label != "empty":
            part.status, part.detail = "fail", f"an empty mat read as {label}"
        else:
            part.status, part.reading = "ok", f"v{version}: empty mat -> empty, {us:.0f} us"
        return part

    def _probe_fault_rules(self, series: list[str]) -> Part:
        """The rules of :data:`edge.health.anomaly_watch.RULES` on a calm series, then frozen."""
        import numpy as np

        from edge.health.anomaly_watch import RULES

        part = Part("fault-rules", "no model file")
        # (calm level, noise, readings to learn on, readings frozen): water learns its
        # floor in 12 h; a live mat's load repeats so rarely that 3 min frozen is stuck
        calm = {"water": (50.0, 0.5, 80, 30), "mat_load": (8.0, 0.03, 600, 400)}
        rng = np.random.default_rng(0)
        for kind in series:
            make, _, period = RULES[kind]
            rule = make(False)
            level, noise, n_calm, n_frozen = calm[kind]
            values = [*np.round(level + rng.normal(0.0, noise, n_calm), 2), *[level] * n_frozen]
            told = [(i, f.test) for i, v in enumerate(values) for f in rule.add(i * period, v)]
            if any(i < n_calm for i, _ in told):
                part.status, part.detail = "fail", f"{kind}: a calm series flagged ({told[0][1]})"
                return part
            if [test for _, test in told] != ["stuck"]:
                part.status, part.detail = "fail", f"{kind}: a frozen series passed"
                return part
        reading = f"{', '.join(series)} judged as expected"
        if "water" in series:
            folder = Path(self.config.outbox.path).parent
            probe = folder / ".anomaly-check"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                part.status = "fail"
                part.detail = f"water state anomaly-<sensor>.json not writable in {folder}: {exc}"
                return part
            reading += f"; state kept in {folder}"
        part.status, part.reading = "ok", reading
        return part

    async def check_modem(self) -> None:
        if self.config.health.modem == "none":
            return
        status = await modem_status()
        if status is None:
            return  # no modem: Wi-Fi or Ethernet; nothing to check
        part = Part("modem", status.get("access_tech", "?"), "ok")
        part.reading = f"signal {status.get('signal_pct', '?')} %, {status.get('state', '?')}"
        if status.get("state") not in ("connected", "registered"):
            part.status, part.detail = "fail", f"modem {status.get('state')}"
        self.parts["modem"] = part

    def close(self) -> None:
        for dev in [*self.devices.values(), *self.actuators.values()]:
            try:
                dev.close()
            except Exception:  # noqa: BLE001 - one failing close must not skip the rest
                pass


async def run_check(
    config: Config,
    *,
    watch_s: float = 30.0,
    fire: list[str] | None = None,
    require_exercise: bool = False,
    pin_factory: PinFactory = None,
    i2c_bus: I2cBusFactory | None = None,
    models_dir: Path | None = None,
    out: TextIO = sys.stdout,
    live: bool | None = None,
    stop: asyncio.Event | None = None,
) -> Verdict:
    checker = Checker(config, pin_factory=pin_factory, i2c_bus=i2c_bus, models_dir=models_dir)
    checker.build()
    live = out.isatty() if live is None else live
    width = 80
    if live:
        try:
            width = os.get_terminal_size(out.fileno()).columns
        except (OSError, ValueError):
            pass
    pollers = [asyncio.create_task(p()) for p in checker.pollers]
    try:
        await asyncio.gather(
            checker.check_uplink(), checker.check_modem(), checker.check_models()
        )
        for name in fire or []:
            await checker.fire(name)
        t0 = time.monotonic()
        stop = stop or asyncio.Event()
        while time.monotonic() - t0 < watch_s and not stop.is_set():
            checker.sample()
            if live:
                table = render_table(
                    list(checker.parts.values()), time.monotonic() - t0, width, checker.notes
                )
                out.write("\x1b[H\x1b[2J" + table + "\n")
                out.flush()
            await wait_set(stop, 0.25)
        checker.sample()
        for part in checker.parts.values():
            if part.status == "waiting":
                part.status = "not exercised"
        verdict = Verdict(list(checker.parts.values()), require_exercise)
        out.write(render_table(verdict.parts, time.monotonic() - t0, width, checker.notes) + "\n")
        out.write(verdict.line() + "\n")  # one line, whole: scripts read it, nothing is cut
        return verdict
    finally:
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        checker.close()
