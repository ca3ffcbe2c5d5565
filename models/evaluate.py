"""Held-out metrics of the COMMITTED models, through the device's own wrapper.

    python -m models.evaluate [--posture-frames 600] [--recording FILE.npz ...]
                              [--children CSV] [--recordings-only]
                              [--update-card] [--posture-only | --anomaly-only]
                              [--series 6] [--days 8] [--minutes 30] [--autoencoder]

Loads ``models/posture/posture.tflite`` with :mod:`edge.inference.runtime` (the
LiteRT interpreter, the card checks, the preprocessing and decision rule the
device uses) and scores it, and the device's series fault rules, on frames and
series no training or tuning run used:

- posture, per family: the two training worlds on held-out seeds, and the
  evaluation-only world (``models/evalworlds/posture.py``, never trained or
  tuned on); prone recall, false prone and abstention against the targets,
  beside a trivial baseline (a linear classifier on the same canonical input);
  and the invariances the device needs (a turned, shifted or mirrored frame, a
  mat whose empty level crept up by 3 counts);
- any recordings from real mats (``edge mat record``): the same figures per recording and
  per run, and with the nursery's grouping of runs by child (``--children``), per child
  (:mod:`models.posture.recorded`; ``--recordings-only`` skips everything generated);
- the series fault rules the daemon runs for water levels and cot-mat loads, beside
  a trivial baseline, on the independent series of ``models/evalworlds/series.py``
  (see :func:`evaluate_anomaly`), and the two-gauge check (``same_water_as``) on the
  independent pair world ``models/evalworlds/pairs.py`` (:func:`evaluate_pairs`).

No TensorFlow needed.  Exits 1 while any target is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from drivers.motion_mat import MatFrame
from edge.inference.runtime import UNKNOWN, PostureModel
from models.metrics import abstaining_report, confusion_text

POSTURE_TARGETS = {"prone_recall": 0.97, "false_prone": 0.03, "abstain": 0.10}
LABELS = ("empty", "supine", "prone", "left", "right")
HELDOUT_SEED = 8_000
"""Held-out seeds of the training families (training uses 0-999; train.py's own 7000+)."""
EVAL_SEED = 1


def posture_families(
    n: int, trained_on: list[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Frames, empty levels and labels of every family: the model's training worlds on
    held-out seeds, the worlds it never saw, and the evaluation-only world."""
    from models.evalworlds import posture as sunk
    from models.posture.families import FAMILIES, loader

    out = {f"{f} (held out)": loader(f)(n, HELDOUT_SEED) for f in FAMILIES if f in trained_on}
    out |= {f"{f} (never trained on)": loader(f)(n, HELDOUT_SEED)
            for f in FAMILIES if f not in trained_on}  # fmt: skip
    out["sunk (evaluation only)"] = sunk.dataset(n, EVAL_SEED)
    return out


def predict(model: PostureModel, frames: np.ndarray, levels: np.ndarray | None) -> np.ndarray:
    """Class index per frame through the device's wrapper, -1 for unknown."""
    out = np.empty(len(frames), dtype=np.int64)
    for i, frame in enumerate(frames):
        mf = MatFrame(0, frame.shape[0], frame.shape[1], np.ascontiguousarray(frame).tobytes())
        label, _ = model.classify(mf, None if levels is None else levels[i].ravel())
        out[i] = -1 if label == UNKNOWN else LABELS.index(label)
    return out


def on_cot(pred: np.ndarray, frames: np.ndarray, levels: np.ndarray) -> list[str]:
    """What the nap rule makes of each answer (:func:`edge.nursery.cot.posture_on_cot`): the
    cot's occupancy from the frame's load over its empty level (the daemon's default scale
    and on-threshold, one frame: no hysteresis), then the model's answer."""
    from edge.nursery.cot import posture_on_cot
    from edge.nursery.mat import OCCUPIED_ON_KG, MatCalibration

    out = []
    for p, frame, level in zip(pred, frames, levels, strict=True):
        rows, cols = frame.shape
        cal = MatCalibration(rows, cols, level.ravel().tolist(), [0.0] * (rows * cols))
        mf = MatFrame(0, rows, cols, np.ascontiguousarray(frame).tobytes())
        occupied = cal.measure(mf).kg >= OCCUPIED_ON_KG
        out.append(posture_on_cot(occupied, UNKNOWN if p < 0 else LABELS[int(p)]))
    return out


def on_cot_shares(y: np.ndarray, reading: list[str]) -> dict[str, dict[str, float]]:
    """Of the face-down frames, and of the frames on the back or a side: the share the nap
    rule reads as face down (its alarm's count), ``unknown`` ("look now") and a safe posture."""
    from edge.nursery.cot import SAFE_POSTURES

    read = np.asarray(reading)
    kinds = {"face_down": y == LABELS.index("prone"),
             "back_or_side": np.isin(y, [LABELS.index(k) for k in ("supine", "left", "right")])}
    out = {}
    for kind, sel in kinds.items():
        n = max(int(sel.sum()), 1)
        out[kind] = {
            "face_down": float((read[sel] == "prone").sum() / n),
            "look_now": float((read[sel] == UNKNOWN).sum() / n),
            "safe": float(np.isin(read[sel], list(SAFE_POSTURES)).sum() / n),
        }
    return out  # fmt: skip


def on_cot_line(shares: dict[str, dict[str, float]]) -> str:
    f, o = shares["face_down"], shares["back_or_side"]
    return (f"on the cot (the nap rule's reading): face down -> face down "
            f"{100 * f['face_down']:.1f} %, look now {100 * f['look_now']:.1f} %, "
            f"read as safe {100 * f['safe']:.1f} %; back or side -> face down "
            f"{100 * o['face_down']:.1f} %, look now {100 * o['look_now']:.1f} %")  # fmt: skip


def meets(r: dict[str, Any]) -> bool:
    return bool(
        r["prone_recall_answered"] >= POSTURE_TARGETS["prone_recall"]
        and r["false_prone_answered"] <= POSTURE_TARGETS["false_prone"]
        and r["abstain"] <= POSTURE_TARGETS["abstain"]
    )


def line(r: dict[str, Any]) -> str:
    return (
        f"prone recall {100 * r['prone_recall_answered']:5.1f} % "
        f"(all {100 * r['prone_recall_all']:5.1f} %), "
        f"false prone {100 * r['false_prone_answered']:4.1f} %, "
        f"abstain {100 * r['abstain']:4.1f} %, "
        f"accuracy {100 * r['accuracy_answered']:5.1f} %"
    )


def baseline_fit(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The trivial baseline: ridge regression (one-vs-all) on the canonical input, trained
    on the training worlds only."""
    from models.posture.families import TRAINING_FAMILIES, features, loader

    xs, ys = [], []
    for f in TRAINING_FAMILIES:  # the shipped model's, so the baseline sees what it saw
        fr, lv, y = loader(f)(n, 900)
        xs.append(features(fr, lv).reshape(len(fr), -1))
        ys.append(y)
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    xb = np.hstack([x, np.ones((len(x), 1), dtype=np.float32)])
    t = np.eye(len(LABELS))[y]
    w = np.linalg.solve(xb.T @ xb + 1.0 * np.eye(xb.shape[1]), xb.T @ t)
    return w, xb.mean(0)


def baseline_predict(w: np.ndarray, frames: np.ndarray, levels: np.ndarray) -> np.ndarray:
    from models.posture.families import features

    x = features(frames, levels).reshape(len(frames), -1)
    xb = np.hstack([x, np.ones((len(x), 1), dtype=np.float32)])
    out: np.ndarray = (xb @ w).argmax(1)
    return out


def invariance(model: PostureModel, frames: np.ndarray, levels: np.ndarray) -> dict[str, float]:
    """Share of answers that change when the frame is turned 180 deg, shifted one cell, or the
    whole mat reads 3 counts more than its calibration; and of left/right swapped by a mirror."""
    base = predict(model, frames, levels)
    turned = predict(model, frames[:, ::-1, ::-1], levels[:, ::-1, ::-1])
    # One cell along the cot, for frames whose last column carries no load (the body is
    # moved, not cut): the new first column reads its empty level.
    free = (frames[:, :, -1].astype(np.float32) - levels[:, :, -1]).max(axis=1) < 3
    shifted_f = np.concatenate([np.rint(levels[:, :, :1]).astype(np.uint8), frames[:, :, :-1]], 2)
    shifted_l = np.concatenate([levels[:, :, :1], levels[:, :, :-1]], axis=2)
    shifted = predict(model, shifted_f[free], shifted_l[free])
    crept = predict(model, np.clip(frames.astype(np.int16) + 3, 0, 255).astype(np.uint8), levels)
    mirrored = predict(model, frames[:, ::-1, :], levels[:, ::-1, :])
    swap = np.array([0, 1, 2, 4, 3])
    m_ok = mirrored == np.where(base >= 0, swap[np.maximum(base, 0)], -1)
    return {
        "turned_180": float((turned != base).mean()),
        "shifted_1_cell": float((shifted != base[free]).mean()),
        "empty_level_plus_3": float((crept != base).mean()),
        "mirror_not_swapping_sides": float((~m_ok).mean()),
    }


def load_posture_model(folder: Path | None) -> PostureModel:
    """The committed posture model, or the one in ``folder``."""
    if folder:
        return PostureModel.load(folder / "posture.tflite", folder / "card.json")
    return PostureModel.load()


def evaluate_recordings(
    model: PostureModel, paths: list[Path], children: Path | None
) -> dict[str, Any]:
    """Recordings from real mats (``edge mat record``), per recording and run, and with the
    nursery's grouping of runs by child, per child (:mod:`models.posture.recorded`)."""
    from models.posture.recorded import judge, load_recording, read_children, report_lines

    recs = [load_recording(p, model.labels, model.rows, model.cols) for p in paths]
    groups = read_children(children) if children is not None else None
    result = judge(recs, lambda r: predict(model, r.frames, r.levels), model.labels,
                   POSTURE_TARGETS, groups)  # fmt: skip
    print("\n".join(report_lines(result)))
    return result


def evaluate_posture(
    n_per_class: int,
    recordings: list[Path],
    folder: Path | None = None,
    children: Path | None = None,
) -> dict[str, Any]:
    """Every family, the baseline, the invariances and any recordings; ``folder``: another
    model than the committed one (``posture.tflite`` and ``card.json`` in it)."""
    model = load_posture_model(folder)
    print(f"posture ({model.model.path}, {n_per_class} frames per class per family)")
    out: dict[str, Any] = {"families": {}, "baseline": {}}
    ok = True
    w, _ = baseline_fit(max(n_per_class // 2, 100))
    fams = posture_families(n_per_class, list(model.model.card["training"]["families"]))
    for name, (frames, levels, y) in fams.items():
        t0 = time.perf_counter()
        pred = predict(model, frames, levels)
        us = (time.perf_counter() - t0) / len(frames) * 1e6
        r = abstaining_report(y, pred, LABELS)
        r["us_per_frame"] = us
        r["meets_targets"] = meets(r)
        ok = ok and r["meets_targets"]
        b = abstaining_report(y, baseline_predict(w, frames, levels), LABELS)
        out["families"][name] = r
        out["baseline"][name] = b
        print(f"  {name:26s} model    {line(r)}  {'ok' if r['meets_targets'] else 'MISSED'}")
        print(f"  {'':26s} baseline {line(b)}")
        matrix = confusion_text(np.asarray(r["confusion"]), LABELS)
        print("    answered: " + matrix.replace("\n", "\n              "))
        r["on_cot"] = on_cot_shares(y, on_cot(pred, frames, levels))
        print("    " + on_cot_line(r["on_cot"]))
    frames, levels, _ = fams["sunk (evaluation only)"]
    k = 5 * min(n_per_class, 200)
    inv = invariance(model, frames[:k], levels[:k])
    out["invariance"] = inv
    print("  invariance (evaluation-only world, share of answers changed): "
          + ", ".join(f"{k} {100 * v:.1f} %" for k, v in inv.items()))
    if recordings:
        out["recordings"] = evaluate_recordings(model, recordings, children)
        ok = ok and out["recordings"]["meets_targets"]
    out["meets_targets"] = ok
    model.close()
    return out


def update_card(report: dict[str, Any]) -> None:
    """Write the evaluation-only figures into MODEL_CARD.md between its markers."""
    from models.posture.train import EVAL_BEGIN, EVAL_END, HERE

    path = HERE / "MODEL_CARD.md"
    text = path.read_text()
    rows = []
    for name, r in report["families"].items():
        b = report["baseline"].get(name)
        rows.append(f"| {name}, this model (`python -m models.evaluate`) | {_cells(r)} |")
        if b is not None:
            rows.append(f"| {name}, baseline: linear on the same input | {_cells(b)} |")
    inv = report["invariance"]
    met = [n for n, r in report["families"].items() if r["meets_targets"]]
    missed = [n for n, r in report["families"].items() if not r["meets_targets"]]
    verdict = (
        "**Targets met on every family.**" if not missed else
        f"**Targets MISSED on: {', '.join(missed)}**"
        + (f" (met on: {', '.join(met)})." if met else ".")
        + "  Frames the model abstains on become the nap rule's \"look now\" prompt."
    )
    body = "\n".join([
        EVAL_BEGIN,
        "",
        "Through the device's wrapper (`edge.inference.runtime.PostureModel`), the same "
        "columns; the evaluation-only world (`models/evalworlds/posture.py`: a volumetric "
        "body sunk into an elastic-foundation mattress) was written by someone who had "
        "seen neither training world, and is never trained or tuned on; a world marked "
        "\"never trained on\" was written independently for training but this model did "
        "not see it.",
        "",
        "| family | prone recall | false prone | abstain | accuracy | prone recall (all) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        verdict,
        "",
        "Invariance on the evaluation-only world (share of answers that change): "
        + ", ".join(f"{k.replace('_', ' ')} {100 * v:.1f} %" for k, v in inv.items()) + ".",
        "",
        "What the nap rule makes of the answers (occupancy from the frame's load first: a "
        "child the model calls `empty` on a cot that feels one is \"look now\"), per frame; "
        "read as safe is the share that neither alarms nor prompts anyone to look:",
        "",
        "| family | face down: counted face down | look now | read as safe "
        "| back or side: counted face down | look now |",
        "|---|---|---|---|---|---|",
        *[_on_cot_row(name, r["on_cot"]) for name, r in report["families"].items()],
        EVAL_END,
    ])
    start, end = text.index(EVAL_BEGIN), text.index(EVAL_END) + len(EVAL_END)
    path.write_text(text[:start] + body + text[end:])
    print(f"updated {path}")


def _on_cot_row(name: str, shares: dict[str, dict[str, float]]) -> str:
    f, o = shares["face_down"], shares["back_or_side"]
    return (f"| {name} | {100 * f['face_down']:.1f} % | {100 * f['look_now']:.1f} % | "
            f"{100 * f['safe']:.1f} % | {100 * o['face_down']:.1f} % | "
            f"{100 * o['look_now']:.1f} % |")  # fmt: skip


def _cells(r: dict[str, Any]) -> str:
    return (
        f"{100 * r['prone_recall_answered']:.1f} % | {100 * r['false_prone_answered']:.1f} % | "
        f"{100 * r['abstain']:.1f} % | {100 * r['accuracy_answered']:.1f} % | "
        f"{100 * r['prone_recall_all']:.1f} %"
    )


WATER_TARGETS = {"false_per_day": 0.1, "sudden_recall": 0.95, "drift_recall": 0.95}
SUDDEN_WATER = ("spike", "stuck", "offset", "dropout", "noise")
MAT_TARGETS = {"false_per_hour": 0.2}
MAT_HORIZONS = {"spike": 10.0, "stuck": 60.0, "drop": 60.0, "drift": 1200.0, "noise": 300.0}
"""How soon after its onset a mat fault must be told (s)."""
DRIFT_TARGET_CM_DAY = 5.0
"""The drift target's rate: "a 5 cm/day drift caught within 3 days"."""


def drift_rate(meta: dict[str, Any]) -> float | None:
    """A drift series' rate (cm/day, unsigned) where its labels carry one: a numeric label
    ``drift_cm_day`` (the development world's) or ``drift_cm_per_day``.  ``None`` where they
    do not (no other label is guessed at: a site's own rates, e.g. a loss per day, are not
    the fault's)."""
    for key in ("drift_cm_day", "drift_cm_per_day"):
        v = meta.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return abs(float(v))
    return None


def drift_split(sc: Any) -> dict[str, Any]:
    """Drift recall within 3 days split at :data:`DRIFT_TARGET_CM_DAY`, from the labels of the
    series scored (``Score.outcomes``)."""
    rows = [(meta, hit) for fault, meta, hit in sc.outcomes if fault == "drift"]
    rated = [(drift_rate(meta), hit) for meta, hit in rows]
    if not rows or any(r is None for r, _ in rated):
        return {"rate_known": False}
    fast = [hit for r, hit in rated if r is not None and r >= DRIFT_TARGET_CM_DAY]
    slow = [hit for r, hit in rated if r is not None and r < DRIFT_TARGET_CM_DAY]
    return {
        "rate_known": True,
        "fast": (sum(fast), len(fast)),
        "slow": (sum(slow), len(slow)),
        "rates": sorted((round(float(r), 1), bool(h)) for r, h in rated if r is not None),
    }


def water_breakdown(family: str, name: str, sc: Any) -> str:
    """One family's false events by test, and drift recall by rate (with the all-rates one)."""
    tests = ", ".join(f"{t} {n}" for t, n in sorted(sc.false_tests.items(), key=lambda v: -v[1]))
    out = f"    {family} ({name}): false events by test: {tests or 'none'}"
    split = drift_split(sc)
    every = sc.recall("drift")
    if not split["rate_known"]:
        return out + f"; drift {100 * every:.0f} % (all rates); the labels carry no drift rate"
    (cf, nf), (cs, ns) = split["fast"], split["slow"]
    return out + (f"; drift within 3 days: {100 * every:.0f} % all rates, "
                  f"{cf}/{nf} at >= {DRIFT_TARGET_CM_DAY:g} cm/day, {cs}/{ns} below "
                  f"(rate, caught: {split['rates']})")  # fmt: skip


def evaluate_pairs() -> dict[str, Any]:
    """Two gauges on the same water (``same_water_as``: :class:`edge.water.pair.GaugePair`)
    on the independent pair world (``models/evalworlds/pairs.py``, written without sight of
    the check): the water targets, read per pair of gauges."""
    from models.evalworlds import pairs_eval
    from models.evalworlds.pairs import FAMILIES as PAIR_FAMILIES

    print("two gauges on the same water (independent pair world, 24 healthy and 12 + 12 "
          "faulty pairs per family, 8 days; targets: <= 0.1 false per pair-day, drift >= "
          "5 cm/day within 3 days >= 95 %, offset within a day >= 95 %)")  # fmt: skip
    figures = pairs_eval.evaluate(list(PAIR_FAMILIES), 24, 12, 8.0, [], False)
    out: dict[str, Any] = {}
    for family, f in figures.items():
        r: dict[str, Any] = dict(f)
        r["meets_targets"] = bool(
            f["false_per_pair_day"] <= WATER_TARGETS["false_per_day"]
            and f["false_per_pair_day_before_onset"] <= WATER_TARGETS["false_per_day"]
            and not f["drift_recall_fast"] < WATER_TARGETS["drift_recall"]
            and f["offset_recall"] >= WATER_TARGETS["sudden_recall"]
            and f["errors"] == 0
        )
        out[family] = r
        print(f"  pair {family}: {'ok' if r['meets_targets'] else 'MISSED'}")
    return out


def evaluate_anomaly(n: int, days: float, minutes: float, autoencoder: bool) -> dict[str, Any]:
    """The series fault rules the daemon runs, beside the trivial baseline (and, asked, the
    autoencoder they replaced), on the independent series of ``models/evalworlds/series.py``
    (never tuned on): false events per sensor-day / cot-hour, recall and delay per fault."""
    from edge.health.mat_load_faults import MatLoadDetector
    from models.anomaly import scoring
    from models.evalworlds import series as E

    out: dict[str, Any] = {"water": {}, "mat": {}}
    ok = True

    def water(family: str, k: int, length: float, seed: int, fault: str | None) -> list[Any]:
        return list(E.water(family, k, length, seed, fault=fault))

    from edge.health.water_faults import WaterFaultDetector, WaterFaultParams

    def gated() -> WaterFaultDetector:
        """The rules as an installer configures a channel a gate moves (level_steps)."""
        return WaterFaultDetector(WaterFaultParams(steps_expected=True))

    dets: dict[str, Any] = {
        "rules": scoring.DETECTORS["water"], "baseline": scoring.BaselineDetector,
    }
    if autoencoder:
        dets["autoencoder"] = scoring.AutoencoderDetector
    print(f"water (independent series, {n} per family and fault, {days:g} days; false events "
          f"per sensor-day, recall % / median delay h; targets: <= 0.1, sudden faults >= 95 %, "
          f"drift within 3 days >= 95 %)")  # fmt: skip
    scores: dict[tuple[str, str], Any] = {}
    gates = tuple(f for f in E.WATER_FAMILIES if "gate" in f)
    others = tuple(f for f in E.WATER_FAMILIES if f not in gates)
    scoring.table("eval", others, E.WATER_FAULTS, dets, n, days, 11, make=water,
                  scores=scores)  # fmt: skip
    # A channel a gate moves is configured so (level_steps = "expected"): its own rules.
    scoring.table("eval", gates, E.WATER_FAULTS, {**dets, "rules gated": gated}, n, days, 11,
                  make=water, scores=scores)  # fmt: skip
    for family in E.WATER_FAMILIES:
        sc = scores[(family, "rules gated" if family in gates else "rules")]
        r = {
            "false_per_day": sc.false_per_day,
            "false_by_test": dict(sc.false_tests),
            "recall": {f: sc.recall(f) for f in E.WATER_FAULTS},
            "drift_by_rate": drift_split(sc),
            "baseline_false_per_day": scores[(family, "baseline")].false_per_day,
        }
        r["meets_targets"] = (
            sc.false_per_day <= WATER_TARGETS["false_per_day"]
            and all(sc.recall(f) >= WATER_TARGETS["sudden_recall"] for f in SUDDEN_WATER
                    if f in E.WATER_FAULTS)
            and sc.recall("drift") >= WATER_TARGETS["drift_recall"]
        )  # fmt: skip
        ok = ok and r["meets_targets"]
        out["water"][family] = r
        print(f"  water {family}: {'ok' if r['meets_targets'] else 'MISSED'}")
        print(water_breakdown(family, "rules gated" if family in gates else "rules", sc))

    out["pairs"] = evaluate_pairs()
    ok = ok and all(r["meets_targets"] for r in out["pairs"].values())

    def mat(family: str, k: int, length: float, seed: int, fault: str | None) -> list[Any]:
        return list(E.mat(family, k, length, seed, fault=fault))

    def mat_baseline() -> Any:
        return scoring.BaselineDetector(n=24, k=6.0, repeat=20, recovery=120)

    print(f"mat load (independent series, {n * 3} per family and fault, {minutes:g} min; false "
          f"events per cot-hour (target <= 0.2), recall % / median delay h)")  # fmt: skip
    mscores: dict[tuple[str, str], Any] = {}
    scoring.table("eval", E.MAT_FAMILIES, E.MAT_FAULTS,
                  {"rules": MatLoadDetector, "baseline": mat_baseline}, n * 3, minutes, 21,
                  make=mat, scores=mscores, device_period_s=0.5, unit_s=3600.0,
                  horizons=MAT_HORIZONS, default_horizon_s=300.0)  # fmt: skip
    for family in E.MAT_FAMILIES:
        sc = mscores[(family, "rules")]
        r = {
            "false_per_hour": sc.false_per_day,
            "recall": {f: sc.recall(f) for f in E.MAT_FAULTS},
            "baseline_false_per_hour": mscores[(family, "baseline")].false_per_day,
        }
        r["meets_targets"] = sc.false_per_day <= MAT_TARGETS["false_per_hour"]
        ok = ok and r["meets_targets"]
        out["mat"][family] = r
        print(f"  mat {family}: {'ok' if r['meets_targets'] else 'MISSED'}")
    out["meets_targets"] = ok
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posture-frames", type=int, default=600, help="frames per class per family")
    ap.add_argument("--recording", type=Path, action="append", default=[],
                    help="labelled frames from a real mat (edge mat record), .npz")
    ap.add_argument("--children", type=Path, default=None,
                    help="CSV 'recording,session,child' (child: the nursery's code, never a "
                    "name): judge the recordings per child (docs/recording.md)")
    ap.add_argument("--recordings-only", action="store_true",
                    help="only the recordings (with --recording): no generated frames")
    ap.add_argument("--posture-model", type=Path, default=None,
                    help="evaluate the posture model in this folder instead (e.g. one trained "
                    "on a single family, to see how it does on the others)")
    ap.add_argument("--posture-only", action="store_true")
    ap.add_argument("--update-card", action="store_true",
                    help="write the figures into models/posture/MODEL_CARD.md")
    ap.add_argument("--anomaly-only", action="store_true")
    ap.add_argument("--series", type=int, default=6, help="series per family and fault")
    ap.add_argument("--days", type=float, default=8.0, help="length of a water series")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of a mat series")
    ap.add_argument("--autoencoder", action="store_true",
                    help="also score the water autoencoder the rules replaced (slow)")
    ap.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    args = ap.parse_args(argv)
    report: dict[str, Any] = {}
    if args.recordings_only or args.children:
        if not args.recording:
            ap.error("--recordings-only and --children need at least one --recording")
    from models.posture.recorded import RecordingError

    try:
        if args.recordings_only:
            model = load_posture_model(args.posture_model)
            print(f"posture ({model.model.path}), recordings from real mats")
            try:
                report["recordings"] = evaluate_recordings(model, args.recording, args.children)
            finally:
                model.close()
        elif not args.anomaly_only:
            report["posture"] = evaluate_posture(args.posture_frames, args.recording,
                                                 args.posture_model, args.children)  # fmt: skip
            if args.update_card:
                update_card(report["posture"])
    except RecordingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.posture_only and not args.recordings_only:
        report["anomaly"] = evaluate_anomaly(args.series, args.days, args.minutes,
                                             args.autoencoder)  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    return 0 if all(r["meets_targets"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
