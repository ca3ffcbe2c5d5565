"""The "skeleton" training world: the frame contract, its physics and its left/right convention."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.posture import skeleton as sk

BODY = ("supine", "prone", "left", "right")
LIMBS = (*sk.ARM_SEGS, *sk.LEG_SEGS)


def _scene(posture: str, seed: int, **changes: object) -> sk.Scene:
    """A drawn scene, centred, without blanket, drift, dead cells or a rough level unless asked."""
    base: dict[str, object] = dict(
        center=(60.0, 30.0), blanket=None, rough=False, dead_cells=0, broken=None,
        fit_inside=True, drift=0.0,
    )  # fmt: skip
    base.update(changes)
    return dataclasses.replace(sk.sample_scene(posture, np.random.default_rng(seed)), **base)


def _centroid(c: sk.Contacts, segs: tuple[int, ...]) -> np.ndarray:
    m = np.isin(c.part, segs)
    return (c.xy[m] * c.kg[m, None]).sum(axis=0) / c.kg[m].sum()


@pytest.mark.parametrize("posture", sk.LABELS)
def test_render_is_deterministic_per_seed_with_the_contract_types(posture: str) -> None:
    frame, level = sk.render(posture, 1234)
    again = sk.render(posture, 1234)
    other = sk.render(posture, 1235)
    assert frame.shape == (16, 32) and frame.dtype == np.uint8
    assert level.shape == (16, 32) and level.dtype == np.float32
    assert np.array_equal(frame, again[0]) and np.array_equal(level, again[1])
    assert not np.array_equal(frame, other[0])


def test_dataset_is_balanced_deterministic_and_shaped() -> None:
    frames, levels, labels = sk.dataset(6, seed=3)
    assert frames.shape == (30, 16, 32) and frames.dtype == np.uint8
    assert levels.shape == (30, 16, 32) and levels.dtype == np.float32
    assert labels.dtype == np.int64
    assert np.bincount(labels, minlength=5).tolist() == [6] * 5
    f2, l2, y2 = sk.dataset(6, seed=3)
    assert np.array_equal(frames, f2) and np.array_equal(levels, l2) and np.array_equal(labels, y2)
    assert not np.array_equal(frames, sk.dataset(6, seed=4)[0])


def test_unknown_posture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown posture"):
        sk.render("sitting", 1)


def test_a_child_wholly_on_the_mat_sums_to_600_counts_per_kg_times_gain() -> None:
    """Within 5 % (documented: cell gains, noise, rounding, stress tails past the edge)."""
    checked = 0
    for posture in BODY:
        for seed in range(40):
            heading = 180.0 * (seed % 2) + 10.0 * ((seed % 5) - 2)
            sc = _scene(posture, seed, heading_deg=heading)
            c = sk.contacts(sc)
            on = c.xy[c.kg > 1e-6]
            if on.min() < 5.0 or on[:, 0].max() > 115.0 or on[:, 1].max() > 55.0:
                continue  # arms or legs reach past the sensing area: some load is lost
            frame, level = sk.render_scene(sc)
            assert sc.body is not None
            ratio = (frame.astype(float) - level).sum() / (600.0 * sc.body.mass_kg * sc.gain)
            assert 0.95 < ratio < 1.03, (posture, seed, ratio)
            checked += 1
    assert checked >= 30


def test_contact_loads_add_up_to_the_body_mass() -> None:
    for posture in BODY:
        for seed in range(10):
            sc = _scene(posture, seed)
            assert sc.body is not None
            assert sk.contacts(sc).kg.sum() == pytest.approx(sc.body.mass_kg, rel=1e-9)


@pytest.mark.parametrize(("posture", "heading", "sign"), [
    ("left", 0.0, 1.0), ("left", 180.0, -1.0), ("right", 0.0, -1.0), ("right", 180.0, 1.0),
])  # fmt: skip
def test_a_side_lying_child_faces_the_contract_side(
    posture: str, heading: float, sign: float
) -> None:
    """Left side down, head toward column 0: arms and legs lie at higher rows than the trunk."""
    gaps = []
    for seed in range(60):
        c = sk.contacts(_scene(posture, seed, heading_deg=heading))
        gaps.append(sign * (_centroid(c, LIMBS)[1] - _centroid(c, sk.TRUNK)[1]))
    g = np.array(gaps)
    assert g.mean() > 4.0 and (g > 0).mean() > 0.85, g


@pytest.mark.parametrize("posture", BODY)
def test_heading_zero_puts_the_head_toward_column_zero(posture: str) -> None:
    for seed in range(20):
        c = sk.contacts(_scene(posture, seed, heading_deg=0.0))
        assert _centroid(c, (sk.HEAD,))[0] < _centroid(c, (sk.PELVIS,))[0] - 10.0
        c = sk.contacts(_scene(posture, seed, heading_deg=90.0))
        assert _centroid(c, (sk.HEAD,))[1] < _centroid(c, (sk.PELVIS,))[1] - 10.0


def test_a_left_frame_flipped_on_rows_looks_like_a_right_frame() -> None:
    def mean_image(posture: str, seeds: range) -> np.ndarray:
        imgs = [sk.load_map(_scene(posture, s, heading_deg=0.0)) for s in seeds]
        return np.mean(imgs, axis=0)

    left = mean_image("left", range(0, 150))
    right = mean_image("right", range(1000, 1150))

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    assert corr(left[::-1], right) > 0.97
    assert corr(left[::-1], right) > corr(left, right) + 0.05  # the sides really differ


def test_supine_feet_rest_on_the_heel_prone_feet_on_their_dorsum() -> None:
    """An upright supine foot presses only at its heel; a prone foot lies along its length."""
    reach = {}
    for posture in ("supine", "prone"):
        r = []
        for seed in range(60):
            sc = _scene(posture, seed)
            assert sc.body is not None
            c = sk.contacts(sc)
            for seg in (sk.L_FOOT, sk.R_FOOT):
                d = np.hypot(*(_centroid(c, (seg,)) - c.seg_start[seg]))
                r.append(d / sc.body.seg_len[seg])
        reach[posture] = np.array(r)
    assert (reach["supine"] < 0.15).mean() > 0.25  # straight legs: heel only
    assert (reach["prone"] < 0.3).mean() == 0.0


def test_prone_tucked_knees_carry_the_lifted_pelvis() -> None:
    """Bottom up: the knees (thighs' distal ends) press harder than the pelvis."""
    found = 0
    for seed in range(200):
        sc = _scene("prone", seed)
        g = sc.geometry
        assert g is not None
        if g.z0[sk.PELVIS] - g.dv[sk.PELVIS] < 2.0:
            continue
        found += 1
        c = sk.contacts(sc)
        knees = c.kg[np.isin(c.part, (sk.L_THIGH, sk.R_THIGH))].sum()
        assert knees > c.kg[c.part == sk.PELVIS].sum()
    assert found >= 10


def test_empty_cots_carry_no_body() -> None:
    for seed in range(40):
        sc = _scene("empty", seed)
        c = sk.contacts(sc)
        assert (c.part == -1).all()
        frame, level = sk.render_scene(sc)
        assert (frame.astype(float) - level).sum() / (600.0 * sc.gain) < 3.8  # a hand at most
    bare = _scene("empty", 5, objects=[])
    frame, level = sk.render_scene(bare)
    assert abs((frame.astype(float) - level).sum()) < 600.0 * bare.gain * 0.1


def test_thin_firm_mattress_gives_sharper_peaks_than_thick_soft() -> None:
    for seed in range(10):
        sc = _scene("supine", seed)
        sharp = sk.load_map(dataclasses.replace(sc, thickness_cm=3.0, depth_factor=0.5))
        soft = sk.load_map(dataclasses.replace(sc, thickness_cm=12.0, depth_factor=1.0))
        assert sharp.max() > 1.3 * soft.max()
        assert (sharp > 0.1 * sharp.max()).sum() < (soft > 0.1 * soft.max()).sum()


def test_dead_cells_and_broken_traces_read_zero_and_so_does_their_level() -> None:
    sc = _scene("prone", 8, dead_cells=3, broken=("col", 10))
    frame, level = sk.render_scene(sc)
    assert (frame[:, 10] == 0).all() and (level[:, 10] == 0).all()
    assert ((frame == 0) & (level == 0)).sum() >= 16 + 3


def test_rough_level_is_flat_at_the_median_cell() -> None:
    frame, level = sk.render_scene(_scene("supine", 2, rough=True))
    assert (level == np.median(frame)).all()


def test_learnt_level_matches_the_empty_cot() -> None:
    """The returned level is what the same mat reads with nobody on it."""
    sc = _scene("empty", 9, objects=[], noise_sd=0.3)
    frame, level = sk.render_scene(sc)
    assert np.abs(frame.astype(float) - level).max() <= 2.0
    assert level.mean() > 0.5  # offsets and the mattress: a real mat is never at zero


def test_saturation_clips_at_255() -> None:
    sc = _scene("supine", 4, gain=1.3, thickness_cm=3.0, depth_factor=0.5, offset=8.0)
    heavy = dataclasses.replace(sc, geometry=dataclasses.replace(
        sc.geometry, load=sc.geometry.load * 8.0, points=sc.geometry.points))  # fmt: skip
    frame, _ = sk.render_scene(heavy)
    assert frame.max() == 255


def test_a_heavier_load_widens_the_footprint() -> None:
    """Winkler contact: more load sinks a segment deeper, so more of its surface touches."""
    sc = _scene("supine", 6)
    g = sc.geometry
    assert g is not None
    light = sk.contacts(sc)
    heavy = sk.contacts(dataclasses.replace(sc, geometry=dataclasses.replace(g, load=g.load * 4)))
    for seg in sk.TRUNK:
        n_light = (light.kg[light.part == seg] > 0).sum()
        n_heavy = (heavy.kg[heavy.part == seg] > 0).sum()
        assert n_heavy > n_light, sk.SEGMENT_NAMES[seg]
