"""Episode metrics for any series fault detector on any list of series (issue 15).

    .venv/bin/python -m models.anomaly.scoring [--n 12] [--days 10]     # the tuning families
    .venv/bin/python -m models.evaluate --anomaly-only                  # + the independent ones

What reaches people is episodes, so this scores *events* (the findings a
detector returns: each is the start of an episode), not windows:

* **false events per sensor-day**: every finding on a series without a fault;
* per fault type, **recall**: the share of faulty series with a finding at or after
  the onset and within :data:`HORIZON_S` of it (a spike must be seen within an hour,
  drift within 3 days, the rest within a day); **median delay** (hours) of those.

Detectors, side by side on the same series:

``water``        :class:`edge.health.water_faults.WaterFaultDetector` (the rule);
``baseline``     :class:`BaselineDetector`: the trivial rolling median/MAD spike test
                 plus an exact-repeat stuck test;
``autoencoder``  :class:`AutoencoderDetector`: the packaged TFLite model as the daemon
                 ran it before issue 15 (64-reading windows, ``confirm_windows`` anomalous
                 windows in a row, one episode blocks all new events).

Series come from ``models.anomaly.data.water_family`` (the tuning families); the
independent ones (``models.evalworlds.series``, evaluation only: never tuned on) are
scored by ``models.evaluate``, which hands them to :func:`table` -- this module never
imports them, so nothing that tunes can reach them.  A series faster than the
detector's period (water 600 s, mat load 0.5 s) is thinned to it, as ``AnomalyWatch`` does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge.health.water_faults import Finding, WaterFaultDetector
from models.anomaly import data as D

DAY_S = 86400.0
HORIZON_S: dict[str, float] = {"spike": 3600.0, "drift": 3 * DAY_S}
"""How soon after the onset a fault must be told to count as caught (default one day)."""
DEFAULT_HORIZON_S = DAY_S
DEVICE_PERIOD_S = 600.0
TUNING_SEED = 15_000_000


class Detector(Protocol):
    def add(self, t: float, value: float) -> list[Any]: ...


@dataclass
class Series:
    """A series to score (the evaluation package's ``Series`` has the same fields)."""

    family: str
    values: np.ndarray
    period_s: float
    fault: str | None
    onset: int | None
    meta: dict[str, Any]


class BaselineDetector:
    """The trivial baseline: a reading further than ``k`` robust deviations (1.4826 MAD, at
    least the rounding step) from the median of the previous ``n`` readings is a spike; ``repeat``
    exact repeats in a row are stuck.  Each test has its own episode that ends after
    ``recovery`` readings without it."""

    def __init__(self, n: int = 24, k: float = 6.0, repeat: int = 6, recovery: int = 36) -> None:
        self.buf: deque[float] = deque(maxlen=n)
        self.k, self.repeat, self.recovery = k, repeat, recovery
        self.run = 0
        self.calm: dict[str, int | None] = {"spike": None, "stuck": None}

    def add(self, t: float, value: float) -> list[Finding]:
        fired: dict[str, Finding | None] = {"spike": None, "stuck": None}
        if self.buf and value == self.buf[-1]:
            self.run += 1
        else:
            self.run = 0
        if len(self.buf) == self.buf.maxlen:
            b = np.fromiter(self.buf, float)
            med = float(np.median(b))
            mad = max(1.4826 * float(np.median(np.abs(b - med))), 0.1)
            if abs(value - med) / mad > self.k:
                fired["spike"] = Finding("spike", "spike_or_step", abs(value - med) / mad, self.k,
                                         "off the rolling median")  # fmt: skip
        if self.run >= self.repeat:
            fired["stuck"] = Finding("stuck", "stuck", float(self.run), self.repeat, "repeats")
        self.buf.append(value)
        out = []
        for test, f in fired.items():
            calm = self.calm[test]
            if calm is None:  # no episode
                if f is not None:
                    self.calm[test] = 0
                    out.append(f)
            elif f is not None:
                self.calm[test] = 0
            else:
                self.calm[test] = calm + 1
                if calm + 1 >= self.recovery:
                    self.calm[test] = None
        return out


class AutoencoderDetector:
    """The packaged water autoencoder with the daemon's pre-issue-15 episode logic."""

    _model: Any = None

    def __init__(self) -> None:
        if AutoencoderDetector._model is None:
            from edge.inference.runtime import AnomalyModel

            AutoencoderDetector._model = AnomalyModel.load(series="water")
        self.model = AutoencoderDetector._model
        cal = self.model.model.card["series"]["water"]
        self.confirm = max(1, int(cal.get("confirm_windows", 1)))
        self.values: deque[float] = deque(maxlen=int(self.model.window))
        self.run = 0
        self.active = False
        self.calm = 0

    def add(self, t: float, value: float) -> list[Finding]:
        self.values.append(value)
        if len(self.values) < (self.values.maxlen or 0):
            return []
        score, tests = self.model.assess(list(self.values))
        anomalous = score > self.model.threshold
        self.run = self.run + 1 if anomalous else 0
        if self.active:
            self.calm = 0 if anomalous else self.calm + 1
            if self.calm >= len(self.values):
                self.active = False
            return []
        if self.run >= self.confirm:
            self.active, self.calm = True, 0
            return [Finding("+".join(tests) or "model", "unusual_shape", score, 0.0, "model")]
        return []


DETECTORS: dict[str, Callable[[], Detector]] = {
    "water": WaterFaultDetector,
    "baseline": BaselineDetector,
    "autoencoder": AutoencoderDetector,
}


def run(
    detector: Detector, s: Any, device_period_s: float = DEVICE_PERIOD_S
) -> list[tuple[float, Any]]:
    """``(t, finding)`` for every finding on series ``s`` (thinned to the device's period)."""
    period = float(s.period_s)
    take = max(1, round(device_period_s / period)) if period < 0.9 * device_period_s else 1
    inputs = getattr(detector, "site_inputs", None)
    if callable(inputs):  # a detector fed the site's own inputs (a gate's operations)
        inputs(getattr(s, "meta", None) or {})
    out = []
    for i in range(0, len(s.values), take):
        t = i * period
        for f in detector.add(t, float(s.values[i])):
            out.append((t, f))
    return out


@dataclass
class Score:
    sensor_days: float = 0.0
    false_events: int = 0
    caught: dict[str, int] | None = None
    total: dict[str, int] | None = None
    delays_h: dict[str, list[float]] | None = None
    false_tests: dict[str, int] | None = None
    """False events by the test that found them (a finding's ``test``)."""
    outcomes: list[tuple[str, dict[str, Any], bool]] | None = None
    """Per faulty series: (fault, its labels' ``meta``, caught within the horizon)."""

    def __post_init__(self) -> None:
        self.caught, self.total, self.delays_h = {}, {}, {}
        self.false_tests, self.outcomes = {}, []

    unit_s: float = DAY_S
    """False events are counted per this much clean series (a sensor-day; a cot-hour)."""

    @property
    def false_per_day(self) -> float:
        """False events per :attr:`unit_s` of clean series (per sensor-day by default)."""
        return self.false_events / self.sensor_days if self.sensor_days else float("nan")

    def recall(self, fault: str) -> float:
        assert self.total is not None and self.caught is not None
        n = self.total.get(fault, 0)
        return self.caught.get(fault, 0) / n if n else float("nan")

    def median_delay_h(self, fault: str) -> float:
        assert self.delays_h is not None
        d = self.delays_h.get(fault, [])
        return statistics.median(d) if d else float("nan")


def onset_index(s: Any) -> int | None:
    if s.fault is None or s.onset is None:
        return None
    return int(s.onset)


def score(
    make: Callable[[], Detector],
    series: Iterable[Any],
    *,
    device_period_s: float = DEVICE_PERIOD_S,
    unit_s: float = DAY_S,
    horizons: dict[str, float] | None = None,
    default_horizon_s: float = DEFAULT_HORIZON_S,
) -> Score:
    """Episode metrics of a fresh detector from ``make`` on each series (false events per
    ``unit_s`` of clean series; a fault caught within its horizon after the onset)."""
    horizons = HORIZON_S if horizons is None else horizons
    sc = Score(unit_s=unit_s)
    assert sc.caught is not None and sc.total is not None and sc.delays_h is not None
    assert sc.false_tests is not None and sc.outcomes is not None
    for s in series:
        found = run(make(), s, device_period_s)
        period = float(s.period_s)
        at = onset_index(s)
        if at is None:
            sc.sensor_days += len(s.values) * period / unit_s
            sc.false_events += len(found)
            for _, f in found:
                test = str(getattr(f, "test", "?"))
                sc.false_tests[test] = sc.false_tests.get(test, 0) + 1
            continue
        fault = str(s.fault)
        t0 = at * period
        horizon = horizons.get(fault, default_horizon_s)
        sc.total[fault] = sc.total.get(fault, 0) + 1
        after = [t for t, _ in found if t0 <= t <= t0 + horizon]
        sc.outcomes.append((fault, dict(getattr(s, "meta", None) or {}), bool(after)))
        if after:
            sc.caught[fault] = sc.caught.get(fault, 0) + 1
            sc.delays_h.setdefault(fault, []).append((after[0] - t0) / 3600.0)
    return sc


# -- the series ----------------------------------------------------------------------------


def tuning_series(family: str, n: int, days: float, seed: int, fault: str | None) -> list[Series]:
    """``n`` series of a tuning family (``models.anomaly.data``), ``fault`` from day 3-5."""
    per_day = int(DAY_S / D.SAMPLE_PERIOD_S["water"])
    length = int(days * per_day)
    code = D.WATER_FAMILIES.index(family) * 100 + (
        0 if fault is None else 1 + D.WATER_FAULTS.index(fault))  # fmt: skip
    out = []
    for i in range(n):
        rng = np.random.default_rng([TUNING_SEED + seed, code, i])
        x = D.water_family(family, rng, length)
        at = None
        if fault is not None:
            at = int(rng.integers(3 * per_day, min(5 * per_day, length - 3 * per_day)))
            x = D.inject_water_fault(x, fault, at, rng)
        out.append(Series(family, x, D.SAMPLE_PERIOD_S["water"], fault, at, {}))
    return out


SeriesMaker = Callable[[str, int, float, int, "str | None"], list[Any]]
"""``(family, n, length, seed, fault) -> series``: length in days (water) or minutes (mat)."""


def table(
    worlds: str,
    families: Sequence[str],
    faults: Sequence[str],
    detectors: Sequence[str] | dict[str, Callable[[], Detector]],
    n: int,
    days: float,
    seed: int,
    *,
    make: SeriesMaker | None = None,
    scores: dict[tuple[str, str], Score] | None = None,
    **score_kw: Any,
) -> list[str]:
    """One line per family x detector: false events per unit (sensor-day by default), recall %
    and median delay per fault.  ``make``: where the series come from (default: the tuning
    families); ``detectors``: names of :data:`DETECTORS` or name -> factory; ``scores``:
    filled with each (family, detector)'s :class:`Score`; ``score_kw``: for :func:`score`."""
    make = make or tuning_series
    dets = detectors if isinstance(detectors, dict) else {d: DETECTORS[d] for d in detectors}
    head = f"{'world':6s} {'family':14s} {'detector':11s} {'false':>9s} " + " ".join(
        f"{f:>14s}" for f in faults
    )
    lines = [head, "-" * len(head)]
    print(head, flush=True)
    for family in families:
        normal = make(family, n, days, seed, None)
        faulty = {f: make(family, n, days, seed + 1 + i, f) for i, f in enumerate(faults)}
        for name, factory in dets.items():
            sc = score(factory, [*normal, *(s for f in faults for s in faulty[f])], **score_kw)
            if scores is not None:
                scores[(family, name)] = sc
            cells = []
            for f in faults:
                r, d = sc.recall(f), sc.median_delay_h(f)
                cells.append(f"{100 * r:5.0f}% {d:6.1f}h" if r == r else f"{'-':>14s}")
            lines.append(f"{worlds:6s} {family:14s} {name:11s} {sc.false_per_day:9.3f} "
                         + " ".join(cells))  # fmt: skip
            print(lines[-1], flush=True)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="series per family and fault")
    ap.add_argument("--days", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detectors", default="water,baseline,autoencoder")
    ap.add_argument("--families", default="", help="comma-separated (default: all)")
    args = ap.parse_args(argv)
    dets = [d for d in args.detectors.split(",") if d]
    started = time.monotonic()
    fams: tuple[str, ...] = D.WATER_FAMILIES
    if args.families:
        fams = tuple(f for f in args.families.split(",") if f in fams)
    print(f"# tuning: n={args.n} series per family and fault, {args.days:g} days each; "
          f"false events per sensor-day; recall % and median delay (h); spike within 1 h, "
          f"drift within 3 days, others within 1 day")  # fmt: skip
    table("tuning", fams, D.WATER_FAULTS, dets, args.n, args.days, args.seed)
    print(f"# {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
