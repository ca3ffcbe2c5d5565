"""Run the two-gauge check (edge.water.pair.GaugePair) over the independent pair world.

    .venv/bin/python -m models.evalworlds.pairs_eval [--healthy 24] [--faulty 12] [--detail]
        [--disable EFFECT ...] [--family F ...]

Per family it prints: false Disagreements per pair-day on healthy series (every one counts),
the same before onset on faulty series, the share of healthy series with any, recall of drift
within 3 days of onset (below / at or above 5 cm/day), recall of offset within 1 day, and the
median delay of the detections.  A detection is the first Disagreement at or after the onset
and within the window; a Disagreement raised before the onset and still open (no Agreement
since) is not a detection of the fault (it is counted in the false alarms, and shown as
``open@onset`` in --detail).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field

from edge.water.pair import Agreement, Disagreement, GaugePair
from models.evalworlds.pairs import DAY, EFFECTS, FAMILIES, HOUR, PairSeries, generate

DRIFT_WINDOW_S = 3 * DAY
OFFSET_WINDOW_S = 1 * DAY
DRIFT_SPLIT = 5.0  # cm/day
HEALTHY_SEED0 = 0
DRIFT_SEED0 = 1000
OFFSET_SEED0 = 2000


@dataclass
class Run:
    """What the check said over one series."""

    series: PairSeries
    disagreements: list[tuple[float, float, str]] = field(default_factory=list)  # t, shift, detail
    agreements: list[float] = field(default_factory=list)
    error: str | None = None


def run_check(series: PairSeries, tolerance_cm: float = 3.0) -> Run:
    run = Run(series)
    pair = GaugePair("a", "b", tolerance_cm)
    try:
        for t, gauge, level in series.readings:
            for finding in pair.add(t, gauge, level):
                if isinstance(finding, Disagreement):
                    run.disagreements.append((t, float(finding.shift_cm), str(finding.detail)))
                elif isinstance(finding, Agreement):
                    run.agreements.append(t)
    except Exception as exc:  # noqa: BLE001 - a crash of the check is a result to report
        run.error = f"{type(exc).__name__}: {exc}"
    return run


def _onset(run: Run) -> float:
    onset = run.series.labels["onset_s"]
    assert isinstance(onset, float)
    return onset


def detection(run: Run, window_s: float) -> float | None:
    """Delay (s) of the first Disagreement in [onset, onset + window], or None."""
    onset = _onset(run)
    for t, _shift, _detail in run.disagreements:
        if onset <= t <= onset + window_s:
            return t - onset
    return None


def open_at_onset(run: Run) -> bool:
    onset = _onset(run)
    last_d = max((t for t, _s, _d in run.disagreements if t < onset), default=None)
    if last_d is None:
        return False
    return not any(last_d <= t < onset for t in run.agreements)


def _fmt_rate(x: float) -> str:
    return f"{x:.3f}"


def _fmt_recall(hits: int, n: int) -> str:
    return f"{hits}/{n}" + (f" {100.0 * hits / n:3.0f}%" if n else "")


def _median_h(delays: list[float]) -> str:
    return f"{statistics.median(delays) / HOUR:.1f}" if delays else "-"


def evaluate(
    families: list[str],
    n_healthy: int,
    n_faulty: int,
    days: float,
    disable: list[str],
    detail: bool,
) -> dict[str, dict[str, float]]:
    """Print the table; per family its figures (rates per pair-day, recalls as shares, NaN
    where there was nothing to count)."""
    out: dict[str, dict[str, float]] = {}
    header = (
        f"{'family':7s} {'FA/pair-day':>11s} {'pre-onset':>9s} {'healthy w/FA':>12s} "
        f"{'drift<5 (3d)':>13s} {'drift>=5 (3d)':>13s} {'offset (1d)':>12s} "
        f"{'med delay drift h':>17s} {'offset h':>8s} {'errors':>6s}"
    )
    print(header)
    print("-" * len(header))
    for family in families:
        healthy = [
            run_check(generate(family, "none", HEALTHY_SEED0 + i, days, disable))
            for i in range(n_healthy)
        ]
        drifts = [
            run_check(generate(family, "drift", DRIFT_SEED0 + i, days, disable))
            for i in range(n_faulty)
        ]
        offsets = [
            run_check(generate(family, "offset", OFFSET_SEED0 + i, days, disable))
            for i in range(n_faulty)
        ]
        errors = [r for r in healthy + drifts + offsets if r.error is not None]
        fa = sum(len(r.disagreements) for r in healthy)
        fa_rate = fa / (n_healthy * days) if n_healthy else float("nan")
        with_fa = sum(1 for r in healthy if r.disagreements)
        pre = sum(
            sum(1 for t, _s, _d in r.disagreements if t < _onset(r)) for r in drifts + offsets
        )
        pre_days = sum(_onset(r) / DAY for r in drifts + offsets)
        pre_rate = pre / pre_days if pre_days else float("nan")
        slow_hits = slow_n = fast_hits = fast_n = off_hits = 0
        drift_delays: list[float] = []
        off_delays: list[float] = []
        for r in drifts:
            rate = r.series.labels["rate_cm_per_day"]
            assert isinstance(rate, float)
            delay = detection(r, DRIFT_WINDOW_S)
            if abs(rate) < DRIFT_SPLIT:
                slow_n += 1
                slow_hits += delay is not None
            else:
                fast_n += 1
                fast_hits += delay is not None
            if delay is not None:
                drift_delays.append(delay)
        for r in offsets:
            delay = detection(r, OFFSET_WINDOW_S)
            if delay is not None:
                off_hits += 1
                off_delays.append(delay)
        print(
            f"{family:7s} {_fmt_rate(fa_rate):>11s} {_fmt_rate(pre_rate):>9s} "
            f"{f'{with_fa}/{n_healthy}':>12s} {_fmt_recall(slow_hits, slow_n):>13s} "
            f"{_fmt_recall(fast_hits, fast_n):>13s} {_fmt_recall(off_hits, n_faulty):>12s} "
            f"{_median_h(drift_delays):>17s} {_median_h(off_delays):>8s} {len(errors):>6d}"
        )
        if detail:
            _print_detail(healthy, drifts, offsets)
        for r in errors[:3]:
            print(f"    error (seed {r.series.labels['seed']}): {r.error}")
        out[family] = {
            "false_per_pair_day": fa_rate,
            "false_per_pair_day_before_onset": pre_rate,
            "drift_recall_slow": slow_hits / slow_n if slow_n else float("nan"),
            "drift_recall_fast": fast_hits / fast_n if fast_n else float("nan"),
            "offset_recall": off_hits / n_faulty if n_faulty else float("nan"),
            "errors": float(len(errors)),
        }
    return out


def _world_brief(s: PairSeries) -> str:
    w = s.labels["world"]
    g = s.labels["gauges"]
    assert isinstance(w, dict) and isinstance(g, dict)
    kinds = "".join(str(g[n]["kind"])[0] for n in ("a", "b"))
    keys = (
        "regime",
        "control",
        "mode",
        "max_rise_cm",
        "velocity_head_max_cm",
        "storm",
        "compensated",
        "water_min_cm",
        "level_range_cm",
        "salt_density_max",
    )
    parts = [f"{k}={w[k]}" for k in keys if k in w]
    comp = [f"{n}:{g[n].get('compensated')}" for n in ("a", "b") if g[n]["kind"] == "ultrasonic"]
    return f"{kinds} " + " ".join(parts) + (" comp " + ",".join(comp) if comp else "")


def _print_detail(healthy: list[Run], drifts: list[Run], offsets: list[Run]) -> None:
    for r in healthy:
        if r.disagreements:
            ts = ", ".join(f"{t / DAY:.2f}d({s:+.1f})" for t, s, _d in r.disagreements[:6])
            print(
                f"    healthy seed {r.series.labels['seed']}: {len(r.disagreements)} FA "
                f"at {ts}  [{_world_brief(r.series)}]"
            )
    for r, window in [(x, DRIFT_WINDOW_S) for x in drifts] + [
        (x, OFFSET_WINDOW_S) for x in offsets
    ]:
        lab = r.series.labels
        amount = lab["rate_cm_per_day"] if lab["fault"] == "drift" else lab["size_cm"]
        delay = detection(r, window)
        pre = [t for t, _s, _d in r.disagreements if t < _onset(r)]
        state = "MISS" if delay is None else f"{delay / HOUR:.1f}h"
        flags = (" open@onset" if open_at_onset(r) else "") + (f" pre-FA={len(pre)}" if pre else "")
        print(
            f"    {lab['fault']} seed {lab['seed']}: {amount:+} on {lab['gauge']} at "
            f"{_onset(r) / DAY:.2f}d -> {state}{flags}  [{_world_brief(r.series)}]"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--healthy", type=int, default=24, help="healthy series per family")
    ap.add_argument("--faulty", type=int, default=12, help="series per family and fault")
    ap.add_argument("--days", type=float, default=8.0)
    ap.add_argument("--family", action="append", choices=FAMILIES)
    ap.add_argument(
        "--disable",
        action="append",
        choices=EFFECTS,
        default=[],
        help="switch a physical effect off (attribution only)",
    )
    ap.add_argument("--detail", action="store_true", help="list false alarms and misses")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    print(
        f"GaugePair('a', 'b', 3.0) on the pair world: {args.healthy} healthy and "
        f"{args.faulty} drift + {args.faulty} offset series per family, {args.days:g} days"
        + (f"; disabled: {', '.join(args.disable)}" if args.disable else "")
    )
    evaluate(
        list(args.family or FAMILIES),
        args.healthy,
        args.faulty,
        args.days,
        list(args.disable),
        args.detail,
    )
    print(f"({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
