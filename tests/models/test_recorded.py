"""Real-mat recordings judged per child (``python -m models.evaluate --recording``): the
recording comes from ``edge mat record`` on the emulated mat, the answers from the device's
own model wrapper; one child must not hide behind the others' frames."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drivers.motion_mat import MatFrame
from edge.config import parse
from edge.inference.runtime import UNKNOWN, PostureModel
from edge.sim import site_text
from edge.sim.mat_emulator import MatModel
from edge.tools.record import read_recording, run_record
from models.evaluate import POSTURE_TARGETS
from models.posture.recorded import (
    MIN_CHILDREN,
    Recording,
    RecordingError,
    judge,
    read_children,
    report_lines,
)
from tests.support.mat_staff import staff

LABELS = ("empty", "supine", "prone", "left", "right")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs on one mat: a child face down (session 0), then another on its back (1)."""
    out = tmp_path_factory.mktemp("rec")

    async def record() -> None:
        with MatModel(seed=21, restless_every_s=None) as mat:
            config = parse(site_text.device(
                out / "o.sqlite3", device_id="hoikuen-01", site="midori-hoikuen",
                latitude=35.86, longitude=139.65, mock_pins=True,
            ) + site_text.nap_room((mat.port, "ひよこ-1")))  # fmt: skip

            for label in ("prone", "supine"):
                await run_record(config, mat="mat_1", label=label, seconds=2, out_dir=out,
                                 calibrate_s=6, ask=staff(mat, label))  # fmt: skip

    asyncio.run(record())
    return out / "mat_1.npz"


def _evaluate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "models.evaluate", "--recordings-only", *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _children(path: Path, rows: list[tuple[str, int, str]]) -> Path:
    path.write_text("recording,session,child\n"
                    + "".join(f"{r},{s},{c}\n" for r, s, c in rows), encoding="utf-8")  # fmt: skip
    return path


def test_each_child_is_judged_on_their_own_frames_and_two_children_are_too_few(
    recording: Path, tmp_path: Path
) -> None:
    csv = _children(tmp_path / "children.csv",
                    [("mat_1.npz", 0, "K03"), ("mat_1.npz", 1, "K07")])  # fmt: skip
    result = _evaluate("--recording", recording, "--children", csv, "--json")
    assert result.returncode == 1, result.stdout + result.stderr  # 2 children < 10: never ok
    assert f"too few to trust (at least {MIN_CHILDREN})" in result.stdout
    report = json.loads(result.stdout[result.stdout.index("\n{") :])["recordings"]
    kids = report["children"]
    assert kids["count"] == 2 and not kids["enough"] and not report["meets_targets"]
    # The face-down child's figure is the device wrapper's answers on exactly that run's
    # frames, computed here straight from the recording.
    data = read_recording(recording)
    model = PostureModel.load()
    try:
        answers = [
            model.classify(MatFrame(0, 16, 32, f.tobytes()), data["empty_level"].ravel())[0]
            for f in data["frames"][data["session"] == 0]
        ]
    finally:
        model.close()
    said = [a for a in answers if a != UNKNOWN]
    k03 = kids["by_child"]["K03"]
    assert k03["prone_frames"] == len(answers) > 0
    assert k03["prone_recall_answered"] == pytest.approx(said.count("prone") / len(said))
    assert k03["abstain"] == pytest.approx(1 - len(said) / len(answers))
    k07 = kids["by_child"]["K07"]
    assert k07["prone_frames"] == 0 and k07["prone_recall_answered"] is None
    assert f"child K07: {k07['frames']} frames (0 prone)" in result.stdout
    assert "session 1 child K07 (supine " in result.stdout


def test_without_children_the_figures_never_pass(recording: Path) -> None:
    result = _evaluate("--recording", recording)
    assert result.returncode == 1, result.stderr
    assert "not judged per child, so not passed: give --children CSV" in result.stdout
    # The pooled figures are still there (these emulated frames happen to meet them).
    assert f"recording {recording}, pooled over frames: " in result.stdout
    assert result.stdout.split("pooled over frames: ")[1].splitlines()[0].endswith("ok")


def test_runs_left_out_of_the_children_file_or_given_twice_are_refused(
    recording: Path, tmp_path: Path
) -> None:
    csv = _children(tmp_path / "short.csv", [("mat_1.npz", 0, "K03")])
    result = _evaluate("--recording", recording, "--children", csv)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {recording} session 1 is not in the children file: every run must be given "
        "to a child (or the run deleted, docs/recording.md)"
    )
    csv = _children(tmp_path / "twice.csv", [("mat_1.npz", 0, "K03"), ("mat_1.npz", 0, "K04")])
    result = _evaluate("--recording", recording, "--children", csv)
    assert result.returncode == 2
    assert "session 0 is given to two children (K03, K04)" in result.stderr
    (tmp_path / "bare.csv").write_text("mat_1.npz,0,K03\n", encoding="utf-8")
    result = _evaluate("--recording", recording, "--children", tmp_path / "bare.csv")
    assert result.returncode == 2 and "needs the header line" in result.stderr
    csv = _children(tmp_path / "typo.csv", [("mat_2.npz", 0, "K03"), ("mat_1.npz", 1, "K07")])
    result = _evaluate("--recording", recording, "--children", csv)
    assert result.returncode == 2
    assert "recording 'mat_2.npz' matches none of the recordings given" in result.stderr


def test_two_days_folders_each_with_their_mats_file_are_told_apart_by_folder(
    recording: Path, tmp_path: Path
) -> None:
    # One folder per mat per day (docs/recording.md): each day's file is mat_1.npz and
    # numbers its runs from 0.
    days = [tmp_path / "2026-06-01-mat_1", tmp_path / "2026-06-02-mat_1"]
    for day in days:
        day.mkdir()
        (day / "mat_1.npz").write_bytes(recording.read_bytes())
    given = [a for day in days for a in ("--recording", day / "mat_1.npz")]
    csv = _children(tmp_path / "vague.csv", [("mat_1.npz", 0, "K03"), ("mat_1.npz", 1, "K07")])
    result = _evaluate(*given, "--children", csv)
    assert result.returncode == 2
    assert "recording 'mat_1.npz' matches 2 recordings" in result.stderr
    assert "name it with its folder" in result.stderr
    rows = [(f"{day.name}/mat_1.npz", s, c) for day, kids in zip(days, [("K03", "K07"),
            ("K11", "K03")], strict=True) for s, c in enumerate(kids)]  # fmt: skip
    result = _evaluate(*given, "--children", _children(tmp_path / "days.csv", rows), "--json")
    kids = json.loads(result.stdout[result.stdout.index("\n{") :])["recordings"]["children"]
    assert kids["count"] == 3
    frames = {c: f["frames"] for c, f in kids["by_child"].items()}
    per_run = read_recording(recording)["session"]
    assert frames == {"K03": len(per_run), "K07": int((per_run == 1).sum()),
                      "K11": int((per_run == 0).sum())}  # fmt: skip


def test_a_file_that_is_not_a_recording_for_this_model_is_refused(tmp_path: Path) -> None:
    small = tmp_path / "small.npz"
    np.savez(small, frames=np.zeros((3, 8, 8), np.uint8), labels=np.array(["prone"] * 3),
             empty_level=np.zeros((8, 8), np.float32), session=np.zeros(3, np.int32))
    result = _evaluate("--recording", small)
    assert result.returncode == 2
    assert "the model reads uint8 16 x 32 frames" in result.stderr
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not numpy at all")
    result = _evaluate("--recording", garbage)
    assert result.returncode == 2 and "not a readable recording" in result.stderr
    assert "Traceback" not in result.stderr


def _synthetic(children: int) -> tuple[list[Recording], dict[tuple[str, int], str]]:
    """``children`` runs of 100 face-down frames and 100 on the back, one child per run."""
    y = np.array([2] * 100 + [1] * 100)
    n = len(y) * children
    rec = Recording(
        name="mat_1.npz", frames=np.zeros((n, 16, 32), np.uint8),
        levels=np.zeros((n, 16, 32), np.float32), y=np.tile(y, children),
        session=np.repeat(np.arange(children), len(y)),
    )  # fmt: skip
    return [rec], {("mat_1.npz", s): f"K{s:02d}" for s in range(children)}


def test_one_child_missed_is_a_miss_even_when_the_pooled_frames_meet_the_target() -> None:
    recs, children = _synthetic(20)
    missed_child = 7

    def answers(rec: Recording) -> np.ndarray:
        pred = rec.y.copy()
        # Child K07 lies face down and the model says "on the back" for 40 of 100 frames.
        prone_frames = np.flatnonzero((rec.session == missed_child) & (rec.y == 2))
        pred[prone_frames[:40]] = 1
        return pred

    pooled = judge(recs, answers, LABELS, POSTURE_TARGETS, None)
    assert pooled["recordings"]["mat_1.npz"]["pooled"]["meets_targets"]  # 1,960 of 2,000: 98 %
    assert not pooled["meets_targets"]  # but frames pooled never pass
    by_child = judge(recs, answers, LABELS, POSTURE_TARGETS, children)
    assert not by_child["meets_targets"]
    kids = by_child["children"]
    assert kids["enough"] and kids["meeting"] == 19
    assert not kids["by_child"]["K07"]["meets_targets"]
    assert kids["by_child"]["K07"]["prone_recall_answered"] == pytest.approx(0.6)
    assert "child K07: 200 frames (100 prone): prone recall  60.0 %" in "\n".join(
        report_lines(by_child)
    )
    # The same frames in another order (runs interleaved, as after editing a file by
    # hand): each frame still counts for its own child.
    order = np.random.default_rng(3).permutation(len(recs[0].y))
    shuffled = Recording(name=recs[0].name, frames=recs[0].frames, levels=recs[0].levels,
                         y=recs[0].y[order], session=recs[0].session[order])  # fmt: skip
    again = judge([shuffled], answers, LABELS, POSTURE_TARGETS, children)
    assert again["children"] == kids
    # Every child caught: the verdict is the targets', with enough children.
    fine = judge(recs, lambda r: r.y.copy(), LABELS, POSTURE_TARGETS, children)
    assert fine["meets_targets"] and fine["children"]["meeting"] == 20


def test_the_children_file_takes_a_spreadsheets_utf8_and_names_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("\ufeffrecording,session,child\nmat_1.npz,0,ひよこA\n".encode())
    assert read_children(path) == {("mat_1.npz", 0): "ひよこA"}
    path.write_text("recording,session,child\nmat_1.npz,zero,K1\n", encoding="utf-8")
    with pytest.raises(RecordingError, match=r"c\.csv:2: session 'zero' is not a number"):
        read_children(path)
