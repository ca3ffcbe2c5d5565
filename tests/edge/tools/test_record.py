"""``edge mat record`` against the emulated mat on a real pseudo-terminal: the empty-cot
calibration first, then labelled frames that append, and clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.config import parse
from edge.nursery.mat import OCCUPIED_ON_KG
from edge.sim import site_text
from edge.sim.mat_emulator import MatModel
from edge.tools.record import RecordError, read_recording, run_record
from tests.support.mat_staff import staff

CHILD = "さとう はると"
"""A child's name in the config: it must never reach the recording."""


def config_text(port: str, outbox: Path) -> str:
    return site_text.device(
        outbox, device_id="hoikuen-01", site="midori-hoikuen", latitude=35.86,
        longitude=139.65, mock_pins=True,
    ) + site_text.nap_room((port, "ひよこ-1"), children={"ひよこ-1": CHILD})  # fmt: skip


async def test_an_empty_cot_then_two_postures_are_saved_labelled_and_appended(
    tmp_path: Path,
) -> None:
    out = tmp_path / "rec"
    said: list[str] = []
    with MatModel(seed=11, restless_every_s=None) as mat:
        config = parse(config_text(mat.port, tmp_path / "o.sqlite3"))

        first = await run_record(
            config, mat="mat_1", label="prone", seconds=2, out_dir=out, calibrate_s=6,
            ask=staff(mat, "prone", said),
        )  # fmt: skip
        assert "take the child off" in said[0] and "ひよこ-1" in said[0]
        assert mat.posture == "prone"
        second = await run_record(
            config, mat="mat_1", label="supine", seconds=2, out_dir=out, calibrate_s=6,
            ask=staff(mat, "supine", said),
        )  # fmt: skip
        # The second run reused the calibration: it never asked for an empty cot again.
        assert sum("take the child off" in s for s in said) == 1
        assert mat.posture == "supine"

    data = read_recording(out / "mat_1.npz")
    frames, labels = data["frames"], data["labels"]
    assert frames.dtype == np.uint8 and frames.shape[1:] == (16, 32)
    assert data["empty_level"].dtype == np.float32 and data["empty_level"].shape == (16, 32)
    n_prone = first["frames_by_label"]["prone"]
    assert 10 <= n_prone <= 25  # 2 s at 10 frames/s, less the seconds of lying down
    assert list(labels[:n_prone]) == ["prone"] * n_prone
    assert set(labels[n_prone:]) == {"supine"}
    assert len(frames) == len(labels) == len(data["timestamps"]) == second["frames"]
    assert np.all(np.diff(data["timestamps"]) >= 0)
    assert list(np.unique(data["session"])) == [0, 1]
    # The frames are the child on the mat: every one carries its weight over the empty level.
    assert float(data["load_kg"].min()) >= OCCUPIED_ON_KG
    scene = MatModel(seed=11).scene  # the same mat: its per-cell offsets from the seed
    live = [i for i in range(512) if i not in scene.dead]
    learnt = data["empty_level"].ravel()[live]
    assert np.abs(learnt - np.array(scene.offsets)[live]).max() < 1.0
    assert sorted(np.flatnonzero(data["dead"].ravel())) == sorted(scene.dead)
    loaded = (frames.reshape(len(frames), -1).astype(np.float64) - data["empty_level"].ravel())
    assert np.all(loaded.sum(axis=1) > 1000)
    assert (str(data["device"]), str(data["cot"]), int(data["rows"]), int(data["cols"])) == (
        "hoikuen-01", "ひよこ-1", 16, 32
    )

    manifest = json.loads((out / "mat_1.json").read_text(encoding="utf-8"))
    assert manifest["frames_by_label"] == {
        "empty": 0, "supine": second["frames_by_label"]["supine"], "prone": n_prone,
        "left": 0, "right": 0,
    }  # fmt: skip
    assert [s["label"] for s in manifest["sessions"]] == ["prone", "supine"]
    # Privacy: what leaves the device names a cot, never a child.
    for path in (out / "mat_1.npz", out / "mat_1.json"):
        raw = path.read_bytes()
        assert CHILD.encode() not in raw and "はると".encode() not in raw
    assert not any(CHILD in str(v) for v in data.values())


async def test_a_child_on_the_cot_during_calibration_is_refused_and_nothing_saved(
    tmp_path: Path,
) -> None:
    with MatModel(seed=12) as mat:
        mat.lie_down("supine")
        config = parse(config_text(mat.port, tmp_path / "o.sqlite3"))
        with pytest.raises(RecordError, match="ひよこ-1 was not empty during the calibration"):
            await run_record(
                config, mat="mat_1", label="supine", seconds=1, out_dir=tmp_path / "rec",
                calibrate_s=6, ask=lambda text: None,
            )  # fmt: skip
    assert not (tmp_path / "rec").exists()


async def test_frames_that_contradict_the_label_are_refused(tmp_path: Path) -> None:
    with MatModel(seed=13) as mat:
        config = parse(config_text(mat.port, tmp_path / "o.sqlite3"))
        # Nobody lies down: "prone" on a cot that reads empty.
        with pytest.raises(RecordError, match=r"read empty in .* which does not fit --label"):
            await run_record(
                config, mat="mat_1", label="prone", seconds=1.5, out_dir=tmp_path / "rec",
                calibrate_s=6, ask=lambda text: None,
            )  # fmt: skip
    assert not (tmp_path / "rec" / "mat_1.npz").exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "mat", "record", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_cli_refuses_a_silent_mat_in_one_line(tmp_path: Path) -> None:
    with MatModel(seed=14) as mat:
        mat.unplug()
        config = tmp_path / "device.toml"
        config.write_text(config_text(mat.port, tmp_path / "o.sqlite3"), encoding="utf-8")
        result = _cli("-c", str(config), "--mat", "mat_1", "--label", "empty",
                      "--seconds", "1", "--out", str(tmp_path / "rec"))
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: the mat of cot ひよこ-1 (mat_1) does not answer: ")
    assert "plugged in" in line
    assert not (tmp_path / "rec").exists()


def test_cli_refuses_an_unknown_label_or_mat_before_touching_the_mat(tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text(config_text("/dev/null", tmp_path / "o.sqlite3"), encoding="utf-8")
    result = _cli("-c", str(config), "--mat", "mat_1", "--label", "sitting",
                  "--out", str(tmp_path / "rec"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --label sitting: unknown; one of empty, supine, prone, left, right"
    )
    result = _cli("-c", str(config), "--mat", "mat_9", "--label", "prone",
                  "--out", str(tmp_path / "rec"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --mat mat_9: no mat sensor of that name in the config (mats: mat_1)"
    )
