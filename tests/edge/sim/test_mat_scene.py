"""The emulated mat takes a body drawn elsewhere (another generator, a recording): it
presses where that body presses, breathes as a child does, and ends when a child of the
scene's own lies down or is turned."""

from __future__ import annotations

import pytest

from drivers.motion_mat import MatFrame
from edge.nursery.mat import MatCalibration, MatSignals
from edge.sim.mat_emulator import MatScene


def _body(scene: MatScene) -> list[float]:
    """A 6-kg oblong body (head at column 4, feet at column 27), in counts per cell."""
    load = [0.0] * (scene.rows * scene.cols)
    for r in range(5, 11):
        for c in range(4, 28):
            load[r * scene.cols + c] = 6.0 * scene.counts_per_kg / (6 * 24)
    return load


def test_a_laid_body_keeps_its_weight_and_breathes_along_the_mat() -> None:
    scene = MatScene(seed=3, dead_cells=0, clock=lambda: 0.0)
    body = _body(scene)
    scene.lay(body, label="recorded", at=0.0)
    assert scene.posture == "recorded"
    empty = sum(scene.offsets)
    loads, heads = [], []
    for k in range(40):  # 4 s at 10 frames/s: a few breaths
        grid = scene.render(k / 10)
        loads.append(sum(grid) - empty)
        heads.append(sum(v for i, v in enumerate(grid) if i % scene.cols < scene.cols // 2))
    assert all(abs(v - sum(body)) < 1e-6 for v in loads)  # the weight stays put...
    assert max(heads) - min(heads) > 0.05 * sum(body) / 2  # ...load moves head <-> feet


def test_the_mat_signals_see_a_laid_body_breathing_and_its_apnea() -> None:
    t = [0.0]
    scene = MatScene(seed=4, dead_cells=0, clock=lambda: t[0])
    calibration = MatCalibration.from_empty(
        [MatFrame(k, scene.rows, scene.cols, scene.frame_at(k / 10)) for k in range(20)])
    signals = MatSignals(calibration=calibration)
    scene.lay(_body(scene), at=10.0)
    reading = None
    for k in range(100, 400):  # 30 s breathing
        t[0] = k / 10
        reading = signals.update(MatFrame(k, scene.rows, scene.cols, scene.frame_at(t[0])), t[0])
    assert reading is not None and reading.occupied
    assert reading.seconds_since_motion < 2.0
    scene.stop_breathing(at=40.0)
    for k in range(400, 700):  # 30 s still
        t[0] = k / 10
        reading = signals.update(MatFrame(k, scene.rows, scene.cols, scene.frame_at(t[0])), t[0])
    assert reading.occupied and reading.seconds_since_motion > 20.0


def test_a_child_of_the_scene_ends_a_laid_body() -> None:
    scene = MatScene(seed=5, dead_cells=0, clock=lambda: 0.0)
    scene.lay(_body(scene), at=0.0)
    scene.roll_to("prone", at=1.0)
    assert scene.posture == "prone"
    scene.lay(_body(scene), at=2.0)
    scene.leave(at=3.0)
    assert scene.posture == "empty"
    assert scene.render(4.0) == scene.offsets


def test_a_body_of_the_wrong_size_or_on_one_half_only_is_refused() -> None:
    scene = MatScene(seed=6, clock=lambda: 0.0)
    with pytest.raises(ValueError, match="needs 512 values"):
        scene.lay([1.0] * 10)
    with pytest.raises(ValueError, match="both halves"):
        scene.lay([0.0] * 511 + [50.0])
