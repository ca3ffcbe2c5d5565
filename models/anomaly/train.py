"""Train the anomaly autoencoder, calibrate its thresholds, write ``anomaly.tflite`` and cards.

    python -m models.anomaly.train --seed 0

Needs the ``train`` extra (TensorFlow).  The autoencoder learns normal windows
of both series (water level, mat total load); each series' threshold is the
``1 - TARGET_FPR`` quantile of the score on normal validation windows (seeds
disjoint from training and from the held-out evaluation).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.health.anomaly_watch import PATTERNS
from edge.inference.runtime import ANOMALY_TESTS, anomaly_tests
from models.anomaly.data import (
    ANOMALIES,
    CLIP,
    CODE,
    SAMPLE_PERIOD_S,
    SCALE,
    SERIES,
    UNITS,
    WINDOW,
    anomalous_windows,
    heldout_sets,
    inject,
    normal_windows,
    normalise,
    train_seeds,
)
from models.export import tflite_runner, to_int8_tflite, write_model

HERE = Path(__file__).resolve().parent
VERSION = "2.1.0"
TARGET_FPR = 0.01
"""False positives per normal window the thresholds are calibrated to (per series)."""
CALIBRATION_FPR: dict[str, float] = {"water": 0.007, "mat_load": 0.001}
"""Share of normal calibration windows the thresholds flag, per series.  Water: a margin
below the 1 % target for the spread between sets of series (windows of one series share
its noise and weather, so a set of series is a smaller sample than its window count
suggests).  Mat load: far below it, because the device scores a mat twice a second --
7200 windows an hour of nap -- and its faults are easy to tell (recall stays ~99.9 %):
at 0.7 % a cot would be told its mat "looks wrong" several times an hour."""
CONFIRM_WINDOWS: dict[str, int] = {"water": 3, "mat_load": 16}
"""Consecutive anomalous windows the device needs before it raises an ``anomaly`` event
(water: 30 minutes; mat: 8 seconds): a fault persists, a chance extreme of the normal
series mostly does not.  See ``benchmarks/anomaly_episodes.py``."""
BOTTLENECK = 16
HIDDEN = 96
DENOISE_BOTTLENECK = 24
DENOISE_HIDDEN = 128
CORRUPT_FRACTION = 0.25
"""Share of the denoising head's training windows given an injected fault (clean target)."""
CORRUPT_TYPES: tuple[str, ...] = ("drift",)
"""Faults the denoising head is shown (the plain head already catches the others)."""
SEGMENTS = 4
"""The energy, quiet and denoised tests look at the residual of each quarter of the window."""
PEAK_WIDTH = 4
"""The peak test looks for a burst of residual energy over this many consecutive readings."""
NOISE_FLOOR = 0.05
"""Lower bound of the peak test's residual noise estimate (normalised units: 2 mm of water,
7.5 g of load), so a window that is almost noise-free does not divide by nearly zero."""
SHARE_STEP = 0.05
"""The calibration tries every split of the false-positive budget between the tests in
steps of this share."""


def build(tf: Any, hidden: int = HIDDEN, bottleneck: int = BOTTLENECK) -> Any:
    """(64 + series code) -> hidden -> bottleneck -> hidden -> 64 dense autoencoder."""
    layers = tf.keras.layers
    return tf.keras.Sequential(
        [
            layers.Input((WINDOW + 1,)),
            layers.Dense(hidden, activation="relu"),
            layers.Dense(bottleneck),
            layers.Dense(hidden, activation="relu"),
            layers.Dense(WINDOW),
        ]
    )


def two_heads(tf: Any, plain: Any, denoise: Any) -> Any:
    """One model: input -> [plain reconstruction | denoised reconstruction] (2 x window)."""
    inp = tf.keras.layers.Input((WINDOW + 1,))
    clip = tf.keras.ops.clip
    heads = [clip(plain(inp), -CLIP, CLIP), clip(denoise(inp), -CLIP, CLIP)]
    return tf.keras.Model(inp, tf.keras.layers.Concatenate()(heads))


def fit(tf: Any, model: Any, x: Any, y: Any, weight: Any, val: Any, epochs: int) -> None:
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss="mse")
    model.fit(
        x,
        y,
        sample_weight=weight,
        validation_data=val,
        epochs=epochs,
        batch_size=256,
        callbacks=[
            tf.keras.callbacks.ReduceLROnPlateau(patience=4, factor=0.5, min_lr=1e-5),
            tf.keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True),
        ],
        verbose=2,
    )


def _shares(k: int, steps: int) -> list[tuple[int, ...]]:
    """Every way to split ``steps`` equal parts between ``k`` tests."""
    if k == 1:
        return [(steps,)]
    return [(a, *rest) for a in range(steps + 1) for rest in _shares(k - 1, steps - a)]


def calibrate(
    normal: dict[str, np.ndarray],
    faults: list[dict[str, np.ndarray]],
    fpr: float,
    step: float = SHARE_STEP,
) -> tuple[dict[str, float | None], float]:
    """Per-test thresholds so that *any* test flags at most ``fpr`` of ``normal``.

    ``normal``: each test's values on normal calibration windows; ``faults``: the
    same for calibration windows of each fault type (seeds disjoint from the
    held-out ones).  The false-positive budget is split between the tests in
    steps of ``step``: with ``u_k`` the share of normal windows scoring at least
    as high as a window on test ``k``, a window is flagged when ``u_k < level *
    share_k`` for some test, ``level`` being the largest that flags ``fpr`` of
    the normal windows.  The split with the best mean recall on ``faults`` wins
    (ties: the first in order).  Returns the thresholds (``None``: a test given
    no share) and the union's false-positive rate on ``normal``.
    """
    names = [k for k in ANOMALY_TESTS if k in normal]
    n = len(normal[names[0]])
    ordered = {k: np.sort(normal[k]) for k in names}
    u = np.stack([(n - np.searchsorted(ordered[k], normal[k], side="left")) / n for k in names])
    best: tuple[float, dict[str, float | None]] = (-1.0, {})
    for parts in _shares(len(names), round(1 / step)):
        share = np.array(parts, dtype=np.float64) * step
        with np.errstate(divide="ignore"):
            v = np.min(np.where(share[:, None] > 0, u / share[:, None], np.inf), axis=0)
        level = float(np.sort(v)[int(fpr * n)])  # windows with v < level are flagged
        thr: dict[str, float | None] = {}
        for k, sh in zip(names, share, strict=True):
            flagged = min(round(level * sh * n), n - 1)
            thr[k] = float(ordered[k][n - flagged - 1]) if sh > 0 and flagged > 0 else None
        recall = float(np.mean([np.mean(_flags(f, thr)) for f in faults]))
        if recall > best[0]:
            best = (recall, thr)
    thresholds = best[1]
    return thresholds, float(np.mean(_flags(normal, thresholds)))


def _flags(values: dict[str, np.ndarray], thresholds: dict[str, float | None]) -> np.ndarray:
    n = len(next(iter(values.values())))
    out = np.zeros(n, dtype=bool)
    for k, t in thresholds.items():
        if t is not None:
            out |= values[k] > t
    return out


def with_code(kind: str, x: np.ndarray) -> np.ndarray:
    """Append the series code (the model's conditioning input) to each normalised window."""
    return np.concatenate([x, np.full((len(x), 1), CODE[kind], np.float32)], axis=1)


def corrupt(kind: str, raw: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Denoising pairs: (input, target) normalised windows.

    A :data:`CORRUPT_FRACTION` of the windows get one injected fault of
    :data:`CORRUPT_TYPES`; the target is always the *clean* window, normalised
    with the input's own mean (so the residual ``input - target`` is exactly the
    injected fault).  The denoising head thus learns to reconstruct the normal
    series under a fault, never the fault itself.
    """
    bad = np.array(raw, dtype=np.float64)
    for i in np.flatnonzero(rng.random(len(raw)) < CORRUPT_FRACTION):
        bad[i] = inject(kind, raw[i], CORRUPT_TYPES[int(rng.integers(len(CORRUPT_TYPES)))], rng)
    mean = bad.mean(axis=1, keepdims=True)
    xin = np.clip((bad - mean) / SCALE[kind], -CLIP, CLIP).astype(np.float32)
    target = np.clip((raw - mean) / SCALE[kind], -CLIP, CLIP).astype(np.float32)
    return xin, target


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--series-seeds", type=int, default=8000, help="training series per kind")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument(
        "--calibration-seeds", type=int, default=6000, help="series per kind for the thresholds"
    )
    ap.add_argument("--heldout-seeds", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)

    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()

    n = args.series_seeds
    nval = max(n // 8, 100)
    seeds = train_seeds(args.seed, n + nval + args.calibration_seeds)
    cseeds = seeds[n + nval :]
    # calibration seeds: apart from training and from early stopping's validation
    xs, ys, xds, yds, cal, val = [], [], [], [], {}, {}
    crng = np.random.default_rng([args.seed, 11])
    for kind in SERIES:
        raw = normal_windows(kind, seeds[:n], per_seed=16)
        w = normalise(kind, raw)
        xs.append(with_code(kind, w))
        ys.append(w)
        xin, target = corrupt(kind, raw, crng)
        xds.append(with_code(kind, xin))
        yds.append(target)
        cal[kind] = normalise(kind, normal_windows(kind, cseeds, per_seed=4))
        val[kind] = normalise(kind, normal_windows(kind, seeds[n : n + nval], per_seed=4))
    x, y = np.concatenate(xs), np.concatenate(ys)
    # Steep windows (rain rises, restless bumps) are rare but set the score's
    # upper tail: weigh each window by its range so the autoencoder learns them.
    weight = 1.0 + np.ptp(y, axis=1) / 2.0
    xv = np.concatenate([with_code(k, v) for k, v in val.items()])
    yv = np.concatenate(list(val.values()))
    ncal = sum(map(len, cal.values()))
    print(f"data: {len(x)} train, {len(xv)} validation, {ncal} calibration windows")

    xd, yd = np.concatenate(xds), np.concatenate(yds)
    plain = build(tf)
    fit(tf, plain, x, y, weight, (xv, yv), args.epochs)
    denoise = build(tf, DENOISE_HIDDEN, DENOISE_BOTTLENECK)
    fit(tf, denoise, xd, yd, 1.0 + np.ptp(yd, axis=1) / 2.0, (xv, yv), args.epochs)
    model = two_heads(tf, plain, denoise)

    rng = np.random.default_rng(args.seed)
    tflite = to_int8_tflite(model, (r[None] for r in x[rng.choice(len(x), 1000, replace=False)]))
    run = tflite_runner(tflite)

    table: dict[str, Any] = {}
    for kind in SERIES:
        xc = cal[kind]
        out = run(with_code(kind, xc))
        segment_mse = [
            np.mean(
                ((xc - out[:, h * WINDOW : (h + 1) * WINDOW]).reshape(len(xc), SEGMENTS, -1)) ** 2,
                axis=-1,
            )
            for h in range(2)
        ]
        ref, refd = (float(np.median(m)) for m in segment_mse)
        entry = {
            "unit": UNITS[kind],
            "sample_period_s": SAMPLE_PERIOD_S[kind],
            "scale": SCALE[kind],
            "code": CODE[kind],
            "reference_mse": ref,
            "denoised_reference_mse": refd,
            "confirm_windows": CONFIRM_WINDOWS[kind],
        }
        normal = tests_of(xc, out, entry)
        faults = []
        for a in ANOMALIES:
            xa = normalise(kind, anomalous_windows(kind, a, cseeds, per_seed=1))
            faults.append(tests_of(xa, run(with_code(kind, xa)), entry))
        thresholds, fp = calibrate(normal, faults, CALIBRATION_FPR[kind])
        entry |= {
            "thresholds": thresholds,
            "calibration_windows": len(xc),
            "calibration_false_positive_rate": fp,
        }
        table[kind] = entry
        shown = ", ".join(f"{k} {'-' if t is None else f'{t:.3f}'}" for k, t in thresholds.items())
        print(f"{kind}: reference mse {ref:.5f} / {refd:.5f}; thresholds {shown}; FP {fp:.4f}")

    t1 = time.perf_counter()
    results = evaluate_sets(heldout_sets(args.heldout_seeds), run, table)
    us = (time.perf_counter() - t1) / sum(r["windows"] for r in results.values()) * 1e6
    for kind, r in results.items():
        print(kind, r)

    card = write_model(
        args.out,
        "anomaly",
        tflite,
        {
            "version": VERSION,
            "task": "anomaly score of a window of a scalar series (water level; mat total load)",
            "window": WINDOW,
            "clip": CLIP,
            "segments": SEGMENTS,
            "heads": 2,
            "preprocessing": {
                "steps": "x = window minus its mean, divided by series[kind].scale, clipped to "
                "+-clip; model input = x followed by series[kind].code, shape (1, window + 1); "
                "output = [plain reconstruction of x | denoised reconstruction of x], "
                "shape (1, 2 * window)",
            },
            "peak_width": PEAK_WIDTH,
            "noise_floor": NOISE_FLOOR,
            "score": "r = x - plain reconstruction, rd = x - denoised reconstruction; m_i, d_i = "
            "mean of r^2, rd^2 over each of `segments` equal parts; tests: energy = ln(max m_i / "
            "reference_mse), quiet = ln(reference_mse / min m_i), denoised = ln(max d_i / "
            "denoised_reference_mse), peak = ln(max sum of r^2 over `peak_width` consecutive "
            "readings / s^2) with s = max(1.4826 * median|r - median r|, noise_floor); "
            "score = max over the tests with a threshold in series[kind].thresholds of "
            "(test - threshold); anomalous when score > 0",
            "target_false_positive_rate": TARGET_FPR,
            "series": table,
            "training": {
                "seed": args.seed,
                "series_per_kind": n,
                "windows": len(x),
                "epochs_max": args.epochs,
                "tensorflow": tf.__version__,
                "command": f"python -m models.anomaly.train --seed {args.seed}",
            },
            "metrics": {"heldout": results},
        },
    )
    write_card_md(args.out, card, results, us)
    print(f"wrote {args.out / 'anomaly.tflite'} ({card['size_bytes']} bytes)")


def evaluate_sets(
    sets: dict[str, dict[str, np.ndarray]], run: Any, table: dict[str, Any]
) -> dict[str, Any]:
    """False-positive rate and recall per anomaly type, per series, for a float->float runner."""
    out: dict[str, Any] = {}
    for kind, by_type in sets.items():
        cal = table[kind]
        thresholds = {k: t for k, t in cal["thresholds"].items() if t is not None}
        flagged: dict[str, float] = {}
        deciding: dict[str, dict[str, float]] = {}
        count = 0
        for name, raw in by_type.items():
            x = normalise(kind, raw)
            values = tests_of(x, run(with_code(kind, x)), cal)
            passed = {k: values[k] > t for k, t in thresholds.items()}
            hit = np.any(list(passed.values()), axis=0)
            flagged[name] = float(np.mean(hit))
            # what the device's event would call it: the first test passed, in PATTERNS' order
            left = hit.copy()
            deciding[name] = {}
            for test, pattern in PATTERNS:
                now = left & passed.get(test, False)
                deciding[name][pattern] = float(np.mean(now))
                left &= ~now
            count += len(raw)
        recall = {a: flagged[a] for a in ANOMALIES}
        out[kind] = {
            "false_positive_rate": flagged["normal"],
            "recall": recall,
            "pattern": deciding,
            "recall_all": float(np.mean(list(recall.values()))),
            "windows": count,
            "normal_windows": len(by_type["normal"]),
            "anomalous_windows_per_type": len(by_type[ANOMALIES[0]]),
        }
    return out


def tests_of(x: np.ndarray, output: np.ndarray, cal: dict[str, Any]) -> dict[str, np.ndarray]:
    """The anomaly tests of normalised windows ``x`` and the model's ``output`` (as on a device)."""
    return anomaly_tests(
        x,
        output,
        segments=SEGMENTS,
        reference_mse=cal["reference_mse"],
        denoised_reference_mse=cal["denoised_reference_mse"],
        peak_width=PEAK_WIDTH,
        noise_floor=NOISE_FLOOR,
    )


def _met(r: dict[str, Any]) -> bool:
    return bool(r["recall_all"] >= 0.9 and r["false_positive_rate"] <= 0.01)


def write_card_md(out: Path, card: dict[str, Any], results: dict[str, Any], us: float) -> None:
    rows = []
    for kind, r in results.items():
        rec = " | ".join(f"{100 * r['recall'][a]:.1f} %" for a in ANOMALIES)
        rows.append(
            f"| {kind} | {100 * r['false_positive_rate']:.2f} % | {rec} | "
            f"{100 * r['recall_all']:.1f} % |"
        )
    def thr(t: float | None) -> str:
        return "--" if t is None else f"{t:.3f}"

    cal = "\n".join(
        f"| {k} | {v['unit']} | {v['sample_period_s']} s | {v['scale']} | "
        f"{v['reference_mse']:.5f} | {v['denoised_reference_mse']:.5f} | "
        + " | ".join(thr(v["thresholds"].get(t)) for t in ANOMALY_TESTS)
        + f" | {100 * v['calibration_false_positive_rate']:.2f} % |"
        for k, v in card["series"].items()
    )
    caught = "\n".join(
        f"| {kind} | {name} | "
        + " | ".join(f"{100 * r['pattern'][name][p]:.1f} %" for _, p in PATTERNS)
        + " |"
        for kind, r in results.items()
        for name in ("normal", *ANOMALIES)
    )
    r0 = next(iter(results.values()))
    verdict = " ".join(
        f"**{kind}: {'met' if _met(r) else 'NOT met'}** (recall {100 * r['recall_all']:.1f} % "
        f"at {100 * r['false_positive_rate']:.2f} % false positives)."
        for kind, r in results.items()
    )
    text = MODEL_CARD.format(
        version=card["version"],
        seed=card["training"]["seed"],
        tf=card["training"]["tensorflow"],
        size=card["size_bytes"],
        sha=card["sha256"],
        inp=card["input"],
        outp=card["output"],
        window=WINDOW,
        clip=CLIP,
        cal=cal,
        caught=caught,
        tests=" | ".join(ANOMALY_TESTS),
        tseps="---|" * len(ANOMALY_TESTS),
        patterns=" | ".join(f"`{p}`" for _, p in PATTERNS),
        pseps="---|" * len(PATTERNS),
        peak_width=PEAK_WIDTH,
        noise_floor=NOISE_FLOOR,
        rows="\n".join(rows),
        heads=" | ".join(ANOMALIES),
        seps="---|" * len(ANOMALIES),
        normal=r0["normal_windows"],
        per_type=r0["anomalous_windows_per_type"],
        us=us,
        windows=card["training"]["windows"],
        fpr=100 * TARGET_FPR,
        cfpr=", ".join(f"{k} {100 * v:.1f} %" for k, v in CALIBRATION_FPR.items()),
        confirm=", ".join(f"{k} {v}" for k, v in CONFIRM_WINDOWS.items()),
        verdict=verdict,
        corrupt=100 * CORRUPT_FRACTION,
    )
    (out / "MODEL_CARD.md").write_text(text)


MODEL_CARD = """\
# Model card: series anomaly detector (`anomaly.tflite`, v{version})

*Generated by `python -m models.anomaly.train --seed {seed}` (TensorFlow {tf});
machine-readable twin: `card.json`.  Re-check the committed file with
`python -m models.evaluate`.*


**Status: no longer used by the daemon for water levels or mat loads.**
An independent evaluation showed it cries wolf on calm water and restless sleep
and lets one episode mask new faults; the daemon now judges both series with
rules against each sensor's own noise floor (`edge/health/water_faults.py`,
`edge/health/mat_load_faults.py`; figures beside this model and the trivial
baseline in `docs/series-faults.md`).  The model stays packaged for a series
that has no rule, and `models/anomaly/scoring.py` scores it side by side.

## What it does

Scores a window of the last {window} readings of a scalar series -- a water
level (one reading every 10 minutes: the water rule's cadence) or a cot's
total mat load (two a second) -- for
how unlike normal behaviour it is.  Catches a stuck sensor, spikes, drift and
a sudden drop, so a sensor's alarms are not trusted while it misbehaves.

## Inputs and outputs

| | shape | dtype | quantisation (real = scale x (q - zero_point)) |
|---|---|---|---|
| input | {inp[shape]} | int8 | scale {inp[scale]:.8f}, zero point {inp[zero_point]} |
| output | {outp[shape]} | int8 | scale {outp[scale]:.8f}, zero point {outp[zero_point]} |

Preprocessing (per series, constants in `card.json` -> `series`): the window
minus its own mean, divided by the series' scale, clipped to +-{clip}; the
model's input is that, followed by the series' code (0 water, 1 mat load: it
conditions the reconstruction).  The output has two heads, `2 x {window}`
values: first the plain reconstruction of the {window} normalised readings,
then the *denoised* reconstruction -- the normal series the second head
believes lies under any fault.  With `r` / `rd` the residual (`x` minus the
reconstruction) against the plain / denoised head and `m_i` / `d_i` their
mean square over each quarter of the window, four tests:

- `energy = ln(max m_i / reference_mse)`: some quarter is far worse
  reconstructed than normal -- a shape the autoencoder has not seen;
- `quiet = ln(reference_mse / min m_i)`: some quarter is far *better*
  reconstructed than normal -- the series lost its noise (a stuck sensor);
- `denoised = ln(max d_i / denoised_reference_mse)`: the series is far from
  what the denoising head puts back -- a drift (a plain autoencoder
  reconstructs a ramp like any smooth rise; the denoising head was trained to
  remove it, so its residual is the drift itself);
- `peak = ln(max sum of r^2 over {peak_width} consecutive readings / s^2)`, `s =
  max(1.4826 x median |r - median r|, {noise_floor})`: a burst of residual
  against the window's *own* residual noise -- a spike or a step.  Scaling by
  the window's own noise is what lets a 10 cm spike stand out of a calm
  window while a rainy, rough window needs a larger one.

Each series has a threshold per test (`card.json` -> `series` ->
`thresholds`; `null`: the test is not used for that series); `score = max
over the tests of (test - its threshold)`, anomalous when `score > 0`.
`edge.inference.runtime.AnomalyModel` does all of it: `assess(window)` -> `(score,
tests that fired)`, `score(window)`, `is_anomalous(window)`; the device's
`anomaly` event names the tests that fired and a `pattern` (below).

| series | unit | period | scale | ref. mse | denoised ref. mse | {tests} | calibration FP |
|---|---|---|---|---|---|{tseps}---|
{cal}

Thresholds: on normal calibration windows of each series (6000 series, 4
windows each; seeds disjoint from training, from early stopping's validation
and from evaluation) the tests' thresholds are set so that *any* of them
flags a given share of the windows ({cfpr}); how that budget is split
between the tests (in steps of 5 %) is the split with the best mean recall
on calibration faults (the same seeds, one injected fault per series and
type); stated false-positive rate: at most {fpr:.0f} % per window (the water
margin covers the spread between sets of series: windows of one series share
its noise and weather; the mat is calibrated far lower because the device
scores it twice a second).

On the device every new reading is scored, so windows overlap: the daemon
raises an `anomaly` event only after `confirm_windows` consecutive anomalous
windows ({confirm}: 30 minutes of water readings, 8 s of mat load); a
fault persists, a chance extreme of a normal series mostly does not.  False
episodes per sensor-day and the detection of persisting faults are measured
by `benchmarks/anomaly_episodes.py`.

## Model and quantisation

Two dense autoencoders side by side on the same input, one model:

- plain head ({window} + 1) -> 96 (ReLU) -> 16 -> 96 (ReLU) -> {window},
  trained with MSE on normal windows only ({windows} windows, both series),
  each window weighted by 1 + its range / 2 (steep rain rises and restless
  bumps are rare but set the score's upper tail);
- denoising head ({window} + 1) -> 128 (ReLU) -> 24 -> 128 (ReLU) ->
  {window}, trained on the same normal windows of which {corrupt:.0f} % carry
  an injected drift (same generator as the anomalies, training seeds only),
  the target always being the clean window (normalised with the input's
  mean).  It is still an autoencoder (a bottleneck reconstruction of its
  input), but it has been *shown* the drift fault: it is semi-supervised for
  that one type, and tuned to the generator's drift shape.

Both heads' outputs are clipped to +-{clip} (the input's own range) before
they are joined, so one int8 output scale serves both.  Full-integer
int8 post-training quantisation (1000 training windows as the
representative dataset), int8 input and output tensors, builtin int8 ops only.
Size {size} bytes; sha256 `{sha}`.

## Training data

Generated (`models/anomaly/data.py`, where every assumption is written
down).  Water, one reading per 10 min: 70 % small rivers (base 10-150 cm,
slow trend), 30 % paddy fields (2-12 cm, falling 1-3 cm/day, topped up by
the farmer +2-6 cm over 1-4 h); rain events (Poisson, one per 12 h: a wet
spell) as hydrographs of 3-40 cm (paddies 1-8 cm) peaking 30-360 min after
onset with a long recession; surface ripple and sensor noise 0.6-0.9 cm per
reading, 1 mm resolution.  Mat load: a
child of 3-13 kg, breathing artefact 5-30 g at 20-45 /min, noise 25-35 g,
restless movements every ~45 s (bumps of 50-250 g over 1-4 readings).
Anomalies are injected into otherwise normal windows: spike (1-3 readings,
water 6-40 cm, mat 0.5-3 kg), stuck (the reading frozen for 32-64 of the 64
readings), drift (a ramp from the first half reaching water 10-30 cm -- over
5-10 hours --, mat 0.4-2 kg at the window's end), drop (a step down from reading 8-56 to the end:
water 8-40 cm, mat 0.5-3 kg, or to zero in 30 %).

## Held-out metrics (int8 model, unseen seeds)

{normal} normal windows and {per_type} windows per anomaly type per series,
from `heldout_seeds()`:

| series | false positives / window | {heads} | recall, all |
|---|---|{seps}---|
{rows}

Targets: recall >= 90 % at <= 1 % false positives per window.  {verdict}

What the device's `anomaly` event would call the flagged windows (`pattern`:
the first of the tests quiet, peak, denoised, energy that passed), as a share
of all windows of the row -- a hint for people, not a diagnosis:

| series | windows | {patterns} |
|---|---|{pseps}
{caught}

## Latency and size

About {us:.0f} us per window through the TFLite interpreter on the training
host (x86-64, one thread, batch 1, including quantisation).  See
`benchmarks/inference.py` for the device wrapper's median / p99.  {size} bytes.

## Known limits

- Generated data only; a real site's noise level must match the calibrated
  one (the quiet test compares the residual with the *expected* noise): a
  noisier or quieter sensor than assumed needs its `reference_mse` and
  thresholds recalibrated from a day of normal readings.  (The peak test
  scales by the window's own noise and needs no such care.)  The bench's own
  emulated mat is such a case: 0.7 counts of noise per cell put 26-29 g on
  the total, the quiet end of the generator's range (25-35 g plus breathing
  and restless bumps), so its quiet-test values run higher (median 0.83
  against 0.47) and a 10-minute emulated nap gives 2 events with
  `confirm_windows` 1, none with the card's 16.
- **Water drift is the weakest type**: by size of the drift (v2.1, 2400
  held-out-style windows): 10-15 cm about 36 %, 15-20 cm 88 %, 20-30 cm 94 %.
  A straight rise of 10 cm over 5-10 hours is also what a slow rain rise looks
  like (rain events here peak 30-360 min after onset), so the denoising head
  can only remove the ramps whose shape (a kink into a constant slope, no
  recession) gives them away.  On the device every new reading is scored, so
  a drift that keeps going has many windows to be caught in; the per-window
  figure above is the stated one.  Mat-load drift (a still child's load
  should not change) is caught almost always.  A longer view (the level
  against a neighbouring sensor or a rain gauge) is what water drift still
  needs; it is not in this model.
- **Small water spikes and steps**: by size (same windows): spikes of 6-10 cm
  about 54 %, 10-15 cm 87 %, over 15 cm 97-100 %; drops of 8-10 cm about 61 %,
  10-15 cm 85 %, over 15 cm 98-99 %.  In a calm, flat window (200 windows, noise
  0.75 cm) a 10 cm spike is caught 97 % of the time, but a *step* of 8 cm only
  24 %, 10 cm 70 %, 12 cm 83 %, 15 cm 96 %: the plain autoencoder has learnt
  steep rain rises and follows a step part of the way, so the residual it
  leaves is smaller than the step.  (A running-median residual as a further
  test won no share of the false-positive budget: the misses are windows
  where rain makes the fault ambiguous, not a blind spot of the autoencoder.)
- The `pattern` the device reports is a hint: of the caught water faults it
  names 99.7 % of spikes, 92 % of freezes, 98 % of drifts and 82 % of drops
  rightly (table above); a mat's drop is called a drift more often than not.
- The false-positive rate varies between sets of series more than its
  window count suggests (16 windows of one series share its weather): on
  three further held-out blocks of 1000 series the water rate was 0.86 %,
  0.68 % and 0.73 % (recall 90.9 %, 90.7 %, 90.9 %).  Hence the water
  calibration at 0.7 %: at 0.8 % water recall was 92.1 % but one block reached
  0.99 % false positives.
- **Per window is not what people see.**  The device scores every new
  reading, so windows overlap; a mat is scored 7200 times an hour.  At a 0.7 %
  per-window rate and an event on the first anomalous window, a cot would be
  told its mat "looks wrong" about 8 times an hour of nap (emulated infant: 5
  events in a 10-minute nap).  Hence the mat's calibration at 0.1 % (recall
  still 99.9 %) and `confirm_windows` (water 3, mat 16 in a row):
  `benchmarks/anomaly_episodes.py` measures, on generated series, false
  events of 0.138 -> 0.054 per water sensor-day (rain every 12 hours: a wet
  spell) and 2.5 -> 0 per cot-hour (22 cot-hours), while faults that persist
  are still reported: water stuck 100 %, drop 92.5 %, drift 85 % (a drift that
  keeps going, median 6.4 hours after it starts), a single spike 95 %; mat 100
  % within 15-28 readings.
- v2.1 changed only the score (the `.tflite` file is v2.0's, byte for byte):
  v2.0's single two-sided residual score plus the denoised score became four
  tests with a threshold each, and the new peak test -- a burst of residual
  over 4 readings against the window's own robust residual noise -- took
  water from 88.7 % to 92.1 % at the same 0.8 % calibration (spikes 91 -> 93 %,
  drops 92 -> 95.5 %, stuck 96 -> 99 %, drift 76 -> 80.5 %: freed
  false-positive budget went to the denoised test); calibrated at 0.7 % for a
  safer false-positive margin it is the 91.0 % above.  Tried with it and not
  kept (committed model, seed-0 calibration at 0.8 %): the peak scaled by the
  calibrated reference instead of the window's own noise (90.4 %), by the
  input's noise from second differences (90.6 %; with a 1e-3 floor it also
  "caught" freezes, but any quiet real sensor would be flagged), peaks over
  1, 2, 3 or 6 readings (91.3-92.1 %),
  a step test on the residual or on the input (no share of the budget won),
  the denoised residual scaled by its own noise (drift collapsed to 12 %),
  and a denoising head shown drops as well as drifts (water 91.6 %: drops
  96.3 % but drift 77.9 %; mat false positives 0.97 %, too near 1 %).
- v2.0 moved the water series from one reading a minute to the device's
  real cadence of one per 10 minutes (v1.x was effectively never run on a
  device: its water readings came 10 times slower than it was trained for).
  Tried for v2.0 and not kept (seed 0): a convolutional denoising head (it
  broke the water calibration), 40 % drifted windows for the denoising head
  (drift 66 %), heads of 192/24 and 192/32 (water 89.1 %, 104 KB: over the
  100 KB budget), per-reading noise 0.3-0.6 cm (stuck recall fell to 29 %:
  the residual of a frozen reading drowned in int8 steps), other statistics
  of the denoised residual (segment means, moving averages: same recall) and
  weighted combinations of the scores (same recall).
- The false-positive budget is shared between the tests: given all of it,
  the denoised head alone catches about 88 % of water drifts at 1 % (seed-0
  experiment), but spikes, freezes and drops then go uncaught; the split is
  the one with the best mean recall on calibration faults.
- Tried in v1.1 and not kept: a denoising head shown drift, drop and spike
  (water recall fell: it also "repairs" normal rain rises).
- After a restart the device takes its kept water window back (a file beside
  the outbox, when its last reading is at most 20 minutes old by the wall
  clock); otherwise -- a first start, a long outage, a clock not yet synced
  -- it needs a full window before it scores: 32 s for a mat, **10 h 40 min
  for a water level**.  A water rule reading more slowly than every 20 minutes
  is not scored; an active cadence that does not divide 600 s is scored at
  the next reading after 540 s (e.g. every 720 s at 240 s), a little off the
  trained period (`edge validate` warns about both).
- The denoising head has seen the generator's drift (a linear ramp from the
  first half of the window); other slow faults are covered only by the plain
  head.
- Small spikes (a few noise sigmas), short freezes (under half the window)
  and small steps are below what it is calibrated to catch.
- The mat-load series assumes a child lying still; a cot being made, a child
  climbing in or out, changes the load legitimately and will score high (the
  rules should score only while the cot is steadily occupied).
"""


if __name__ == "__main__":
    main()
