"""Mat-load scenes for tuning the mat fault rules (``edge.health.mat_load_faults``).

A cot's mat gives the child's total load (kg) twice a second.  These scenes are
what a nap room does to that number, written from the physics of a pressure
grid under a mattress, not from any other generator here:

- **still** sleep: the weight W (3-18 kg) is constant; breathing moves load
  between cells, and only the grid's uneven cell gains leave a ripple on the
  total (at most 0.5 % of W, at 0.3-1 Hz); sensor noise 0.01-0.08 kg per
  reading, quantised to one count (1/600 kg); rare twitches (1-2 readings of
  up to 8 % of W, up and back).
- **restless** sleep: turning over every 1-8 min: 2-12 s of dynamic load
  (5-30 % of W: a body accelerating up and down) and then a slightly different
  total (cell gains: +-1 % of W; sometimes a limb on the rail, -3 to -15 %, until
  the next turn), settling over 15-60 s (foam and sensor creep, +-0.7 % of W).
- **tonton**: staff pat the child to sleep for 2-15 min (once or twice): pats
  at 1-2 Hz, tempo jitter 3-8 % per beat, 0.2-2 kg each, 0.12-0.35 s wide, with
  short pauses; the child stirs now and then.
- **blanket**: put on (0.5-3 s, or dropped on at once) or pulled off (1.5-4 s)
  2-6 times, 0.2-1 kg, with the hands' wobble; the step stays.
- **hand_press**: a hand on the mattress (1-5 kg for 1-10 s, with wobble).
- **lift**: hands slide under the child (1-4 s of wobble), the child is lifted
  (0.5-2 s), away for 5 s-5 min (the mat reads ~0), and put back (1-3 s).

Faults (``FAULTS``), from a random onset, on a random behaviour of the above:
``stuck`` (the value frozen exactly), ``spike`` (1-3 single readings 2-10 kg
off, within a minute), ``drift`` (0.5-3 kg either way over 2-15 min, then
held), ``drop`` (the load falls at once by 0.5-3 kg, or to 0 with the noise
left, and stays), ``noise`` (the sensor's noise x10).

Tuning only; the held-out evaluation worlds live in ``models.evalworlds``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERIOD_S = 0.5
QUANTUM_KG = 1.0 / 600.0
"""One count of the emulated mat's summed load (``edge.nursery.mat.COUNTS_PER_KG``)."""
BEHAVIOURS: tuple[str, ...] = ("still", "restless", "tonton", "blanket", "hand_press", "lift")
FAULTS: tuple[str, ...] = ("stuck", "spike", "drift", "drop", "noise")
FAULT_HOSTS: tuple[str, ...] = ("still", "restless", "tonton", "blanket")
"""Behaviours a fault is put on (a lift's empty minutes are no place for one)."""


@dataclass
class Scene:
    """One cot's load series: ``values[i]`` at ``i * period_s`` seconds."""

    behaviour: str
    values: np.ndarray
    period_s: float = PERIOD_S
    fault: str | None = None
    onset: int | None = None
    """Index of the fault's first reading."""
    meta: dict[str, Any] = field(default_factory=dict)


def _burst(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """A body's dynamic load over n readings: smoothed noise under a bell envelope."""
    raw = rng.normal(0.0, 1.0, n + 4)
    smooth = np.convolve(raw, np.ones(3) / 3.0, mode="same")[2:-2]
    env = np.sin(np.linspace(0.0, math.pi, n)) ** 0.5
    return amp * smooth * env / max(1e-9, float(np.std(smooth)))


class _Child:
    """The child's load without sensor noise, built up reading by reading."""

    def __init__(self, rng: np.random.Generator, n: int, weight: float) -> None:
        self.rng, self.n, self.w = rng, n, weight
        self.level = np.full(n, weight)
        self.extra = np.zeros(n)

    def turn(self, i: int, *, big: bool = True) -> int:
        """A turn over at reading i; returns the reading after it ends."""
        rng, w = self.rng, self.w
        dur = int(rng.integers(4, 25)) if big else int(rng.integers(2, 6))
        end = min(self.n, i + dur)
        amp = w * (rng.uniform(0.05, 0.30) if big else rng.uniform(0.02, 0.08))
        self.extra[i:end] += _burst(rng, end - i, amp)
        if end < self.n:
            new = w * (1.0 + rng.normal(0.0, 0.01))
            if big and rng.random() < 0.15:
                new -= w * rng.uniform(0.03, 0.15)  # a limb on the rail
            tau = rng.uniform(30.0, 120.0)  # readings (15-60 s)
            creep = w * rng.normal(0.0, 0.007)
            k = np.arange(self.n - end)
            self.level[end:] = new + creep * (1.0 - np.exp(-k / tau))
            self.level[i:end] = np.linspace(self.level[i - 1] if i else w, new, end - i)
        return end

    def twitch(self, i: int) -> None:
        amp = self.w * self.rng.uniform(0.01, 0.08) * self.rng.choice([-1.0, 1.0])
        self.extra[i] += amp
        if i + 1 < self.n and self.rng.random() < 0.5:
            self.extra[i + 1] -= amp * self.rng.uniform(0.3, 1.0)


def _times(rng: np.random.Generator, n: int, mean_gap: float, start: int = 0) -> list[int]:
    out, i = [], start + int(rng.exponential(mean_gap))
    while i < n:
        out.append(i)
        i += max(4, int(rng.exponential(mean_gap)))
    return out


def _wobble(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    return amp * rng.uniform(-1.0, 1.0, n) * np.sin(np.linspace(0.0, math.pi, n))


def _pats(rng: np.random.Generator, n: int, start: int, length: int) -> np.ndarray:
    """Patting (tonton) from reading ``start`` for ``length`` readings, sampled at 2 Hz."""
    out = np.zeros(n)
    f = rng.uniform(1.0, 2.0)
    jitter = rng.uniform(0.03, 0.08)
    amp = rng.uniform(0.2, 2.0)
    width = rng.uniform(0.12, 0.35)
    t0, t_end = start * PERIOD_S, min(n, start + length) * PERIOD_S
    t = t0
    beats = []
    while t < t_end:
        if rng.random() < 0.02:  # a short pause
            t += rng.uniform(1.0, 6.0)
        beats.append((t, amp * rng.uniform(0.8, 1.2)))
        t += (1.0 / f) * (1.0 + rng.normal(0.0, jitter))
    ts = np.arange(n) * PERIOD_S
    for tb, a in beats:
        lo, hi = int((tb) / PERIOD_S), int((tb + width) / PERIOD_S) + 1
        for j in range(max(0, lo), min(n, hi + 1)):
            x = (ts[j] - tb) / width
            if 0.0 <= x <= 1.0:
                out[j] += a * math.sin(math.pi * x)
    return out


def behaviour(name: str, rng: np.random.Generator, minutes: float) -> Scene:
    """A fault-free scene of ``minutes`` of one behaviour."""
    n = int(minutes * 60 / PERIOD_S)
    w = rng.uniform(3.0, 18.0)
    sigma = math.exp(rng.uniform(math.log(0.01), math.log(0.08)))
    child = _Child(rng, n, w)
    other = np.zeros(n)  # loads that are not the child: hands, blankets
    present = np.ones(n)
    meta: dict[str, Any] = {"weight_kg": round(w, 2), "sigma_kg": round(sigma, 4)}
    still_twitch = 1200.0 if name == "still" else 240.0
    for i in _times(rng, n, still_twitch):
        child.twitch(i)
    if name in ("restless", "tonton", "blanket", "hand_press", "lift"):
        gap = rng.uniform(120.0, 960.0) if name == "restless" else rng.uniform(600.0, 2400.0)
        for i in _times(rng, n, gap, start=20):
            child.turn(i)
    if name == "tonton":
        sessions = int(rng.integers(1, 3))
        for _ in range(sessions):
            length = int(rng.uniform(2.0, 15.0) * 60 / PERIOD_S)
            start = int(rng.uniform(0, max(1, n - length)))
            other += _pats(rng, n, start, length)
            for i in _times(rng, start + length, 200.0, start=start):
                child.turn(i, big=False)
        meta["sessions"] = sessions
    elif name == "blanket":
        on = bool(rng.random() < 0.5)
        level = rng.uniform(0.2, 1.0) if not on else 0.0
        other += level
        for i in sorted(rng.choice(np.arange(60, n - 20), int(rng.integers(2, 7)), replace=False)):
            mass = rng.uniform(0.2, 1.0)
            target = mass if on else 0.0
            # laid on: at once or over up to 3 s; taken off: pulled, over 1.5-4 s
            dur = int(rng.integers(1, 7)) if on else int(rng.integers(3, 9))
            ramp = np.linspace(level, target, dur) + _wobble(rng, dur, rng.uniform(0.1, 0.5))
            other[i:i + dur] += ramp - level
            other[i + dur:] += target - level
            level, on = target, not on
            if rng.random() < 0.5 and i + dur + 4 < n:
                child.turn(i + dur + int(rng.integers(0, 4)), big=False)
    elif name == "hand_press":
        for i in _times(rng, n, rng.uniform(200.0, 600.0), start=20):
            dur = int(rng.integers(2, 21))
            end = min(n, i + dur)
            kg = rng.uniform(1.0, 5.0)
            shape = np.minimum(1.0, np.minimum(np.arange(1, end - i + 1), np.arange(end - i, 0, -1))
                               / rng.uniform(1.0, 2.0))
            other[i:end] += kg * shape + _wobble(rng, end - i, 0.3 * kg)
    elif name == "lift":
        i = int(rng.uniform(60, 600))
        while i < n - 40:
            pre = int(rng.integers(2, 9))
            other[i:i + pre] += _wobble(rng, pre, rng.uniform(0.3, 1.0)) + rng.uniform(0.0, 1.0)
            up = int(rng.integers(1, 5))
            a = i + pre
            away = int(rng.uniform(10, 600))
            b = min(n, a + up + away)
            present[a:a + up] = np.linspace(1.0, 0.0, up + 2)[1:-1]
            present[a + up:b] = 0.0
            if b < n:
                down = int(rng.integers(2, 7))
                c = min(n, b + down)
                present[b:c] = np.linspace(0.0, 1.0, down + 2)[1:-1][: c - b]
                other[b:c] += _wobble(rng, c - b, rng.uniform(0.3, 1.0))
                if c < n:
                    child.turn(c, big=False)
            i = b + int(rng.uniform(300, 2400))
    breath_f = rng.uniform(0.3, 1.0)
    ripple = w * rng.uniform(0.0, 0.005) * np.sin(
        2 * math.pi * breath_f * np.arange(n) * PERIOD_S + rng.uniform(0, 6.3))
    load = present * (child.level + child.extra + ripple) + other
    values = load + rng.normal(0.0, sigma, n)
    values = np.round(values / QUANTUM_KG) * QUANTUM_KG
    return Scene(name, values, PERIOD_S, None, None, meta)


def inject(scene: Scene, fault: str, rng: np.random.Generator, onset: int) -> Scene:
    """The same scene with ``fault`` from reading ``onset`` on."""
    v = scene.values.copy()
    n = len(v)
    sigma = float(scene.meta["sigma_kg"])
    meta = dict(scene.meta)
    if fault == "stuck":
        v[onset:] = v[onset]
    elif fault == "spike":
        k = int(rng.integers(1, 4))
        idx = sorted({onset, *(onset + int(rng.integers(4, 120)) for _ in range(k - 1))})
        for i in idx:
            if i < n:
                v[i] += rng.uniform(2.0, 10.0) * rng.choice([-1.0, 1.0])
        meta["spikes"] = len(idx)
    elif fault == "drift":
        amount = rng.uniform(0.5, 3.0) * rng.choice([-1.0, 1.0])
        dur = int(rng.uniform(2.0, 15.0) * 60 / PERIOD_S)
        ramp = np.minimum(1.0, np.arange(n - onset) / dur)
        v[onset:] += amount * ramp
        meta.update(amount_kg=round(float(amount), 2), over_min=round(dur * PERIOD_S / 60, 1))
    elif fault == "drop":
        if rng.random() < 0.3:
            v[onset:] = rng.normal(0.0, sigma, n - onset)
            meta["to_zero"] = True
        else:
            amount = rng.uniform(0.5, 3.0)
            v[onset:] -= amount
            meta["amount_kg"] = round(float(amount), 2)
    elif fault == "noise":
        v[onset:] += rng.normal(0.0, 9.0 * sigma, n - onset)  # total about 10x (sqrt 82)
    else:
        raise ValueError(f"unknown fault {fault!r}")
    if fault != "stuck":
        v = np.round(v / QUANTUM_KG) * QUANTUM_KG
    return Scene(scene.behaviour, v, scene.period_s, fault, onset, meta)


def scenes(name: str, n: int, minutes: float, seed: int) -> list[Scene]:
    """``n`` scenes: a behaviour of :data:`BEHAVIOURS`, or a fault of :data:`FAULTS` on a
    random host behaviour with its onset between a third and a half of the way in."""
    rng = np.random.default_rng([seed, (BEHAVIOURS + FAULTS).index(name)])
    out = []
    for _ in range(n):
        if name in BEHAVIOURS:
            out.append(behaviour(name, rng, minutes))
            continue
        host = behaviour(str(rng.choice(FAULT_HOSTS)), rng, minutes)
        length = len(host.values)
        onset = int(rng.uniform(length / 3, length / 2))
        out.append(inject(host, name, rng, onset))
    return out


MATCH: dict[str, tuple[str, ...]] = {
    "stuck": ("stuck",),
    "spike": ("spike",),
    "drift": ("drift", "step"),
    "drop": ("step", "dropout", "drift"),
    "noise": ("noise",),
}
"""The detector's tests that count as catching each fault."""
DELAY_S: dict[str, float] = {"stuck": 30.0, "spike": 10.0, "drift": 20 * 60.0, "drop": 60.0,
                             "noise": 5 * 60.0}
"""The delay each fault must be caught within (drift: from its onset; a 15-min ramp of
0.5 kg is only 0.4 kg in after 12 min)."""


def run_detector(values: Any, period_s: float) -> list[tuple[float, str]]:
    """(time, test) of every finding of a fresh detector over the series."""
    from edge.health.mat_load_faults import MatLoadDetector

    det = MatLoadDetector()
    out = []
    for i, v in enumerate(values):
        t = i * period_s
        out += [(t, f.test) for f in det.add(t, float(v))]
    return out


def measure(
    series: dict[str, list[Any]], faults: dict[str, list[Any]], *, out: Any = print
) -> dict[str, dict[str, float]]:
    """False events per cot-hour per behaviour; recall within :data:`DELAY_S`, median delay and
    false events before onset per fault.  ``series``/``faults``: name -> objects with
    ``values``, ``period_s`` (and ``fault``, ``onset`` for faults)."""
    figures: dict[str, dict[str, float]] = {}
    for name, items in series.items():
        hours = sum(len(s.values) * s.period_s for s in items) / 3600.0
        tests: dict[str, int] = {}
        for s in items:
            for _, test in run_detector(s.values, s.period_s):
                tests[test] = tests.get(test, 0) + 1
        rate = sum(tests.values()) / hours
        figures[name] = {"false_per_hour": rate, "hours": hours}
        out(f"{name:12s} {rate:6.3f} false events/cot-hour over {hours:5.1f} h  {tests}")
    for name, items in faults.items():
        delays, early, caught_any = [], 0, 0
        pre_hours = 0.0
        for s in items:
            found = run_detector(s.values, s.period_s)
            t0 = s.onset * s.period_s
            pre_hours += t0 / 3600.0
            early += sum(1 for t, _ in found if t < t0)
            after = [t - t0 for t, test in found if t >= t0 and test in MATCH[name]]
            caught_any += any(t >= t0 for t, _ in found)
            delays.append(min(after) if after else math.inf)
        limit = DELAY_S[name]
        recall = sum(d <= limit for d in delays) / len(items)
        finite = sorted(d for d in delays if math.isfinite(d))
        med = finite[len(finite) // 2] if finite else math.inf
        figures[name] = {"recall": recall, "median_delay_s": med,
                         "ever": len(finite) / len(items)}
        ever, anyt = 100 * len(finite) / len(items), 100 * caught_any / len(items)
        out(f"{name:12s} recall {100 * recall:5.1f} % within {limit:5.0f} s "
            f"(ever {ever:5.1f} %, any test {anyt:5.1f} %), "
            f"median delay {med:6.1f} s; false before onset {early / max(pre_hours, 1e-9):.3f}/h")
    return figures


def main(argv: list[str] | None = None) -> None:
    """``python -m models.anomaly.mat_scenes [--n N] [--minutes M] [--seed S]``."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--n", type=int, default=40, help="scenes per behaviour and per fault")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    print(f"mat_scenes: {args.n} scenes x {args.minutes:g} min each, seed {args.seed}")
    measure({b: scenes(b, args.n, args.minutes, args.seed) for b in BEHAVIOURS},
            {f: scenes(f, args.n, args.minutes, args.seed) for f in FAULTS})


if __name__ == "__main__":
    main()
