"""The posture model's canonical input: what must not change the picture, and what must."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from drivers.motion_mat import MatFrame
from edge.inference.posture_input import CLIP, canonical, compressed
from edge.inference.runtime import ModelError, PostureModel, packaged_model

ROWS, COLS = 16, 32


def body(
    angle_deg: float, *, x: float = 16.0, y: float = 8.0, kg: float = 8.0, size: float = 1.0
) -> np.ndarray:
    """An asymmetric body on the mat: a round head, a long torso, one arm out to its left.
    Load in counts (600 per kg), at ``angle_deg`` heading and centre (x, y) in cells;
    ``size`` scales its length (1: about 20 cells, a toddler)."""
    a = math.radians(angle_deg)
    ax, ay = math.cos(a), math.sin(a)
    nx, ny = -ay, ax
    ys, xs = np.mgrid[0:ROWS, 0:COLS].astype(np.float64)
    parts = [  # (along, across, sigma along, sigma across, share)
        (-8.0, 0.0, 1.3, 1.3, 0.25),
        (-1.0, 0.0, 4.0, 1.8, 0.55),
        (-3.0, 3.0, 1.0, 0.8, 0.08),
        (6.0, -0.8, 1.5, 0.8, 0.12),
    ]
    out = np.zeros((ROWS, COLS))
    for du, dv, su, sv, share in parts:
        du, dv, su, sv = du * size, dv * size, su * size, sv * size
        cx, cy = x + du * ax + dv * nx, y + du * ay + dv * ny
        u = (xs - cx) * ax + (ys - cy) * ay
        v = (xs - cx) * nx + (ys - cy) * ny
        g = np.exp(-0.5 * ((u / su) ** 2 + (v / sv) ** 2))
        out += share * g / g.sum()
    return out * 600.0 * kg


def frame_of(load: np.ndarray, level: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.clip(np.rint(level + load), 0, 255).astype(np.uint8)
    return out


def same_up_to_turn(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference, taking the better of b and b turned by 180 degrees."""
    return min(float(np.abs(a - b).mean()), float(np.abs(a - b[::-1, ::-1]).mean()))


@pytest.fixture
def level() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.uniform(2.0, 9.0, (ROWS, COLS)).round()


def test_the_mats_empty_level_is_removed(level: np.ndarray) -> None:
    """A bare mat reads nothing, however high its empty level; a frame reads the same on a mat
    with other offsets."""
    assert not canonical(frame_of(np.zeros((ROWS, COLS)), level), level, ROWS, COLS).any()
    assert not canonical(np.full((ROWS, COLS), 10, np.uint8), None, ROWS, COLS).any()
    other = level[::-1, ::-1].copy()
    a = canonical(frame_of(body(5), level), level, ROWS, COLS)
    b = canonical(frame_of(body(5), other), other, ROWS, COLS)
    assert np.abs(a - b).mean() < 0.01 * a.mean() + 1e-3


def test_an_empty_level_that_crept_up_since_calibration_changes_nothing(level: np.ndarray) -> None:
    a = canonical(frame_of(body(20), level), level, ROWS, COLS)
    crept = canonical(frame_of(body(20), level + 3), level, ROWS, COLS)
    assert np.abs(a - crept).mean() < 0.05 * a.mean()


def test_gain_and_weight_do_not_change_the_picture(level: np.ndarray) -> None:
    a = canonical(frame_of(body(0, kg=6), level), level, ROWS, COLS)
    b = canonical(frame_of(body(0, kg=6) * 1.3, level), level, ROWS, COLS)
    assert np.abs(a - b).mean() < 0.05 * a.mean()


@pytest.mark.parametrize("angle", [0, 37, 90, 135, 180, 251, 333])
def test_heading_and_position_do_not_change_the_picture(angle: int, level: np.ndarray) -> None:
    """(A small infant, so that it fits across the 60-cm mat at any heading.)"""
    ref = canonical(frame_of(body(0, size=0.6), level), level, ROWS, COLS)
    moved = canonical(frame_of(body(angle, x=13.0, y=7.3, size=0.6), level), level, ROWS, COLS)
    assert same_up_to_turn(ref, moved) < 0.15 * ref.mean()


def test_the_body_lies_along_the_middle_of_the_output(level: np.ndarray) -> None:
    out = canonical(frame_of(body(63, x=20, y=6), level), level, ROWS, COLS)
    ys, xs = np.mgrid[0:ROWS, 0:COLS]
    total = out.sum()
    assert abs((out * ys).sum() / total - (ROWS - 1) / 2) < 0.5
    assert abs((out * xs).sum() / total - (COLS - 1) / 2) < 0.5
    spread_along = ((out * (xs - (COLS - 1) / 2) ** 2).sum() / total) ** 0.5
    spread_across = ((out * (ys - (ROWS - 1) / 2) ** 2).sum() / total) ** 0.5
    assert spread_along > 2 * spread_across
    assert 0.0 <= out.min() and out.max() <= CLIP


def test_a_mirror_image_is_not_undone(level: np.ndarray) -> None:
    """Left and right are mirror images: the canonical form must keep them apart."""
    a = canonical(frame_of(body(0), level), level, ROWS, COLS)
    m = canonical(frame_of(body(0)[::-1, :], level[::-1, :]), level[::-1, :], ROWS, COLS)
    assert same_up_to_turn(a, m) > 0.1 * a.mean()


def test_sqrt_compression_keeps_the_int8_range_and_the_order_of_cells(level: np.ndarray) -> None:
    """Step 4: 2 sqrt(x) keeps 0..CLIP, keeps empty cells empty and never swaps two cells;
    it lifts light contact towards the peaks (a steep sensor curve matters less)."""
    plain = canonical(frame_of(body(30), level), level, ROWS, COLS)
    sq = canonical(frame_of(body(30), level), level, ROWS, COLS, compress="sqrt")
    assert np.array_equal(
        canonical(frame_of(body(30), level), level, ROWS, COLS, compress="none"), plain
    )
    assert sq.dtype == np.float32 and 0.0 <= sq.min() and sq.max() <= CLIP + 1e-6
    assert np.array_equal(sq == 0, plain == 0)
    order = np.argsort(plain.ravel(), kind="stable")
    assert np.all(np.diff(sq.ravel()[order]) >= -1e-6)
    light = (plain > 0) & (plain < 0.25 * plain.max())
    assert (sq[light] / sq.max()).mean() > (plain[light] / plain.max()).mean()
    assert compressed(np.array([0.0, 1.0, CLIP], np.float32), "sqrt") == pytest.approx(
        [0.0, 2.0, CLIP]
    )


def test_an_unknown_compression_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown compression 'cube'"):
        compressed(np.zeros((ROWS, COLS), np.float32), "cube")


def test_the_device_applies_the_compression_its_card_names(tmp_path: Path) -> None:
    """PostureModel reads ``preprocessing.compress`` and refuses a name it does not know."""
    src, card_src = packaged_model("posture")
    shutil.copyfile(src, tmp_path / src.name)
    card = json.loads(card_src.read_text())
    level = np.full(ROWS * COLS, 4.0)
    rng = np.random.default_rng(5)
    cells = frame_of(body(40, kg=5), level.reshape(ROWS, COLS) + rng.integers(0, 2, (ROWS, COLS)))
    frame = MatFrame(0, ROWS, COLS, cells.tobytes())
    probs = {}
    for name in ("none", "sqrt"):
        card["preprocessing"]["compress"] = name
        (tmp_path / "card.json").write_text(json.dumps(card))
        with PostureModel.load(tmp_path / src.name, tmp_path / "card.json") as model:
            assert model.compress == name
            probs[name] = model.probabilities(frame, level)
            x = canonical(cells, level, ROWS, COLS, compress=name)
            raw = (model.model.predict(x)[0] + model.model.predict(x[::-1, ::-1])[0]) / 2.0
            assert max(probs[name].values()) > 0
            assert raw.argmax() == int(np.argmax(list(probs[name].values())))
    assert probs["none"] != probs["sqrt"]
    card["preprocessing"]["compress"] = "cube"
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="compress 'cube' is not one of none, sqrt"):
        PostureModel.load(tmp_path / src.name, tmp_path / "card.json")
