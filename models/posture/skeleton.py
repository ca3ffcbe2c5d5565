"""Training family "skeleton": labelled mat frames of a jointed infant skeleton on foam.

An independent second world for the posture classifier (the other family draws Gaussian
patches); it shares only the frame contract: 16 x 32 uint8 cells of 3.75 cm under a
60 x 120 cm mattress, row = y across the cot, column = x along it, 600 counts per kg at
gain 1, labels ``LABELS``.  Every number below is an assumption of this world, chosen
from the sources named, and each is drawn from the range given (uniform unless said).

Body (``_body``)
  * Age 0-36 months (uniform).  Length and mass from WHO median curves (birth 50 cm /
    3.3 kg, 6 mo 67 / 7.9, 12 mo 75 / 9.6, 24 mo 87 / 12.2, 36 mo 96 / 14.3), length x
    N(1, 0.04), mass x lognormal(sigma 0.12); clipped to 45-95 cm and 2.5-15 kg.
  * 17 segments: pelvis, abdomen, thorax, neck, head, and per side upper arm, forearm,
    hand, thigh, shank, foot.  Mass fractions move from birth to 36 months with
    sqrt(age/36) (growth is fastest early): head 0.20 -> 0.13 (newborn head ~20 % of body
    mass, Jensen 1989; Schneider & Zernicke 1992), trunk (pelvis .12, abdomen .15,
    thorax .17, neck .03) 0.47 throughout, each arm 0.045 -> 0.05, each leg 0.12 -> 0.15.
  * Length fractions of crown-heel length (sitting height / length 0.67 at birth ->
    0.57 at 3 y): head 0.25 -> 0.18, thigh 0.15 -> 0.20, shank 0.15 -> 0.19, upper arm
    0.15 -> 0.16, forearm 0.12 -> 0.14, hand 0.11, foot 0.16.
  * Cross-sections are not drawn but follow from mass: area = mass / (1.05 g/cm3 x
    length), elliptical with width/depth 1.45 (pelvis), 1.2 (abdomen), 1.3 (thorax),
    ~1.1 (limbs), 2.5 (open hand), 1.6 (foot).  The head is an ellipsoid of the head's
    mass with depth : width = 1.22.  (Checks: newborn chest 10.5 x 8 cm, head 9 x 11 cm.)

Pose (``_sample_pose``): the body frame is S (toward the head), L (the child's left),
A (anterior), L = S x A.  The trunk is rolled about S by beta: supine 0 +- 20 deg,
prone 180 +- 20, left 90 +- 35 (left side down), right -90 +- 35.  A child within
35 deg of pure side-lying is "left"/"right"; within 20 deg of flat is supine/prone;
the ambiguous 20-55 deg band is never drawn (documented rule: keep it out).  With
heading 0 the head points to column 0 and m = S x z = +y, so a left-lying child faces
+y (the contract's convention; ``right`` is the exact mirror: beta -> -beta).
  * Trunk: lateral bend N(0, 6 deg) per joint (supine/prone); side-lying curls forward
    0-18 deg per joint.  Underside lifts: lumbar lordosis 0-0.8 cm (supine), waist gap
    0.3-1.5 cm (side), bottom-up pelvis 2-6 cm when a prone child tucks its knees.
  * Head: supine yaw N(0, 35 deg) (occiput to posterolateral skull); prone: cheek
    (yaw +-60-90 deg) 80 %, face down (|yaw| < 20 deg) 8 %, head raised 1.5-5 cm 12 %
    (its weight then goes to the chest); side: ear down, yaw N(0, 15 deg).
  * Arms (in-plane angle gamma from "along the body to the feet" toward the spread side):
    supine up/surrender 45 % (upper arm 60-120, elbow 30-110 toward the head), at the
    sides 35 %, hands on the tummy 20 % (forearm on the trunk: weight to the trunk);
    prone surrender 50 % (palm down), under the chest 25 % (the chest rests on the
    forearms: 35 % of its load), straight at the sides 25 % (palm up); side-lying: lower
    arm forward or under the head (40-170), upper arm in front with the hand on the
    mattress 65 % or lying along the flank 35 %.
  * Legs: supine straight 40 % (popliteal gap 0-1.5 cm, foot upright 50-85 deg: heel
    contact only), frog 45 % (thigh 35-80 deg out, knee 70-130 deg, lateral surfaces
    down), knee up 15 % (sole on the mattress); prone straight 40 % (anterior thigh,
    knee, shin, foot dorsum down), frog flat 35 % (thigh 50-100 out, medial surfaces),
    knees tucked under the belly 25 % (pelvis lifted off: 30-40 % of its load to
    each knee, the rest to the belly);
    side-lying: lower hip 0-80 deg, knee 0-110; upper leg further forward on the
    mattress (its medial knee down) 60 % or stacked on the lower leg 40 % (its load on
    the lower leg).
  * Breathing: 0-6 % of the smaller of chest/belly load moves between them at a random
    phase (abdominal breathing of infants).

Contact (``_contacts``): a Winkler foundation (foam is close to a bed of independent
springs): under each segment pressure = k x max(0, delta - h) where h is the height of
the segment's undeformed underside (joint heights minus its vertical half-extent, its
cross-section profile across, rounded free ends along) and delta is its sink depth,
solved so the segment carries its load.  So footprints have real shapes: a narrow strip
under a side-lying trunk (curvature W*D/Dv of the rolled ellipse), a broad flat one
under a back (profile exponent 2.6), a heel point under an upright foot, a long
dorsum strip under a prone foot; width grows with load (as load^(1/3) for a long
segment).  Load flow: a segment whose underside stays > 2 cm above the mattress over
its whole length (raised head, neck, hand on the tummy, top arm on the flank) passes its
load to its parent; a partly lifted one keeps 0.4 + 0.6 x (touching share).  Winkler
modulus k = E / t with foam modulus E 5-40 kPa (log-uniform) and thickness t 3-12 cm.

Mattress and mat: the mat lies under the mattress, so each contact pressure reaches it
through the foam as the Boussinesq stress of a point load at depth h: 3 h^3 / (2 pi
(r^2 + h^2)^2.5), transfer function (1 + 2 pi f h) exp(-2 pi f h), applied by FFT on a
1.875 cm grid with a 15 cm margin, h = (0.5-1.0) x t (a finite layer on a rigid base
spreads less than a half-space).  FWHM ~ h: 1.5-12 cm.  Each cell then integrates the
stress over its 3.75 cm square (2 x 2 fine cells).  Load beyond the 60 x 120 cm
sensing area is lost (a child against the rail): 85 % of scenes shift the body wholly
onto the mattress where it fits, 15 % leave it anywhere (centre >= 10 cm inside the edges).

Sensor: gain 0.7-1.3 per mat, per-cell gain x N(1, 0.02-0.06); per-cell offset
max(0, 1-8 + N(0, 0.5-2.5)) counts; mattress 0.5-2 kg spread evenly +-10 %; drift of
the offset since calibration N(0, 0.25) counts (x 512 cells: ~0.2 kg); noise
N(0, 0.3-1.5) counts plus 1-4 % of each cell's load; rounded, clipped to 0-255; 0-3
dead cells (Poisson 0.8); a broken row or column trace (reads 0) in 6 % of mats.  A
thin blanket of 0.08-0.5 kg over feet to chest (whole cot width or body +-25 cm) in
35 % of body scenes.  Empty cots: nothing 35 %, else 1-2 objects from: folded blanket
0.2-1.2 kg, soft toy 0.05-0.5 kg, pillow 0.15-0.8 kg, a hand pressing 0.4-3 kg.

Empty level returned: the mean of 8 simulated empty frames of the same mat (0 at dead
cells) or, in ``ROUGH_SHARE`` = 10 % of scenes, the device's stop-gap: flat at the
median cell of the current frame (``MatCalibration.rough``).

Tolerance: for a child wholly on the mat, no blanket, sum(frame - empty) =
600 x kg x gain within ~6 % (cell gain spread, noise, rounding, Boussinesq tails beyond
the edge of the sensing area and the FFT margin).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float64]

LABELS = ("empty", "supine", "prone", "left", "right")
ROWS, COLS, CELL_CM = 16, 32, 3.75
WIDTH_CM, LENGTH_CM = ROWS * CELL_CM, COLS * CELL_CM
COUNTS_PER_KG = 600.0
ROUGH_SHARE = 0.10

# Segments (parents have lower indices than their children).
PELVIS, ABDOMEN, THORAX, NECK, HEAD = 0, 1, 2, 3, 4
L_UARM, L_FARM, L_HAND, R_UARM, R_FARM, R_HAND = 5, 6, 7, 8, 9, 10
L_THIGH, L_SHANK, L_FOOT, R_THIGH, R_SHANK, R_FOOT = 11, 12, 13, 14, 15, 16
N_SEG = 17
PARENT = (-1, 0, 1, 2, 3, 2, 5, 6, 2, 8, 9, 0, 11, 12, 0, 14, 15)
SEGMENT_NAMES = (
    "pelvis", "abdomen", "thorax", "neck", "head",
    "l_upper_arm", "l_forearm", "l_hand", "r_upper_arm", "r_forearm", "r_hand",
    "l_thigh", "l_shank", "l_foot", "r_thigh", "r_shank", "r_foot",
)  # fmt: skip
TRUNK = (PELVIS, ABDOMEN, THORAX)
ARM_SEGS = (L_UARM, L_FARM, L_HAND, R_UARM, R_FARM, R_HAND)
LEG_SEGS = (L_THIGH, L_SHANK, L_FOOT, R_THIGH, R_SHANK, R_FOOT)

# Anthropometry at birth and at 36 months (fractions; see the module docstring).
_MASS0 = np.array([.12, .15, .17, .03, .20, .020, .015, .010, .020, .015, .010,
                   .065, .035, .020, .065, .035, .020])  # fmt: skip
_MASS3 = np.array([.12, .15, .17, .03, .13, .026, .016, .008, .026, .016, .008,
                   .085, .045, .020, .085, .045, .020])  # fmt: skip
_LEN0 = np.array([.09, .14, .16, .03, .25, .15, .12, .11, .15, .12, .11,
                  .15, .15, .16, .15, .15, .16])  # fmt: skip
_LEN3 = np.array([.09, .12, .15, .03, .18, .16, .14, .11, .16, .14, .11,
                  .20, .19, .16, .20, .19, .16])  # fmt: skip
_ASPECT = np.array([1.45, 1.2, 1.3, 1.0, 1.0, 1.0, 1.15, 2.5, 1.0, 1.15, 2.5,
                    1.05, 1.1, 1.6, 1.05, 1.1, 1.6])  # fmt: skip
_WHO_AGE = (0.0, 6.0, 12.0, 24.0, 36.0)
_WHO_LEN = (50.0, 67.0, 75.0, 87.0, 96.0)
_WHO_KG = (3.3, 7.9, 9.6, 12.2, 14.3)
_DENSITY = 1.05  # g/cm3

# Contact sampling: points along x across each segment.
_NT, _NS = 10, 7
_T = (np.arange(_NT) + 0.5) / _NT
_SIG = np.linspace(-1.0, 1.0, _NS)
_ASIG = np.abs(_SIG)[None, :] * 0.98
_LIFT_CUT = 2.0  # cm: a segment lifted more than this everywhere touches nothing

# Fine grid (1.875 cm, 2 x 2 per cell) with a 15 cm margin for the FFT.
_SUB = 2
_FINE = CELL_CM / _SUB
_PAD = 8
_FR, _FC = ROWS * _SUB + 2 * _PAD, COLS * _SUB + 2 * _PAD
_FREQ = np.hypot(
    np.fft.fftfreq(_FR, d=_FINE)[:, None], np.fft.rfftfreq(_FC, d=_FINE)[None, :]
)
_EMPTY_FRAMES = 8


@dataclass(frozen=True)
class Body:
    """One child: segment lengths (cm), masses (kg), cross-section semi-axes (cm)."""

    age_months: float
    length_cm: float
    mass_kg: float
    seg_len: F
    seg_kg: F
    half_w: F  # along L (or, for the head, its half-width)
    half_d: F  # along A (head: half-depth front-back)


@dataclass
class Geometry:
    """Each segment as laid on the mattress, in the body plane (u toward the head, w = m)."""

    start: F  # (17, 2) u, w of the proximal end
    end: F  # (17, 2)
    z0: F  # axis height at start (cm)
    z1: F
    dv: F  # vertical half-extent of the cross-section
    wh: F  # horizontal half-width (curvature-preserving) of the touching surface
    off: F  # lateral offset of the lowest line from the axis (cm, along the normal)
    prof: F  # profile exponent across (2 = ellipse, >2 flatter)
    round0: F  # rounding of the free proximal end (0 = joint, 1 = ellipsoid end)
    round1: F
    load: F  # kg each segment presses into the mattress
    points: tuple[F, F, F, F] | None = None  # cached _segment_points (u, w, h, area)


@dataclass
class Scene:
    """Everything that decides one frame; ``dataclasses.replace`` it to make test scenes."""

    posture: str
    body: Body | None
    geometry: Geometry | None
    heading_deg: float
    center: tuple[float, float]  # where the load-weighted centre of the body goes (cm)
    fit_inside: bool  # shift the body wholly onto the mattress where it fits
    thickness_cm: float
    modulus_kpa: float
    depth_factor: float
    blanket: tuple[float, ...] | None  # (kg, u0, u1, half width, whole cot width 0/1)
    objects: list[tuple[float, ...]] = field(default_factory=list)
    gain: float = 1.0
    cell_gain_sd: float = 0.04
    offset: float = 4.0
    offset_sd: float = 1.0
    mattress_kg: float = 1.0
    drift: float = 0.0
    noise_sd: float = 0.8
    noise_rel: float = 0.02
    dead_cells: int = 0
    broken: tuple[str, int] | None = None  # ("row" | "col", index)
    rough: bool = False
    noise_seed: int = 0


def _interp_age(a0: F, a3: F, age: float) -> F:
    s = math.sqrt(min(max(age, 0.0), 36.0) / 36.0)
    return a0 + (a3 - a0) * s


def _body(rng: np.random.Generator) -> Body:
    """A child of 0-36 months from WHO medians and the proportions in the docstring."""
    age = float(rng.uniform(0.0, 36.0))
    length = float(np.interp(age, _WHO_AGE, _WHO_LEN)) * float(rng.normal(1.0, 0.04))
    mass = float(np.interp(age, _WHO_AGE, _WHO_KG)) * math.exp(float(rng.normal(0.0, 0.12)))
    return make_body(age, min(max(length, 45.0), 95.0), min(max(mass, 2.5), 15.0))


def make_body(age_months: float, length_cm: float, mass_kg: float) -> Body:
    """Segment lengths, masses and cross-sections of a child (mass-consistent sections)."""
    mf = _interp_age(_MASS0, _MASS3, age_months)
    mf = mf / mf.sum()
    lf = _interp_age(_LEN0, _LEN3, age_months)
    seg_len = lf * length_cm
    seg_kg = mf * mass_kg
    area = seg_kg * 1000.0 / (_DENSITY * seg_len)
    half_w = np.sqrt(area * _ASPECT / math.pi)
    half_d = np.sqrt(area / (_ASPECT * math.pi))
    # Head: ellipsoid, semi-axis along S = half its length, depth : width = 1.22.
    vol = seg_kg[HEAD] * 1000.0 / _DENSITY
    prod = 3.0 * vol / (4.0 * math.pi * seg_len[HEAD] / 2.0)
    half_w[HEAD] = math.sqrt(prod / 1.22)
    half_d[HEAD] = half_w[HEAD] * 1.22
    return Body(age_months, length_cm, mass_kg, seg_len, seg_kg, half_w, half_d)


def _roll_section(w: float, d: float, beta: float) -> tuple[float, float, float]:
    """(vertical half-extent, curvature-preserving half-width, offset of the lowest point)."""
    sb, cb = math.sin(beta), math.cos(beta)
    dv = math.sqrt(d * d * cb * cb + w * w * sb * sb)
    return dv, w * d / dv, (w * w - d * d) * sb * cb / dv


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _n(rng: np.random.Generator, sd: float, lim: float) -> float:
    """N(0, sd) clipped to +-lim (a scalar; np.clip is slow on scalars)."""
    return min(max(float(rng.normal(0.0, sd)), -lim), lim)


def _choice(rng: np.random.Generator, probs: tuple[float, ...]) -> int:
    x = rng.random() * sum(probs)
    for i, p in enumerate(probs):
        x -= p
        if x < 0:
            return i
    return len(probs) - 1


@dataclass
class _Limb:
    """In-plane angles (deg) of the three segments and the axis heights of its joints."""

    gammas: tuple[float, float, float]
    z_mid: float | None = None  # elbow / knee; None = resting on the mattress
    z_dist: float | None = None  # wrist / ankle
    z_tip: float | None = None  # fingertips / toes
    tip: str = "round"  # distal segment surface: flat, round, edge, upright
    tip_len: float = 1.0  # share of the distal segment's length (fist < 1)


def _arm_supine(rng: np.random.Generator, b: Body, th_z: float) -> _Limb:
    mode = _choice(rng, (0.45, 0.35, 0.20))
    tip = "flat" if rng.random() < 0.4 else "round"
    if mode == 0:  # up, surrender
        g1 = _u(rng, 60, 120)
        g2 = g1 + _u(rng, 30, 110)
        return _Limb((g1, g2, g2 + _u(rng, -20, 20)), tip=tip, tip_len=_u(rng, 0.6, 1.0))
    if mode == 1:  # at the sides
        g1 = _u(rng, 5, 40)
        g2 = g1 + _u(rng, -20, 60)
        return _Limb((g1, g2, g2 + _u(rng, -20, 20)), tip=tip, tip_len=_u(rng, 0.6, 1.0))
    g1 = _u(rng, 0, 25)  # hands on the tummy: forearm and hand lie on the trunk
    g2 = g1 - _u(rng, 100, 150)
    return _Limb((g1, g2, g2), z_dist=th_z * 1.8, z_tip=th_z * 1.8, tip="round", tip_len=0.7)


def _arm_prone(rng: np.random.Generator, b: Body, mode: int) -> _Limb:
    if mode == 0:  # surrender, palm down
        g1 = _u(rng, 70, 130)
        g2 = g1 + _u(rng, 40, 110)
        return _Limb((g1, g2, g2 + _u(rng, -20, 20)), tip="flat")
    if mode == 1:  # under the chest: forearm across under the thorax
        g1 = _u(rng, 10, 45)
        g2 = -_u(rng, 100, 150)
        return _Limb((g1, g2, g2 + _u(rng, -30, 30)), tip="round", tip_len=_u(rng, 0.6, 0.9))
    g1 = _u(rng, 0, 20)  # straight at the sides, palm up
    g2 = g1 + _u(rng, -15, 15)
    return _Limb((g1, g2, g2 + _u(rng, -15, 15)), tip="flat")


def _leg_supine(rng: np.random.Generator, b: Body, side: int) -> _Limb:
    mode = _choice(rng, (0.40, 0.45, 0.15))
    r_knee = b.half_d[L_THIGH] * 0.9
    if mode == 0:  # straight, foot upright on its heel
        g1 = _u(rng, 0, 25)
        g2 = g1 + _u(rng, -10, 10)
        ankle = 1.1 * math.sqrt(b.half_w[L_FOOT] * b.half_d[L_FOOT])
        toe = ankle + b.seg_len[L_FOOT] * math.sin(math.radians(_u(rng, 50, 85)))
        return _Limb(
            (g1, g2, g2 + _u(rng, 0, 40)), z_mid=r_knee + _u(rng, 0, 1.5), z_dist=ankle,
            z_tip=toe, tip="upright",
        )  # fmt: skip
    if mode == 1:  # frog: lateral thigh, shank, foot edge down
        g1 = _u(rng, 35, 80)
        g2 = g1 - _u(rng, 70, 130)
        return _Limb((g1, g2, g2 - _u(rng, 0, 40)), tip="edge")
    g1 = _u(rng, -5, 30)  # knee up, sole on the mattress
    knee = b.seg_len[L_THIGH] * math.sin(math.radians(_u(rng, 40, 70)))
    return _Limb((g1, g1 + _u(rng, -15, 15), g1 + _u(rng, -10, 20)), z_mid=knee, tip="flat")


def _leg_prone(rng: np.random.Generator, b: Body, mode: int) -> _Limb:
    if mode == 0:  # straight: anterior thigh, knee, shin, foot dorsum
        g1 = _u(rng, 0, 25)
        g2 = g1 + _u(rng, -5, 10)
        return _Limb((g1, g2, g2 + _u(rng, -10, 30)), tip="flat")
    if mode == 1:  # frog, flat: medial surfaces down
        g1 = _u(rng, 50, 100)
        g2 = g1 - _u(rng, 60, 110)
        return _Limb((g1, g2, g2 - _u(rng, 0, 40)), tip="edge")
    g1 = _u(rng, 110, 170)  # knees tucked under the belly, shins back along the mattress
    g2 = _u(rng, -15, 30)
    return _Limb((g1, g2, g2 + _u(rng, -10, 20)), tip="flat")


@dataclass
class _Pose:
    beta: float  # trunk roll (rad)
    head_yaw: float
    head_lift: float
    bends: tuple[tuple[float, float], ...]  # (lateral, flexion) deg at lumbar, thoracic, neck, head
    lifts: tuple[float, float, float]  # underside lift of pelvis, abdomen, thorax (cm)
    limbs: tuple[_Limb, _Limb, _Limb, _Limb]  # left arm, right arm, left leg, right leg
    spread_a: bool  # limbs spread toward A (side-lying) rather than toward L
    transfers: list[tuple[int, int, float]]
    breath: float  # signed share of chest/belly load moved to the chest


def _sample_pose(posture: str, b: Body, rng: np.random.Generator) -> _Pose:
    """Joint angles, heights and load transfers of one posture (see the module docstring)."""
    tr: list[tuple[int, int, float]] = []
    breath = _u(rng, 0, 0.06) * math.sin(_u(rng, 0, 2 * math.pi))
    th_z = b.half_d[THORAX]
    if posture in ("supine", "prone"):
        bends = tuple((_n(rng, 6, 15), 0.0) for _ in range(4))
        roll = math.radians(_n(rng, 8, 20))
    if posture == "supine":
        beta = roll
        yaw = math.radians(_n(rng, 35, 85))
        lifts = (0.0, _u(rng, 0, 0.8), 0.0)
        limbs = (_arm_supine(rng, b, th_z), _arm_supine(rng, b, th_z),
                 _leg_supine(rng, b, 1), _leg_supine(rng, b, -1))  # fmt: skip
        return _Pose(beta, yaw, 0.0, bends, lifts, limbs, False, tr, breath)
    if posture == "prone":
        beta = math.pi + roll
        hm = _choice(rng, (0.80, 0.08, 0.12))
        sgn = 1.0 if rng.random() < 0.5 else -1.0
        head_lift = 0.0
        if hm == 0:
            yaw = sgn * math.radians(_u(rng, 60, 90))
        elif hm == 1:
            yaw = math.radians(_u(rng, -20, 20))
        else:
            yaw, head_lift = sgn * math.radians(_u(rng, 0, 60)), _u(rng, 1.5, 5.0)
        arm_mode = _choice(rng, (0.50, 0.25, 0.25))
        arms = (_arm_prone(rng, b, arm_mode), _arm_prone(rng, b, arm_mode))
        if arm_mode != 1 and rng.random() < 0.3:  # arms need not match
            arms = (arms[0], _arm_prone(rng, b, _choice(rng, (0.5, 0.0, 0.5))))
        leg_mode = _choice(rng, (0.40, 0.35, 0.25))
        legs = (_leg_prone(rng, b, leg_mode), _leg_prone(rng, b, leg_mode))
        lifts = (_u(rng, 0, 1.0), 0.0, 0.0)
        if arm_mode == 1:
            lifts = (lifts[0], 0.0, 1.4 * b.half_d[L_FARM])
            share = _u(rng, 0.25, 0.45) / 2
            tr += [(THORAX, L_FARM, share), (THORAX, R_FARM, share)]
        if leg_mode == 2:
            scale = b.length_cm / 70.0
            lifts = (_u(rng, 2.0, 6.0) * scale, _u(rng, 0.5, 2.0) * scale, lifts[2])
            share = _u(rng, 0.3, 0.4)  # of the pelvis to each knee, the rest to the belly
            tr += [(PELVIS, L_THIGH, share), (PELVIS, R_THIGH, share / (1 - share)),
                   (PELVIS, ABDOMEN, 1.0)]  # fmt: skip
        return _Pose(beta, yaw, head_lift, bends, lifts, (*arms, *legs), False, tr, breath)
    # side-lying: "left" = left side down (beta ~ +90 deg); "right" its mirror
    phi = math.radians(_u(rng, -35, 35))
    beta = math.pi / 2 + phi if posture == "left" else -(math.pi / 2 + phi)
    bends = tuple(
        (_n(rng, 4, 10), _u(rng, 0, 18)) for _ in range(4)
    )
    yaw = math.radians(_n(rng, 15, 40))
    lifts = (0.0, _u(rng, 0.3, 1.5), 0.0)
    g = _u(rng, 40, 170)
    low_arm = _Limb((g, g + _u(rng, -40, 90), 0.0), tip="flat" if rng.random() < 0.5 else "round")
    low_arm.gammas = (g, low_arm.gammas[1], low_arm.gammas[1] + _u(rng, -20, 20))
    top_z = 2.0 * b.half_w[THORAX]
    if rng.random() < 0.65:  # upper arm in front of the chest, hand on the mattress
        g = _u(rng, 30, 100)
        g2 = g + _u(rng, -30, 60)
        top_arm = _Limb((g, g2, g2 + _u(rng, -20, 20)), z_mid=_u(rng, 0.3, 0.6) * top_z,
                        tip="flat" if rng.random() < 0.5 else "round")  # fmt: skip
    else:  # lying along the flank: on the body, not the mattress
        g = _u(rng, 0, 20)
        top_arm = _Limb((g, g + _u(rng, 0, 30), g), z_mid=top_z * 0.9, z_dist=top_z * 0.8,
                        z_tip=top_z * 0.7)  # fmt: skip
    g = _u(rng, 0, 80)
    low_leg = _Limb((g, g - _u(rng, 0, 110), 0.0), tip="edge")
    low_leg.gammas = (g, low_leg.gammas[1], low_leg.gammas[1] + _u(rng, 60, 110))
    r_knee = b.half_d[L_THIGH]
    if rng.random() < 0.6:  # upper leg further forward, its medial knee on the mattress
        g2 = min(g + _u(rng, 20, 60), 120.0)
        k2 = g2 - _u(rng, 20, 110)
        top_leg = _Limb((g2, k2, k2 + _u(rng, 60, 110)), tip="edge")
        stacked = False
    else:  # stacked on the lower leg
        top_leg = _Limb((g + _u(rng, -10, 15), low_leg.gammas[1] + _u(rng, -10, 10),
                         low_leg.gammas[2]), z_mid=2.8 * r_knee, z_dist=2.5 * r_knee,
                        z_tip=2.5 * r_knee, tip="edge")  # fmt: skip
        stacked = True
    if posture == "left":  # left limbs are the lower ones
        limbs = (low_arm, top_arm, low_leg, top_leg)
        top = (R_THIGH, R_SHANK, R_FOOT)
        low = (L_THIGH, L_SHANK, L_FOOT)
    else:
        limbs = (top_arm, low_arm, top_leg, low_leg)
        top = (L_THIGH, L_SHANK, L_FOOT)
        low = (R_THIGH, R_SHANK, R_FOOT)
    if stacked:
        tr += [(t, lo, 1.0) for t, lo in zip(top, low, strict=True)]
    return _Pose(beta, yaw, 0.0, bends, lifts, limbs, True, tr, breath)


def _geometry(b: Body, pose: _Pose) -> Geometry:
    """Lay the skeleton on the mattress: in-plane chain, joint heights, touching surfaces."""
    beta = pose.beta
    cb, sb = math.cos(beta), math.sin(beta)
    start = np.zeros((N_SEG, 2))
    end = np.zeros((N_SEG, 2))
    z0 = np.zeros(N_SEG)
    z1 = np.zeros(N_SEG)
    dv = np.zeros(N_SEG)
    wh = np.zeros(N_SEG)
    off = np.zeros(N_SEG)
    prof = np.full(N_SEG, 2.0)
    round0 = np.zeros(N_SEG)
    round1 = np.zeros(N_SEG)
    ang = np.zeros(N_SEG)  # in-plane direction (rad, from +u toward +w)

    def body_dir(ds: float, dl: float, da: float) -> float:
        """In-plane angle of a body-frame direction after the roll."""
        return math.atan2(dl * cb + da * sb, ds)

    def place(i: int, p0: tuple[float, float], a: float, za: float, zb: float) -> None:
        length = float(b.seg_len[i])
        lp = math.sqrt(max(length * length - (zb - za) ** 2, (0.15 * length) ** 2))
        start[i] = p0
        end[i] = (p0[0] + lp * math.cos(a), p0[1] + lp * math.sin(a))
        z0[i], z1[i] = za, zb
        ang[i] = a

    # Trunk, neck, head: accumulated bends (lateral toward L, flexion toward A).
    lat = flex = 0.0
    p: tuple[float, float] = (0.0, 0.0)
    for k, i in enumerate((PELVIS, ABDOMEN, THORAX)):
        if k > 0:
            lat += pose.bends[k - 1][0]
            flex += pose.bends[k - 1][1]
        la, fa = math.radians(lat), math.radians(flex)
        a = body_dir(math.cos(la) * math.cos(fa), math.sin(la), math.sin(fa) * math.cos(la))
        d, w, o = _roll_section(float(b.half_w[i]), float(b.half_d[i]), beta)
        dv[i], wh[i], off[i] = d, w, o
        z = d + pose.lifts[k]
        place(i, p, a, z, z)
        p = (float(end[i, 0]), float(end[i, 1]))
        prof[i] = 2.0 + 0.6 * max(cb, 0.0) ** 2 + 0.2 * max(-cb, 0.0) ** 2
    round0[PELVIS], round1[THORAX] = 0.8, 0.6
    hb = pose.beta + pose.head_yaw
    hd, hw, ho = _roll_section(float(b.half_w[HEAD]), float(b.half_d[HEAD]), hb)
    head_z = hd + pose.head_lift
    lat += pose.bends[2][0]
    flex += pose.bends[2][1]
    la, fa = math.radians(lat), math.radians(flex)
    a = body_dir(math.cos(la) * math.cos(fa), math.sin(la), math.sin(fa) * math.cos(la))
    r_neck = math.sqrt(b.half_w[NECK] * b.half_d[NECK])
    place(NECK, p, a, float(z1[THORAX]), head_z)
    dv[NECK] = wh[NECK] = r_neck
    lat += pose.bends[3][0]
    flex += pose.bends[3][1]
    la, fa = math.radians(lat), math.radians(flex)
    a = body_dir(math.cos(la) * math.cos(fa), math.sin(la), math.sin(fa) * math.cos(la))
    place(HEAD, (float(end[NECK, 0]), float(end[NECK, 1])), a, head_z, head_z)
    dv[HEAD], wh[HEAD], off[HEAD] = hd, hw, ho
    round0[HEAD] = round1[HEAD] = 1.0

    # Limbs: roots from the rolled trunk, then in-plane angles relative to the trunk axis.
    chains = (
        (THORAX, 0.85, 0.95 * b.half_w[THORAX], -0.1 * b.half_d[THORAX], (L_UARM, L_FARM, L_HAND)),
        (THORAX, 0.85, -0.95 * b.half_w[THORAX], -0.1 * b.half_d[THORAX], (R_UARM, R_FARM, R_HAND)),
        (PELVIS, 0.25, 0.6 * b.half_w[PELVIS], 0.0, (L_THIGH, L_SHANK, L_FOOT)),
        (PELVIS, 0.25, -0.6 * b.half_w[PELVIS], 0.0, (R_THIGH, R_SHANK, R_FOOT)),
    )  # fmt: skip
    for limb, (root, frac, l_off, a_off, segs) in zip(pose.limbs, chains, strict=True):
        side = 1.0 if l_off > 0 else -1.0
        ra = float(ang[root])
        nu, nw = -math.sin(ra), math.cos(ra)
        w_off = l_off * cb + a_off * sb
        base = (
            start[root, 0] + frac * (end[root, 0] - start[root, 0]) + w_off * nu,
            start[root, 1] + frac * (end[root, 1] - start[root, 1]) + w_off * nw,
        )
        z_root = a_off * cb - l_off * sb + float(z0[root])
        s2 = segs[2]
        r = [math.sqrt(b.half_w[s] * b.half_d[s]) for s in segs]
        z_mid = limb.z_mid if limb.z_mid is not None else 0.9 * max(r[0], r[1])
        if limb.tip == "flat":
            tip_dv, tip_wh, tip_prof = float(b.half_d[s2]), float(b.half_w[s2]), 3.0
        elif limb.tip == "edge":
            tip_dv, tip_wh, tip_prof = float(b.half_w[s2]), float(b.half_d[s2]), 2.0
        else:
            tip_dv = tip_wh = 1.1 * r[2]
            tip_prof = 2.0
        z_dist = limb.z_dist if limb.z_dist is not None else 0.9 * max(r[1], tip_dv)
        if limb.tip == "upright":  # the foot starts at the heel, which rests on the mattress
            z_dist = tip_dv
        z_tip = limb.z_tip if limb.z_tip is not None else tip_dv
        zs = (z_root, z_mid, z_dist, z_tip)
        p = (float(base[0]), float(base[1]))
        for k, s in enumerate(segs):
            gr = math.radians(limb.gammas[k])
            if pose.spread_a:
                a_rel = body_dir(-math.cos(gr), 0.0, math.sin(gr))
            else:
                a_rel = body_dir(-math.cos(gr), side * math.sin(gr), 0.0)
            place(s, p, ra + a_rel, zs[k], zs[k + 1])
            p = (float(end[s, 0]), float(end[s, 1]))
            if s == s2:
                end[s] = start[s] + limb.tip_len * (end[s] - start[s])
                dv[s], wh[s], prof[s] = tip_dv, tip_wh, tip_prof
                round0[s], round1[s] = 0.3, 1.0
            else:
                dv[s] = wh[s] = r[k]
    load = b.seg_kg.copy()
    return Geometry(start, end, z0, z1, dv, wh, off, prof, round0, round1, load)


def _segment_points(g: Geometry) -> tuple[F, F, F, F]:
    """Sample points of every segment: u, w, underside height h, area (all (17, NT*NS))."""
    t, sig = _T, _SIG
    vec = g.end - g.start
    lp = np.hypot(vec[:, 0], vec[:, 1])
    du = vec / np.maximum(lp, 1e-9)[:, None]
    nrm = np.stack([-du[:, 1], du[:, 0]], axis=1)
    s = g.off[:, None] + sig[None, :] * g.wh[:, None] * 0.98  # (17, NS)
    uu = (g.start[:, None, None, 0] + vec[:, None, None, 0] * t[None, :, None]
          + nrm[:, None, None, 0] * s[:, None, :])  # fmt: skip
    ww = (g.start[:, None, None, 1] + vec[:, None, None, 1] * t[None, :, None]
          + nrm[:, None, None, 1] * s[:, None, :])  # fmt: skip
    zaxis = g.z0[:, None] + (g.z1 - g.z0)[:, None] * t[None, :]  # (17, NT)
    a = _ASIG
    p = g.prof[:, None]
    cross = g.dv[:, None] * (1.0 - (1.0 - a**p) ** (1.0 / p))  # (17, NS)
    f = np.clip(g.dv / np.maximum(lp, 1e-6), 0.05, 0.5)[:, None]
    tau0 = np.clip((f - t[None, :]) / f, 0.0, 1.0)
    tau1 = np.clip((t[None, :] - (1.0 - f)) / f, 0.0, 1.0)
    rnd = g.dv[:, None] * (
        g.round0[:, None] * (1.0 - np.sqrt(1.0 - tau0**2))
        + g.round1[:, None] * (1.0 - np.sqrt(1.0 - tau1**2))
    )
    h = (zaxis - g.dv[:, None] + rnd)[:, :, None] + cross[:, None, :]
    area = np.broadcast_to((lp * 2.0 * g.wh * 0.98 / (_NT * _NS))[:, None], (N_SEG, _NT * _NS))
    return uu.reshape(N_SEG, -1), ww.reshape(N_SEG, -1), h.reshape(N_SEG, -1), area


def _loads(g: Geometry, pose: _Pose, h: F) -> F:
    """Each segment's load after transfers, breathing, and lifted segments passing it on."""
    load = g.load.copy()
    d = pose.breath * min(load[THORAX], load[ABDOMEN])
    load[THORAX] += d
    load[ABDOMEN] -= d
    for src, dst, share in pose.transfers:
        moved = load[src] * share
        load[src] -= moved
        load[dst] += moved
    hmin = h.reshape(N_SEG, _NT, _NS).min(axis=2)
    touch = (hmin < _LIFT_CUT).mean(axis=1)
    for i in range(N_SEG - 1, 2, -1):
        keep = 0.0 if touch[i] == 0 else 0.4 + 0.6 * touch[i]
        load[PARENT[i]] += load[i] * (1.0 - keep)
        load[i] *= keep
    return load


def _winkler(h: F, area: F, load: F, k: float) -> F:
    """kg at every sample point: pressure k (delta - h)+ with delta solved per segment.

    With the points of a segment sorted by h, the load carried when the first j touch is
    k A (j delta - sum of their h); the exact delta follows in closed form.
    """
    hs = np.sort(h, axis=1)
    a = area[:, 0] * k
    csum = np.cumsum(hs, axis=1)
    j = np.arange(1, hs.shape[1] + 1)
    cap = a[:, None] * (j[None, :] * hs - csum)  # load when delta reaches the j-th height
    n = np.clip((cap < load[:, None]).sum(axis=1), 1, hs.shape[1])  # points in contact
    rows = np.arange(h.shape[0])
    delta = (load / np.maximum(a, 1e-12) + csum[rows, n - 1]) / n
    w = np.maximum(delta[:, None] - h, 0.0)
    tot = w.sum(axis=1)
    lowest = (h == hs[:, :1]).astype(float)
    w = np.where(tot[:, None] > 0, w, lowest)
    out: F = w * (load / np.maximum(w.sum(axis=1), 1e-12))[:, None]
    return out


@dataclass
class Contacts:
    """Point loads of a scene on the mattress (cm, kg) and each segment's ends (cm)."""

    xy: F  # (n, 2) x along the cot, y across
    kg: F  # (n,)
    part: npt.NDArray[np.int64]  # segment index, -1 for blanket / objects
    seg_start: F  # (17, 2) world
    seg_end: F


def _to_world(scene: Scene, u: F, w: F) -> tuple[F, F]:
    th = math.radians(scene.heading_deg)
    sx, sy = -math.cos(th), -math.sin(th)
    mx, my = sy, -sx  # m = S x z
    return u * sx + w * mx, u * sy + w * my


def _patch(
    rng_vals: tuple[float, ...], n: int = 9
) -> tuple[F, F, F]:
    """Points of an object patch: (cx, cy, half a, half b, angle, kg, shape exp, crown exp)."""
    cx, cy, a, b, ang, kg, pe, q = rng_vals
    g = (np.arange(n) + 0.5) / n * 2 - 1
    xx, yy = np.meshgrid(g, g)
    rho = (np.abs(xx) ** pe + np.abs(yy) ** pe) ** (1.0 / pe)
    wgt = np.clip(1.0 - rho**2, 0.0, None) ** q * (rho < 1)
    wgt = wgt.ravel() / max(wgt.sum(), 1e-12) * kg
    px, py = (xx * a).ravel(), (yy * b).ravel()
    ca, sa = math.cos(ang), math.sin(ang)
    return cx + px * ca - py * sa, cy + px * sa + py * ca, wgt


def contacts(scene: Scene) -> Contacts:
    """Where the child (and any blanket or object) presses on the mattress, in cot cm."""
    xs: list[F] = []
    ys: list[F] = []
    kgs: list[F] = []
    parts: list[npt.NDArray[np.int64]] = []
    seg_start = np.zeros((N_SEG, 2))
    seg_end = np.zeros((N_SEG, 2))
    g = scene.geometry
    if g is not None:
        assert scene.body is not None
        uu, ww, h, area = g.points if g.points is not None else _segment_points(g)
        k = scene.modulus_kpa * 0.0102 / scene.thickness_cm  # kg / cm^3
        kg = _winkler(h, area, g.load, k)
        x, y = _to_world(scene, uu.ravel(), ww.ravel())
        kgf = kg.ravel()
        tot = kgf.sum()
        gx, gy = float((x * kgf).sum() / tot), float((y * kgf).sum() / tot)
        cx, cy = scene.center
        if scene.fit_inside:
            on = kgf > 1e-6 * tot
            lo_x, hi_x = x[on].min() - gx, x[on].max() - gx
            lo_y, hi_y = y[on].min() - gy, y[on].max() - gy
            cx = _fit(cx, lo_x, hi_x, LENGTH_CM)
            cy = _fit(cy, lo_y, hi_y, WIDTH_CM)
        dx, dy = cx - gx, cy - gy
        xs.append(x + dx)
        ys.append(y + dy)
        kgs.append(kgf)
        parts.append(np.repeat(np.arange(N_SEG), _NT * _NS))
        for arr, src in ((seg_start, g.start), (seg_end, g.end)):
            wx, wy = _to_world(scene, src[:, 0], src[:, 1])
            arr[:, 0], arr[:, 1] = wx + dx, wy + dy
        if scene.blanket is not None:
            bkg, u0, u1, half, whole = scene.blanket
            th = math.radians(scene.heading_deg)
            if whole:
                # Tucked across the whole cot: a band along x between the body's u0 and u1.
                ex, _ = _to_world(scene, np.array([u0, u1]), np.zeros(2))
                x0, x1 = sorted(float(v) + dx for v in ex)
                pv = (0.5 * (x0 + x1), WIDTH_CM / 2, max(0.5 * (x1 - x0), 8.0),
                      WIDTH_CM / 2, 0.0, bkg, 8.0, 0.0)  # fmt: skip
            else:
                mid_x, mid_y = _to_world(scene, np.array([0.5 * (u0 + u1)]), np.zeros(1))
                pv = (float(mid_x[0]) + dx, float(mid_y[0]) + dy, 0.5 * (u1 - u0), half,
                      th, bkg, 8.0, 0.0)  # fmt: skip
            bx, by, bw = _patch(pv, n=15)
            xs.append(bx)
            ys.append(by)
            kgs.append(bw)
            parts.append(np.full(bw.size, -1, dtype=np.int64))
    for ob in scene.objects:
        ox, oy, ow = _patch(ob)
        xs.append(ox)
        ys.append(oy)
        kgs.append(ow)
        parts.append(np.full(ow.size, -1, dtype=np.int64))
    if not xs:
        return Contacts(np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64), seg_start, seg_end)
    return Contacts(
        np.stack([np.concatenate(xs), np.concatenate(ys)], axis=1), np.concatenate(kgs),
        np.concatenate(parts), seg_start, seg_end,
    )  # fmt: skip


def _fit(c: float, lo: float, hi: float, size: float) -> float:
    """Shift a centre so [c+lo, c+hi] lies in [0, size] where it fits (else centre it)."""
    if hi - lo >= size:
        return size / 2 - (lo + hi) / 2
    return min(max(c, -lo + 0.5), size - hi - 0.5)


def load_map(scene: Scene) -> F:
    """kg reaching each of the 16 x 32 cells through the mattress (before the sensor)."""
    c = contacts(scene)
    grid = np.zeros(_FR * _FC)
    if c.kg.size:
        fx = c.xy[:, 0] / _FINE + _PAD - 0.5
        fy = c.xy[:, 1] / _FINE + _PAD - 0.5
        ix, iy = np.floor(fx), np.floor(fy)
        ax, ay = fx - ix, fy - iy
        ix_i, iy_i = ix.astype(np.int64), iy.astype(np.int64)
        r = np.concatenate([iy_i, iy_i, iy_i + 1, iy_i + 1])
        cc = np.concatenate([ix_i, ix_i + 1, ix_i, ix_i + 1])
        wt = np.concatenate([(1 - ay) * (1 - ax), (1 - ay) * ax, ay * (1 - ax), ay * ax])
        ok = (r >= 0) & (r < _FR) & (cc >= 0) & (cc < _FC)
        grid = np.bincount(
            (r * _FC + cc)[ok], weights=(np.tile(c.kg, 4) * wt)[ok], minlength=_FR * _FC
        ).astype(np.float64)
    h = scene.depth_factor * scene.thickness_cm
    kf = 2 * math.pi * _FREQ * h
    spread = np.fft.irfft2(np.fft.rfft2(grid.reshape(_FR, _FC)) * ((1 + kf) * np.exp(-kf)),
                           s=(_FR, _FC))  # fmt: skip
    crop = spread[_PAD : _PAD + _SUB * ROWS, _PAD : _PAD + _SUB * COLS]
    cells: F = np.clip(crop.reshape(ROWS, _SUB, COLS, _SUB).sum(axis=(1, 3)), 0.0, None)
    return cells


def render_scene(scene: Scene) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """(frame, empty level) of one scene, through the sensor model in the module docstring."""
    rng = np.random.default_rng(scene.noise_seed)
    kg = load_map(scene)
    cell_gain = scene.gain * (1.0 + rng.normal(0.0, scene.cell_gain_sd, (ROWS, COLS)))
    offset = np.maximum(scene.offset + rng.normal(0.0, scene.offset_sd, (ROWS, COLS)), 0.0)
    ramp = 1.0 + 0.1 * np.outer(
        np.linspace(-1, 1, ROWS) * rng.uniform(-1, 1), np.ones(COLS)
    ) + 0.1 * np.outer(np.ones(ROWS), np.linspace(-1, 1, COLS) * rng.uniform(-1, 1))
    mattress = COUNTS_PER_KG * scene.mattress_kg * cell_gain * ramp / ramp.sum()
    empty_true = offset + mattress
    signal = COUNTS_PER_KG * kg * cell_gain
    raw = (empty_true + scene.drift + signal * (1.0 + rng.normal(0, scene.noise_rel, signal.shape))
           + rng.normal(0.0, scene.noise_sd, (ROWS, COLS)))  # fmt: skip
    dead = np.zeros((ROWS, COLS), dtype=bool)
    if scene.dead_cells:
        dead.ravel()[rng.choice(ROWS * COLS, scene.dead_cells, replace=False)] = True
    if scene.broken is not None:
        kind, idx = scene.broken
        if kind == "row":
            dead[idx % ROWS, :] = True
        else:
            dead[:, idx % COLS] = True
    frame = np.clip(np.rint(raw), 0, 255)
    frame[dead] = 0
    out = frame.astype(np.uint8)
    if scene.rough:
        level = np.full((ROWS, COLS), float(np.median(out)), dtype=np.float32)
        return out, level
    empties = np.clip(
        np.rint(empty_true + rng.normal(0.0, scene.noise_sd, (_EMPTY_FRAMES, ROWS, COLS))), 0, 255
    ).mean(axis=0)
    empties[dead] = 0.0
    return out, empties.astype(np.float32)


def _objects(rng: np.random.Generator) -> list[tuple[float, ...]]:
    """What an empty cot may hold (see the module docstring)."""
    n = _choice(rng, (0.35, 0.45, 0.20))
    out: list[tuple[float, ...]] = []
    for _ in range(n):
        kind = _choice(rng, (0.35, 0.30, 0.15, 0.20))
        cx, cy = _u(rng, 5, LENGTH_CM - 5), _u(rng, 5, WIDTH_CM - 5)
        ang = _u(rng, 0, math.pi)
        if kind == 0:  # folded blanket
            out.append((cx, cy, _u(rng, 7, 18), _u(rng, 10, 22), ang, _u(rng, 0.2, 1.2), 6.0, 0.3))
        elif kind == 1:  # soft toy: body and head
            kg = _u(rng, 0.05, 0.5)
            a = _u(rng, 3, 7)
            out.append((cx, cy, a, a * _u(rng, 1.0, 1.6), ang, kg * 0.7, 2.0, 0.5))
            out.append((cx + 1.6 * a * math.cos(ang), cy + 1.6 * a * math.sin(ang),
                        0.7 * a, 0.7 * a, ang, kg * 0.3, 2.0, 0.5))  # fmt: skip
        elif kind == 2:  # pillow
            kg = _u(rng, 0.15, 0.8)
            out.append((cx, cy, _u(rng, 12, 20), _u(rng, 17, 25), ang, kg, 4.0, 0.8))
        else:  # a hand pressing: palm and four fingers
            kg = _u(rng, 0.4, 3.0)
            out.append((cx, cy, _u(rng, 4, 5), _u(rng, 4.5, 5.5), ang, kg * 0.75, 2.0, 0.7))
            for f in range(4):
                fa = ang + math.radians(-24 + 16 * f)
                out.append((cx + 8 * math.cos(fa), cy + 8 * math.sin(fa), 1.0, 3.0,
                            fa + math.pi / 2, kg * 0.0625, 2.0, 0.5))  # fmt: skip
    return out


def sample_scene(posture: str, rng: np.random.Generator) -> Scene:
    """Draw one scene of a posture (every range as in the module docstring)."""
    if posture not in LABELS:
        raise ValueError(f"unknown posture {posture!r}; expected one of {LABELS}")
    thickness = _u(rng, 3.0, 12.0)
    common: dict[str, Any] = dict(
        thickness_cm=thickness,
        modulus_kpa=float(math.exp(rng.uniform(math.log(5.0), math.log(40.0)))),
        depth_factor=_u(rng, 0.5, 1.0),
        gain=_u(rng, 0.7, 1.3),
        cell_gain_sd=_u(rng, 0.02, 0.06),
        offset=_u(rng, 1.0, 8.0),
        offset_sd=_u(rng, 0.5, 2.5),
        mattress_kg=_u(rng, 0.5, 2.0),
        drift=float(rng.normal(0.0, 0.25)),
        noise_sd=_u(rng, 0.3, 1.5),
        noise_rel=_u(rng, 0.01, 0.04),
        dead_cells=min(int(rng.poisson(0.8)), 3),
        broken=None,
        rough=bool(rng.random() < ROUGH_SHARE),
        noise_seed=int(rng.integers(0, 2**63 - 1)),
    )
    if rng.random() < 0.06:
        common["broken"] = ("row", int(rng.integers(0, ROWS))) if rng.random() < 0.5 else (
            "col", int(rng.integers(0, COLS)))  # fmt: skip
    heading = _u(rng, 0.0, 360.0)
    fit = bool(rng.random() < 0.85)
    center = (_u(rng, 10, LENGTH_CM - 10), _u(rng, 10, WIDTH_CM - 10))
    if posture == "empty":
        return Scene(posture, None, None, heading, center, fit, blanket=None,
                     objects=_objects(rng), **common)  # fmt: skip
    body = _body(rng)
    pose = _sample_pose(posture, body, rng)
    geo = _geometry(body, pose)
    geo.points = _segment_points(geo)
    geo.load = _loads(geo, pose, geo.points[2])
    blanket = None
    if rng.random() < 0.35:
        u_feet = float(min(geo.end[L_FOOT, 0], geo.end[R_FOOT, 0], geo.start[L_FOOT, 0]))
        u_chest = float(geo.start[THORAX, 0] + _u(rng, 0.2, 0.9) * (geo.end[THORAX, 0]
                                                                      - geo.start[THORAX, 0]))
        blanket = (_u(rng, 0.08, 0.5), u_feet - _u(rng, 3, 12), u_chest, 25.0,
                   float(rng.random() < 0.5))  # fmt: skip
    return Scene(posture, body, geo, heading, center, fit, blanket=blanket, **common)


def render(posture: str, seed: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """(frame uint8 (16, 32), empty_level float32 (16, 32)) for one random scene."""
    idx = LABELS.index(posture) if posture in LABELS else -1
    if idx < 0:
        raise ValueError(f"unknown posture {posture!r}; expected one of {LABELS}")
    return render_scene(sample_scene(posture, np.random.default_rng([seed, idx, 0x5E1E])))


def dataset(
    n_per_class: int, seed: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """frames (n,16,32) uint8, empty levels (n,16,32) float32, labels (n,) int64 (n = 5 x n).

    Classes come in a shuffled order; every sample is ``render(label, its own seed)``.
    """
    rng = np.random.default_rng([seed, 0xDA7A])
    n = len(LABELS) * n_per_class
    labels = np.repeat(np.arange(len(LABELS), dtype=np.int64), n_per_class)
    labels = labels[rng.permutation(n)]
    seeds = rng.integers(0, 2**62, n)
    frames = np.zeros((n, ROWS, COLS), dtype=np.uint8)
    levels = np.zeros((n, ROWS, COLS), dtype=np.float32)
    for i in range(n):
        frames[i], levels[i] = render(LABELS[labels[i]], int(seeds[i]))
    return frames, levels, labels


def ascii_frame(frame: npt.NDArray[Any], level: npt.NDArray[Any]) -> str:
    """A frame minus its empty level as characters, darkest = most load."""
    d = np.clip(frame.astype(float) - level, 0, None)
    top = max(float(d.max()), 1.0)
    ramp = " .:-=+*#%@"
    return "\n".join(
        "".join(ramp[min(int(v / top * (len(ramp) - 1) + 0.5), len(ramp) - 1)] * 2 for v in row)
        for row in d
    )


def _main() -> None:
    n = 1000
    render("empty", 0)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        render(LABELS[i % 5], i)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{n / wall:.0f} frames/s wall, {n / cpu:.0f} frames per CPU-second (render, one core)")
    for k, posture in enumerate(LABELS):
        rng = np.random.default_rng(7 + k)
        sc = sample_scene(posture, rng)
        sc = dataclasses.replace(sc, heading_deg=0.0, center=(60.0, 30.0), rough=False)
        fr, lv = render_scene(sc)
        kg = sc.body.mass_kg if sc.body else 0.0
        print(f"\n{posture} (heading 0: head toward column 0; {kg:.1f} kg, gain {sc.gain:.2f},"
              f" mattress {sc.thickness_cm:.0f} cm)")
        print(ascii_frame(fr, lv))


if __name__ == "__main__":
    _main()
