"""Frames recorded on a real mat (``edge mat record``), judged per child, not per frame.

Frames a tenth of a second apart are nearly the same picture: 300 frames of one
child are one child.  Pooled over frames, one child who is caught every time
can hide another who never is.  So where the evaluator has the nursery's
grouping of runs by child (:func:`read_children`: a CSV of ``recording, session,
child``, the child a code, never a name; docs/recording.md), each child is held
to the targets on their own frames, and too few children is not enough to trust
a model on (:data:`MIN_CHILDREN`, as docs/recording.md asks).

Used by ``python -m models.evaluate --recording FILE [--children CSV]``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIN_CHILDREN = 10
"""Children a set of recordings must hold before its figures can say a model is safe to trust
on those mats (docs/recording.md: "at least 10 different children")."""


class RecordingError(ValueError):
    """A recording or a children file that cannot be evaluated (the message names the file)."""


@dataclass(frozen=True)
class Recording:
    """One ``<mat>.npz``: frames with their mat's empty level, label indices and runs."""

    name: str
    """The path as given (what the children file's ``recording`` column matches)."""
    frames: np.ndarray
    """uint8 (n, rows, cols), raw counts as the model receives them."""
    levels: np.ndarray
    """float32 (n, rows, cols): the empty-cot calibration, per frame."""
    y: np.ndarray
    """int (n,): index of each frame's label in the model's labels."""
    session: np.ndarray
    """int (n,): which run of ``edge mat record`` took each frame."""


def load_recording(path: Path, labels: Sequence[str], rows: int, cols: int) -> Recording:
    """Read a recording for a model with these labels and input size, or say what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise RecordingError(f"{path}: not a readable recording ({e})") from None
    missing = [k for k in ("frames", "labels", "empty_level", "session") if k not in data]
    if missing:
        raise RecordingError(f"{path}: not an edge mat record file (no {', '.join(missing)})")
    frames = data["frames"]
    if frames.ndim != 3 or frames.shape[1:] != (rows, cols) or frames.dtype != np.uint8:
        raise RecordingError(
            f"{path}: frames are {frames.dtype} {frames.shape[1:]}, the model reads uint8 "
            f"{rows} x {cols} frames"
        )
    names = [str(v) for v in data["labels"]]
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise RecordingError(f"{path}: labels {unknown} are not the model's {list(labels)}")
    n = len(frames)
    if len(names) != n or len(data["session"]) != n:
        raise RecordingError(f"{path}: {n} frames but {len(names)} labels, "
                             f"{len(data['session'])} session numbers")  # fmt: skip
    level = np.asarray(data["empty_level"], dtype=np.float32)
    if level.shape != (rows, cols):
        raise RecordingError(f"{path}: empty_level is {level.shape}, not ({rows}, {cols})")
    return Recording(
        name=str(path),
        frames=frames,
        levels=np.broadcast_to(level, frames.shape),
        y=np.asarray([labels.index(v) for v in names], dtype=np.int64),
        session=np.asarray(data["session"], dtype=np.int64),
    )


def read_children(path: Path) -> dict[tuple[str, int], str]:
    """``(recording, session) -> child code`` from a CSV with the header
    ``recording,session,child`` (one row per run of ``edge mat record``); ``recording``
    names a recording by its path's last parts (``mat_1.npz`` where only one is given,
    ``2026-06-01-mat_1/mat_1.npz`` to tell one folder's from another's)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's UTF-8 has a BOM
    except OSError as e:
        raise RecordingError(f"{path}: cannot read the children file ({e.strerror})") from None
    rows = list(csv.DictReader(text.splitlines()))
    need = {"recording", "session", "child"}
    if not rows or not need <= set(rows[0]):
        raise RecordingError(f"{path}: needs the header line 'recording,session,child' "
                             "and one row per run")  # fmt: skip
    out: dict[tuple[str, int], str] = {}
    for line, row in enumerate(rows, start=2):
        rec, child = (row["recording"] or "").strip(), (row["child"] or "").strip()
        try:
            session = int((row["session"] or "").strip())
        except ValueError:
            raise RecordingError(f"{path}:{line}: session {row['session']!r} is not a "
                                 "number") from None  # fmt: skip
        if not rec or not child:
            raise RecordingError(f"{path}:{line}: recording and child must not be empty")
        key = (rec, session)
        if out.get(key, child) != child:
            raise RecordingError(f"{path}:{line}: {rec} session {session} is given to two "
                                 f"children ({out[key]}, {child})")  # fmt: skip
        out[key] = child
    return out


def _figures(y: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Prone recall and false prone (answered frames), abstention, on whatever frames are
    there (``None`` where a child has no frames of that kind)."""
    prone = labels.index("prone")
    answered = pred >= 0
    is_prone = y == prone
    others = ~is_prone  # as the model card counts false prone: every other label, empty too

    def share(num: np.ndarray, den: np.ndarray) -> float | None:
        return float(num.sum() / den.sum()) if den.sum() else None

    return {
        "frames": len(y),
        "prone_frames": int(is_prone.sum()),
        "prone_recall_answered": share(answered & is_prone & (pred == prone),
                                       answered & is_prone),
        "false_prone_answered": share(answered & others & (pred == prone), answered & others),
        "abstain": share(~answered, np.ones(len(y), dtype=bool)),
    }  # fmt: skip


def judge(
    recordings: Sequence[Recording],
    predict: Callable[[Recording], np.ndarray],
    labels: Sequence[str],
    targets: dict[str, float],
    children: dict[tuple[str, int], str] | None,
) -> dict[str, Any]:
    """Per recording (pooled over its frames, and per run), and with ``children`` per child.

    ``predict``: class index per frame, -1 for unknown (the device's wrapper).  ``targets``:
    ``prone_recall``, ``false_prone``, ``abstain`` (answered frames, as the model card).
    With ``children`` every run of every recording must be in it; the verdict is then
    every recording's pooled figures and every child meeting the targets on their own
    frames, with at least :data:`MIN_CHILDREN` children.  Without, never a pass.
    """
    def meets(f: dict[str, Any]) -> bool:
        return bool(
            (f["prone_recall_answered"] is None
             or f["prone_recall_answered"] >= targets["prone_recall"])
            and (f["false_prone_answered"] is None
                 or f["false_prone_answered"] <= targets["false_prone"])
            and (f["abstain"] is None or f["abstain"] <= targets["abstain"])
        )  # fmt: skip

    out: dict[str, Any] = {"recordings": {}, "children": None}
    if children is not None:
        children = _by_recording(recordings, children)
    ys, preds, who = [], [], []
    for rec in recordings:
        child_of = np.empty(len(rec.y), dtype=object)  # per frame, whatever order runs are in
        pred = predict(rec)
        pooled = _figures(rec.y, pred, labels)
        sessions = {}
        for s in np.unique(rec.session):
            sel = rec.session == s
            kinds, n_each = np.unique(rec.y[sel], return_counts=True)
            counts = {labels[int(v)]: int(n) for v, n in zip(kinds, n_each, strict=True)}
            sessions[int(s)] = {"labels": counts, **_figures(rec.y[sel], pred[sel], labels)}
            if children is not None:
                child = children.get((rec.name, int(s)))
                if child is None:
                    raise RecordingError(
                        f"{rec.name} session {int(s)} is not in the children file: every run "
                        "must be given to a child (or the run deleted, docs/recording.md)"
                    )
                sessions[int(s)]["child"] = child
                child_of[sel] = child
        pooled["meets_targets"] = meets(pooled)
        out["recordings"][rec.name] = {"pooled": pooled, "sessions": sessions}
        ys.append(rec.y)
        preds.append(pred)
        who.append(child_of)
    # Without the children, frames pooled can say a model fails, never that it holds.
    ok = children is not None and all(r["pooled"]["meets_targets"]
                                      for r in out["recordings"].values())  # fmt: skip
    if children is not None:
        y, pred, names = np.concatenate(ys), np.concatenate(preds), np.concatenate(who)
        per_child = {}
        for child in sorted(set(names)):
            sel = names == child
            f = _figures(y[sel], pred[sel], labels)
            f["meets_targets"] = meets(f)
            per_child[child] = f
        enough = len(per_child) >= MIN_CHILDREN
        out["children"] = {
            "count": len(per_child),
            "enough": enough,
            "meeting": sum(f["meets_targets"] for f in per_child.values()),
            "by_child": per_child,
        }
        ok = ok and enough and all(f["meets_targets"] for f in per_child.values())
    out["meets_targets"] = ok
    return out


def _by_recording(
    recordings: Sequence[Recording], children: dict[tuple[str, int], str]
) -> dict[tuple[str, int], str]:
    """The children file's rows keyed by the recording each names (by its path's last parts);
    a row naming none of them, or more than one, is refused."""
    out: dict[tuple[str, int], str] = {}
    for (named, session), child in children.items():
        tail = Path(named).parts
        hits = [r.name for r in recordings if Path(r.name).parts[-len(tail) :] == tail]
        if len(hits) != 1:
            which = "none of the recordings given" if not hits else (
                f"{len(hits)} recordings ({', '.join(hits)}): name it with its folder")
            raise RecordingError(f"the children file's recording {named!r} matches {which}")
        if out.setdefault((hits[0], session), child) != child:
            raise RecordingError(f"{hits[0]} session {session} is given to two children "
                                 f"({out[(hits[0], session)]}, {child})")  # fmt: skip
    return out


def _pct(v: float | None) -> str:
    return "   -   " if v is None else f"{100 * v:5.1f} %"


def report_lines(result: dict[str, Any]) -> list[str]:
    """The judgement as ``models.evaluate`` prints it."""
    lines = []
    for name, r in result["recordings"].items():
        p = r["pooled"]
        lines.append(
            f"  recording {name}, pooled over frames: prone recall "
            f"{_pct(p['prone_recall_answered'])}, false prone {_pct(p['false_prone_answered'])}, "
            f"abstain {_pct(p['abstain'])}  {'ok' if p['meets_targets'] else 'MISSED'}"
        )
        for s, f in r["sessions"].items():
            kinds = ", ".join(f"{k} {n}" for k, n in f["labels"].items())
            child = f" child {f['child']}" if "child" in f else ""
            lines.append(
                f"    session {s}{child} ({kinds}): prone recall {_pct(f['prone_recall_answered'])}"
                f", false prone {_pct(f['false_prone_answered'])}, abstain {_pct(f['abstain'])}"
            )
    kids = result["children"]
    if kids is None:
        lines.append("  recordings not judged per child, so not passed: give --children CSV "
                     "(docs/recording.md); 300 frames of one child are one child")  # fmt: skip
        return lines
    for child, f in kids["by_child"].items():
        lines.append(
            f"    child {child}: {f['frames']} frames ({f['prone_frames']} prone): prone recall "
            f"{_pct(f['prone_recall_answered'])}, false prone {_pct(f['false_prone_answered'])}, "
            f"abstain {_pct(f['abstain'])}  {'ok' if f['meets_targets'] else 'MISSED'}"
        )
    enough = "" if kids["enough"] else f"; too few to trust (at least {MIN_CHILDREN})"
    lines.append(f"  recordings by child: {kids['meeting']} of {kids['count']} children meet "
                 f"the targets{enough}")  # fmt: skip
    return lines
