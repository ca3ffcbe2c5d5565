"""An infant lying on a cot's mattress, as a pressure grid under the mattress feels it.

This is the data generator's body model (issue 4 trains its posture model on
frames rendered from it, and the emulated mat streams it), so its assumptions
are written down here:

- **Size** (ages 0-24 months): body length and mass follow the WHO growth
  medians (mean of boys and girls: 50 cm / 3.3 kg at birth, 75 cm / 9.3 kg at
  one year, 86 cm / 11.8 kg at two), with a per-child spread of about one
  standard deviation (4 % in length, 11 % in mass), clamped to the nursery's
  range of 50-90 cm and 3-13 kg.
- **Proportions**: the head is a quarter of the body length at birth and a
  fifth at two years; shoulders are 0.24 L wide, hips 0.16 L, the torso
  (shoulder to hip joint) 0.31 L, legs the rest.
- **Contact**: the body's weight reaches the mattress through a few contact
  patches per posture, each an isotropic Gaussian with a share of the body
  mass.  Supine: the back of the head (centred), both shoulder blades, the
  sacrum and buttocks, arms at the sides or raised beside the head, legs
  extended or in the "frog" position (hips abducted, lateral thighs and heels
  touching).  Prone: the head turned to one side (the cheek, off the body's
  axis), one broad central chest patch carrying the most load, the soft belly,
  a lighter pelvis, forearms beside the head ("surrender") or under the chest,
  and the knees as compact patches: tucked under the belly (knee-chest, mostly
  under 6 months) or on extended legs, with the tops of the feet at the end.
  Side-lying: a narrow strip with sharp peaks under the lower shoulder and the
  hip (greater trochanter), knees drawn up and arms in front, both on the side
  the child faces (its left when lying on the left side).  The per-posture
  shares are in :func:`contact_patches`.
- **What tells the postures apart** (checked by the tests): supine, the
  heaviest point of the torso is the sacrum (lower half of the torso), the
  upper back shows two shoulder-blade patches, the head patch is compact and
  on the body's axis and the heels are sharp points at the foot end; prone,
  the heaviest torso point is the chest (upper half) in most samples, the
  head patch is broader and off the axis, knees are sharp points mid-leg or
  tucked beside the hips; side-lying, the footprint is narrow (lateral spread
  about 0.07 L against 0.1 L lying flat) with knees and arms off to the side
  the child faces, so left and right are mirror images (the side of the
  load's lateral centroid tells them apart, as long as the head end is known).
- **Mattress**: a 5-8 cm foam mattress spreads each patch by a further
  Gaussian of 2.5 cm (added in quadrature), and the whole body mass reaches
  the mat (the part that hangs over the mat's edge is lost).
- **Breathing**: infants breathe mostly with the abdomen.  Each breath moves a
  share of the load between the chest and the abdominal / pelvic patches
  (default swing 6 % of the chest patches' load, scaled by ``breath_depth``),
  keeping the total constant, so the centre of pressure moves a millimetre or
  two along the body's axis at the breathing rate.  Rates by age (asleep):
  about 42 breaths/min at birth falling to 26 at two years, +-15 % per child.
- **Per-sample randomness** (from ``variant``): limb positions, head turn,
  leg abduction, patch positions (+-5 % of L) and loads (+-10 %).

Coordinates: the mat's x runs along its columns (length), y along its rows
(width), both in cm from cell (0, 0)'s outer corner.  In the body's own frame
u runs from the crown (u = 0) to the heels (u = L) and v is lateral, with +v
at the child's left when supine.  ``heading_deg`` is the direction of +u on
the mat (0 = towards increasing column), the body's mid-length point sits at
(``x_cm``, ``y_cm``).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, replace
from typing import Literal

Posture = Literal["supine", "prone", "left", "right"]
BODY_POSTURES: tuple[Posture, ...] = ("supine", "prone", "left", "right")
POSTURES: tuple[str, ...] = ("empty", "supine", "prone", "left", "right")
"""Class labels for posture models: an empty cot, then the four postures."""

# WHO child growth standards, medians, mean of boys and girls: (months, cm, kg).
GROWTH: tuple[tuple[float, float, float], ...] = (
    (0, 49.5, 3.3),
    (3, 60.5, 6.1),
    (6, 66.5, 7.6),
    (9, 71.0, 8.6),
    (12, 75.0, 9.3),
    (18, 81.0, 10.6),
    (24, 86.4, 11.8),
)
LENGTH_RANGE_CM = (50.0, 90.0)
MASS_RANGE_KG = (3.0, 13.0)
MATTRESS_SPREAD_CM = 2.5
BREATH_SWING = 0.10
"""Share of the chest patches' load that one breath moves to the abdomen (depth 1)."""


def growth_median(age_months: float) -> tuple[float, float]:
    """(length cm, mass kg) at an age, interpolated between the WHO medians."""
    age = min(max(age_months, 0.0), 24.0)
    for (a0, l0, m0), (a1, l1, m1) in itertools.pairwise(GROWTH):
        if age <= a1:
            f = (age - a0) / (a1 - a0)
            return l0 + f * (l1 - l0), m0 + f * (m1 - m0)
    return GROWTH[-1][1], GROWTH[-1][2]


def typical_breath_rate(age_months: float) -> float:
    """Breaths per minute asleep: ~42 at birth, ~26 at two years."""
    return 42.0 - 16.0 * min(max(age_months, 0.0), 24.0) / 24.0


@dataclass(frozen=True, slots=True)
class Patch:
    """One contact patch in body coordinates: centre (u, v) cm, spread cm, share of mass.

    ``role`` says how breathing moves it: ``+1`` chest, ``-1`` abdomen, ``0`` neither.
    """

    u: float
    v: float
    sigma: float
    share: float
    role: int = 0


@dataclass(frozen=True, slots=True)
class Infant:
    """A child on the mat: size, pose, breathing.  Change it with :func:`dataclasses.replace`."""

    age_months: float
    length_cm: float
    mass_kg: float
    posture: Posture = "supine"
    x_cm: float = 60.0
    y_cm: float = 30.0
    heading_deg: float = 0.0
    breath_rate: float = 36.0
    """Breaths per minute."""
    breath_depth: float = 1.0
    """1 = a typical breath; the swing scales with it."""
    variant: int = 0
    """Seed of the per-sample limb and patch randomness."""

    def __post_init__(self) -> None:
        if self.posture not in BODY_POSTURES:
            raise ValueError(f"posture must be one of {BODY_POSTURES}, got {self.posture!r}")
        if not 0 <= self.age_months <= 36:
            raise ValueError(f"age_months must be 0..36, got {self.age_months}")
        if self.length_cm <= 0 or self.mass_kg <= 0:
            raise ValueError("length_cm and mass_kg must be positive")

    @classmethod
    def of_age(cls, age_months: float, rng: random.Random | None = None, **pose: object) -> Infant:
        """A child of that age with a random (seeded) size around the median, and given pose."""
        rng = rng or random.Random(0)
        length, mass = growth_median(age_months)
        length = _clamp(length * rng.gauss(1.0, 0.04), *LENGTH_RANGE_CM)
        mass = _clamp(mass * rng.gauss(1.0, 0.11), *MASS_RANGE_KG)
        fields: dict[str, object] = {
            "breath_rate": typical_breath_rate(age_months) * rng.uniform(0.85, 1.15),
            "variant": rng.randrange(1 << 30),
        }
        fields.update(pose)
        return cls(age_months, length, mass, **fields)  # type: ignore[arg-type]

    @classmethod
    def random(
        cls,
        rng: random.Random,
        *,
        posture: Posture | None = None,
        age_months: float | None = None,
        mat_cm: tuple[float, float] = (120.0, 60.0),
    ) -> Infant:
        """A random child (age 0-24 months unless given) in a plausible place on a mat (x, y cm)."""
        infant = cls.of_age(rng.uniform(0.0, 24.0) if age_months is None else age_months, rng)
        length_cm = infant.length_cm
        # Mostly along the cot, sometimes askew, never more across it than its
        # width allows (the cot's sides stop a long child lying across it).
        fits = math.degrees(math.asin(min(1.0, (mat_cm[1] - 10.0) / length_cm)))
        skew = rng.gauss(0.0, 12.0) if rng.random() < 0.9 else rng.uniform(-90.0, 90.0)
        heading = rng.choice((0.0, 180.0)) + max(-fits, min(fits, skew))
        along = abs(math.cos(math.radians(heading))) * length_cm / 2
        across = abs(math.sin(math.radians(heading))) * length_cm / 2
        room_x = max(mat_cm[0] / 2 - along - 4.0, 0.0)
        room_y = max(mat_cm[1] / 2 - across - 8.0, 0.0)
        chosen: Posture = rng.choice(BODY_POSTURES) if posture is None else posture
        return replace(
            infant,
            posture=chosen,
            x_cm=mat_cm[0] / 2 + rng.uniform(-room_x, room_x),
            y_cm=mat_cm[1] / 2 + rng.uniform(-room_y, room_y),
            heading_deg=heading % 360.0,
            breath_depth=rng.uniform(0.7, 1.3),
        )

    def patches(self) -> list[Patch]:
        """Contact patches of this posture and variant, shares summing to 1."""
        return contact_patches(self)

    def render(
        self,
        rows: int,
        cols: int,
        cell_cm: float,
        counts_per_kg: float,
    ) -> tuple[list[float], list[float]]:
        """(load, breath) per cell, row-major, in counts.

        ``load`` is the resting footprint; ``breath`` the change per unit of the
        breathing signal (add ``b * breath`` for b in [-1, 1]); it sums to zero.
        """
        load = [0.0] * (rows * cols)
        breath = [0.0] * (rows * cols)
        patches = self.patches()
        chest = sum(p.share for p in patches if p.role > 0)
        belly = sum(p.share for p in patches if p.role < 0)
        swing = BREATH_SWING * self.breath_depth
        theta = math.radians(self.heading_deg)
        cu, su = math.cos(theta), math.sin(theta)
        total = self.mass_kg * counts_per_kg
        half = self.length_cm / 2
        for p in patches:
            x = self.x_cm + (p.u - half) * cu - p.v * su
            y = self.y_cm + (p.u - half) * su + p.v * cu
            sigma = math.hypot(p.sigma, MATTRESS_SPREAD_CM)
            wx = _cell_shares(x, sigma, cols, cell_cm)
            wy = _cell_shares(y, sigma, rows, cell_cm)
            amount = p.share * total
            if p.role > 0:
                delta = amount * swing
            elif p.role < 0 and belly > 0:
                delta = -p.share * total * swing * chest / belly
            else:
                delta = 0.0
            for r, fy in enumerate(wy):
                if fy < 1e-7:
                    continue
                base = r * cols
                for c, fx in enumerate(wx):
                    if fx < 1e-7:
                        continue
                    f = fx * fy
                    load[base + c] += amount * f
                    if delta:
                        breath[base + c] += delta * f
        return load, breath


def contact_patches(infant: Infant) -> list[Patch]:
    """Where and how much this child presses on the mattress, in body coordinates."""
    rng = random.Random(infant.variant)
    big_l = infant.length_cm
    age = infant.age_months
    h = big_l * (0.25 - 0.05 * min(age, 24.0) / 24.0)  # head length
    u_sh = h + 0.04 * big_l
    u_hip = u_sh + 0.31 * big_l
    sw = 0.12 * big_l  # half the shoulder width
    hw = 0.08 * big_l  # half the hip width
    ts = 0.07 * big_l  # torso patch spread
    ls = 0.035 * big_l  # limb patch spread

    def jit(x: float) -> float:
        return x + rng.gauss(0.0, 0.02 * big_l)

    out: list[tuple[float, float, float, float, int]] = []
    add = out.append
    posture = infant.posture
    if posture == "supine":
        turn = rng.uniform(-1.0, 1.0)
        add((0.55 * h, turn * 0.08 * h, 0.24 * h, 0.18, 0))
        for side in (-1, 1):
            add((jit(u_sh + 0.07 * big_l), side * 0.065 * big_l, ts, 0.09, 1))
            add((jit(u_hip - 0.02 * big_l), side * 0.04 * big_l, ts, 0.14, -1))
        add((u_sh + 0.17 * big_l, 0.0, ts, 0.05, -1))
        frog = rng.random() < (0.75 if age < 9 else 0.3)
        for side in (-1, 1):
            if rng.random() < 0.5:  # arm raised beside the head ("hands up")
                add((jit(u_sh - 0.01 * big_l), side * (sw + 0.05 * big_l), ls, 0.02, 0))
                add((jit(0.55 * h), side * (sw + 0.02 * big_l), ls, 0.02, 0))
            else:  # along the body
                add((jit(u_sh + 0.09 * big_l), side * (sw + 0.01 * big_l), ls, 0.02, 0))
                add((jit(u_sh + 0.22 * big_l), side * (sw - 0.01 * big_l), ls, 0.02, 0))
            abduct = math.radians(rng.uniform(35, 60) if frog else rng.uniform(5, 20))
            bend = math.radians(rng.uniform(40, 70) if frog else rng.uniform(0, 15))
            thigh = 0.17 * big_l
            knee_u = u_hip + thigh * math.cos(abduct)
            knee_v = side * (hw + thigh * math.sin(abduct))
            calf_dir = abduct - bend
            heel_u = knee_u + 0.17 * big_l * math.cos(calf_dir)
            heel_v = knee_v + side * 0.17 * big_l * math.sin(calf_dir)
            add(((u_hip + knee_u) / 2, (side * hw + knee_v) / 2, ls, 0.05, 0))
            add(((knee_u + heel_u) / 2, (knee_v + heel_v) / 2, ls, 0.035, 0))
            add((heel_u, heel_v, 0.5 * ls, 0.03, 0))
    elif posture == "prone":
        cheek = rng.choice((-1, 1))
        add((0.5 * h, cheek * 0.3 * h, 0.3 * h, 0.12, 0))
        add((jit(u_sh + 0.09 * big_l), 0.0, 0.9 * ts, 0.28, 1))
        add((jit(u_sh + 0.21 * big_l), 0.0, ts, 0.10, -1))
        tucked = rng.random() < (0.7 if age < 6 else 0.15)
        for side in (-1, 1):
            add((jit(u_hip - 0.01 * big_l), side * 0.05 * big_l, ls, 0.015 if tucked else 0.03, -1))
            if rng.random() < 0.75:  # "surrender": forearms beside the head
                add((jit(u_sh - 0.01 * big_l), side * (sw + 0.05 * big_l), ls, 0.02, 0))
                add((jit(0.7 * h), side * (sw + 0.01 * big_l), ls, 0.03, 0))
            else:  # hands under the chest
                add((jit(u_sh + 0.08 * big_l), side * 0.06 * big_l, ls, 0.05, 1))
            if tucked:  # knee-chest: knees under the belly, shins back, feet by the bottom
                add((jit(u_hip - 0.03 * big_l), side * (hw + 0.02 * big_l), 0.6 * ls, 0.09, 0))
                add((jit(u_hip + 0.05 * big_l), side * (hw + 0.03 * big_l), ls, 0.04, 0))
                add((jit(u_hip + 0.12 * big_l), side * (hw + 0.02 * big_l), 0.6 * ls, 0.02, 0))
            else:
                spread = rng.uniform(0.0, 0.06) * big_l
                add((jit(u_hip + 0.09 * big_l), side * (hw + 0.5 * spread), ls, 0.04, 0))
                add((jit(u_hip + 0.19 * big_l), side * (hw + spread), 0.6 * ls, 0.06, 0))
                add((big_l - 0.03 * big_l, side * (hw + 1.5 * spread), ls, 0.015, 0))
    else:  # side-lying; the front (knees, arms) faces +v on the left side, -v on the right
        s = 1 if posture == "left" else -1
        add((0.5 * h, 0.0, 0.26 * h, 0.17, 0))
        add((jit(u_sh + 0.02 * big_l), 0.0, 0.045 * big_l, 0.17, 1))
        add((jit(u_sh + 0.14 * big_l), 0.0, 0.05 * big_l, 0.09, 1))
        add((jit(u_hip + 0.01 * big_l), 0.0, 0.045 * big_l, 0.19, -1))
        add((jit(u_sh + 0.05 * big_l), s * 0.08 * big_l, ls, 0.04, 0))
        add((jit(u_sh + 0.12 * big_l), s * 0.11 * big_l, ls, 0.03, 0))
        draw = rng.uniform(0.6, 1.2)  # how far the knees are drawn up
        add((jit(u_hip + 0.16 * big_l), s * 0.09 * draw * big_l, 0.6 * ls, 0.07, 0))
        add((jit(u_hip + 0.14 * big_l), s * 0.15 * draw * big_l, 0.6 * ls, 0.05, 0))
        add((jit(u_hip + 0.30 * big_l), s * 0.04 * draw * big_l, 0.6 * ls, 0.04, 0))
        add((jit(u_hip + 0.29 * big_l), s * 0.09 * draw * big_l, 0.6 * ls, 0.03, 0))
    shares = [sh * math.exp(rng.gauss(0.0, 0.1)) for (_, _, _, sh, _) in out]
    norm = sum(shares)
    return [
        Patch(u, v, sg, sh / norm, role)
        for (u, v, sg, _, role), sh in zip(out, shares, strict=True)
    ]


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _cell_shares(centre: float, sigma: float, n: int, cell_cm: float) -> list[float]:
    """Share of a 1-D Gaussian falling in each of ``n`` cells of width ``cell_cm``."""
    k = 1.0 / (sigma * math.sqrt(2.0))
    edges = [0.5 * math.erf((i * cell_cm - centre) * k) for i in range(n + 1)]
    return [edges[i + 1] - edges[i] for i in range(n)]
