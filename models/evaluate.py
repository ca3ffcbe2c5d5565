"""Held-out metrics of the COMMITTED models, through the device's own wrapper.

    python -m models.evaluate [--posture-seeds 2000] [--anomaly-seeds 2000]

Loads ``models/posture/posture.tflite`` and ``models/anomaly/anomaly.tflite``
with :mod:`edge.inference.runtime` (the LiteRT interpreter, the card checks, the
quantisation the device does) and scores them on generated data from seeds no
training run uses.  No TensorFlow needed.  Exits non-zero when a target is
missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from drivers.motion_mat import MatFrame
from edge.inference.runtime import AnomalyModel, PostureModel
from models.anomaly import data as anomaly_data
from models.metrics import classification_report, confusion, confusion_text
from models.posture import data as posture_data

POSTURE_TARGETS = {"accuracy": 0.97, "prone_recall": 0.99}
ANOMALY_TARGETS = {"recall": 0.90, "false_positive_rate": 0.01}


def evaluate_posture(n_per_class: int) -> dict[str, Any]:
    model = PostureModel.load()
    x, y = posture_data.dataset(posture_data.heldout_seeds(n_per_class))
    labels = model.labels
    pred = np.empty(len(x), dtype=np.int64)
    t0 = time.perf_counter()
    for i, frame in enumerate(x):
        label, _ = model.classify(MatFrame(0, frame.shape[0], frame.shape[1], frame.tobytes()))
        pred[i] = labels.index(label)
    us = (time.perf_counter() - t0) / len(x) * 1e6
    m = confusion(y, pred, len(labels))
    report = classification_report(m, labels)
    report["us_per_frame"] = us
    print(f"posture ({model.model.path}, {len(x)} held-out frames, {us:.0f} us/frame):")
    print(confusion_text(m, labels))
    print(
        f"accuracy {100 * report['accuracy']:.2f} % (target >= 97 %), "
        f"prone recall {100 * report['recall']['prone']:.2f} % (target >= 99 %)"
    )
    print("recall: " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in report["recall"].items()))
    report["meets_targets"] = (
        report["accuracy"] >= POSTURE_TARGETS["accuracy"]
        and report["recall"]["prone"] >= POSTURE_TARGETS["prone_recall"]
    )
    model.close()
    return report


def evaluate_anomaly(n_seeds: int) -> dict[str, Any]:
    sets = anomaly_data.heldout_sets(n_seeds)
    out: dict[str, Any] = {}
    ok = True
    for kind, by_type in sets.items():
        model = AnomalyModel.load(series=kind)
        flagged = {
            name: float(np.mean([model.is_anomalous(w) for w in raw]))
            for name, raw in by_type.items()
        }
        recall = {a: flagged[a] for a in anomaly_data.ANOMALIES}
        r: dict[str, Any] = {
            "false_positive_rate": flagged["normal"],
            "recall": recall,
            "recall_all": float(np.mean(list(recall.values()))),
            "normal_windows": len(by_type["normal"]),
            "anomalous_windows_per_type": len(by_type["spike"]),
            "threshold": model.threshold,
        }
        out[kind] = r
        ok = ok and (
            r["recall_all"] >= ANOMALY_TARGETS["recall"]
            and r["false_positive_rate"] <= ANOMALY_TARGETS["false_positive_rate"]
        )
        print(
            f"anomaly/{kind} ({r['normal_windows']} normal, {r['anomalous_windows_per_type']} "
            f"per anomaly type): false positives {100 * r['false_positive_rate']:.2f} % / window "
            f"(target <= 1 %), recall {100 * r['recall_all']:.1f} % (target >= 90 %): "
            + ", ".join(f"{a} {100 * v:.1f} %" for a, v in recall.items())
        )
        model.close()
    out["meets_targets"] = ok
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posture-seeds", type=int, default=2000, help="held-out frames per class")
    ap.add_argument("--anomaly-seeds", type=int, default=2000, help="held-out series per kind")
    ap.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    args = ap.parse_args(argv)
    posture = evaluate_posture(args.posture_seeds)
    anomaly = evaluate_anomaly(args.anomaly_seeds)
    if args.json:
        print(json.dumps({"posture": posture, "anomaly": anomaly}, indent=2))
    return 0 if posture["meets_targets"] and anomaly["meets_targets"] else 1


if __name__ == "__main__":
    sys.exit(main())
