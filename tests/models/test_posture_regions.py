"""Tests for the "regions" training world (clinical pressure-mapping view of the cot mat)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.posture import regions as rg


def _scene(posture: str, seed: int, heading: float = 0.0,
           centre: tuple[float, float] = (60.0, 30.0), **pose: str) -> rg.Scene:
    """A clean scene (no sensor artefacts) with the child placed where the test says."""
    rng = np.random.default_rng(seed)
    side = "left" if posture == "right" else posture
    R, u_mid, _ = rg.build_body(side, rng, softness=rng.uniform(0, 1), **pose)
    if posture == "right":
        R = R.mirrored()
    return rg.Scene(posture=posture, regions=R, heading_deg=heading, centre=centre, u_mid=u_mid,
                    psf_cm=2.0)


def _fits(scene: rg.Scene, margin: float) -> bool:
    """Whether every loaded point of the body lies at least `margin` cm inside the mat."""
    P, us, vs = rg.body_field(scene.regions)
    xs, ys = rg.to_world(us, vs, scene.heading_deg, scene.centre, scene.u_mid)
    xs, ys = xs[P > 0], ys[P > 0]
    return bool(xs.min() > margin and xs.max() < rg.MAT_L_CM - margin
                and ys.min() > margin and ys.max() < rg.MAT_W_CM - margin)


def test_render_is_deterministic_and_seeds_differ() -> None:
    for posture in rg.LABELS:
        f1, e1 = rg.render(posture, 123)
        f2, e2 = rg.render(posture, 123)
        assert np.array_equal(f1, f2) and np.array_equal(e1, e2)
        f3, _ = rg.render(posture, 124)
        assert not np.array_equal(f1, f3)
    a = rg.dataset(2, seed=9)
    b = rg.dataset(2, seed=9)
    c = rg.dataset(2, seed=10)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_shapes_types_and_label_balance() -> None:
    frames, levels, labels = rg.dataset(4, seed=1)
    assert frames.shape == (20, 16, 32) and frames.dtype == np.uint8
    assert levels.shape == (20, 16, 32) and levels.dtype == np.float32
    assert labels.dtype == np.int64
    assert np.bincount(labels, minlength=5).tolist() == [4] * 5
    for posture in rg.LABELS:
        f, e = rg.render(posture, 5)
        assert f.shape == (16, 32) and f.dtype == np.uint8
        assert e.shape == (16, 32) and e.dtype == np.float32
    with pytest.raises(ValueError):
        rg.render("sitting", 0)


def test_dead_cells_read_zero_in_frame_and_empty_level() -> None:
    seen = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        scene = replace(rg.sample_scene("supine", rng), dead_cells=3, broken_trace=False)
        frame, level = rg.sense(scene, rg.load_map(scene), rng)
        zero = level == 0
        assert np.all(frame[zero] == 0)
        seen += int(zero.sum())
    assert seen >= 3 * 40


def test_rough_empty_level_is_flat() -> None:
    _, level = rg.render("prone", 8, rough_empty=True)
    assert np.unique(level).size == 1
    _, level = rg.render("prone", 8, rough_empty=False)
    assert np.unique(level).size > 100


def test_field_conserves_the_childs_weight() -> None:
    checked = 0
    for seed in range(30):
        for posture in ("supine", "prone", "left", "right"):
            scene = _scene(posture, seed)
            if not _fits(scene, 8.0):
                continue
            assert rg.load_map(scene).sum() == pytest.approx(scene.regions.total(), rel=0.01)
            checked += 1
    assert checked >= 20


def test_sensor_sum_is_600_counts_per_kg_times_gain() -> None:
    checked = 0
    for seed in range(40):
        scene = _scene(("supine", "prone", "left")[seed % 3], seed)
        if not _fits(scene, 8.0):
            continue
        # a light child on a soft mattress so that no cell saturates
        R = scene.regions.scaled(3.0 / scene.regions.total())
        gain = 0.7 + 0.015 * seed
        scene = replace(scene, regions=R, psf_cm=3.5, gain=gain, noise=1.0)
        frame, level = rg.sense(scene, rg.load_map(scene), np.random.default_rng(seed))
        assert frame.max() < 255
        total = float((frame.astype(np.float64) - level).sum())
        assert total == pytest.approx(600 * 3.0 * gain, rel=0.04)
        checked += 1
    assert checked >= 8


def _ventral_offset(scene: rg.Scene) -> float:
    """Load-weighted mean row position (cm) minus the spine's row position."""
    load = rg.load_map(scene)
    y = (np.arange(16) + 0.5) * rg.CELL_CM
    return float((load.sum(axis=1) * y).sum() / load.sum() - scene.centre[1])


def test_left_lying_child_faces_plus_y_with_head_toward_column_0() -> None:
    offsets = {("left", 0.0): [], ("left", 180.0): [], ("right", 0.0): [], ("right", 180.0): []}
    for seed in range(25):
        for posture, heading in offsets:
            offsets[(posture, heading)].append(_ventral_offset(_scene(posture, seed, heading)))
    for (posture, heading), vals in offsets.items():
        sign = (1 if posture == "left" else -1) * (1 if heading == 0.0 else -1)
        v = sign * np.asarray(vals)
        assert v.mean() > 1.0, (posture, heading, v.mean())
        assert (v > 0).mean() >= 0.8, (posture, heading, v)
    # the head is toward column 0 at heading 0: the load's front end is at low columns
    scene = _scene("left", 3)
    load = rg.load_map(scene)
    cols = np.nonzero(load.sum(axis=0) > 1e-3)[0]
    head_end = scene.centre[0] - scene.u_mid
    assert abs(cols.min() * rg.CELL_CM - head_end) < 2 * rg.CELL_CM


def test_left_mirrors_to_right_by_flipping_rows() -> None:
    rng = np.random.default_rng(4)
    for seed in range(10):
        heading = float(rng.uniform(0, 360))
        x, y = float(rng.uniform(50, 70)), float(rng.uniform(25, 35))
        left = _scene("left", seed, heading, (x, y))
        right = replace(left, regions=left.regions.mirrored(), heading_deg=-heading,
                        centre=(x, rg.MAT_W_CM - y))
        assert np.allclose(np.flipud(rg.load_map(left)), rg.load_map(right), atol=1e-9)


def _axial_profile(scene: rg.Scene) -> tuple[np.ndarray, np.ndarray]:
    """Load per lattice column along the body and u (cm from the crown)."""
    P, us, _ = rg.body_field(scene.regions)
    return P.sum(axis=0), us


def test_supine_heels_and_prone_knees_and_feet() -> None:
    for seed in range(10):
        sup = _scene("supine", seed, legs="straight")
        pro = _scene("prone", seed, legs="straight")
        L = 2 * sup.u_mid
        ps, us = _axial_profile(sup)
        pp, up = _axial_profile(pro)
        # supine: the leg load peaks at the heels, at the foot end of the body
        legs = us > 0.65 * L
        assert us[legs][np.argmax(ps[legs])] > 0.93 * L
        # supine: almost nothing beyond the heels; prone: foot dorsum and toes lie there
        beyond_s = ps[us > 1.04 * L].sum() / ps.sum()
        beyond_p = pp[up > 1.04 * L].sum() / pp.sum()
        assert beyond_p > 3 * beyond_s and beyond_p > 0.01
        # prone: a knee (patella) peak between mid-thigh and mid-shank; supine has none there
        # (hips at 0.54-0.60 L, so knees near 0.78 L)
        kp = pp[(up > 0.75 * L) & (up < 0.81 * L)].mean()
        ks = ps[(us > 0.75 * L) & (us < 0.81 * L)].mean()
        assert kp > 1.5 * ks
        # and the prone knee stands out against the prone mid-shank
        assert kp > 1.3 * pp[(up > 0.87 * L) & (up < 0.91 * L)].mean()


def test_empty_cot_carries_no_body() -> None:
    kg = []
    for seed in range(60):
        frame, level = rg.render("empty", seed, rough_empty=False)
        kg.append(float((frame.astype(np.float64) - level).sum()) / 600)
    kg = np.asarray(kg)
    assert np.median(kg) < 1.0
    assert (np.abs(kg) < 0.15).mean() >= 0.2  # often nothing at all (noise only)
    assert kg.max() < 8.0
    children = []
    for seed in range(30):
        frame, level = rg.render("supine", seed, rough_empty=False)
        children.append(float((frame.astype(np.float64) - level).sum()) / 600)
    assert np.median(children) > 3 * np.median(kg)


def test_speed_is_enough_for_training() -> None:
    import time

    t0 = time.perf_counter()
    rg.dataset(20, seed=2)
    assert 100 / (time.perf_counter() - t0) > 50  # lenient: the machine is shared
