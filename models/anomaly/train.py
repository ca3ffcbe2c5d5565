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

from edge.inference import anomaly_score, combined_anomaly_score
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
VERSION = "2.0.0"
TARGET_FPR = 0.01
"""False positives per normal window the thresholds are calibrated to (per series)."""
CALIBRATION_FPR = 0.008
"""Quantile actually used: a margin below the target for the spread between seed sets
(windows of one seed share its noise level and weather, so a set of seeds is a smaller
sample than its window count suggests)."""
BOTTLENECK = 16
HIDDEN = 96
DENOISE_BOTTLENECK = 24
DENOISE_HIDDEN = 128
CORRUPT_FRACTION = 0.25
"""Share of the denoising head's training windows given an injected fault (clean target)."""
CORRUPT_TYPES: tuple[str, ...] = ("drift",)
"""Faults the denoising head is shown (the plain head already catches the others)."""
SEGMENTS = 4
"""The score looks at the residual of each quarter of the window."""


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


def denoised_score(x: np.ndarray, rd: np.ndarray, refd: float) -> np.ndarray:
    """The denoised head's part of the score (offset 0), as in ``combined_anomaly_score``."""
    m = np.mean(((x - rd).reshape(len(x), SEGMENTS, -1)) ** 2, axis=-1) + 1e-9
    out: np.ndarray = np.log(m.max(axis=-1) / refd)
    return out


def calibrate(
    plain: np.ndarray,
    denoised: np.ndarray,
    fpr: float,
    faults: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[float, float]:
    """(threshold, denoised_offset) for ``max(plain, denoised - offset) > threshold``.

    ``plain`` / ``denoised``: the two scores of normal calibration windows;
    ``faults``: the same for calibration windows of each fault type (seeds
    disjoint from the held-out ones).  The false-positive budget ``fpr`` is
    split between the two scores: for each share of it given to the plain
    score, the denoised threshold is set so that the union flags ``fpr`` of
    the normal windows; the split with the best mean recall on ``faults`` wins.
    """
    best = (-1.0, 0.0, 0.0)
    for qp in np.linspace(0.1, 1.0, 19) * fpr:
        tp = float(np.quantile(plain, 1 - qp))
        rest = denoised[plain <= tp]
        lo, hi = 0.0, 1.0  # quantile of the denoised score among windows the plain one passes
        for _ in range(40):
            mid = (lo + hi) / 2
            td = np.quantile(rest, 1 - mid) if mid > 0 else np.inf
            if np.mean((plain > tp) | (denoised > td)) > fpr:
                hi = mid
            else:
                lo = mid
        td = float(np.quantile(rest, 1 - lo)) if lo > 0 else float(denoised.max())
        recall = float(np.mean([np.mean((p > tp) | (d > td)) for p, d in faults]))
        if recall > best[0]:
            best = (recall, tp, td)
    _, tp, td = best
    return tp, td - tp


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
        rc, rd = out[:, :WINDOW], out[:, WINDOW:]
        seg = (xc - rc).reshape(len(xc), SEGMENTS, -1)
        ref = float(np.median(np.mean(seg**2, axis=-1)))
        segd = np.mean(((xc - rd).reshape(len(xc), SEGMENTS, -1)) ** 2, axis=-1)
        refd = float(np.median(segd))
        sp = anomaly_score(xc, rc, ref, SEGMENTS)
        sd = denoised_score(xc, rd, refd)
        faults = []
        for a in ANOMALIES:
            xa = normalise(kind, anomalous_windows(kind, a, cseeds, per_seed=1))
            oa = run(with_code(kind, xa))
            faults.append(
                (
                    anomaly_score(xa, oa[:, :WINDOW], ref, SEGMENTS),
                    denoised_score(xa, oa[:, WINDOW:], refd),
                )
            )
        thr, offset = calibrate(sp, sd, CALIBRATION_FPR, faults)
        table[kind] = {
            "unit": UNITS[kind],
            "sample_period_s": SAMPLE_PERIOD_S[kind],
            "scale": SCALE[kind],
            "code": CODE[kind],
            "reference_mse": ref,
            "denoised_reference_mse": refd,
            "denoised_offset": offset,
            "threshold": thr,
            "calibration_windows": len(xc),
        }
        print(
            f"{kind}: reference mse {ref:.5f} / {refd:.5f}, threshold {thr:.3f}, "
            f"offset {offset:.3f}"
        )

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
            "score": "m_i = mean squared residual (x - reconstruction) of each of `segments` "
            "equal parts against the plain head, d_i against the denoised head; "
            "score = max(ln(max m_i / "
            "reference_mse), ln(reference_mse / min m_i), ln(max d_i / denoised_reference_mse) - "
            "denoised_offset); "
            "anomalous when score > series[kind].threshold",
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
        flagged = {}
        count = 0
        for name, raw in by_type.items():
            x = normalise(kind, raw)
            s = combined_anomaly_score(
                x,
                run(with_code(kind, x)),
                cal["reference_mse"],
                SEGMENTS,
                cal["denoised_reference_mse"],
                cal["denoised_offset"],
            )
            flagged[name] = float(np.mean(s > cal["threshold"]))
            count += len(raw)
        recall = {a: flagged[a] for a in ANOMALIES}
        out[kind] = {
            "false_positive_rate": flagged["normal"],
            "recall": recall,
            "recall_all": float(np.mean(list(recall.values()))),
            "windows": count,
            "normal_windows": len(by_type["normal"]),
            "anomalous_windows_per_type": len(by_type[ANOMALIES[0]]),
        }
    return out


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
    cal = "\n".join(
        f"| {k} | {v['unit']} | {v['sample_period_s']} s | {v['scale']} | "
        f"{v['reference_mse']:.5f} | {v['denoised_reference_mse']:.5f} | "
        f"{v['denoised_offset']:.3f} | {v['threshold']:.3f} |"
        for k, v in card["series"].items()
    )
    r0 = next(iter(results.values()))
    verdict = " ".join(
        f"**{kind}: {'met' if _met(r) else 'NOT met'}"
        f"** (recall {100 * r['recall_all']:.1f} %"
        + "; without drift "
        + f"{100 * np.mean([v for a, v in r['recall'].items() if a != 'drift']):.1f} %)."
        for kind, r in results.items()
    )
    verdict += (
        " Water drift is the remaining gap: a 10-15 cm ramp over 5-10 hours is"
        " the shape of a slow rain rise (see Known limits)."
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
        rows="\n".join(rows),
        heads=" | ".join(ANOMALIES),
        seps="---|" * len(ANOMALIES),
        normal=r0["normal_windows"],
        per_type=r0["anomalous_windows_per_type"],
        us=us,
        windows=card["training"]["windows"],
        fpr=100 * TARGET_FPR,
        cfpr=100 * CALIBRATION_FPR,
        verdict=verdict,
        corrupt=100 * CORRUPT_FRACTION,
    )
    (out / "MODEL_CARD.md").write_text(text)


MODEL_CARD = """\
# Model card: series anomaly detector (`anomaly.tflite`, v{version})

*Generated by `python -m models.anomaly.train --seed {seed}` (TensorFlow {tf});
machine-readable twin: `card.json`.  Re-check the committed file with
`python -m models.evaluate`.*

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
believes lies under any fault.  Score, with `m_i` / `d_i` the mean squared
residual of each quarter of the window against the plain / denoised head:
`max(ln(max m_i / reference_mse), ln(reference_mse / min m_i), ln(max d_i /
denoised_reference_mse) - denoised_offset)`.  The plain part is two-sided,
because a stuck sensor shows up as a residual far *below* normal in the
frozen part (the noise vanished), while spikes and steps push it far above.
The denoised part catches drift: a plain autoencoder reconstructs a ramp
like any smooth rise, but the denoising head was trained to put back the
ramp-free series, so its residual is the drift itself.
`edge.inference.AnomalyModel` does all of it: `score(window)`,
`is_anomalous(window)` (no extra input: the model's input is unchanged).

| series | unit | period | scale | ref. mse | denoised ref. mse | denoised offset | threshold |
|---|---|---|---|---|---|---|---|
{cal}

Thresholds: on normal calibration windows of each series (6000 series, 4
windows each; seeds disjoint from training, from early stopping's validation
and from evaluation) the plain and the denoised score get one threshold each,
chosen so that *either* flags {cfpr:.1f} % of them, the split between the two
being the one with the best mean recall on calibration faults; stated
false-positive rate: at most {fpr:.0f} % per window (the margin covers the
spread between seed sets: windows of one series share its noise and weather).

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

## Latency and size

About {us:.0f} us per window through the TFLite interpreter on the training
host (x86-64, one thread, batch 1, including quantisation).  See
`benchmarks/inference.py` for the device wrapper's median / p99.  {size} bytes.

## Known limits

- Generated data only; a real site's noise level must match the calibrated
  one (the stuck test compares the residual with the *expected* noise): a
  noisier or quieter sensor than assumed needs its `reference_mse` and
  threshold recalibrated from a day of normal readings.
- **Water drift is only partly caught**: drifts of 20-30 cm over the window
  are caught more than nine times in ten, 15-20 cm eight in ten, 10-15 cm
  only about three in ten, and less in windows with rain in them: a
  straight rise of 10 cm over 5-10 hours is also what a slow rain rise looks
  like (rain events here peak 30-360 min after onset), so the denoising head
  can only remove the ramps whose shape (a kink into a constant slope, no
  recession) gives them away.  On the device every new reading is scored, so
  a drift that keeps going has many windows to be caught in; the per-window
  figure above is the stated one.  Mat-load drift (a still child's load
  should not change) is caught almost always.  A longer view (the level
  against a neighbouring sensor or a rain gauge) is what water drift still
  needs; it is not in this model.
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
- The false-positive budget is shared between the heads: given all of it,
  the denoised head alone catches about 88 % of water drifts at 1 % (seed-0
  experiment), but spikes, freezes and drops then go uncaught; the split is
  the one with the best mean recall on calibration faults.
- Tried in v1.1 and not kept: a denoising head shown drift, drop and spike
  (water recall fell: it also "repairs" normal rain rises).
- After a restart the device needs a full window before it scores: 32 s for
  a mat, **10 h 40 min for a water level** (the window is not kept across
  restarts).  A water rule reading more slowly than every 20 minutes is not
  scored; an active cadence that does not divide 600 s is scored at the next
  reading after 540 s (e.g. every 720 s at 240 s), a little off the trained
  period.
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
