"""Train the posture classifier and write ``posture.tflite``, ``card.json`` and ``MODEL_CARD.md``.

    python -m models.posture.train --seed 0

Needs the ``train`` extra (TensorFlow); reproducible from the seed (data,
weight initialisation and shuffling are all seeded; TensorFlow's op
determinism is switched on).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.export import tflite_runner, to_int8_tflite, write_model
from models.metrics import classification_report, confusion, confusion_markdown, confusion_text
from models.posture.data import COLS, LABELS, ROWS, dataset, heldout_seeds, train_seeds

HERE = Path(__file__).resolve().parent
VERSION = "1.0.0"
INPUT_DIVISOR = 255.0
PRONE_WEIGHT = 3.0
"""Class weight of ``prone`` in the loss: a missed face-down child costs most."""


def build(tf: Any) -> Any:
    """16 x 32 x 1 -> 5: three conv blocks, a small dense head (about 11 k parameters)."""
    layers = tf.keras.layers
    return tf.keras.Sequential(
        [
            layers.Input((ROWS, COLS, 1)),
            layers.Conv2D(12, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(24, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(32, activation="relu"),
            layers.Dense(len(LABELS), activation="softmax"),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=8000, help="training samples per class")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--heldout", type=int, default=2000, help="held-out samples per class")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)

    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()

    t0 = time.time()
    seeds = train_seeds(args.seed, args.samples + args.samples // 8)
    x, y = dataset(seeds[: args.samples])
    xv, yv = dataset(seeds[args.samples :])
    print(f"data: {len(x)} train, {len(xv)} validation frames in {time.time() - t0:.0f} s")
    xf = (x.astype(np.float32) / INPUT_DIVISOR)[..., None]
    xvf = (xv.astype(np.float32) / INPUT_DIVISOR)[..., None]

    model = build(tf)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    weights = {i: (PRONE_WEIGHT if lab == "prone" else 1.0) for i, lab in enumerate(LABELS)}
    model.fit(
        xf,
        y,
        validation_data=(xvf, yv),
        epochs=args.epochs,
        batch_size=128,
        class_weight=weights,
        callbacks=[
            tf.keras.callbacks.ReduceLROnPlateau(patience=4, factor=0.5, min_lr=1e-5),
            tf.keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True),
        ],
        verbose=2,
    )

    rng = np.random.default_rng(args.seed)
    rep = xf[rng.choice(len(xf), 500, replace=False)]
    # Calibrate the input over the whole 0..255 range, so that its int8 scale is
    # exactly 1/255 (int8 input = count - 128) and no count saturates.
    rep[0].fill(0.0)
    rep[1].fill(1.0)
    tflite = to_int8_tflite(model, (r[None] for r in rep))
    run = tflite_runner(tflite)

    val = classification_report(confusion(yv, run(xvf).argmax(1), len(LABELS)), LABELS)
    xh, yh = dataset(heldout_seeds(args.heldout))
    xhf = (xh.astype(np.float32) / INPUT_DIVISOR)[..., None]
    t1 = time.perf_counter()
    ph = run(xhf)
    per_frame_us = (time.perf_counter() - t1) / len(xhf) * 1e6
    m = confusion(yh, ph.argmax(1), len(LABELS))
    held = classification_report(m, LABELS)
    print(confusion_text(m, LABELS))
    print(f"held-out accuracy {held['accuracy']:.4f}, prone recall {held['recall']['prone']:.4f}")

    card = write_model(
        args.out,
        "posture",
        tflite,
        {
            "version": VERSION,
            "task": "classify the posture of the child on a 16 x 32 body-motion mat frame",
            "labels": list(LABELS),
            "preprocessing": {
                "layout": "frame cells row-major (rows across the mattress, columns along it) "
                "as a (1, 16, 32, 1) tensor",
                "divide_by": INPUT_DIVISOR,
                "note": "raw 8-bit counts / 255; with scale 1/255 and zero point -128 the "
                "int8 input is exactly count - 128",
            },
            "training": {
                "seed": args.seed,
                "samples_per_class": args.samples,
                "epochs_max": args.epochs,
                "prone_class_weight": PRONE_WEIGHT,
                "tensorflow": tf.__version__,
                "command": f"python -m models.posture.train --seed {args.seed}",
            },
            "metrics": {
                "validation": {k: val[k] for k in ("accuracy", "recall")},
                "heldout": held,
                "heldout_seeds": f"models.posture.data.heldout_seeds({args.heldout})",
            },
        },
    )
    write_card_md(args.out, card, held, m, per_frame_us, len(xh))
    print(f"wrote {args.out / 'posture.tflite'} ({card['size_bytes']} bytes)")


def write_card_md(
    out: Path, card: dict[str, Any], held: dict[str, Any], m: np.ndarray, us: float, n: int
) -> None:
    inp, outp = card["input"], card["output"]
    rec = held["recall"]
    text = MODEL_CARD.format(
        version=card["version"],
        seed=card["training"]["seed"],
        tf=card["training"]["tensorflow"],
        samples=card["training"]["samples_per_class"],
        size=card["size_bytes"],
        sha=card["sha256"],
        in_shape=inp["shape"],
        in_scale=inp["scale"],
        in_zero=inp["zero_point"],
        out_shape=outp["shape"],
        out_scale=outp["scale"],
        out_zero=outp["zero_point"],
        n=n,
        per_class=n // len(LABELS),
        accuracy=100 * held["accuracy"],
        prone=100 * rec["prone"],
        recalls=", ".join(f"{k} {100 * v:.2f} %" for k, v in rec.items()),
        matrix=confusion_markdown(m, LABELS),
        us=us,
        prone_weight=PRONE_WEIGHT,
    )
    (out / "MODEL_CARD.md").write_text(text)


MODEL_CARD = """\
# Model card: posture classifier (`posture.tflite`, v{version})

*Generated by `python -m models.posture.train --seed {seed}` (TensorFlow {tf});
machine-readable twin: `card.json`.  Re-check the committed file with
`python -m models.evaluate`.*

## What it does

Classifies one frame of the body-motion mat under a cot (16 rows x 32
columns, 3.75 cm cells, 8-bit counts; see `docs/protocols/motion-mat.md`)
into `empty`, `supine`, `prone`, `left`, `right` (left / right: the side the
child lies on).  The nap-room rules use it for the 5-minute posture check and,
together with their own persistence timer, for the face-down alarm.

## Inputs and outputs

| | shape | dtype | quantisation (real = scale x (q - zero_point)) |
|---|---|---|---|
| input | {in_shape} | int8 | scale {in_scale:.8f}, zero point {in_zero} |
| output | {out_shape} | int8 | scale {out_scale:.8f}, zero point {out_zero} |

Preprocessing: raw cell counts (row-major, as `MatFrame.cells`) divided by
255 (so the int8 input is exactly `count - 128`).  Output: class
probabilities (softmax), in the label order above.  `edge.inference.runtime.PostureModel`
does both and returns `(label, probability)`.

## Model and quantisation

Three 3x3 conv blocks (12, 24, 32 filters, ReLU, 2x2 max-pool), flatten,
dense 32, dense 5 + softmax.  Full-integer int8 post-training quantisation
(weights, activations, input and output tensors; 498 training frames plus an
all-0 and an all-255 frame as the representative dataset, so the input scale is
exactly 1/255); builtin int8 ops only.  Size {size} bytes;
sha256 `{sha}`.

## Training data

Generated, no real recordings: `models/posture/data.py` renders frames with
the mat emulator's seeded body model (`edge/sim/infant.py`,
`edge/sim/mat_emulator.py`), {samples} frames per class per run, and documents
every assumption: infants 0-24 months (WHO median length / mass, +-1 SD,
50-90 cm, 3-13 kg), anywhere the body fits on the mat, either way along the
cot with a +-12 deg skew (one in ten at any angle the cot allows), per-posture
contact patches of head, torso and limbs with per-sample limb positions,
mattress spread, breathing phase, per-cell offsets, 0.7 count noise, 0-3 dead
cells; post-processing adds mat gain 0.85-1.15, extra noise up to 1 count,
up to 6 further dead cells (p 0.3) or a broken trace of 4-16 cells (p 0.1),
and, for an empty cot, a blanket or soft toy of 0.1-0.8 kg (p 0.4).  The loss
weighs `prone` {prone_weight}x.

## Held-out metrics (int8 model, unseen seeds)

{n} frames ({per_class} per class) from `heldout_seeds()`, sample seeds no
training run uses: **accuracy {accuracy:.2f} %**, **prone recall {prone:.2f} %**
(targets: >= 97 %, >= 99 %).  Recall per class: {recalls}.

{matrix}

## Latency and size

About {us:.0f} us per frame through the TFLite interpreter on the training
host (x86-64, one thread, batch 1, including quantisation).  See
`benchmarks/inference.py` for the device wrapper's median / p99 and the
daemon's resident memory.  {size} bytes on disk.

## Known limits

- Trained and evaluated only on the emulator's body model: real mats,
  mattresses and children will differ (heavier blankets, a second object in
  the cot, a child sitting, kneeling or standing, a child half off the mat,
  twins).  Validate on recorded frames before trusting the numbers above.
- One frame at a time: no memory.  A single frame in mid-roll can be
  misclassified; the rules require the posture to persist before alarming.
- Prone and supine differ mainly in where the torso's load peaks (chest
  versus sacrum), in the head patch and in the knees; a child prone with
  extended, unloaded legs and a light chest is the hardest case.
- Left / right need the head end to be found from the load pattern; the
  label is the side the child lies on, not a side of the cot.
- Only the 16 x 32 geometry: other mats need a new model.
"""


if __name__ == "__main__":
    main()
