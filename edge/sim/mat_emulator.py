"""The body-motion mat, emulated: an infant on a mattress, rendered into frames on a real pty.

Two layers:

- :class:`MatScene` is the pure part: the mat (geometry, per-cell sensor
  offsets, the mattress's own weight, noise, dead cells) and who lies on it
  (an :class:`~edge.sim.infant.Infant`, or nobody), breathing and now and then
  shifting a little.  :meth:`MatScene.frame_at` renders the cells at any time
  ``t`` deterministically from the seed and the controls applied so far, so
  tests and the posture model's data generator need no real time.
- :class:`MatModel` streams that scene as protocol frames at ~10 frames/s on
  a pseudo-terminal (``.port``), with the line faults a real mat shows.

The frame encoder here is written independently of ``drivers/motion_mat.py``
(both follow ``docs/protocols/motion-mat.md``), so a mistake in one is caught
by the other in the tests.
"""

from __future__ import annotations

import binascii
import bisect
import math
import random
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from edge.sim.infant import BODY_POSTURES, Infant, Posture
from edge.sim.serial_device import EmulatedSerialDevice

COUNTS_PER_KG = 600.0
"""The emulated mat's scale: counts summed over all cells per kg on the mattress
(the same default as ``edge.nursery.mat.COUNTS_PER_KG``)."""
CELL_CM = 3.75
SENSOR_NOISE = 0.7
"""Counts (1 sigma) of electronic noise per cell per frame, before 8-bit quantisation."""
OFFSET_RANGE = (2.0, 6.0)
"""Per-cell zero offset in counts, fixed per mat (from the seed)."""
MATTRESS_KG = 1.2
RESTLESS_EVERY_S = 45.0
"""Mean time between small shifts of a sleeping child (Poisson)."""
RATE_SWAY = 0.05
"""Breathing rate wanders +-5 % over ~17 s, as a sleeping infant's does."""
_SWAY_PERIOD_S = 17.0


def encode(seq: int, rows: int, cols: int, cells: bytes) -> bytes:
    """One protocol-version-1 frame (see docs/protocols/motion-mat.md)."""
    body = bytes([1]) + struct.pack("<H", seq & 0xFFFF) + bytes([rows, cols])
    body += struct.pack("<H", len(cells)) + cells
    return b"\xa5\x5a" + body + struct.pack("<H", binascii.crc_hqx(body, 0xFFFF))


class MatScene:
    """A mat and the child on it, rendered to cells at any time ``t`` (seconds).

    Controls take effect at ``at`` (default: ``clock()``); ``frame_at(t)`` is a
    pure function of ``t``, the seed and the controls applied so far (for ``t``
    before the latest control it renders the latest state).  Thread-safe.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        rows: int = 16,
        cols: int = 32,
        cell_cm: float = CELL_CM,
        counts_per_kg: float = COUNTS_PER_KG,
        noise: float = SENSOR_NOISE,
        dead_cells: int | Sequence[tuple[int, int]] = 2,
        mattress_kg: float = MATTRESS_KG,
        fps: float = 10.0,
        restless_every_s: float | None = RESTLESS_EVERY_S,
        infant: Infant | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (1 <= rows <= 64 and 1 <= cols <= 64):
            raise ValueError(f"geometry must be 1..64 x 1..64, got {rows} x {cols}")
        self.seed = seed
        self.rows, self.cols, self.cell_cm = rows, cols, cell_cm
        self.counts_per_kg = counts_per_kg
        self.noise = noise
        self.fps = fps
        self.restless_every_s = restless_every_s
        self.clock = clock
        self._lock = threading.RLock()
        rng = random.Random(f"mat-{seed}")
        n = rows * cols
        per_cell = mattress_kg * counts_per_kg / n
        self.offsets = [rng.uniform(*OFFSET_RANGE) + per_cell for _ in range(n)]
        """Per-cell empty reading before noise (sensor offset + the mattress's weight)."""
        if isinstance(dead_cells, int):
            cells = rng.sample(range(n), min(dead_cells, n))
        else:
            cells = [r * cols + c for r, c in dead_cells]
        self.dead = frozenset(cells)
        """Cells stuck at 0 (a broken trace)."""
        self._infant: Infant | None = None
        self._breathing = True
        self._phase_t = 0.0  # breathing phase anchor: phase at time _phase_t
        self._phase = 0.0
        self._frozen_b = 0.0
        self._segment = 0
        self._segment_t = 0.0
        self._events: list[tuple[float, float, float, float]] = []
        """Restless shifts of this segment: (time, x cm, y cm, heading) after each."""
        self._times: list[float] = []
        self._event_rng = random.Random(0)
        self._render_cache: dict[int, tuple[list[float], list[float]]] = {}
        self._foreign: tuple[list[float], list[float], str] | None = None
        """A body drawn elsewhere (:meth:`lay`): load, breathing swing, label."""
        if infant is not None:
            self.lie_down(infant)

    # -- state -------------------------------------------------------------------

    @property
    def infant(self) -> Infant | None:
        """Who lies on the mat now (pose before any restless shifts), or None."""
        return self._infant

    @property
    def posture(self) -> str:
        """The posture label: ``empty``, ``supine``, ``prone``, ``left`` or ``right`` (or the
        label of a body laid with :meth:`lay`)."""
        if self._foreign is not None:
            return self._foreign[2]
        return "empty" if self._infant is None else self._infant.posture

    @property
    def breathing(self) -> bool:
        return self._breathing and self._infant is not None

    def mat_cm(self) -> tuple[float, float]:
        """(length, width) of the sensed area in cm."""
        return self.cols * self.cell_cm, self.rows * self.cell_cm

    # -- controls ------------------------------------------------------------------

    def lie_down(
        self,
        infant: Infant | Posture | None = None,
        *,
        age_months: float | None = None,
        at: float | None = None,
    ) -> Infant:
        """Put a child on the mat: an :class:`Infant`, or a posture (random child from the seed)."""
        with self._lock:
            t = self._now(at)
            if not isinstance(infant, Infant):
                rng = random.Random(f"infant-{self.seed}-{self._segment}")
                posture = infant or "supine"
                if posture not in BODY_POSTURES:
                    raise ValueError(f"posture must be one of {BODY_POSTURES}, got {posture!r}")
                infant = Infant.random(
                    rng, posture=posture, age_months=age_months, mat_cm=self.mat_cm()
                )
            self._breathing = True
            self._foreign = None
            self._set(infant, t)
            return infant

    def roll_to(self, posture: Posture, *, at: float | None = None) -> None:
        """Turn the child over (new limb positions; same place on the mat)."""
        if posture not in BODY_POSTURES:
            raise ValueError(f"posture must be one of {BODY_POSTURES}, got {posture!r}")
        with self._lock:
            t = self._now(at)
            current = self._pose_at(t)
            if current is None:
                raise RuntimeError("nobody on the mat to roll over")
            rng = random.Random(f"roll-{self.seed}-{self._segment}")
            self._foreign = None
            self._set(replace(current, posture=posture, variant=rng.randrange(1 << 30)), t)

    def move_to(
        self, x_cm: float, y_cm: float, heading_deg: float | None = None, *, at: float | None = None
    ) -> None:
        """Put the child's mid-body at (x, y) cm on the mat, optionally turned."""
        with self._lock:
            t = self._now(at)
            current = self._pose_at(t)
            if current is None:
                raise RuntimeError("nobody on the mat to move")
            heading = current.heading_deg if heading_deg is None else heading_deg
            self._foreign = None
            self._set(replace(current, x_cm=x_cm, y_cm=y_cm, heading_deg=heading), t)

    def leave(self, *, at: float | None = None) -> None:
        """The child is lifted out: the cot is empty."""
        with self._lock:
            self._foreign = None
            self._set(None, self._now(at))

    def lay(
        self,
        load: Sequence[float],
        *,
        label: str = "foreign",
        breath_share: float = 0.06,
        at: float | None = None,
    ) -> None:
        """A body this scene did not draw: ``load`` counts above the empty mat per cell
        (row-major, ``rows x cols``), e.g. a frame of another generator or of a recording.

        It breathes (a share of the load moves between the head half and the foot half
        of the mat and back, so the centre of pressure swings as with a child) and stops
        breathing with :meth:`stop_breathing`; restless shifts do not move it.
        :attr:`posture` reads ``label``.  :meth:`lie_down`, :meth:`roll_to` (a child of
        this scene's own, where the body lay), :meth:`move_to` and :meth:`leave` end it.
        """
        n = self.rows * self.cols
        if len(load) != n:
            raise ValueError(f"a load for {self.rows} x {self.cols} cells needs {n} values, "
                             f"got {len(load)}")  # fmt: skip
        values = [max(0.0, float(v)) for v in load]
        half = self.cols // 2
        head = sum(v for i, v in enumerate(values) if i % self.cols < half)
        feet = sum(values) - head
        if head <= 0.0 or feet <= 0.0:
            raise ValueError("the load must press on both halves of the mat (head and feet)")
        moved = breath_share * min(head, feet)  # the same load leaves one half, reaches the other
        breath = [moved * v / head if i % self.cols < half else -moved * v / feet
                  for i, v in enumerate(values)]  # fmt: skip
        with self._lock:
            t = self._now(at)
            rng = random.Random(f"foreign-{self.seed}-{self._segment}")
            self._breathing = True
            self._set(Infant.random(rng, posture="supine", mat_cm=self.mat_cm()), t)
            self._foreign = (values, breath, label)

    def stop_breathing(self, *, at: float | None = None) -> None:
        """Apnea: breathing and every movement stop (the body stays where it is)."""
        with self._lock:
            t = self._now(at)
            if not self._breathing:
                return
            pose = self._pose_at(t)
            self._frozen_b = self._breath_signal(t)
            self._phase = self._phase_of(t)
            self._breathing = False
            self._set(pose, t, keep_phase=True)

    def breathe(self, rate: float | None = None, *, at: float | None = None) -> None:
        """Breathing (re)starts, optionally at a new rate (breaths/min)."""
        if rate is not None and not 1.0 <= float(rate) <= 120.0:
            raise ValueError(f"breathing rate must be 1..120 /min, got {rate}")
        with self._lock:
            t = self._now(at)
            pose = self._pose_at(t)
            if self._breathing:
                self._phase = self._phase_of(t)
            self._breathing = True
            if pose is not None and rate is not None:
                pose = replace(pose, breath_rate=float(rate))
            self._set(pose, t, keep_phase=True)

    # -- rendering -------------------------------------------------------------------

    def render(self, t: float) -> list[float]:
        """Noise-free cell values (counts, before quantisation and dead cells)."""
        with self._lock:
            grid = list(self.offsets)
            pose_index, pose = self._pose_index_at(t)
            if pose is None:
                return grid
            load, breath = self._footprint(pose_index, pose)
            b = self._breath_signal(t)
            for i, (lv, bv) in enumerate(zip(load, breath, strict=True)):
                grid[i] += lv + b * bv
            return grid

    def frame_at(self, t: float) -> bytes:
        """The cells the mat reports at time ``t``: noisy, 8-bit, dead cells at 0."""
        grid = self.render(t)
        k = round(t * self.fps)
        rng = random.Random(self.seed * 1_000_003 + k)
        gauss, sigma = rng.gauss, self.noise
        out = bytearray(len(grid))
        for i, v in enumerate(grid):
            q = int(v + gauss(0.0, sigma) + 0.5)
            out[i] = 0 if q < 0 else 255 if q > 255 else q
        for i in self.dead:
            out[i] = 0
        return bytes(out)

    def pose_at(self, t: float) -> Infant | None:
        """The child's pose at ``t`` including restless shifts, or None if the cot is empty."""
        with self._lock:
            return self._pose_at(t)

    # -- internals -------------------------------------------------------------------

    def _now(self, at: float | None) -> float:
        return self.clock() if at is None else at

    def _set(self, infant: Infant | None, t: float, *, keep_phase: bool = False) -> None:
        """Start a new segment at ``t`` with this pose (restless shifts restart from it)."""
        if not keep_phase:
            self._phase = random.Random(f"phase-{self.seed}-{self._segment}").uniform(
                0, 2 * math.pi
            )
        self._phase_t = t
        self._infant = infant
        self._segment += 1
        self._segment_t = t
        self._events = []
        self._times = []
        self._event_rng = random.Random(f"restless-{self.seed}-{self._segment}")
        self._render_cache = {}

    def _pose_index_at(self, t: float) -> tuple[int, Infant | None]:
        infant = self._infant
        if infant is None:
            return 0, None
        if not self._breathing or not self.restless_every_s:
            return 0, infant
        # Extend the (seeded) schedule of small shifts up to t; each entry keeps the
        # pose after it, so looking one up costs a bisection however long the run.
        events = self._events
        while not events or events[-1][0] <= t:
            when, x, y, heading = (
                events[-1]
                if events
                else (self._segment_t, infant.x_cm, infant.y_cm, infant.heading_deg)
            )
            rng = self._event_rng
            length, width = self.mat_cm()
            events.append(
                (
                    when + rng.expovariate(1.0 / self.restless_every_s),
                    min(max(x + rng.gauss(0.0, 0.8), 10.0), length - 10.0),
                    min(max(y + rng.gauss(0.0, 0.8), 8.0), width - 8.0),
                    heading + rng.gauss(0.0, 2.0),
                )
            )
        index = bisect.bisect_right(self._event_times(), t)
        if index == 0:
            return 0, infant
        _, x, y, heading = events[index - 1]
        return index, replace(infant, x_cm=x, y_cm=y, heading_deg=heading % 360.0)

    def _event_times(self) -> list[float]:
        if len(self._times) != len(self._events):
            self._times = [e[0] for e in self._events]
        return self._times

    def _pose_at(self, t: float) -> Infant | None:
        return self._pose_index_at(t)[1]

    def _footprint(self, index: int, pose: Infant) -> tuple[list[float], list[float]]:
        if self._foreign is not None:
            return self._foreign[0], self._foreign[1]
        cached = self._render_cache.get(index)
        if cached is None:
            cached = pose.render(self.rows, self.cols, self.cell_cm, self.counts_per_kg)
            if len(self._render_cache) > 4:
                self._render_cache.clear()
            self._render_cache[index] = cached
        return cached

    def _phase_of(self, t: float) -> float:
        infant = self._infant
        if infant is None or not self._breathing:
            return self._phase
        f = infant.breath_rate / 60.0
        w = 2 * math.pi / _SWAY_PERIOD_S
        sway = RATE_SWAY / w * (math.cos(w * self._phase_t) - math.cos(w * t))
        return self._phase + 2 * math.pi * f * ((t - self._phase_t) + sway)

    def _breath_signal(self, t: float) -> float:
        """-1..1-ish: inspiration is a little quicker than expiration (second harmonic)."""
        if self._infant is None:
            return 0.0
        if not self._breathing:
            return self._frozen_b
        phi = self._phase_of(t)
        return math.sin(phi) + 0.25 * math.sin(2 * phi)


def random_frame(posture: str, seed: int, *, rows: int = 16, cols: int = 32) -> bytes:
    """One labelled training frame: a random child (or none) in ``posture``, from ``seed``."""
    rng = random.Random(f"sample-{seed}")
    scene = MatScene(
        seed=seed, rows=rows, cols=cols, dead_cells=rng.randrange(4), clock=lambda: 0.0
    )
    if posture != "empty":
        if posture not in BODY_POSTURES:
            raise ValueError(f"posture must be 'empty' or one of {BODY_POSTURES}, got {posture!r}")
        infant = Infant.random(rng, posture=posture, mat_cm=scene.mat_cm())
        scene.lie_down(infant, at=0.0)
    return scene.frame_at(rng.uniform(0.0, 60.0))


class MatModel(EmulatedSerialDevice):
    """The emulated mat on a pty: streams :class:`MatScene` frames at ``fps``.

    Scene controls (``lie_down``, ``lay``, ``roll_to``, ``leave``, ``stop_breathing``,
    ``breathe``, ``move_to``) act now; line faults: :meth:`inject_garbage`,
    :meth:`send_bad_crc`, :meth:`drop_frames`, :meth:`unplug` / :meth:`plug`
    (plugging back powers the mat up again: its sequence restarts at 0).
    ``start()`` (or ``with``) begins streaming.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        rows: int = 16,
        cols: int = 32,
        fps: float = 10.0,
        infant: Infant | None = None,
        clock: Callable[[], float] = time.monotonic,
        **scene: object,
    ) -> None:
        super().__init__(period_s=1.0 / fps, name="motion-mat")
        self.scene = MatScene(
            seed=seed,
            rows=rows,
            cols=cols,
            fps=fps,
            clock=clock,
            **scene,  # type: ignore[arg-type]
        )
        if infant is not None:
            self.scene.lie_down(infant)
        self._garbage_rng = random.Random(f"garbage-{seed}")
        self._flock = threading.Lock()
        self.seq = 0
        """Sequence number of the next frame."""
        self.frames_sent = 0
        self._bad_crc = 0
        self.last_cells: bytes | None = None

    # -- scene controls ------------------------------------------------------------------

    @property
    def posture(self) -> str:
        return self.scene.posture

    def lie_down(
        self, infant: Infant | Posture | None = None, *, age_months: float | None = None
    ) -> Infant:
        return self.scene.lie_down(infant, age_months=age_months)

    def roll_to(self, posture: Posture) -> None:
        self.scene.roll_to(posture)

    def move_to(self, x_cm: float, y_cm: float, heading_deg: float | None = None) -> None:
        self.scene.move_to(x_cm, y_cm, heading_deg)

    def leave(self) -> None:
        self.scene.leave()

    def lay(self, load: Sequence[float], *, label: str = "foreign") -> None:
        """A body drawn elsewhere (another generator, a recording): see :meth:`MatScene.lay`."""
        self.scene.lay(load, label=label)

    def stop_breathing(self) -> None:
        self.scene.stop_breathing()

    def breathe(self, rate: float | None = None) -> None:
        self.scene.breathe(rate)

    # -- line faults ---------------------------------------------------------------------

    def inject_garbage(self, n_bytes: int = 64) -> bytes:
        """Send ``n_bytes`` of line noise now, between frames; returns them."""
        with self._flock:
            data = bytes(self._garbage_rng.randrange(256) for _ in range(int(n_bytes)))
            self.write(data)
        return data

    def send_bad_crc(self, n: int = 1) -> None:
        """The next ``n`` frames go out with a corrupted CRC."""
        with self._flock:
            self._bad_crc += int(n)

    def drop_frames(self, n: int = 1) -> None:
        """Lose the next ``n`` frames (the receiver sees a sequence gap of ``n``)."""
        with self._flock:
            self.seq = (self.seq + int(n)) & 0xFFFF

    def plug(self) -> None:
        with self._flock:
            self.seq = 0
        super().plug()

    # -- streaming -----------------------------------------------------------------------

    def tick(self) -> None:
        cells = self.scene.frame_at(self.scene.clock())
        with self._flock:
            frame = bytearray(encode(self.seq, self.scene.rows, self.scene.cols, cells))
            if self._bad_crc:
                self._bad_crc -= 1
                frame[-1] ^= 0x5A
            self.seq = (self.seq + 1) & 0xFFFF
            if self.write(bytes(frame)) == len(frame):
                self.frames_sent += 1
                self.last_cells = cells
