"""Signals from mat frames (occupancy, load, motion, breathing) on the emulated infant."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from drivers.motion_mat import MatFrame
from edge.nursery.mat import (
    COUNTS_PER_KG,
    OCCUPIED_OFF_KG,
    OCCUPIED_OFF_S,
    OCCUPIED_ON_KG,
    OCCUPIED_ON_S,
    MatCalibration,
    MatReading,
    MatSignals,
    MotionTracker,
    Occupancy,
)
from edge.sim import mat_emulator
from edge.sim.infant import BODY_POSTURES, POSTURES, Infant, growth_median
from edge.sim.mat_emulator import MatScene, random_frame

FPS = 10


def scene(seed: int, **kw: object) -> MatScene:
    """A mat on simulated time only: controls take explicit ``at=`` times."""
    return MatScene(seed=seed, clock=lambda: 0.0, **kw)  # type: ignore[arg-type]


def frame(sc: MatScene, t: float) -> MatFrame:
    return MatFrame(round(t * FPS) & 0xFFFF, sc.rows, sc.cols, sc.frame_at(t))


def calibrate(sc: MatScene, start: float = -10.0) -> MatCalibration:
    """Five seconds of the empty cot, as the installer's check takes them."""
    return MatCalibration.from_empty(frame(sc, start + k / FPS) for k in range(5 * FPS))


def run(sig: MatSignals, sc: MatScene, t0: float, t1: float) -> list[MatReading]:
    return [
        sig.update(frame(sc, k / FPS), k / FPS) for k in range(round(t0 * FPS), round(t1 * FPS))
    ]


# -- calibration and load -------------------------------------------------------------------


def test_calibration_finds_dead_cells_and_removes_the_empty_mat() -> None:
    sc = scene(1, dead_cells=3)
    cal = calibrate(sc)
    assert cal.dead == sc.dead and len(cal.dead) == 3
    for t in (0.0, 3.3, 7.1):
        load = cal.measure(frame(sc, t))
        assert abs(load.kg) < 0.1  # the mattress (1.2 kg) and offsets are the baseline
        assert load.cop_x_cm is None or load.active_cells < 5


@pytest.mark.parametrize("age", [0, 4, 9, 16, 24])
@pytest.mark.parametrize("posture", ["supine", "prone", "left", "right"])
def test_load_is_roughly_the_childs_mass(age: int, posture: str) -> None:
    sc = scene(age * 10 + len(posture), dead_cells=4)
    cal = calibrate(sc)
    child = sc.lie_down(posture, age_months=age, at=0.0)  # type: ignore[arg-type]
    kg = [cal.measure(frame(sc, k / FPS)).kg for k in range(10)]
    assert sum(kg) / len(kg) == pytest.approx(child.mass_kg, rel=0.08)


def test_load_is_proportional_to_mass() -> None:
    cal = calibrate(scene(2))
    masses, loads = [], []
    for i, age in enumerate((0, 3, 6, 12, 18, 24)):
        sc = scene(2)
        child = sc.lie_down("supine", age_months=age, at=0.0)
        masses.append(child.mass_kg)
        loads.append(cal.measure(frame(sc, 0.1 * i)).counts)
    ratios = [c / m for c, m in zip(loads, masses, strict=True)]
    assert max(ratios) / min(ratios) < 1.1
    assert sum(ratios) / len(ratios) == pytest.approx(COUNTS_PER_KG, rel=0.06)
    assert COUNTS_PER_KG == mat_emulator.COUNTS_PER_KG  # one scale for both sides


def test_geometry_mismatch_is_refused() -> None:
    cal = MatCalibration.flat(16, 32)
    with pytest.raises(ValueError, match="recalibrate"):
        cal.measure(MatFrame(0, 8, 8, bytes(64)))
    with pytest.raises(ValueError):
        MatCalibration.from_empty([MatFrame(0, 8, 8, bytes(64))] * 3)


def test_slow_drift_of_the_empty_mat_is_learned() -> None:
    sc = scene(3)
    sig = MatSignals(calibrate(sc))
    dither = [(i * 0.618) % 1.0 for i in range(sc.rows * sc.cols)]
    # Temperature creeps: every cell reads 3 counts higher after 5 minutes (2.6 kg
    # over the whole mat), then stays there.
    for k in range(4000):
        f = frame(sc, k / FPS)
        drift = 3.0 * min(k / 3000, 1.0)
        cells = bytes(min(v + int(drift + d), 255) for v, d in zip(f.cells, dither, strict=True))
        reading = sig.update(replace(f, cells=cells), k / FPS)
        assert not reading.occupied
    assert abs(reading.load_kg) < 0.1


def test_self_calibration_from_an_empty_cot() -> None:
    sc = scene(14)
    sig = MatSignals()  # no installer calibration
    first = run(sig, sc, 0, 1)
    assert not first[0].calibrated and not any(r.occupied for r in first)
    learnt = run(sig, sc, 1, 8)
    assert learnt[-1].calibrated
    assert sig.calibration is not None and sig.calibration.dead == sc.dead
    child = sc.lie_down("supine", age_months=10, at=8.0)
    readings = run(sig, sc, 8, 20)
    assert readings[-1].occupied
    assert readings[-1].load_kg == pytest.approx(child.mass_kg, rel=0.08)


def test_child_already_in_the_cot_when_the_daemon_starts() -> None:
    sc = scene(15)
    child = sc.lie_down("prone", age_months=3, at=0.0)
    sc.breathe(35, at=0.0)
    sig = MatSignals()
    readings = run(sig, sc, 0, 30)
    assert all(r.occupied for r in readings if r.t >= OCCUPIED_ON_S + 0.1)
    assert not readings[-1].calibrated  # the child is never learnt as "empty"
    assert readings[-1].load_kg == pytest.approx(child.mass_kg, rel=0.2)
    assert max(r.seconds_since_motion for r in readings if r.t >= 5) < 4.0
    assert readings[-1].breathing_rate == pytest.approx(35, rel=0.15)
    sc.leave(at=30.0)
    after = run(sig, sc, 30, 45)
    assert after[-1].calibrated and not after[-1].occupied
    assert abs(after[-1].load_kg) < 0.1


def test_another_geometry_starts_calibration_over() -> None:
    sc = scene(16)
    sig = MatSignals(calibrate(sc))
    small = MatFrame(0, 8, 8, bytes([5]) * 64)
    reading = sig.update(small, 0.0)  # never raises in the daemon's loop
    assert not reading.calibrated and not reading.occupied
    assert sig.calibration is not None and (sig.calibration.rows, sig.calibration.cols) == (8, 8)


def test_a_flat_zero_calibration_reads_the_empty_mat_as_load() -> None:
    # Documented pitfall: the empty mat's offsets and mattress are kilograms.
    sc = scene(17)
    load = MatCalibration.flat(16, 32).measure(frame(sc, 0.0))
    assert load.kg > OCCUPIED_ON_KG


# -- occupancy -----------------------------------------------------------------------------------


def test_occupancy_hysteresis_in_load_and_time() -> None:
    occ = Occupancy()
    t = 0.0

    def feed(kg: float, seconds: float) -> bool:
        nonlocal t
        end = t + seconds
        state = occ.occupied
        while t < end - 1e-9:
            state = occ.update(t, kg)
            t += 0.1
        return state

    assert feed(0.0, 5) is False
    assert feed(OCCUPIED_ON_KG + 0.5, OCCUPIED_ON_S - 0.5) is False  # a hand on the mattress
    assert feed(0.0, 1) is False
    assert feed(OCCUPIED_ON_KG + 0.5, OCCUPIED_ON_S + 0.3) is True
    # A restless child: the load swings, even dips between the two thresholds.
    assert feed((OCCUPIED_ON_KG + OCCUPIED_OFF_KG) / 2, 30) is True
    assert feed(OCCUPIED_OFF_KG - 0.2, OCCUPIED_OFF_S - 1) is True  # lifted briefly
    assert feed(5.0, 1) is True
    assert feed(0.0, OCCUPIED_OFF_S + 0.3) is False
    with pytest.raises(ValueError):
        Occupancy(on_kg=1.0, off_kg=1.0)


def test_child_in_and_out_of_the_cot_without_flapping() -> None:
    sc = scene(4)  # restless shifts on (every ~45 s on average)
    sig = MatSignals(calibrate(sc))
    assert not any(r.occupied for r in run(sig, sc, 0, 10))
    sc.lie_down("prone", age_months=2, at=10.0)
    readings = run(sig, sc, 10, 190)
    came = next(r.t for r in readings if r.occupied)
    assert 10 + OCCUPIED_ON_S - 0.2 <= came <= 10 + OCCUPIED_ON_S + 0.5
    assert all(r.occupied for r in readings if r.t >= came)  # three minutes, no flapping
    sc.leave(at=190.0)
    later = run(sig, sc, 190, 200)
    gone = next(r.t for r in later if not r.occupied)
    assert 190 + OCCUPIED_OFF_S - 0.2 <= gone <= 190 + OCCUPIED_OFF_S + 0.5
    assert later[-1].seconds_since_motion == 0.0 and later[-1].breathing_rate is None


# -- motion and breathing -------------------------------------------------------------------


@pytest.mark.parametrize("rate", [20, 30, 40, 50, 60])
@pytest.mark.parametrize("age", [0, 8, 24])
def test_breathing_rate_within_15_percent(rate: int, age: int) -> None:
    sc = scene(100 + rate + age, restless_every_s=None)
    sig = MatSignals(calibrate(sc))
    sc.lie_down("supine", age_months=age, at=0.0)
    sc.breathe(rate, at=0.0)
    readings = run(sig, sc, 0, 30)
    estimates = [r.breathing_rate for r in readings if r.t >= 20]
    assert all(e is not None and abs(e - rate) / rate <= 0.15 for e in estimates), estimates


def test_breathing_rate_in_every_posture_with_a_restless_child() -> None:
    rng = random.Random(11)
    for i, posture in enumerate(["supine", "prone", "left", "right"] * 2):
        rate = rng.uniform(20, 60)
        sc = scene(200 + i, restless_every_s=20.0)  # a fidgety sleeper
        sig = MatSignals(calibrate(sc))
        sc.lie_down(posture, age_months=rng.uniform(0, 24), at=0.0)  # type: ignore[arg-type]
        sc.breathe(rate, at=0.0)
        known = sorted(
            r.breathing_rate
            for r in run(sig, sc, 0, 60)
            if r.t >= 15 and r.breathing_rate is not None
        )
        assert len(known) > 300  # unknown only for a few seconds after a shift
        median = known[len(known) // 2]
        assert abs(median - rate) / rate <= 0.15, (posture, rate, median)


def test_seconds_since_motion_after_apnea_and_recovery() -> None:
    sc = scene(5)
    sig = MatSignals(calibrate(sc))
    sc.lie_down("supine", age_months=1, at=0.0)  # the lightest, noisiest case
    breathing = run(sig, sc, 0, 30)
    settled = [r for r in breathing if r.t >= 3]
    assert all(r.occupied for r in settled)
    assert max(r.seconds_since_motion for r in settled) < 4.0
    sc.stop_breathing(at=30.0)
    apnea = run(sig, sc, 30, 55)
    # Motion stops being seen within 2 s, and the count then only grows.
    assert not any(r.moving for r in apnea if r.t >= 32)
    at_20 = next(r for r in apnea if r.t >= 52.0)
    assert at_20.seconds_since_motion >= 20.0
    assert at_20.seconds_since_motion <= 52.0 - 30.0 + 0.1
    assert apnea[-1].breathing_rate is not None and apnea[-1].breathing_rate < 10
    assert all(r.occupied for r in apnea)  # a still child is still in the cot
    sc.breathe(at=55.0)
    recovered = run(sig, sc, 55, 60)
    back = next(r.t for r in recovered if r.seconds_since_motion == 0.0)
    assert back <= 57.0


def test_apnea_is_not_mistaken_for_breathing_at_any_age() -> None:
    for age in (0, 6, 12, 24):
        sc = scene(300 + age)
        sig = MatSignals(calibrate(sc))
        sc.lie_down("prone", age_months=age, at=0.0)
        sc.stop_breathing(at=0.0)
        readings = run(sig, sc, 0, 30)
        assert not any(r.moving for r in readings if r.t >= 3), age
        assert readings[-1].seconds_since_motion >= 25.0


def test_motion_tracker_takes_explicit_times() -> None:
    tracker = MotionTracker()
    assert tracker.seconds_since_motion == 0.0
    assert tracker.breathing_rate() is None
    sc = scene(6, restless_every_s=None)
    cal = calibrate(sc)
    sc.lie_down("left", age_months=12, at=0.0)
    sc.stop_breathing(at=0.0)
    for k in range(100):
        tracker.update(100.0 + k / FPS, cal.measure(frame(sc, k / FPS)))
    assert tracker.since_motion(125.0) >= 24.0
    assert tracker.breathing_rate() == 0.0
    tracker.reset(200.0)
    assert tracker.since_motion(205.0) == 5.0


# -- the emulated infant ------------------------------------------------------------------------


def body_coords(child: Infant, i: int, cols: int, cell: float) -> tuple[float, float]:
    """(u, v) of cell i's centre in the child's body frame (u from the crown, v lateral)."""
    th = math.radians(child.heading_deg)
    dx = (i % cols + 0.5) * cell - child.x_cm
    dy = (i // cols + 0.5) * cell - child.y_cm
    u = dx * math.cos(th) + dy * math.sin(th) + child.length_cm / 2
    return u, -dx * math.sin(th) + dy * math.cos(th)


def footprint_features(child: Infant) -> tuple[float, float, float]:
    """(torso peak position 0 = shoulders .. 1 = hips, lateral spread / L, lateral centroid / L)."""
    load, _ = child.render(16, 32, 3.75, COUNTS_PER_KG)
    big_l = child.length_cm
    head = big_l * (0.25 - 0.05 * min(child.age_months, 24) / 24)
    u_sh, u_hip = head + 0.04 * big_l, head + 0.35 * big_l
    peak, peak_at = -1.0, 0.0
    w = sv = svv = 0.0
    for i, value in enumerate(load):
        u, v = body_coords(child, i, 32, 3.75)
        w, sv, svv = w + value, sv + value * v, svv + value * v * v
        if u_sh <= u <= u_hip and value > peak:
            peak, peak_at = value, (u - u_sh) / (u_hip - u_sh)
    mean_v = sv / w
    return peak_at, math.sqrt(svv / w - mean_v * mean_v) / big_l, mean_v / big_l


def test_postures_have_their_documented_footprints() -> None:
    rng = random.Random(21)
    feats = {
        p: [footprint_features(Infant.random(rng, posture=p)) for _ in range(30)]
        for p in BODY_POSTURES
    }
    # Supine: the sacrum is the heaviest point of the torso; prone: mostly the chest.
    assert all(f[0] > 0.5 for f in feats["supine"])
    assert sum(f[0] < 0.5 for f in feats["prone"]) >= 0.75 * 30
    # Side-lying is narrow.
    mean_width = {p: sum(f[1] for f in fs) / len(fs) for p, fs in feats.items()}
    assert mean_width["left"] < 0.8 * mean_width["supine"]
    assert mean_width["right"] < 0.8 * mean_width["prone"]
    # Left and right are mirror images: knees and arms on the side the child faces.
    assert all(f[2] > 0 for f in feats["left"])
    assert all(f[2] < 0 for f in feats["right"])


def test_prone_and_supine_frames_differ_for_the_same_child() -> None:
    sc = scene(8, restless_every_s=None)
    sc.lie_down("supine", age_months=5, at=0.0)
    supine = sc.render(0.0)
    sc.roll_to("prone", at=0.0)
    prone = sc.render(0.0)
    assert sc.posture == "prone"
    difference = sum(abs(a - b) for a, b in zip(supine, prone, strict=True))
    assert difference > 0.3 * (sum(supine) - sum(sc.offsets))


def test_scene_is_deterministic_and_seeded() -> None:
    a, b, c = scene(9), scene(9), scene(10)
    for s in (a, b, c):
        s.lie_down("right", at=0.0)
    assert a.frame_at(12.3) == b.frame_at(12.3)
    assert a.frame_at(12.3) != c.frame_at(12.3)
    assert a.frame_at(12.3) != a.frame_at(12.4)  # noise and breathing move on
    assert random_frame("prone", 3) == random_frame("prone", 3)
    assert random_frame("prone", 3) != random_frame("prone", 4)
    for label in POSTURES:
        assert len(random_frame(label, 1)) == 512
    with pytest.raises(ValueError):
        random_frame("sitting", 1)


def test_infant_sizes_stay_in_the_nursery_range() -> None:
    rng = random.Random(12)
    for _ in range(200):
        child = Infant.random(rng)
        assert 50 <= child.length_cm <= 90
        assert 3 <= child.mass_kg <= 13
        assert 0 <= child.age_months <= 24
    assert growth_median(0) == (49.5, 3.3)
    assert growth_median(12) == (75.0, 9.3)


def test_empty_cot_and_leave() -> None:
    sc = scene(13)
    assert sc.posture == "empty" and sc.pose_at(0.0) is None
    sc.lie_down(at=0.0)
    assert sc.posture == "supine"
    sc.leave(at=1.0)
    assert sc.posture == "empty"
    assert sum(sc.render(2.0)) == pytest.approx(sum(sc.offsets))
    with pytest.raises(RuntimeError):
        sc.roll_to("prone", at=2.0)
    with pytest.raises(ValueError):
        sc.breathe(500, at=2.0)
