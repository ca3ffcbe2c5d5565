"""What the series checks mean to people: false events per sensor-day, and faults caught.

    .venv/bin/python benchmarks/anomaly_episodes.py [--series 40] [--water-series 6]

**Water** (issue 15): the fault rules (``edge.health.water_faults``), the trivial
baseline and the old autoencoder side by side on the tuning families of
``models.anomaly.data.water_family`` -- the table of ``models.anomaly.scoring``
(``python -m models.anomaly.scoring --worlds eval`` for the independent series).

**Mat load** (still the model):

The model's card states false positives per *window*; on a device every new
reading is scored (a water level every 10 minutes, a mat's load twice a
second), so windows overlap and what reaches people is *episodes*: one
``anomaly`` event, then silence until the series has looked normal for a whole
window.  This runs generated normal series (held-out seeds) and series with a
persisting fault through the daemon's own ``edge.health.anomaly_watch.AnomalyWatch``
and prints, per series kind:

* false events per sensor-day (water) or per cot-hour of nap (mat), for the
  card's ``confirm_windows`` and for a naive watch that raises on the first
  anomalous window (the ratio is the point of confirming);
* for each fault type, injected at one moment and persisting (a stuck
  reading, a drop, a drift that keeps going; a spike happens once): the share
  of series where an event followed, and the median delay in readings.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.health.anomaly_watch import AnomalyWatch  # noqa: E402
from models.anomaly import data as D  # noqa: E402
from models.anomaly import scoring  # noqa: E402

SEED_BASE = D.HELDOUT_BASE + 7_000_000
"""Seeds no training, calibration or held-out evaluation uses."""


class Events:
    def __init__(self) -> None:
        self.at: list[int] = []
        self.i = 0

    async def __call__(self, kind: str, severity: str, data: dict[str, Any]) -> None:
        if kind == "anomaly":
            self.at.append(self.i)


async def run_series(kind: str, x: np.ndarray, confirm: int | None) -> list[int]:
    """Reading indices at which the watch raised an ``anomaly`` event."""
    events = Events()
    watch = AnomalyWatch("bench", kind, events)
    await watch.start()
    if confirm is not None:
        watch.confirm = confirm
    for i, value in enumerate(x):
        events.i = i
        await watch.add(float(value), i * watch.period_s)
    return events.at


def faulty(kind: str, rng: np.random.Generator, fault: str, n: int, at: int) -> np.ndarray:
    x = D.series(kind, rng, n).astype(np.float64)
    water = kind == "water"
    if fault == "spike":
        width = int(rng.integers(1, 4))
        x[at : at + width] += (rng.uniform(6, 40) if water else rng.uniform(0.5, 3)) * rng.choice(
            (-1.0, 1.0)
        )
    elif fault == "stuck":
        x[at:] = x[at]
    elif fault == "drift":  # the generator's slope (D over ~48 readings), and it keeps going
        d = (rng.uniform(10, 30) if water else rng.uniform(0.4, 2)) * rng.choice((-1.0, 1.0))
        x[at:] += d * np.arange(n - at) / 48
    else:
        x[at:] = 0.0 if rng.random() < 0.3 else x[at:] - (
            rng.uniform(8, 40) if water else rng.uniform(0.5, 3)
        )
    return x


async def main(n_series: int, water_series: int) -> None:
    scoring.table("tuning", D.WATER_FAMILIES, D.WATER_FAULTS, tuple(scoring.DETECTORS),
                  water_series, 8.0, 0)  # fmt: skip
    for kind in ("mat_load",):
        period = D.SAMPLE_PERIOD_S[kind]
        length = 2048 if kind == "water" else 4096
        probe = AnomalyWatch("bench", kind, Events())
        await probe.start()
        confirm = probe.confirm
        per, unit = (86400.0, "sensor-day") if kind == "water" else (3600.0, "cot-hour")
        normal = [
            D.series(kind, np.random.default_rng([SEED_BASE + s, D.SERIES.index(kind)]), length)
            for s in range(n_series)
        ]
        scored_time = n_series * (length - 63) * period / per
        counts = {}
        for label, k in (("naive (first anomalous window)", 1), ("device", None)):
            events = [len(await run_series(kind, x, k)) for x in normal]
            counts[label] = sum(events)
        naive, device = counts["naive (first anomalous window)"], counts["device"]
        print(
            f"{kind}: {n_series} normal series, {scored_time:.1f} {unit}s scored: false events "
            f"{naive / scored_time:.3f} per {unit} naive, {device / scored_time:.3f} with "
            f"confirm_windows={confirm} (ratio {device / max(naive, 1):.2f})"
        )
        at, n = 300, 600
        for fault in D.ANOMALIES:
            delays = []
            for s in range(n_series):
                rng = np.random.default_rng(
                    [SEED_BASE + 500_000 + s, D.SERIES.index(kind), D.ANOMALIES.index(fault)]
                )
                raised = [i for i in await run_series(kind, faulty(kind, rng, fault, n, at), None)
                          if i >= at]  # fmt: skip
                # a spike is in the window for 64 readings; the others persist to the end
                limit = at + 64 + confirm if fault == "spike" else n
                if raised and raised[0] < limit:
                    delays.append(raised[0] - at)
            share = 100 * len(delays) / n_series
            median = statistics.median(delays) if delays else float("nan")
            print(
                f"  {fault:5s}: an event in {share:5.1f} % of series, median delay {median:.0f} "
                f"readings ({median * period / 60:.1f} min)"
            )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=40, help="mat series per fault")
    ap.add_argument("--water-series", type=int, default=6, help="water series per family, fault")
    args = ap.parse_args()
    asyncio.run(main(args.series, args.water_series))
