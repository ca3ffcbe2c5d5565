"""The posture training worlds, and turning their frames into what the model sees.

Three independently designed generators (a model judged on its own generator
agrees with it and little else); the shipped model trains on the first two:

- ``patches`` (:mod:`models.posture.data`): the mat emulator's body model,
  each body part a Gaussian contact patch spread by the mattress;
- ``skeleton`` (:mod:`models.posture.skeleton`): a jointed skeleton with
  anthropometric segment masses, contact surfaces per posture and a mattress
  kernel, written by someone who had not read the first;
- ``regions`` (:mod:`models.posture.regions`): contact regions with Hertzian
  domes at the bony prominences pressure-mapping studies name per posture and
  an exponential mattress kernel, written by a third person who had read
  neither.

A third world (``models/evalworlds/``) is for evaluation only; nothing here
imports it.  Every family offers ``dataset(n_per_class, seed) -> (frames,
empty levels, labels)``; seeds 0-999 are training runs, larger ones held out.

:func:`features` is the device's own preprocessing
(:func:`edge.inference.posture_input.canonical`) plus, for training, the
augmentations that make the model indifferent to what the canonical form
cannot remove: a rough (flat) empty level instead of the calibrated one, a
softer mattress (extra blur), cells that differ in gain, noise (some growing
with the load), crosstalk between neighbouring cells, dead cells, a jittered
axis, centroid and scale, either end of the body first.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edge.inference.posture_input import canonical_load, compressed, load_map, principal_angle

Dataset = tuple[np.ndarray, np.ndarray, np.ndarray]
FAMILIES: tuple[str, ...] = ("patches", "skeleton", "regions")
"""Every world a posture model may train on."""
TRAINING_FAMILIES: tuple[str, ...] = ("patches", "skeleton")
"""What ``train.py`` trains on by default: the shipped model (v2.0) was trained on these two.
A model trained on all three scored worse on the evaluation-only world and on
``skeleton``'s held-out seeds (see the model card), and a second one at full size did
worse there again (``EXPERIMENTS.md``, round 3), so ``regions`` stays a world the shipped
model never saw, measured beside the evaluation-only one."""
LABELS: tuple[str, ...] = ("empty", "supine", "prone", "left", "right")
ROWS, COLS = 16, 32


def loader(family: str) -> Callable[[int, int], Dataset]:
    """``dataset(n_per_class, seed)`` of a training family."""
    if family == "patches":
        from models.posture.data import dataset_with_levels

        return dataset_with_levels
    if family in ("skeleton", "regions"):
        import importlib

        module = importlib.import_module(f"models.posture.{family}")

        def load(n: int, seed: int) -> Dataset:
            frames, levels, labels = module.dataset(n, seed)
            return frames, levels, labels

        return load
    raise ValueError(f"unknown training family {family!r}; known: {', '.join(FAMILIES)}")


def features(
    frames: np.ndarray,
    levels: np.ndarray | None,
    *,
    rng: np.random.Generator | None = None,
    compress: str = "none",
    physics: bool = False,
) -> np.ndarray:
    """``(n, 16, 32, 1)`` float32 model inputs; ``rng`` given: augmented for training.

    ``compress``: the card's ``preprocessing.compress`` (the device does the same);
    ``physics``: training also randomises the sensor's response and the mattress
    (:func:`_physics`).
    """
    out = np.empty((len(frames), ROWS, COLS, 1), dtype=np.float32)
    for i, frame in enumerate(frames):
        raw = frame.astype(np.float32)
        level = None if levels is None else levels[i].astype(np.float32)
        if rng is None:
            x = _canonical(raw, level)
        else:
            x = _augmented(raw, level, rng, physics=physics)
        out[i, :, :, 0] = compressed(x, compress)
    return out


def _canonical(raw: np.ndarray, level: np.ndarray | None) -> np.ndarray:
    if level is None:
        level = np.full_like(raw, float(np.median(raw)))
    return canonical_load(load_map(raw, level), out_rows=ROWS, out_cols=COLS)


def _augmented(
    raw: np.ndarray, level: np.ndarray | None, rng: np.random.Generator, *, physics: bool = False
) -> np.ndarray:
    raw = raw.copy()
    lv = np.full_like(raw, float(np.median(raw))) if level is None else level
    if rng.random() < 0.5:  # cells that differ in gain, noise that grows with the load
        load = np.clip(raw - lv, 0.0, None)
        cell_gain = rng.normal(1.0, rng.uniform(0.02, 0.1), raw.shape).astype(np.float32)
        raw = lv + load * cell_gain
        raw += (load * rng.uniform(0.0, 0.04) * rng.standard_normal(raw.shape)).astype(np.float32)
    if rng.random() < 0.3:
        raw += rng.normal(0.0, rng.uniform(0.3, 1.5), raw.shape).astype(np.float32)
    if rng.random() < 0.3:  # crosstalk between neighbouring cells
        k = float(rng.uniform(0.02, 0.08))
        load = np.clip(raw - lv, 0.0, None)
        spill = np.zeros_like(load)
        spill[1:] += load[:-1]
        spill[:-1] += load[1:]
        spill[:, 1:] += load[:, :-1]
        spill[:, :-1] += load[:, 1:]
        raw = raw + k * spill
    raw = np.clip(np.rint(raw), 0.0, 255.0)
    if rng.random() < 0.2:
        for _ in range(int(rng.integers(1, 8))):
            raw[rng.integers(ROWS), rng.integers(COLS)] = 0.0
    if level is None or rng.random() < 0.25:
        level = np.full_like(raw, float(np.median(raw)))  # before the mat calibrates
    elif rng.random() < 0.3:
        level = level + np.float32(rng.uniform(-4.0, 4.0))  # the empty level crept since
    d = load_map(raw, level)
    if physics:
        d = _physics(d, rng)
    elif rng.random() < 0.4:
        d = _blur(d, float(rng.uniform(0.3, 1.0)))  # a softer, thicker mattress
    total = float(d.sum())
    angle = None
    if total > 0:
        ys, xs = np.mgrid[0:ROWS, 0:COLS].astype(np.float32)
        cy, cx = float((d * ys).sum() / total), float((d * xs).sum() / total)
        angle = principal_angle(d, cy, cx, total) + float(rng.normal(0.0, 0.08))
        if rng.random() < 0.5:
            angle += math.pi
    shift = (float(rng.normal(0.0, 0.4)), float(rng.normal(0.0, 0.6)))
    # physics: smaller (light, short) and larger children relative to the mat
    zoom = float(np.exp(rng.uniform(-0.3, 0.3) if physics else rng.normal(0.0, 0.1)))
    return canonical_load(d, out_rows=ROWS, out_cols=COLS, angle=angle, shift=shift, zoom=zoom)


def _physics(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A load map as another mattress and sensor might have made it: a softer or firmer
    mattress (wider spread), a faint shifted copy (ghosting), and a different monotone
    response: a power curve, saturation, a contact threshold."""
    if rng.random() < 0.6:  # mattress spread, up to 2 cells (7.5 cm)
        d = _blur(d, float(rng.uniform(0.3, 2.0)))
    if rng.random() < 0.2:  # ghosting: a faint copy one cell over
        dy, dx = int(rng.integers(-1, 2)), int(rng.integers(-1, 2))
        d = d + float(rng.uniform(0.05, 0.2)) * np.roll(d, (dy, dx), axis=(0, 1))
    peak = float(d.max())
    if peak <= 0:
        return d
    if rng.random() < 0.5:  # the sensor's monotone response: load ** g
        d = peak * (d / peak) ** float(np.exp(rng.uniform(math.log(0.5), math.log(2.0))))
    if rng.random() < 0.3:  # saturation
        d = np.minimum(d, peak * float(rng.uniform(0.5, 0.95)))
    if rng.random() < 0.3:  # a contact threshold: light contact reads nothing
        d = np.where(d < peak * float(rng.uniform(0.0, 0.15)), 0.0, d)
    out: np.ndarray = d.astype(np.float32)
    return out


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    rows = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 1, img)
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 0, rows)
