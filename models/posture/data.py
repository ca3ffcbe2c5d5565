"""Labelled mat frames for the posture classifier (numpy + the mat emulator; no TensorFlow).

Every frame comes from :func:`edge.sim.mat_emulator.random_frame`, the seeded
body model of :mod:`edge.sim.infant` on an emulated 16 x 32 mat, whose own
assumptions are documented there:

- infants 0-24 months, length/mass around the WHO medians (50-90 cm, 3-13 kg);
- placed anywhere the body fits on the 60 x 120 cm mat, heading along the cot
  either way (0 or 180 deg) with a +-12 deg skew, one in ten at any angle the
  cot's width allows;
- per-posture contact patches for head, shoulders / chest, sacrum / belly,
  arms, knees and heels (prone: broad central chest patch, cheek off-axis;
  side-lying: a narrow strip with knees and arms to the side the child faces),
  spread by the mattress;
- breathing: load swings between chest and abdomen; the frame is taken at a
  random time 0-60 s, i.e. a random breathing phase;
- sensor: per-cell offset 2-6 counts plus the mattress's weight, 0.7 counts
  of noise, 8-bit quantisation, 0-3 dead cells (stuck at 0).

This module post-processes each frame to widen what the emulator covers (all
from the same per-sample seed):

- **gain**: a mat's counts-per-kg differs from unit to unit and drifts with
  temperature: the whole frame is scaled by U(0.85, 1.15);
- **extra noise**: Gaussian, sigma U(0, 1.0) counts (a noisier mat);
- **more dead cells**: with p = 0.3, 1-6 further random cells stuck at 0; with
  p = 0.1, a broken trace: 4-16 consecutive cells of one row or column at 0;
- **empty cot with an object**: for ``empty``, with p = 0.4 a folded blanket
  or soft toy of 0.1-0.8 kg, a Gaussian blob of sigma 4-15 cm anywhere.

Seeds: a sample is fully determined by (posture, sample seed).  Training uses
sample seeds ``TRAIN_BASE * (seed + 1) + i``; held-out evaluation uses
``HELDOUT_BASE + i`` -- ranges that never meet for training seeds below 1000.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

from edge.sim.infant import POSTURES
from edge.sim.mat_emulator import COUNTS_PER_KG, random_frame
from models.seeds import HELDOUT_BASE as HELDOUT_BASE  # re-exported: the generator's seeds
from models.seeds import TRAIN_BASE as TRAIN_BASE
from models.seeds import heldout_seeds as heldout_seeds
from models.seeds import train_seeds as train_seeds

LABELS: tuple[str, ...] = POSTURES
"""Class index -> label: empty, supine, prone, left, right."""
ROWS, COLS = 16, 32
CELL_CM = 3.75


def sample(posture: str, seed: int, *, augment: bool = True) -> np.ndarray:
    """One frame, ``(16, 32)`` uint8, of ``posture`` from ``seed``."""
    cells = random_frame(posture, seed, rows=ROWS, cols=COLS)
    frame = np.frombuffer(cells, dtype=np.uint8).reshape(ROWS, COLS).astype(np.float64)
    if not augment:
        return frame.astype(np.uint8)
    rng = random.Random(f"posture-aug-{posture}-{seed}")
    nrng = np.random.default_rng(rng.randrange(1 << 62))
    dead = frame == 0
    if posture == "empty" and rng.random() < 0.4:
        frame += _blob(rng, kg=rng.uniform(0.1, 0.8), sigma_cm=rng.uniform(4.0, 15.0))
    frame *= rng.uniform(0.85, 1.15)
    frame += nrng.normal(0.0, rng.uniform(0.0, 1.0), frame.shape)
    frame = np.clip(np.rint(frame), 0, 255)
    frame[dead] = 0
    if rng.random() < 0.3:
        for _ in range(rng.randint(1, 6)):
            frame[rng.randrange(ROWS), rng.randrange(COLS)] = 0
    if rng.random() < 0.1:
        n = rng.randint(4, 16)
        if rng.random() < 0.5:
            r, c = rng.randrange(ROWS), rng.randrange(COLS - n + 1)
            frame[r, c : c + n] = 0
        else:
            n = min(n, ROWS)
            r, c = rng.randrange(ROWS - n + 1), rng.randrange(COLS)
            frame[r : r + n, c] = 0
    return frame.astype(np.uint8)


def _blob(rng: random.Random, *, kg: float, sigma_cm: float) -> np.ndarray:
    """A soft object's load: a 2-D Gaussian of ``kg`` centred anywhere on the mat."""
    x0 = rng.uniform(0.0, COLS * CELL_CM)
    y0 = rng.uniform(0.0, ROWS * CELL_CM)
    xs = (np.arange(COLS) + 0.5) * CELL_CM
    ys = (np.arange(ROWS) + 0.5) * CELL_CM
    g = np.exp(-((ys[:, None] - y0) ** 2 + (xs[None, :] - x0) ** 2) / (2 * sigma_cm**2))
    area = 2 * math.pi * sigma_cm**2 / CELL_CM**2
    return g * kg * COUNTS_PER_KG / area


def dataset(
    seeds: Sequence[int], *, labels: Sequence[str] = LABELS, augment: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(n, 16, 32)`` uint8 and class indices ``(n,)``: every label at every seed."""
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for s in seeds:
        for label in labels:
            xs.append(sample(label, s, augment=augment))
            ys.append(LABELS.index(label))
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _sample_seeds(n: int, seed: int) -> range:
    """A training run's sample seeds (``seed`` 0-999) or held-out ones (``seed`` >= 1000)."""
    return train_seeds(seed, n) if seed < 1000 else heldout_seeds(n, offset=seed)


def render(posture: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The family's common face (see ``models/posture/families.py``): one frame of
    ``posture`` and the empty level the device would have calibrated for that mat
    (the same scene's empty cot, before any child lay down)."""
    frame = sample(posture, seed)
    empty = np.frombuffer(random_frame("empty", seed, rows=ROWS, cols=COLS), dtype=np.uint8)
    return frame, empty.reshape(ROWS, COLS).astype(np.float32)


def dataset_with_levels(
    n_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames, empty levels and labels: ``n_per_class`` of every label (see :func:`render`)."""
    frames: list[np.ndarray] = []
    levels: list[np.ndarray] = []
    ys: list[int] = []
    for s in _sample_seeds(n_per_class, seed):
        for i, label in enumerate(LABELS):
            f, e = render(label, s)
            frames.append(f)
            levels.append(e)
            ys.append(i)
    return np.stack(frames), np.stack(levels), np.asarray(ys, dtype=np.int64)
