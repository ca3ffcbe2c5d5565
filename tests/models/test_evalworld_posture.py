"""The "sunk" evaluation world: a volumetric infant sinking into foam over a mat.

Checks what a user of the world relies on: determinism, the mat contract's shapes and
scale (600 counts per kg), its left/right convention and mirror symmetry, that the
foam carries the body's weight, that empty cots hold no child, and that no training
code imports the evaluation worlds.
"""

from __future__ import annotations

import ast
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.evalworlds import posture as W

REPO = Path(__file__).resolve().parents[2]


def _cot(seed: int, **over: object) -> W.Cot:
    """A random 60 x 120 cot (mattress = mat), with fields overridden."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        c = W.sample_cot(rng)
        if c.x1 - c.x0 == W.MAT_L:
            break
    fields = {k: getattr(c, k) for k in (
        "x0", "x1", "y0", "y1", "k", "thickness", "sigma", "fill", "gap_rel", "mattress_kg",
        "gain", "cell_gain", "offset", "dead", "row_weak", "alpha", "beta", "noise",
        "noise_mult", "drift", "drift_cell", "gain_drift")}
    fields.update(over)
    return W.Cot(**fields)  # type: ignore[arg-type]


def _child(label: str, seed: int, heading: float, x: float = 60.0, y: float = 30.0,
           max_mass: float = 15.0) -> W.Scene:
    """A child of the given posture placed at (x, y), head toward heading (radians)."""
    for s in range(seed, seed + 200):
        rng = np.random.default_rng(s)
        base = "left" if label in ("left", "right") else label
        sc = W._build_child(rng, base)
        if sc.body_mass <= max_mass:
            break
    if label == "right":
        sc = W._mirror(sc)
    return replace(W._transform(sc, heading, x, y), label=label)


def test_render_and_dataset_are_deterministic_per_seed() -> None:
    for lab in W.LABELS:
        a, la = W.render(lab, 11)
        b, lb = W.render(lab, 11)
        assert np.array_equal(a, b) and np.array_equal(la, lb)
    f1, l1, y1 = W.dataset(4, 5)
    f2, l2, y2 = W.dataset(4, 5)
    assert np.array_equal(f1, f2) and np.array_equal(l1, l2) and np.array_equal(y1, y2)
    f3, _, _ = W.dataset(4, 6)
    assert not np.array_equal(f1, f3)
    assert not np.array_equal(W.render("prone", 1)[0], W.render("prone", 2)[0])


def test_shapes_dtypes_and_labels_follow_the_contract() -> None:
    frame, level = W.render("supine", 3)
    assert frame.shape == (16, 32) and frame.dtype == np.uint8
    assert level.shape == (16, 32) and level.dtype == np.float32
    frames, levels, labels = W.dataset(6, 2)
    assert frames.shape == (30, 16, 32) and frames.dtype == np.uint8
    assert levels.shape == (30, 16, 32) and levels.dtype == np.float32
    assert labels.shape == (30,) and labels.dtype == np.int64
    assert np.bincount(labels, minlength=5).tolist() == [6] * 5
    assert W.LABELS == ("empty", "supine", "prone", "left", "right")
    rough = W.render("left", 4, rough_empty=True)[1]
    assert np.unique(rough).size == 1
    with pytest.raises(ValueError):
        W.render("sitting", 1)


@pytest.mark.parametrize("label", ["supine", "prone", "left", "right"])
def test_counts_sum_to_600_per_kg_times_gain_for_a_child_on_the_mat(label: str) -> None:
    for seed in range(3):
        # an ideal sensor: no noise, drift, crosstalk or dead cells; light enough not to
        # saturate, lying along the cot in its middle
        cot = _cot(seed, alpha=0.0, beta=0.0, noise=0.0, noise_mult=0.0, drift=0.0,
                   drift_cell=0.0, gain_drift=0.0, cell_gain=np.ones((16, 32)),
                   dead=np.zeros((16, 32), bool), row_weak=np.ones((16, 1)),
                   k=0.04, sigma=4.0, gain=0.75)
        rng = np.random.default_rng(seed)
        level = W.calibrate(cot, rng)
        sc = _child(label, 20 + seed, math.pi * (seed % 2), max_mass=6.0)
        frame, lvl = W.render_scene(sc, cot, level, rng)
        assert frame.max() < 255
        total = float((frame.astype(float) - lvl).sum())
        expect = W.COUNTS_PER_KG * sc.body_mass * cot.gain
        assert total == pytest.approx(expect, rel=0.03), (total, expect)


def test_loads_conserve_every_kilogram_on_a_cot_the_mat_covers() -> None:
    for seed in range(24):
        cot = _cot(seed)
        rng = np.random.default_rng(seed)
        sc = W.sample_scene(W.LABELS[seed % 5], rng, cot)
        loads, ct = W.cell_loads(sc, cot)
        put = sum(sc.group_mass.values()) + sum(s.mass for s in sc.softs) + (
            sc.blanket.mass if sc.blanket is not None else 0.0)
        assert float(loads.sum()) == pytest.approx(put - ct.lost, rel=0.01, abs=1e-6)


def test_the_foam_carries_each_groups_weight_and_the_trunk_balances() -> None:
    cot = _cot(0)
    close = 0
    for seed in range(20):
        sc = _child("supine", 100 + seed, 0.3 * seed)
        ct = W.contact(sc, cot)
        for g, m in ct.carried.items():
            if m > 0:
                assert ct.group_load[g] == pytest.approx(m, rel=1e-6)
        assert sum(ct.group_load.values()) == pytest.approx(sc.body_mass, rel=1e-6)
        fine = float((ct.sharp + ct.padded).sum())
        assert fine == pytest.approx(sc.body_mass, rel=1e-6)
        off = math.dist(ct.trunk_cop, ct.trunk_com)
        close += off < 1.0
    # tilts are clipped at 8.5 degrees; a lying child is almost always balanced by them
    assert close >= 16


def test_left_side_child_faces_plus_y_with_head_toward_column_0() -> None:
    cot = _cot(1)
    cols = np.broadcast_to(cot.fy[:, None], (cot.fy.size, cot.fx.size))
    for label, sign in (("left", 1.0), ("right", -1.0)):
        ahead = []
        for seed in range(16):
            # head toward column 0: the lying frame's +x turned by 180 degrees
            sc = _child(label, 300 + seed, math.pi)
            assert sign * sc.anterior[1] > 0.8
            ct = W.contact(sc, cot)
            f = ct.sharp + ct.padded
            centroid = float((f * cols).sum() / f.sum())
            ahead.append(sign * (centroid - sc.trunk_centre[1]))
            # head toward column 31: the other way
            sc2 = _child(label, 300 + seed, 0.0)
            assert sign * sc2.anterior[1] < -0.8
        # knees, arms and face lie in front of the spine
        assert np.mean(ahead) > 1.0 and np.mean(np.array(ahead) > 0) >= 0.75


def test_mirror_image_of_a_left_frame_is_a_right_frame() -> None:
    cot = _cot(2)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        sc = W.sample_scene("left", rng, cot)
        m = W.mirror_scene(sc)
        assert m.label == "right"
        a, _ = W.cell_loads(sc, cot)
        b, _ = W.cell_loads(m, cot)
        assert np.allclose(b, a[::-1], rtol=1e-6, atol=1e-9)
        assert W.mirror_scene(m).label == "left"


def test_empty_cots_hold_no_child() -> None:
    cot = _cot(3)
    for seed in range(30):
        rng = np.random.default_rng(seed)
        sc = W.sample_scene("empty", rng, cot)
        assert all(p.group >= W.N_BODY_GROUPS for p in sc.parts)
        assert all(sc.group_mass.get(g, 0.0) == 0.0 for g in range(W.N_BODY_GROUPS))
        loads, _ = W.cell_loads(sc, cot)
        objects = sum(sc.group_mass.values()) + sum(s.mass for s in sc.softs)
        assert float(loads.sum()) <= objects * 1.001 + 1e-6
    # rendered, an empty cot without objects reads its empty level (noise and drift only)
    ideal = _cot(4, drift=0.0, gain_drift=0.0)
    rng = np.random.default_rng(0)
    level = W.calibrate(ideal, rng)
    nothing = W.Scene("empty", [], {g: 0.0 for g in range(W.N_BODY_GROUPS)}, {})
    frame, lvl = W.render_scene(nothing, ideal, level, rng)
    excess = float((frame.astype(float) - lvl).sum())
    assert abs(excess) < W.COUNTS_PER_KG * ideal.gain * 0.25


def _evalworld_uses(path: Path) -> list[str]:
    """Where a source file imports the evaluation worlds: import statements, and string
    constants naming them anywhere but in a docstring (importlib, __import__)."""
    text = path.read_text(encoding="utf-8")
    if "evalworlds" not in text:
        return []
    tree = ast.parse(text)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    hits = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [a.name for a in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings):
            names = [node.value]
        if any("evalworlds" in n for n in names):
            hits.append(f"{path.name}:{node.lineno}")
    return hits


def test_no_training_module_imports_the_evaluation_worlds() -> None:
    """Only models/evaluate.py (and benchmarks/, tests/) may use models.evalworlds; a
    training, threshold or export module that did would leak the held-out worlds."""
    allowed = {REPO / "models" / "evaluate.py"}
    offenders = []
    for path in sorted((REPO / "models").rglob("*.py")):
        if "evalworlds" in path.relative_to(REPO / "models").parts or path in allowed:
            continue
        offenders += _evalworld_uses(path)
    assert offenders == []
