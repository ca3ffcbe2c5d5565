"""Classification and detection metrics (numpy only), shared by training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """``m[i, j]``: samples of true class ``i`` predicted as ``j``."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def classification_report(m: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class recall and precision from a confusion matrix."""
    total = int(m.sum())
    diag = np.diag(m)
    recall = diag / np.maximum(m.sum(axis=1), 1)
    precision = diag / np.maximum(m.sum(axis=0), 1)
    return {
        "samples": total,
        "accuracy": float(diag.sum() / max(total, 1)),
        "recall": {lab: float(r) for lab, r in zip(labels, recall, strict=True)},
        "precision": {lab: float(p) for lab, p in zip(labels, precision, strict=True)},
        "confusion": m.tolist(),
    }


def confusion_markdown(m: np.ndarray, labels: Sequence[str]) -> str:
    """The confusion matrix as a Markdown table (rows: true class; columns: predicted)."""
    head = "| true \\ predicted | " + " | ".join(labels) + " | recall |"
    sep = "|---" * (len(labels) + 2) + "|"
    rows = []
    for i, lab in enumerate(labels):
        n = max(int(m[i].sum()), 1)
        cells = " | ".join(str(int(v)) for v in m[i])
        rows.append(f"| **{lab}** | {cells} | {100 * m[i, i] / n:.2f} % |")
    return "\n".join([head, sep, *rows])


def confusion_text(m: np.ndarray, labels: Sequence[str]) -> str:
    """The confusion matrix for a terminal."""
    w = max(8, *(len(x) + 1 for x in labels))
    lines = ["true\\pred".ljust(w) + "".join(lab.rjust(w) for lab in labels)]
    for i, lab in enumerate(labels):
        lines.append(lab.ljust(w) + "".join(str(int(v)).rjust(w) for v in m[i]))
    return "\n".join(lines)


def abstaining_report(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], *, positive: str = "prone"
) -> dict[str, Any]:
    """Figures of a classifier that may abstain (``y_pred == -1``: "unknown").

    ``accuracy`` and ``false_positive`` (non-``positive`` frames called
    ``positive``) count only the frames it answered; ``recall`` of ``positive``
    is given both among answered frames and over all (an abstention is then a
    miss); ``abstain`` is the share it did not answer.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    k = labels.index(positive)
    answered = y_pred >= 0
    pos = y_true == k
    neg = ~pos
    n_ans = int(answered.sum())
    return {
        "frames": len(y_true),
        "abstain": float(1.0 - n_ans / max(len(y_true), 1)),
        "accuracy_answered": float((y_pred[answered] == y_true[answered]).mean()) if n_ans else 0.0,
        f"{positive}_recall_answered": float((y_pred[pos & answered] == k).mean())
        if (pos & answered).any() else 0.0,
        f"{positive}_recall_all": float((y_pred[pos] == k).mean()) if pos.any() else 0.0,
        f"false_{positive}_answered": float((y_pred[neg & answered] == k).mean())
        if (neg & answered).any() else 0.0,
        "confusion": confusion(y_true[answered], y_pred[answered], len(labels)).tolist(),
    }
