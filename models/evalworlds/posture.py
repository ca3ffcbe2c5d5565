"""Evaluation world "sunk": labelled mat frames of a volumetric infant sinking into foam.

EVALUATION ONLY.  Never train, tune, calibrate or choose a threshold on these frames:
they exist to measure whether the posture model generalises to a world nobody trained
on.  Written from first principles without reading the training generators.

What a frame is (per the mat contract): uint8 (16, 32), row r = y across the cot
(y = 3.75 * (r + 0.5) cm), column c = x along the cot; plus the empty level the device
learnt, float32 (16, 32).  Labels: "empty", "supine", "prone", "left", "right"; left /
right = the side the child lies ON; a child on its left side with its head toward
column 0 faces +y.

Physical model and every assumption, in the order a frame is made:

1. Child.  Body length L ~ U(45, 95) cm; mass = 3.3 kg * (L / 50) ** 2.35 times a
   log-normal (sigma 0.1), clipped to 2.5-15 kg (so L < 55 cm gives premature-like
   babies under 5 kg; the heaviest toddlers reach 15 kg).  Age factor s = (L - 45) / 50
   sets proportions: head height 0.26 L at s = 0 down to 0.19 L at s = 1, legs
   (hip to heel) 0.35 L up to 0.42 L; heavier-than-typical children are rounder
   (widths and depths scale with sqrt(mass / typical mass), clipped 0.85-1.2).
   The body is a union of ellipsoids: head, neck, chest, a rounder and more
   anterior belly, pelvis (70 % of under-2.5-year-olds wear a nappy: a wider,
   deeper pelvis), and per limb upper arm / forearm / flat hand, thigh / shank /
   flat foot.  Mass fractions are set, not derived from volume: head 20 % (newborn)
   to 13 % (3 years), trunk 50 %, each arm 4-5 %, each leg 11-13.5 %, each +-10 %.
   Breathing scales chest and belly depth by a few percent at a random phase.
2. Pose.  The trunk is rolled about the body axis by rho: supine |rho| <= 30 deg,
   prone |rho - 180| <= 35 deg, left side rho in [60, 120] deg (rho = 90: lying
   exactly on the left side); the gaps 30-60 and 120-145 deg are never generated
   (ambiguous in-between poses are kept out).  "right" is made as the exact mirror
   image of a "left" pose; supine / prone are mirrored half of the time.  Limbs are
   placed in the lying frame (gravity known) as chains of segments, each with a
   heading in the mattress plane and an end height (resting on the foam, lifted,
   or on top of another limb).  Poses: supine arms down / "W" beside the head / high
   / forearm on the chest / raised in the air, legs straight (heels down) / frog /
   knees up with feet planted / flexed in the air (newborns); prone arms at the
   sides / surrender / under the chest (chest raised on the forearms) / stretched
   forward, legs straight / frog / one frog one straight / knees tucked under the
   belly with the bottom up; the prone head is turned cheek-down 85 % of the time.
   Side lying: lower arm forward or overhead, upper arm resting in front, along the
   flank (unsupported) or behind (only when leaning back), lower leg a little
   flexed, upper leg flexed further forward onto the foam or stacked on the lower
   one.  The head drops or rises up to a few cm on its neck to rest on the foam.
   20 % of children wear a sleeping bag (0.15-0.5 kg): its padding spreads the load
   of trunk and legs by a further sigma of 1-2.5 cm, and the legs are kept straight.
3. Heading U(0, 360) deg and position anywhere on the mattress such that head and
   trunk centres lie on it; limb parts past the mattress edge lean on the cot side
   and the limb's weight is carried by what remains on the foam.  Mattresses are
   60 x 120 (50 %), 70 x 140 (30 %) or 71.25 x 132.5 cm (20 %); the 60 x 120 mat lies
   anywhere under a larger one, so a child is often partly off the sensing area.
4. Sinking (Winkler foundation).  Foam modulus E ~ log-U(8, 60) kPa, thickness
   t ~ U(4, 15) cm, stiffness k = E / t per cm of indentation, in series with the
   child's soft tissue (k_tissue ~ U(0.04, 0.15) kg/cm^3 per cm, i.e. 10-30 kPa fat
   over ~2 cm), so a 5 kg baby sinks about 1-3 cm.  The lower surface of
   the posed body is a height field on a 1.25 cm grid.  The body is articulated into
   groups that sink independently: trunk (rigid, 3 degrees of freedom: depth plus
   two tilts, solved by Newton so the force equals the weight carried and the centre
   of pressure lies under the centre of mass; tilts clipped at 0.15 = 8.5 deg, the
   rest of the moment being taken by limbs / the cot), head, and each limb (depth
   only, exact solution of the piecewise-linear force balance).  A limb part whose
   bottom is more than 2 cm above the foam is unsupported: its weight goes to the
   trunk at the limb's root joint.  Where the trunk or head lies on a limb (arms
   under the chest, lower arm under the head) the trunk presses through the limb:
   those points belong to the trunk with the limb's lower surface as gap.  Stacked
   legs form one group.  Knees tucked under a raised bottom carry 25-45 % of the
   trunk's weight.  A blanket over the child (35 %, 0.15-0.8 kg, a rotated
   rectangle) adds its share over the body to the trunk and lies as an even load
   elsewhere.
5. Spreading through the mattress: the mat lies UNDER the mattress, so each point
   load arrives spread as a Gaussian of sigma = c * t, c ~ U(0.25, 0.5) (thin firm
   foam: sharp peaks; thick soft foam: smeared), reflected at the mattress edges
   (the foam block keeps its load).  The mattress's own weight (0.5-2 kg) lies
   evenly on it.
6. Sensor: 16 x 32 cells of 3.75 cm, each a square pad covering 70-100 % of its
   width with the gap between pads 20-50 % as sensitive (so narrow contacts alias);
   per-cell sensitivity +-5 %; per-mat gain log-U(0.7, 1.35) at calibration, drifting
   +-4 % (temperature) by the time of the frame; 600 counts per kg; per-cell offsets
   1-9 counts, drifting since calibration by N(0, 0-1.2) counts (global, per mat) and
   N(0, 0.2-0.8) per cell; FSR creep
   +0-3 % per decade of minutes lying (0-240 min); crosstalk to the 4 neighbours
   0-4 %; row x column ghosting 0-3 %; Gaussian read noise 0.4-2 counts plus 0.5-3 %
   of the load; 5 % of frames get 1-3 impulse spikes; 12 % of child frames keep a
   ghost (2-6 %) of where the child lay 3-10 cm away (foam memory / sensor
   hysteresis); floor quantisation, saturation at 255 (about 1 child frame in 5 has
   a saturated cell: 0.43 kg on one cell at gain 1, mostly toddlers); dead cells (Poisson 0.8 per
   mat) and, on 7 % of mats, a dead row or column read 0; 5 % of mats have one row
   at half sensitivity (a cracked trace).
7. Empty level: the mean of 20 noisy empty frames at calibration time (offsets and
   gain then, before the drift), 0 at dead cells.  15 % of samples (or on request)
   instead return the rough flat estimate: the median cell of the current frame,
   everywhere (that device does not know its dead cells).
8. Empty cots: 30 % nothing; otherwise 1-3 of: folded blanket (0.2-1.2 kg, soft,
   even load), pillow (0.2-0.6 kg, domed), soft toy (0.05-0.6 kg), bottle
   (0.1-0.35 kg), an adult hand pressing (0.5-6 kg, palm and fingers); 15 % of empty
   frames keep a 2-6 % ghost of a child who just left.  10 % of children have a toy
   beside them.

Public API: ``LABELS``, ``render(posture, seed)``, ``dataset(n_per_class, seed)``;
``sample_scene`` / ``render_scene`` / ``sample_cot`` expose the pieces for tests.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

LABELS = ("empty", "supine", "prone", "left", "right")
ROWS, COLS = 16, 32
CELL = 3.75
MAT_W, MAT_L = ROWS * CELL, COLS * CELL  # 60 x 120 cm
FINE = 1.25  # cm, height-field / contact grid spacing
COUNTS_PER_KG = 600.0
ROUGH_SHARE = 0.15

TRUNK, HEAD, ARM_L, ARM_R, LEG_L, LEG_R = 0, 1, 2, 3, 4, 5
N_BODY_GROUPS = 6
SUPPORT_CM = 2.0  # a part whose bottom is higher than this above the foam is unsupported
MAX_SLOPE = 0.15

Array = np.ndarray


# --------------------------------------------------------------------------- geometry


@dataclass
class Part:
    """One ellipsoid: centre (3,), rotation (3, 3) whose columns are its axes, semi-axes."""

    c: Array
    rot: Array
    semi: Array
    group: int
    mass: float = 0.0


@dataclass
class Soft:
    """A soft object lying as a rotated-rectangle load (folded blanket, pillow)."""

    x: float
    y: float
    heading: float
    half_l: float
    half_w: float
    mass: float
    dome: float  # 0: even; 1: (1 - r^2) dome


@dataclass
class Scene:
    """Everything needed to render one frame, in mat coordinates (cm, z up)."""

    label: str
    parts: list[Part]
    group_mass: dict[int, float]
    roots: dict[int, Array]  # limb group -> root joint (world)
    padded: set[int] = field(default_factory=set)
    sigma_pad: float = 0.0
    softs: list[Soft] = field(default_factory=list)
    blanket: Soft | None = None
    body_mass: float = 0.0
    anterior: Array = field(default_factory=lambda: np.zeros(3))
    trunk_centre: Array = field(default_factory=lambda: np.zeros(3))
    ghost: float = 0.0
    ghost_shift: tuple[float, float] = (0.0, 0.0)
    ghost_scene: Scene | None = None
    spikes: int = 0
    creep: float = 0.0
    k_tissue: float = math.inf  # kg / cm^3: soft tissue in series with the foam


def _rx(a: float) -> Array:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> Array:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> Array:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _bottom(p: Part) -> float:
    """Lowest z of an ellipsoid (its support function downwards)."""
    sig_zz = float(np.sum((p.rot[2] * p.semi) ** 2))
    return float(p.c[2]) - math.sqrt(sig_zz)


def _segment(p0: Array, p1: Array, r: float, group: int, width: float = 0.0,
             thick: float = 0.0) -> Part:
    """Ellipsoid along p0 -> p1 (round of radius r, or flat width x thick, flat face down)."""
    dx, dy, dz = (float(v) for v in p1 - p0)
    n = math.sqrt(dx * dx + dy * dy + dz * dz)
    n_ = max(n, 1e-6)
    e1 = (dx / n_, dy / n_, dz / n_)
    h = math.hypot(e1[0], e1[1])
    e2 = (e1[1] / h, -e1[0] / h, 0.0) if h > 1e-3 else (0.0, 1.0, 0.0)  # e1 x z, horizontal
    e3 = (e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2],
          e1[0] * e2[1] - e1[1] * e2[0])
    if width > 0.0:
        semi = np.array([n / 2 + 0.3 * thick, width, thick])
    else:
        semi = np.array([n / 2 + 0.45 * r, r, r])
    return Part((p0 + p1) / 2, np.array([e1, e2, e3]).T, semi, group)


def _end(start: Array, length: float, alpha_deg: float, v: Array, z_target: float) -> Array:
    """End of a segment of given length heading alpha (0 = toward the feet, 90 = along v,
    180 = toward the head) in the mattress plane, its end centre at height z_target
    (reachable heights only)."""
    dz = z_target - float(start[2])
    lim = 0.97 * length
    dz = max(-lim, min(lim, dz))
    hd = math.sqrt(length * length - dz * dz)
    a = math.radians(alpha_deg)
    dirh = math.cos(a) * np.array([-1.0, 0.0, 0.0]) + math.sin(a) * v
    return np.asarray(start + hd * dirh + np.array([0.0, 0.0, dz]))


# --------------------------------------------------------------------------- the child


@dataclass
class _Dims:
    L: float
    s: float
    g: float
    mass: float


def _limb_chain(start: Array, segs: list[tuple[float, float, float, float, float]],
                v: Array, group: int, flat_last: bool, z_last: float | None = None) -> list[Part]:
    """segs: (length, radius, alpha, z_target, flat_width); returns the segment parts."""
    parts: list[Part] = []
    p = start
    for i, (ln, r, alpha, zt, fw) in enumerate(segs):
        last = i == len(segs) - 1
        q = _end(p, ln, alpha, v, zt if not (last and z_last is not None) else z_last)
        if last and flat_last:
            parts.append(_segment(p, q, r, group, width=fw, thick=r))
        else:
            parts.append(_segment(p, q, r, group))
        p = q
    return parts


def _u(rng: np.random.Generator, a: float, b: float) -> float:
    return float(rng.uniform(a, b))


def _child_dims(rng: np.random.Generator) -> _Dims:
    L = _u(rng, 45.0, 95.0)
    typical = 3.3 * (L / 50.0) ** 2.35
    mass = float(np.clip(typical * math.exp(rng.normal(0.0, 0.1)), 2.5, 15.0))
    g = float(np.clip(math.sqrt(mass / typical), 0.85, 1.2))
    return _Dims(L, (L - 45.0) / 50.0, g, mass)


def _build_child(rng: np.random.Generator, label: str) -> Scene:
    """A posed child in the lying frame: head toward +x, foam at z = 0, centred near 0."""
    dm = _child_dims(rng)
    L, s, g = dm.L, dm.s, dm.g
    side = label if label in ("supine", "prone") else "left"
    breath = _u(rng, 0.0, 2 * math.pi)
    nappy = s < 0.8 and rng.random() < 0.7
    bag = rng.random() < 0.2

    # trunk in the supine lying frame: x toward head, y = child's right, z = anterior
    def ell(c: tuple[float, float, float], semi: tuple[float, float, float], grp: int) -> Part:
        return Part(np.array(c, float), np.eye(3), np.array(semi, float), grp)

    pel_extra = 1.0 if nappy else 0.0
    trunk = [
        ell((0.04 * L, 0, 0), (0.08 * L, 0.105 * L * g + pel_extra, 0.075 * L * g + pel_extra),
            TRUNK),
        ell((0.15 * L, 0, 0.012 * L * g),
            (0.085 * L, 0.115 * L * g, 0.092 * L * g * (1 + 0.03 * math.sin(breath))), TRUNK),
        ell((0.255 * L, 0, 0),
            (0.09 * L, 0.125 * L * g, 0.085 * L * g * (1 + 0.025 * math.cos(breath))), TRUNK),
        ell((0.355 * L, 0, 0.005 * L), (0.04 * L, 0.06 * L * g, 0.055 * L * g), TRUNK),
        # the back: one long ellipsoid so the spine side is smooth, not three bumps
        ell((0.16 * L, 0, 0.004 * L), (0.2 * L, 0.1 * L * g, 0.08 * L * g), TRUNK),
    ]
    hh = (0.26 - 0.07 * s) * L / 2 * _u(rng, 0.95, 1.05)
    head = ell((0.38 * L + hh, 0, 0.01 * L), (hh, 0.78 * hh, 0.93 * hh), HEAD)
    sh_w, hip_w = 0.105 * L * g, 0.06 * L * g
    joints = {ARM_L: np.array([0.30 * L, -sh_w, 0.0]), ARM_R: np.array([0.30 * L, sh_w, 0.0]),
              LEG_L: np.array([0.0, -hip_w, 0.0]), LEG_R: np.array([0.0, hip_w, 0.0])}

    # roll, pitch
    if label == "supine":
        rho = _u(rng, -30, 30)
    elif label == "prone":
        rho = 180 + _u(rng, -35, 35)
    else:
        rho = _u(rng, 60, 120)
    arm_modes: tuple[str, str]
    leg_modes: tuple[str, str]
    if side == "supine":
        opts = ["down", "W", "high", "chest", "air"]
        pa = [0.3, 0.3, 0.15, 0.15, 0.1]
        a0 = str(rng.choice(opts, p=pa))
        arm_modes = (a0, a0 if rng.random() < 0.6 else str(rng.choice(opts, p=pa)))
        lo = ["straight", "frog", "knees_up", "air"] if s < 0.6 else ["straight", "frog",
                                                                      "knees_up"]
        pl = np.array([0.35, 0.35, 0.15, 0.15][: len(lo)])
        l0 = str(rng.choice(lo, p=pl / pl.sum()))
        leg_modes = (l0, l0 if rng.random() < 0.7 else str(rng.choice(lo, p=pl / pl.sum())))
    elif side == "prone":
        opts = ["sides", "surrender", "under", "forward"]
        a0 = str(rng.choice(opts))
        arm_modes = (a0, a0 if rng.random() < 0.5 else str(rng.choice(opts)))
        l0 = str(rng.choice(["straight", "frog", "tucked", "crawl"], p=[0.3, 0.3, 0.2, 0.2]))
        if l0 == "crawl":
            leg_modes = ("frog", "straight") if rng.random() < 0.5 else ("straight", "frog")
        else:
            leg_modes = (l0, l0)
    else:
        low_arm = "forward" if rng.random() < 0.7 else "overhead"
        up_opts = ["front", "flank"] + (["back"] if rho < 85 else [])
        arm_modes = (low_arm, str(rng.choice(up_opts)))
        leg_modes = ("lower", "stacked" if rng.random() < 0.4 else "front")
    if bag:
        leg_modes = ("bag", "bag")

    pitch, pivot = 0.0, np.zeros(3)
    if side == "prone" and leg_modes[0] == "tucked":
        pitch, pivot = math.radians(_u(rng, 12, 28)), np.array([0.255 * L, 0.0, 0.0])
    elif side == "prone" and "under" in arm_modes:
        lift = 0.45 * 2 * (0.030 - 0.008 * s) * L * g
        pitch, pivot = -math.asin(min(0.5, lift / (0.25 * L))), np.array([0.04 * L, 0.0, 0.0])
    rot = _ry(pitch) @ _rx(math.radians(rho))

    def move(p: Part) -> Part:
        return Part(rot @ p.c + (pivot - _ry(pitch) @ pivot), rot @ p.rot, p.semi, p.group)

    trunk = [move(p) for p in trunk]
    for k in joints:
        joints[k] = rot @ joints[k] + (pivot - _ry(pitch) @ pivot)
    if side == "prone":
        yaw = (_u(rng, 45, 95) * (1 if rng.random() < 0.5 else -1)
               if rng.random() < 0.85 else _u(rng, -20, 20))
    elif side == "supine":
        yaw = _u(rng, -70, 70)
    else:
        yaw = _u(rng, -20, 25)
    hc = rot @ head.c + (pivot - _ry(pitch) @ pivot)
    hc[1] += _u(rng, -0.02, 0.02) * L
    head = Part(hc, _ry(pitch) @ _rx(math.radians(rho + yaw)), head.semi, HEAD)
    floor = min(_bottom(p) for p in trunk)
    for p in trunk:
        p.c[2] -= floor
    for k in joints:
        joints[k][2] -= floor
    head.c[2] -= _bottom(head) - _u(rng, 0.0, 0.4)

    # limb dimensions
    ua, fa, hand = (0.15 + 0.02 * s) * L, (0.12 + 0.02 * s) * L, 0.08 * L
    r_ua, r_fa, r_h = (0.036 - 0.01 * s) * L * g, (0.030 - 0.008 * s) * L * g, 0.011 * L
    th, sk, ft = (0.17 + 0.03 * s) * L, (0.15 + 0.04 * s) * L, 0.14 * L
    r_th, r_sk, r_ft = (0.052 - 0.012 * s) * L * g, (0.036 - 0.008 * s) * L * g, 0.018 * L
    hand_w, foot_w = 0.022 * L, 0.027 * L
    ant = rot @ np.array([0.0, 0.0, 1.0])
    f = np.array([0.0, ant[1], 0.0])
    f = f / max(np.linalg.norm(f), 1e-6)
    top = max(float(p.c[2]) + math.sqrt(float(np.sum((p.rot[2] * p.semi) ** 2)))
              for p in trunk[1:3])

    def side_vec(grp: int) -> Array:
        lat = rot @ np.array([0.0, -1.0 if grp in (ARM_L, LEG_L) else 1.0, 0.0])
        v = np.array([0.0, lat[1], 0.0])
        return np.asarray(v / max(float(np.linalg.norm(v)), 1e-6))

    limbs: list[Part] = []
    for grp, mode in ((ARM_L, arm_modes[0]), (ARM_R, arm_modes[1])):
        j = joints[grp]
        v = side_vec(grp) if side != "left" else f
        a1: float
        a2: float
        z1, z2 = r_ua, r_fa
        if side == "supine":
            if mode == "down":
                a1 = _u(rng, 8, 40)
                a2 = a1 + _u(rng, -20, 40)
            elif mode == "W":
                a1, a2 = _u(rng, 60, 110), _u(rng, 130, 190)
            elif mode == "high":
                a1 = _u(rng, 120, 170)
                a2 = a1 + _u(rng, -10, 20)
            elif mode == "chest":
                a1, a2, z2 = _u(rng, 5, 25), _u(rng, -150, -110), top + r_fa
            else:  # air
                a1, a2 = _u(rng, 0, 60), _u(rng, 0, 90)
                z1, z2 = float(j[2]) + 0.8 * ua, float(j[2]) + 0.8 * ua + 0.5 * fa
        elif side == "prone":
            if mode == "sides":
                a1, a2 = _u(rng, 5, 30), _u(rng, 0, 30)
            elif mode == "surrender":
                a1, a2 = _u(rng, 60, 110), _u(rng, 140, 200)
            elif mode == "under":
                a1, a2 = _u(rng, -25, 10), _u(rng, 160, 215)
            else:  # forward
                a1 = _u(rng, 140, 175)
                a2 = a1 + _u(rng, -15, 15)
        else:
            if grp == ARM_L:  # lower arm
                if mode == "forward":
                    a1 = _u(rng, 60, 120)
                    a2 = a1 + _u(rng, -30, 60)
                else:
                    a1, a2 = _u(rng, 140, 175), _u(rng, 100, 200)
            else:
                if mode == "front":
                    a1, a2 = _u(rng, 40, 110), _u(rng, 20, 120)
                elif mode == "flank":
                    a1, a2 = _u(rng, 0, 15), _u(rng, 0, 30)
                    z1 = float(j[2]) - 0.3 * ua
                    z2 = z1 - 0.3 * fa
                else:  # back
                    a1, a2 = _u(rng, -100, -40), _u(rng, -120, -20)
        z3 = z2 if z2 > r_fa + 0.5 else r_h
        limbs += _limb_chain(j, [(ua, r_ua, a1, z1, 0.0), (fa, r_fa, a2, z2, 0.0),
                                 (hand, r_h, a2 + _u(rng, -20, 20), z3, hand_w)],
                             v, grp, flat_last=True)

    lower_alpha = 0.0
    lower_top = 0.0
    merged = False
    for grp, mode in ((LEG_L, leg_modes[0]), (LEG_R, leg_modes[1])):
        j = joints[grp]
        v = side_vec(grp) if side != "left" else f
        zk, za, zf = r_th, r_sk, r_ft
        foot_up = False
        b1: float
        b2: float
        if mode == "bag":
            b1 = _u(rng, 0, 8) if side != "left" else _u(rng, 5, 40)
            b2 = b1 + _u(rng, -5, 5)
            foot_up = side == "supine"
        elif mode == "straight":
            b1 = _u(rng, 2, 15)
            b2 = b1 + _u(rng, -5, 10)
            foot_up = side == "supine"
        elif mode == "frog":
            b1, b2 = _u(rng, 35, 75), _u(rng, -40, 0)
        elif mode == "knees_up":
            b1, b2 = _u(rng, 5, 25), _u(rng, 0, 20)
            zk = float(j[2]) + 0.6 * th
        elif mode == "air":
            b1, b2 = _u(rng, 150, 180), _u(rng, 0, 40)
            zk = float(j[2]) + 0.7 * th
            za, zf = zk, zk
        elif mode == "tucked":
            b1, b2 = _u(rng, 140, 170), _u(rng, 0, 25)
        elif mode == "lower":
            b1 = _u(rng, 5, 60)
            b2 = b1 - _u(rng, 10, 90)
            lower_alpha, lower_top = b1, 2 * r_th
        elif mode == "stacked":
            b1 = lower_alpha + _u(rng, -10, 10)
            b2 = b1 - _u(rng, 10, 60)
            zk, za, zf = lower_top + r_th, lower_top + r_sk, lower_top + r_ft
            merged = True
        else:  # front (upper leg of a side-lying child)
            b1 = _u(rng, max(lower_alpha + 25, 30), 115)
            b2 = b1 - _u(rng, 20, 100)
        foot_z = zf if not foot_up else za + 0.8 * ft
        limbs += _limb_chain(j, [(th, r_th, b1, zk, 0.0), (sk, r_sk, b2, za, 0.0),
                                 (ft, r_ft, b2 + _u(rng, -25, 25), foot_z, foot_w)],
                             v, LEG_L if merged else grp, flat_last=not foot_up)

    # masses
    hf = (0.20 - 0.07 * s) * _u(rng, 0.9, 1.1)
    fr = {TRUNK: 0.50 * _u(rng, 0.9, 1.1), HEAD: hf,
          ARM_L: (0.04 + 0.01 * s) * _u(rng, 0.9, 1.1),
          LEG_L: (0.11 + 0.025 * s) * _u(rng, 0.9, 1.1)}
    fr[ARM_R], fr[LEG_R] = fr[ARM_L], fr[LEG_L]
    tot = sum(fr.values())
    parts = [*trunk, head, *limbs]
    origs = _orig_groups(parts, merged)
    for grp in range(N_BODY_GROUPS):
        members = [p for p, orig in zip(parts, origs, strict=True) if orig == grp]
        vol = sum(float(np.prod(p.semi)) for p in members)
        for p in members:
            p.mass = dm.mass * fr[grp] / tot * float(np.prod(p.semi)) / vol
    group_mass = {g_: sum(p.mass for p in parts if p.group == g_) for g_ in range(N_BODY_GROUPS)}
    padded: set[int] = set()
    sigma_pad = 0.0
    if bag:
        bag_mass = _u(rng, 0.15, 0.5)
        group_mass[TRUNK] += 0.6 * bag_mass
        group_mass[LEG_L] += 0.2 * bag_mass
        group_mass[LEG_R] += 0.2 * bag_mass
        padded = {TRUNK, LEG_L, LEG_R}
        sigma_pad = _u(rng, 1.0, 2.5)
    transfer = {}
    if side == "prone" and leg_modes[0] == "tucked":
        tau = _u(rng, 0.25, 0.45) * group_mass[TRUNK]
        group_mass[TRUNK] -= tau
        transfer = {LEG_L: tau / 2, LEG_R: tau / 2}
    for k, m in transfer.items():
        group_mass[k] += m
    if merged:
        group_mass[LEG_L] += group_mass[LEG_R]
        group_mass[LEG_R] = 0.0
    body_mass = dm.mass + (bag_mass if bag else 0.0)
    # centre the body at the origin (midpoint of pelvis and head)
    centre = (trunk[0].c + head.c) / 2
    centre[2] = 0.0
    for p in parts:
        p.c = p.c - centre
    roots = {k: v_ - centre for k, v_ in joints.items()}
    return Scene(label, parts, group_mass, roots, padded, sigma_pad, body_mass=body_mass,
                 anterior=ant, trunk_centre=(trunk[1].c + trunk[2].c) / 2)


def _orig_groups(parts: list[Part], merged: bool) -> list[int]:
    """Anatomical group of each part (stacked legs share LEG_L; order tells them apart)."""
    out = []
    n_leg = 0
    for p in parts:
        if merged and p.group == LEG_L:
            out.append(LEG_L if n_leg < 3 else LEG_R)
            n_leg += 1
        else:
            out.append(p.group)
    return out


def _mirror(sc: Scene) -> Scene:
    """Mirror image y -> -y of a scene in its own frame; left <-> right."""
    F = np.diag([1.0, -1.0, 1.0])
    parts = [Part(F @ p.c, F @ p.rot, p.semi.copy(), p.group, p.mass) for p in sc.parts]
    lab = {"left": "right", "right": "left"}.get(sc.label, sc.label)
    return replace(sc, label=lab, parts=parts, roots={k: F @ v for k, v in sc.roots.items()},
                   anterior=F @ sc.anterior, trunk_centre=F @ sc.trunk_centre)


def mirror_scene(sc: Scene) -> Scene:
    """The scene seen in a mirror across the mat (y -> 60 - y): left <-> right."""
    flipped = _mirror(sc)
    t = np.array([0.0, MAT_W, 0.0])
    parts = [replace(p, c=p.c + t) for p in flipped.parts]
    return replace(flipped, parts=parts, roots={k: v + t for k, v in flipped.roots.items()},
                   trunk_centre=flipped.trunk_centre + t,
                   ghost_shift=(sc.ghost_shift[0], -sc.ghost_shift[1]),
                   softs=[replace(so, y=MAT_W - so.y, heading=-so.heading) for so in sc.softs],
                   blanket=None if sc.blanket is None else replace(
                       sc.blanket, y=MAT_W - sc.blanket.y, heading=-sc.blanket.heading))


def _transform(sc: Scene, heading: float, x: float, y: float) -> Scene:
    Rz = _rz(heading)
    t = np.array([x, y, 0.0])
    parts = [Part(Rz @ p.c + t, Rz @ p.rot, p.semi, p.group, p.mass) for p in sc.parts]
    return replace(sc, parts=parts, roots={k: Rz @ v + t for k, v in sc.roots.items()},
                   anterior=Rz @ sc.anterior, trunk_centre=Rz @ sc.trunk_centre + t)


# --------------------------------------------------------------------------- cot and mat


@dataclass
class Cot:
    """One cot: mattress + foam + the mat under it, with its sensor non-idealities."""

    x0: float
    x1: float
    y0: float
    y1: float  # mattress extent in mat coordinates (cm)
    k: float  # kg / cm^2 per cm of indentation
    thickness: float
    sigma: float
    fill: float
    gap_rel: float
    mattress_kg: float
    gain: float
    cell_gain: Array
    offset: Array
    dead: Array  # bool (16, 32)
    row_weak: Array  # (16, 1)
    alpha: float
    beta: float
    noise: float
    noise_mult: float
    drift: float = 1.0  # sd of the global offset drift since calibration (counts)
    drift_cell: float = 0.5  # sd of each cell's own offset drift (counts)
    gain_drift: float = 0.04  # sd of the relative gain drift since calibration
    fx: Array = field(default_factory=lambda: np.zeros(0))
    fy: Array = field(default_factory=lambda: np.zeros(0))
    bx: Array = field(default_factory=lambda: np.zeros(0))
    by: Array = field(default_factory=lambda: np.zeros(0))
    padded_mats: dict[float, tuple[Array, Array]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        nx = round((self.x1 - self.x0) / FINE)
        ny = round((self.y1 - self.y0) / FINE)
        self.fx = self.x0 + FINE * (np.arange(nx) + 0.5)
        self.fy = self.y0 + FINE * (np.arange(ny) + 0.5)
        self.bx = _cell_matrix(COLS, self.fx, self.x0, self.x1, self.sigma, self.fill,
                               self.gap_rel)
        self.by = _cell_matrix(ROWS, self.fy, self.y0, self.y1, self.sigma, self.fill,
                               self.gap_rel)

    @property
    def mattress_cell_kg(self) -> float:
        return self.mattress_kg * CELL * CELL / ((self.x1 - self.x0) * (self.y1 - self.y0))


def _erf(x: Array) -> Array:
    """Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7); numpy has no erf."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
               + 0.254829592) * t * np.exp(-a * a)
    return np.asarray(s * y)


def _cell_matrix(n: int, fine: Array, lo: float, hi: float, sigma: float, fill: float,
                 gap_rel: float) -> Array:
    """(n, n_fine): share of a load at each fine point that a cell reads, after the
    Gaussian spreading through the foam (reflected at the mattress edges) and the pad
    sensitivity profile of the cell (mean 1)."""
    sig = math.sqrt(sigma * sigma + FINE * FINE / 12.0)
    a = np.arange(n) * CELL
    gp = (1.0 - fill) / 2.0 * CELL
    bp = np.stack([a, a + gp, a + CELL - gp, a + CELL], axis=1)  # (n, 4)
    s_in = 1.0 / (fill + gap_rel * (1.0 - fill))
    w = np.array([gap_rel * s_in, s_in, gap_rel * s_in])
    src = np.stack([fine, 2 * lo - fine, 2 * hi - fine])  # (3, nf)
    z = (bp[:, :, None, None] - src[None, None]) / (sig * math.sqrt(2.0))
    cdf = (0.5 * (1.0 + _erf(z))).sum(axis=2)  # (n, 4, nf)
    return np.asarray((np.diff(cdf, axis=1) * w[None, :, None]).sum(axis=1))


def sample_cot(rng: np.random.Generator) -> Cot:
    """A random cot, mattress and mat."""
    size = [(60.0, 120.0), (70.0, 140.0), (71.25, 132.5)][int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
    W, Lm = size
    ox = _u(rng, 0.0, Lm - MAT_L)
    oy = _u(rng, 0.0, W - MAT_W)
    ox, oy = round(ox / FINE) * FINE, round(oy / FINE) * FINE
    E = math.exp(_u(rng, math.log(8.0), math.log(60.0))) * 0.0102  # kg / cm^2
    t = _u(rng, 4.0, 15.0)
    dead = np.zeros((ROWS, COLS), bool)
    for _ in range(int(rng.poisson(0.8))):
        dead[rng.integers(ROWS), rng.integers(COLS)] = True
    if rng.random() < 0.07:
        if rng.random() < 0.5:
            dead[rng.integers(ROWS), :] = True
        else:
            dead[:, rng.integers(COLS)] = True
    row_weak = np.ones((ROWS, 1))
    if rng.random() < 0.05:
        row_weak[rng.integers(ROWS)] = 0.5
    return Cot(
        x0=-ox, x1=Lm - ox, y0=-oy, y1=W - oy, k=E / t, thickness=t,
        sigma=_u(rng, 0.25, 0.5) * t, fill=_u(rng, 0.7, 1.0), gap_rel=_u(rng, 0.2, 0.5),
        mattress_kg=_u(rng, 0.5, 2.0),
        gain=math.exp(_u(rng, math.log(0.7), math.log(1.35))),
        cell_gain=1.0 + 0.05 * np.clip(rng.standard_normal((ROWS, COLS)), -2.5, 2.5),
        offset=rng.uniform(1.0, 9.0, (ROWS, COLS)), dead=dead, row_weak=row_weak,
        alpha=_u(rng, 0.0, 0.04), beta=_u(rng, 0.0, 0.03), noise=_u(rng, 0.4, 2.0),
        noise_mult=_u(rng, 0.005, 0.03), drift=_u(rng, 0.0, 1.2), drift_cell=_u(rng, 0.2, 0.8))


# --------------------------------------------------------------------------- contact


def _solve_1dof(gaps: Array, target: float) -> float:
    """Depth d with sum(max(0, d - gaps)) == target (> 0), exactly."""
    gs = np.sort(gaps)
    cs = np.cumsum(gs)
    f = np.arange(1, gs.size + 1) * gs - cs  # force (in units) when d = gs[i]
    m = int(np.searchsorted(f, target))  # points 0..m-1 in contact
    m = max(1, min(m, gs.size))
    return float((target + cs[m - 1]) / m)


def _solve_rigid(gaps: Array, X: Array, Y: Array, target: float) -> tuple[float, float, float]:
    """Depth and tilts (d, sx, sy): sum(pen) = target, sum(pen X) = sum(pen Y) = 0 with
    pen = max(0, d + sx X + sy Y - gaps); Newton, tilts clipped to MAX_SLOPE."""
    d = _solve_1dof(gaps, target)
    sx = sy = 0.0
    for _ in range(10):
        pen = d + sx * X + sy * Y - gaps
        c = pen > 0
        n = int(c.sum())
        if n < 3:
            break
        Xc, Yc, pc = X[c], Y[c], pen[c]
        r = np.array([target - pc.sum(), -(pc @ Xc), -(pc @ Yc)])
        if abs(r[0]) < 1e-6 * target and abs(r[1]) + abs(r[2]) < 1e-3 * target:
            break
        sX, sY, sXY = Xc.sum(), Yc.sum(), Xc @ Yc
        J = np.array([[n, sX, sY], [sX, Xc @ Xc, sXY], [sY, sXY, Yc @ Yc]], float)
        J[1, 1] += 1e-6 * n
        J[2, 2] += 1e-6 * n
        step = np.linalg.solve(J, r)
        d, sx, sy = d + step[0], sx + step[1], sy + step[2]
        sx = max(-MAX_SLOPE, min(MAX_SLOPE, sx))
        sy = max(-MAX_SLOPE, min(MAX_SLOPE, sy))
    d = _solve_1dof(gaps - sx * X - sy * Y, target)
    return d, sx, sy


@dataclass
class Contact:
    """Result of the sinking solve: fine-grid loads (kg per fine cell) and diagnostics."""

    sharp: Array
    padded: Array
    carried: dict[int, float]
    trunk_com: tuple[float, float]
    trunk_cop: tuple[float, float]
    lost: float
    group_load: dict[int, float] = field(default_factory=dict)


def _height_fields(parts: list[Part], cot: Cot, n_groups: int
                   ) -> tuple[Array, Array, tuple[int, int, int, int]]:
    """Lower and upper surface (n_groups, ny, nx) of each group's union of ellipsoids, on
    the sub-grid [j0:j1, i0:i1] of the fine grid that holds every part."""
    C = np.array([p.c for p in parts])
    Rs = np.stack([p.rot for p in parts])
    S = np.array([p.semi for p in parts])
    G = np.array([p.group for p in parts])
    Q = np.einsum("nij,nj,nkj->nik", Rs, 1.0 / S ** 2, Rs)
    hx = np.sqrt(np.einsum("nj,nj->n", Rs[:, 0] ** 2, S ** 2))
    hy = np.sqrt(np.einsum("nj,nj->n", Rs[:, 1] ** 2, S ** 2))
    nx, ny = cot.fx.size, cot.fy.size
    i0 = np.clip(np.floor((C[:, 0] - hx - cot.x0) / FINE), 0, nx).astype(int)
    i1 = np.clip(np.floor((C[:, 0] + hx - cot.x0) / FINE) + 1, 0, nx).astype(int)
    j0 = np.clip(np.floor((C[:, 1] - hy - cot.y0) / FINE), 0, ny).astype(int)
    j1 = np.clip(np.floor((C[:, 1] + hy - cot.y0) / FINE) + 1, 0, ny).astype(int)
    I0, I1 = int(i0.min()), max(int(i1.max()), int(i0.min()) + 1)
    J0, J1 = int(j0.min()), max(int(j1.max()), int(j0.min()) + 1)
    sx, sy = I1 - I0, J1 - J0
    lower = np.full((n_groups, sy, sx), np.inf)
    upper = np.full((n_groups, sy, sx), -np.inf)
    wx = max(1, int((i1 - i0).max()))
    wy = max(1, int((j1 - j0).max()))
    ii = i0[:, None] + np.arange(wx)  # (n, wx)
    jj = j0[:, None] + np.arange(wy)
    dx = (cot.x0 + FINE * (ii + 0.5) - C[:, :1])[:, None, :]
    dy = (cot.y0 + FINE * (jj + 0.5) - C[:, 1:2])[:, :, None]
    q = Q.reshape(-1, 9)
    b = q[:, 2, None, None] * dx + q[:, 5, None, None] * dy
    c0 = (q[:, 0, None, None] * dx * dx + 2 * q[:, 1, None, None] * dx * dy
          + q[:, 4, None, None] * dy * dy - 1.0)
    qzz = q[:, 8, None, None]
    disc = b * b - qzz * c0
    ok = (disc > 0) & (ii < i1[:, None])[:, None, :] & (jj < j1[:, None])[:, :, None]
    n_, jw, iw = np.nonzero(ok)
    sq = np.sqrt(disc[ok])
    bb, qz, cz = b[ok], qzz[n_, 0, 0], C[n_, 2]
    flat = (G[n_] * sy + (jj[n_, jw] - J0)) * sx + (ii[n_, iw] - I0)
    np.minimum.at(lower.reshape(-1), flat, cz + (-bb - sq) / qz)
    np.maximum.at(upper.reshape(-1), flat, cz + (-bb + sq) / qz)
    return lower, upper, (J0, J1, I0, I1)


def _rect_weights(cot: Cot, s: Soft) -> Array:
    """(ny, nx) weights of a rotated rectangle, optionally domed, summing to 1 (or all 0)."""
    X = cot.fx[None, :] - s.x
    Y = cot.fy[:, None] - s.y
    c, sn = math.cos(s.heading), math.sin(s.heading)
    u = (c * X + sn * Y) / s.half_l
    v = (-sn * X + c * Y) / s.half_w
    w = ((np.abs(u) <= 1) & (np.abs(v) <= 1)).astype(float)
    if s.dome > 0:
        w *= np.clip(1 - s.dome * (u * u + v * v) / 2, 0.05, None)
    return w


def contact(sc: Scene, cot: Cot) -> Contact:
    """Sink every group of the scene into the foam; return the fine-grid loads."""
    shape = (cot.fy.size, cot.fx.size)
    sharp = np.zeros(shape)
    padded = np.zeros(shape)
    carried = dict(sc.group_mass)
    n_groups = max([p.group for p in sc.parts] + [N_BODY_GROUPS - 1]) + 1
    for g in range(n_groups):
        carried.setdefault(g, 0.0)
    lost = 0.0
    for so in sc.softs:
        w = _rect_weights(cot, so)
        if w.sum() > 0:
            sharp += so.mass * w / w.sum()
        else:
            lost += so.mass
    if not sc.parts:
        return Contact(sharp, padded, carried, (0.0, 0.0), (0.0, 0.0), lost)
    lower, upper, (J0, J1, I0, I1) = _height_fields(sc.parts, cot, n_groups)
    owner = np.argmin(lower, axis=0)
    low = np.min(lower, axis=0)
    fin = np.isfinite(low)
    # trunk / head lying on a limb press through it
    th = np.minimum(lower[TRUNK], lower[HEAD])
    lim_up = np.take_along_axis(upper, owner[None], axis=0)[0]
    trapped = fin & (owner >= ARM_L) & (owner <= LEG_R) & (th <= lim_up + 0.5)
    owner = np.where(trapped, np.where(lower[TRUNK] <= lower[HEAD], TRUNK, HEAD), owner)

    # the trunk's centre of mass, collecting what the trunk carries for others
    cx = cy = tm = 0.0
    for p in sc.parts:
        if p.group == TRUNK:
            cx, cy, tm = cx + p.mass * p.c[0], cy + p.mass * p.c[1], tm + p.mass
    if tm > 0:
        extra = carried[TRUNK] - tm  # sleeping bag / knee transfer, at the trunk's centre
        cx, cy, tm = cx + extra * cx / tm, cy + extra * cy / tm, tm + extra

    def to_trunk(m: float, x: float, y: float) -> None:
        nonlocal cx, cy, tm
        carried[TRUNK] += m
        cx, cy, tm = cx + m * x, cy + m * y, tm + m

    has_trunk = sc.group_mass.get(TRUNK, 0.0) > 0
    if has_trunk:
        # unsupported limb parts hand their weight to the trunk at the limb root
        for p in sc.parts:
            if ARM_L <= p.group <= LEG_R and _bottom(p) > SUPPORT_CM:
                root = sc.roots.get(p.group, p.c)
                carried[p.group] -= p.mass
                to_trunk(p.mass, float(root[0]), float(root[1]))
        hp = [p for p in sc.parts if p.group == HEAD]
        if hp and min(_bottom(p) for p in hp) > SUPPORT_CM:
            to_trunk(carried[HEAD], float(hp[0].c[0]), float(hp[0].c[1]))
            carried[HEAD] = 0.0
    if sc.blanket is not None:
        w = _rect_weights(cot, sc.blanket)
        body_fp = np.zeros(shape, bool)
        if has_trunk:
            body_fp[J0:J1, I0:I1] = fin & (owner < N_BODY_GROUPS)
        ws = w.sum()
        if ws > 0:
            m_on = sc.blanket.mass * float((w * body_fp).sum() / ws)
            if tm > 0:
                to_trunk(m_on, cx / tm, cy / tm)
            w_off = w * ~body_fp
            if w_off.sum() > 0:
                sharp += (sc.blanket.mass - m_on) * w_off / w_off.sum()
        else:
            lost += sc.blanket.mass

    k_eff = 1.0 / (1.0 / cot.k + 1.0 / sc.k_tissue)
    kA = k_eff * FINE * FINE
    flat_low = low.ravel()
    cand = np.flatnonzero(flat_low < 12.0)
    gaps_all = flat_low[cand]
    own_c = owner.ravel()[cand]
    sx_ = I1 - I0
    X = cot.fx[I0 + cand % sx_]
    Y = cot.fy[J0 + cand // sx_]
    sels: dict[int, Array] = {}
    for g in range(n_groups - 1, -1, -1):
        m = carried[g]
        if m <= 0:
            continue
        sel = own_c == g
        if sel.any():
            sels[g] = sel
            continue
        if g != TRUNK and g < N_BODY_GROUPS and has_trunk:
            # entirely beneath the trunk or beyond the mattress: the trunk takes it
            root = sc.roots.get(g, np.array([cx / tm, cy / tm, 0.0]))
            to_trunk(m, float(root[0]), float(root[1]))
        else:
            lost += m
        carried[g] = 0.0
    com = (cx / tm, cy / tm) if tm > 0 else (0.0, 0.0)
    cop = com
    group_load: dict[int, float] = {}
    sub_sharp = np.zeros(low.size)
    sub_pad = np.zeros(low.size)
    for g, sel in sels.items():
        m = carried[g]
        gp = gaps_all[sel]
        if g == TRUNK:
            Xg, Yg = X[sel] - com[0], Y[sel] - com[1]
            d, tx, ty = _solve_rigid(gp, Xg, Yg, m / kA)
            pen = np.maximum(0.0, d + tx * Xg + ty * Yg - gp)
            if pen.sum() > 0:
                cop = (float(pen @ X[sel] / pen.sum()), float(pen @ Y[sel] / pen.sum()))
        else:
            d = _solve_1dof(gp, m / kA)
            pen = np.maximum(0.0, d - gp)
        dest = sub_pad if g in sc.padded else sub_sharp
        dest[cand[sel]] += kA * pen
        group_load[g] = kA * float(pen.sum())
    sharp[J0:J1, I0:I1] += sub_sharp.reshape(low.shape)
    padded[J0:J1, I0:I1] += sub_pad.reshape(low.shape)
    return Contact(sharp, padded, carried, com, cop, lost, group_load)


# --------------------------------------------------------------------------- scenes


def _place(sc: Scene, cot: Cot, rng: np.random.Generator) -> Scene:
    """Random heading and position with head and trunk centres on the mattress."""
    key = [p for p in sc.parts if p.group in (TRUNK, HEAD)]
    for _ in range(60):
        hd = _u(rng, 0, 2 * math.pi)
        Rz = _rz(hd)
        pts = np.array([(Rz @ p.c)[:2] for p in key])
        marg = np.array([0.6 * min(p.semi[0], p.semi[1], p.semi[2]) for p in key])
        lo_x = float(np.max(cot.x0 + marg - pts[:, 0]))
        hi_x = float(np.min(cot.x1 - marg - pts[:, 0]))
        lo_y = float(np.max(cot.y0 + marg - pts[:, 1]))
        hi_y = float(np.min(cot.y1 - marg - pts[:, 1]))
        if lo_x < hi_x and lo_y < hi_y:
            return _transform(sc, hd, _u(rng, lo_x, hi_x), _u(rng, lo_y, hi_y))
    # a very long child across a narrow cot: lie along it
    hd = 0.0 if rng.random() < 0.5 else math.pi
    return _transform(sc, hd, (cot.x0 + cot.x1) / 2, (cot.y0 + cot.y1) / 2)


def _objects(rng: np.random.Generator, cot: Cot, scene: Scene, n: int, first_group: int) -> None:
    """Add n cot objects to scene (parts in groups from first_group, or soft loads)."""
    g = first_group
    for _ in range(n):
        kind = str(rng.choice(["blanket", "pillow", "toy", "bottle", "hand"],
                              p=[0.3, 0.1, 0.3, 0.12, 0.18]))
        x, y = _u(rng, cot.x0 + 5, cot.x1 - 5), _u(rng, cot.y0 + 5, cot.y1 - 5)
        hd = _u(rng, 0, 2 * math.pi)
        if kind == "blanket":
            scene.softs.append(Soft(x, y, hd, _u(rng, 10, 20), _u(rng, 7, 15),
                                    _u(rng, 0.2, 1.2), _u(rng, 0.0, 0.4)))
            continue
        if kind == "pillow":
            scene.softs.append(Soft(x, y, hd, _u(rng, 15, 25), _u(rng, 10, 17),
                                    _u(rng, 0.2, 0.6), _u(rng, 0.6, 1.0)))
            continue
        Rz = _rz(hd)
        local: list[Part] = []
        if kind == "toy":
            a = _u(rng, 5, 12)
            body = Part(np.array([0.0, 0, 0]), np.eye(3),
                        np.array([a, _u(rng, 0.6 * a, 0.9 * a), _u(rng, 3, 7)]), g)
            hr = _u(rng, 3, 7)
            local = [body, Part(np.array([a + 0.7 * hr, 0, 0]), np.eye(3),
                                np.array([hr, hr, hr]), g)]
            mass = _u(rng, 0.05, 0.6)
        elif kind == "bottle":
            r = _u(rng, 2.5, 3.5)
            local = [Part(np.zeros(3), np.eye(3), np.array([_u(rng, 7, 10), r, r]), g)]
            mass = _u(rng, 0.1, 0.35)
        else:  # hand: palm + four fingers + thumb
            local = [Part(np.zeros(3), np.eye(3), np.array([4.5, 4.0, 1.4]), g)]
            for i in range(4):
                ang = math.radians(-15 + 10 * i + _u(rng, -4, 4))
                fc = np.array([4.5 + 3.5 * math.cos(ang), 3.5 * math.sin(ang) * 1.6,
                               _u(rng, 0.0, 0.8)])
                rot = _rz(ang)
                local.append(Part(fc, rot, np.array([3.6, 0.85, 0.85]), g))
            local.append(Part(np.array([1.5, 4.8, 0.3]), _rz(1.0), np.array([2.8, 1.0, 1.0]), g))
            mass = _u(rng, 0.5, 6.0)
        lo = min(_bottom(p) for p in local)
        for p in local:
            p.c = Rz @ (p.c - np.array([0, 0, lo])) + np.array([x, y, 0.0])
            p.rot = Rz @ p.rot
            p.mass = mass / len(local)
        scene.parts.extend(local)
        scene.group_mass[g] = mass
        g += 1


def sample_scene(posture: str, rng: np.random.Generator, cot: Cot) -> Scene:
    """A random labelled scene on the given cot."""
    if posture not in LABELS:
        raise ValueError(f"unknown posture {posture!r}")
    if posture == "empty":
        sc = Scene("empty", [], {g: 0.0 for g in range(N_BODY_GROUPS)}, {})
        u = rng.random()
        n = 0 if u < 0.3 else (1 if u < 0.75 else int(rng.integers(2, 4)))
        _objects(rng, cot, sc, n, N_BODY_GROUPS)
        if rng.random() < 0.15:
            child = str(rng.choice(LABELS[1:]))
            sc.ghost_scene = sample_scene(child, rng, cot)
            sc.ghost = _u(rng, 0.02, 0.06)
        sc.spikes = int(rng.integers(1, 4)) if rng.random() < 0.05 else 0
        return sc
    base = "left" if posture in ("left", "right") else posture
    sc = _build_child(rng, base)
    if posture == "right" or (base != "left" and rng.random() < 0.5):
        sc = _mirror(sc)
    sc = replace(sc, label=posture)
    sc = _place(sc, cot, rng)
    if rng.random() < 0.35:
        tc = sc.trunk_centre
        sc.blanket = Soft(float(tc[0]) + _u(rng, -15, 15), float(tc[1]) + _u(rng, -10, 10),
                          _u(rng, 0, 2 * math.pi), _u(rng, 20, 45), _u(rng, 20, 40),
                          _u(rng, 0.15, 0.8), 0.0)
    if rng.random() < 0.1:
        _objects(rng, cot, sc, 1, N_BODY_GROUPS)
    if rng.random() < 0.12:
        sc.ghost = _u(rng, 0.02, 0.06)
        a = _u(rng, 0, 2 * math.pi)
        r = _u(rng, 3, 10)
        sc.ghost_shift = (r * math.cos(a), r * math.sin(a))
    sc.spikes = int(rng.integers(1, 4)) if rng.random() < 0.05 else 0
    sc.k_tissue = _u(rng, 0.04, 0.15)
    sc.creep = _u(rng, 0.0, 0.03) * math.log10(1 + _u(rng, 0, 240))
    return sc


# --------------------------------------------------------------------------- sensing


def cell_loads(sc: Scene, cot: Cot) -> tuple[Array, Contact]:
    """Load in kg that each of the 16 x 32 cells reads (body + objects, not the mattress)."""
    ct = contact(sc, cot)
    loads = cot.by @ ct.sharp @ cot.bx.T
    if ct.padded.any():
        key = round(sc.sigma_pad * 4) / 4  # cached per cot in 0.25 cm steps
        if key not in cot.padded_mats:
            sig = math.sqrt(cot.sigma ** 2 + key ** 2)
            cot.padded_mats[key] = (
                _cell_matrix(ROWS, cot.fy, cot.y0, cot.y1, sig, cot.fill, cot.gap_rel),
                _cell_matrix(COLS, cot.fx, cot.x0, cot.x1, sig, cot.fill, cot.gap_rel))
        by, bx = cot.padded_mats[key]
        loads = loads + by @ ct.padded @ bx.T
    return loads, ct


def _crosstalk(S: Array, cot: Cot, body: Array) -> Array:
    nb = np.zeros_like(S)
    nb[1:] += S[:-1]
    nb[:-1] += S[1:]
    nb[:, 1:] += S[:, :-1]
    nb[:, :-1] += S[:, 1:]
    out = S + cot.alpha * nb / 4
    tot = float(body.sum())
    if tot > 1e-9:
        out = out + cot.beta * np.outer(body.sum(1), body.sum(0)) / tot
    return out


def calibrate(cot: Cot, rng: np.random.Generator, n_frames: int = 20) -> Array:
    """The empty level the device learnt: mean of n noisy empty frames; 0 at dead cells."""
    S = _crosstalk(cot.cell_gain * cot.mattress_cell_kg, cot, np.zeros((ROWS, COLS)))
    mean = cot.offset + COUNTS_PER_KG * cot.gain * S * cot.row_weak
    fr = np.floor(mean[None] + cot.noise * rng.standard_normal((n_frames, ROWS, COLS)))
    lvl = np.clip(fr, 0, 255).mean(axis=0)
    lvl[cot.dead] = 0.0
    return np.asarray(lvl, np.float32)


def _sense(sc: Scene, cot: Cot, loads: Array, rng: np.random.Generator) -> Array:
    body = loads * (1.0 + sc.creep)
    if sc.ghost > 0:
        if sc.ghost_scene is not None:
            gl, _ = cell_loads(sc.ghost_scene, cot)
        else:
            dy = round(sc.ghost_shift[1] / CELL)
            dx = round(sc.ghost_shift[0] / CELL)
            gl = np.roll(np.roll(loads, dy, 0), dx, 1)
        body = body + sc.ghost * gl
    S = _crosstalk(cot.cell_gain * (body + cot.mattress_cell_kg), cot, cot.cell_gain * body)
    gain_now = cot.gain * (1.0 + cot.gain_drift * float(np.clip(rng.standard_normal(), -2, 2)))
    offset_now = (cot.offset + cot.drift * rng.standard_normal()
                  + cot.drift_cell * rng.standard_normal((ROWS, COLS)))
    sig = COUNTS_PER_KG * gain_now * S * cot.row_weak
    sig = sig + sig * cot.noise_mult * rng.standard_normal((ROWS, COLS))
    raw = offset_now + sig + cot.noise * rng.standard_normal((ROWS, COLS))
    for _ in range(sc.spikes):
        raw[rng.integers(ROWS), rng.integers(COLS)] += _u(rng, 20, 120)
    frame = np.clip(np.floor(raw), 0, 255)
    frame[cot.dead] = 0
    return np.asarray(frame, np.uint8)


def render_scene(sc: Scene, cot: Cot, empty_level: Array, rng: np.random.Generator,
                 rough: bool = False) -> tuple[Array, Array]:
    """(frame uint8 (16, 32), empty level float32 (16, 32)) of a scene on a calibrated cot."""
    loads, _ = cell_loads(sc, cot)
    frame = _sense(sc, cot, loads, rng)
    if rough:
        lvl = np.full((ROWS, COLS), float(np.median(frame)), np.float32)
    else:
        lvl = empty_level.astype(np.float32)
    return frame, lvl


# --------------------------------------------------------------------------- public API


def render(posture: str, seed: int, *, rough_empty: bool | None = None) -> tuple[Array, Array]:
    """(frame uint8 (16, 32), empty_level float32 (16, 32)) for one random scene."""
    rng = np.random.default_rng([seed, 0x5A7])
    cot = sample_cot(rng)
    lvl = calibrate(cot, rng)
    sc = sample_scene(posture, rng, cot)
    rough = bool(rng.random() < ROUGH_SHARE) if rough_empty is None else rough_empty
    return render_scene(sc, cot, lvl, rng, rough)


def dataset(n_per_class: int, seed: int) -> tuple[Array, Array, Array]:
    """frames (n, 16, 32) uint8, empty levels (n, 16, 32) float32, labels (n,) int64,
    n = 5 * n_per_class, shuffled, deterministic in seed.  Frames share a pool of
    cots (about one per 25 frames), as a fleet of mats would."""
    rng = np.random.default_rng([seed, 0xC07])
    n = 5 * n_per_class
    cots = [sample_cot(rng) for _ in range(max(3, n // 25))]
    levels = [calibrate(c, rng) for c in cots]
    labels = np.repeat(np.arange(5, dtype=np.int64), n_per_class)
    rng.shuffle(labels)
    frames = np.zeros((n, ROWS, COLS), np.uint8)
    lv = np.zeros((n, ROWS, COLS), np.float32)
    for i, lab in enumerate(labels):
        ci = int(rng.integers(len(cots)))
        r = np.random.default_rng([seed, i, 0xF4A])
        sc = sample_scene(LABELS[lab], r, cots[ci])
        frames[i], lv[i] = render_scene(sc, cots[ci], levels[ci], r,
                                        bool(r.random() < ROUGH_SHARE))
    return frames, lv, labels


def ascii_map(frame: Array, level: Array) -> str:
    """Heat map of frame - level, one character per cell."""
    ramp = " .:-=+*#%@"
    d = np.clip(frame.astype(float) - level, 0, None)
    top = max(float(d.max()), 1.0)
    idx = np.minimum((d / top * (len(ramp) - 1)).round().astype(int), len(ramp) - 1)
    return "\n".join("|" + "".join(ramp[i] for i in row) + "|" for row in idx)


def _main() -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    n_per = 200
    f, lv, lab = dataset(n_per, 1)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    print(f"{5 * n_per} frames: {5 * n_per / dc:.0f} frames/s of CPU time on one core "
          f"({5 * n_per / dt:.0f}/s wall clock on this possibly shared machine)")
    sat = float((f == 255).any(axis=(1, 2))[lab > 0].mean())
    print(f"child frames with a saturated cell: {sat:.0%}")
    for i, name in enumerate(LABELS):
        j = int(np.flatnonzero(lab == i)[0])
        tot = float((f[j].astype(float) - lv[j]).sum())
        print(f"\n{name}  (sum over empty level {tot:.0f} counts)")
        print(ascii_map(f[j], lv[j]))


if __name__ == "__main__":
    _main()
