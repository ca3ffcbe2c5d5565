"""Development table of the water fault rules on ``models.anomaly.water_sites`` (issue 15).

    .venv/bin/python -m models.anomaly.water_dev [--n 6] [--days 8] [--seed 0] [--tests]
                                                 [--drift-n 24] [--gate-input]

Per family: false events per sensor-day on clean series (every finding counts), and per
fault the share caught (a finding at or after the onset: spike within 1 h, drift within
3 days, the rest within a day) with the median delay, by :func:`models.anomaly.scoring.table`.
Gate and reservoir series (:data:`~models.anomaly.water_sites.GATED`) are scored with
``level_steps = "expected"`` (``steps_expected``), as an installer configures a channel a gate
moves; the other families with the defaults. With ``--tests`` the false events are broken down
by test; with ``--gate-input`` gate and reservoir series are also scored with the default
``level_steps`` and a gate input instead (:class:`GateInputDetector`: the series' ``gate_ops``
handed to :meth:`~edge.health.water_faults.WaterFaultDetector.gate_moved`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from edge.health.water_faults import Finding, WaterFaultDetector, WaterFaultParams
from models.anomaly import scoring
from models.anomaly import water_sites as W


def detector_for(family: str) -> WaterFaultDetector:
    return WaterFaultDetector(WaterFaultParams(steps_expected=family in W.GATED))


class GateInputDetector:
    """The rules with the default ``level_steps`` and a gate input: every operation of the
    gate or pump (the series' ``gate_ops`` label, what a gate-position input or a pump's run
    signal tells) is handed to :meth:`WaterFaultDetector.gate_moved` as it happens."""

    def __init__(self) -> None:
        self.det = WaterFaultDetector()
        self.ops: list[float] = []

    def site_inputs(self, meta: dict[str, Any]) -> None:
        self.ops = sorted(float(i) * W.PERIOD_S for i in meta.get("gate_ops", []))

    def add(self, t: float, value: float) -> list[Finding]:
        while self.ops and self.ops[0] <= t:
            self.det.gate_moved(self.ops.pop(0))
        return self.det.add(t, value)


def false_by_test(family: str, n: int, days: float, seed: int) -> Counter[str]:
    """Which tests fire on the clean series of ``family``."""
    c: Counter[str] = Counter()
    for s in W.water(family, n, days, seed, None):
        for _, f in scoring.run(detector_for(family), s):
            c[f.test] += 1
    return c


def drift_by_rate(family: str, n: int, days: float, seed: int) -> dict[str, tuple[int, int]]:
    """Drift caught within 3 days, by the drift's rate (cm/day): bucket -> (caught, series)."""
    out: dict[str, tuple[int, int]] = {}
    for s in W.water(family, n, days, seed, "drift"):
        rate = abs(float(s.meta["drift_cm_day"]))
        key = "2-3.5" if rate < 3.5 else ("3.5-5" if rate < 5.0 else "5-10")
        assert s.onset is not None
        t0 = float(s.onset) * s.period_s
        hit = any(
            t0 <= t <= t0 + 3 * scoring.DAY_S for t, _ in scoring.run(detector_for(family), s)
        )
        c, k = out.get(key, (0, 0))
        out[key] = (c + int(hit), k + 1)
    return dict(sorted(out.items()))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="series per family and fault")
    ap.add_argument("--days", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default=",".join(W.FAMILIES))
    ap.add_argument("--no-table", action="store_true", help="only the extra breakdowns")
    ap.add_argument("--faults", default=",".join(W.FAULTS))
    ap.add_argument("--tests", action="store_true", help="break false events down by test")
    ap.add_argument("--gate-input", action="store_true",
                    help="gate channels also with a gate input instead of level_steps")
    ap.add_argument(
        "--drift-n",
        type=int,
        default=0,
        help="also: drift caught by rate, on this many more drift series",
    )
    args = ap.parse_args(argv)
    started = time.monotonic()
    fams = [f for f in args.families.split(",") if f in W.FAMILIES]
    faults = [f for f in args.faults.split(",") if f in W.FAULTS]
    print(f"# development sites (models.anomaly.water_sites), n={args.n}, {args.days:g} days, "
          f"seed {args.seed}; false events per sensor-day, recall % / median delay h")  # fmt: skip
    for fam in fams:
        dets: dict[str, Any] = {"rules": lambda fam=fam: detector_for(fam),
                                "baseline": scoring.BaselineDetector}  # fmt: skip
        if fam in W.GATED and args.gate_input:
            dets["gate input"] = GateInputDetector
        if not args.no_table:
            scoring.table("dev", [fam], faults, dets, args.n, args.days, args.seed, make=W.water)
        if args.tests:
            print(
                f"  false events by test: {dict(false_by_test(fam, args.n, args.days, args.seed))}"
            )
        if args.drift_n:
            by = drift_by_rate(fam, args.drift_n, args.days, args.seed + 100)
            print(f"  drift caught within 3 days by rate (cm/day): {by}")
    print(f"# {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
