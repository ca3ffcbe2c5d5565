"""``edge mat record``: labelled frames from a real mat, so real data can replace generated data.

Every posture figure so far comes from generated frames (issue 15).  This tool
saves what a nursery's own mat reads under a child whose posture staff can see,
in the form ``models/`` evaluates on (docs/recording.md says how to record and
what consent and privacy rules apply).

One run, for one cot's mat:

1. the mat is opened as the daemon opens it (:func:`edge.devices.factory.open_mat`);
2. **empty-cot calibration**, as the daemon learns it: frames go through
   :class:`edge.nursery.mat.MatSignals`, which starts from a rough baseline
   and learns the per-cell empty level (:meth:`MatCalibration.from_empty`)
   only from 5 s of frames that read empty.  If it never does, or someone
   lies down before the calibration window ends, the run is refused: a
   calibration with a child on the mat would make every later frame wrong.
   A later run into the same folder reuses the file's calibration (the child
   can stay in the cot while staff turn them and record the next posture); a
   new calibration (another day, another mattress) goes into a new folder;
3. **labelled frames** for ``--seconds``: frames whose load contradicts the
   label (a posture on a cot that reads empty, ``empty`` on a loaded one) are
   dropped and counted; if more than half are, nothing is saved.

Output, in ``--out``: ``<mat>.npz`` (appended to on every run, written
atomically) and ``<mat>.json``, a small manifest.  The file names the device
and the cot, never a child: ``sensors.<mat>.child`` is not read here.

Arrays in the .npz: ``frames`` uint8 (n, rows, cols) raw counts as the model
gets them; ``labels`` str (n,); ``timestamps`` float64 (n,) Unix seconds;
``seq`` int32 (n,) the mat's frame numbers; ``load_kg`` float32 (n,);
``session`` int32 (n,) which run took each frame; ``empty_level`` and
``empty_noise`` float32 (rows, cols) and ``dead`` bool (rows, cols), the
empty-cot calibration; scalars ``rows``, ``cols``, ``cell_cm``,
``counts_per_kg``, ``calibrated_at``, ``format``; strings ``device``,
``site``, ``cot``, ``mat``.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from drivers.errors import DriverError
from drivers.motion_mat import MatFrame
from edge.config import Config, MatSensorConfig
from edge.devices.factory import open_mat
from edge.errors import EdgeError
from edge.files import write_atomic
from edge.nursery.mat import (
    AUTO_CALIBRATION_FRAMES,
    OCCUPIED_OFF_KG,
    OCCUPIED_ON_KG,
    MatCalibration,
    MatSignals,
)

LABELS: tuple[str, ...] = ("empty", "supine", "prone", "left", "right")
"""The posture model's labels (models/posture/card.json), in its order."""
FORMAT = 1
READ_TIMEOUT_S = 3.0
"""A mat that sends no frame this long does not answer (it sends 10 a second)."""
MIN_CALIBRATION_S = 6.0
"""The daemon learns the empty mat from 5 s of empty frames; a second more for the start."""
MAX_DROPPED = 0.5

Ask = Callable[[str], Awaitable[None] | None]
"""Tells the person at the cot what to do and returns once they have done it."""


class RecordError(EdgeError, RuntimeError):
    """The recording is refused; the message says why and what to do (one line)."""


@dataclass
class Session:
    """What one run recorded."""

    label: str
    frames: list[MatFrame] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    dropped: int = 0
    started: float = 0.0


def mat_sensor(config: Config, name: str) -> MatSensorConfig:
    """The configured mat ``name`` (RecordError naming the mats there are)."""
    sensor = config.sensors.get(name)
    if not isinstance(sensor, MatSensorConfig):
        mats = [n for n, s in config.sensors.items() if isinstance(s, MatSensorConfig)]
        raise RecordError(
            f"--mat {name}: no mat sensor of that name in the config "
            f"(mats: {', '.join(mats) or 'none'})"
        )
    return sensor


def check_label(label: str) -> str:
    if label not in LABELS:
        raise RecordError(f"--label {label}: unknown; one of {', '.join(LABELS)}")
    return label


def paths(out: Path, mat: str) -> tuple[Path, Path]:
    """The data file and the manifest for one mat (the sensor's config key, made file-safe)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", mat)
    return out / f"{stem}.npz", out / f"{stem}.json"


class Recorder:
    """Reads one mat: the empty-cot calibration, then labelled frames."""

    def __init__(self, config: Config, mat: str, *, out: TextIO = sys.stdout) -> None:
        self.config = config
        self.name = mat
        self.sensor = mat_sensor(config, mat)
        self.out = out
        self.device = open_mat(self.sensor)
        self._last_seq: int | None = None

    def close(self) -> None:
        self.device.close()

    async def _read(self) -> MatFrame:
        try:
            frame = await self.device.read(timeout=READ_TIMEOUT_S)
        except DriverError as exc:
            raise RecordError(
                f"the mat of cot {self.sensor.cot} ({self.name}) does not answer: {exc}; "
                "is it plugged in and powered? (edge check shows it)"
            ) from None
        if not any(frame.cells):
            raise RecordError(
                f"the mat of cot {self.sensor.cot} ({self.name}) reads zero in every cell: "
                "the pressure grid has no power or its cable is cut"
            )
        return frame

    async def calibrate(self, seconds: float) -> MatCalibration:
        """Learn the empty mat the way the daemon does; RecordError if the cot was not empty."""
        signals = MatSignals()
        t0 = time.monotonic()
        heaviest_after = 0.0
        last_kg = 0.0
        while (t := time.monotonic()) - t0 < seconds:
            reading = signals.update(await self._read(), t)
            last_kg = reading.load_kg
            if signals.calibrated:
                heaviest_after = max(heaviest_after, reading.load_kg)
        if not signals.calibrated or signals.calibration is None:
            raise RecordError(
                f"cot {self.sensor.cot} was not empty during the calibration (it read "
                f"{last_kg:.1f} kg): take the child and anything heavy off the mattress, "
                "then run again"
            )
        if heaviest_after >= OCCUPIED_ON_KG or signals.occupancy.occupied:
            raise RecordError(
                f"cot {self.sensor.cot} was loaded ({heaviest_after:.1f} kg) before the "
                "calibration ended: keep the cot empty until the tool says so, then run again"
            )
        return signals.calibration

    async def record(self, label: str, seconds: float, calibration: MatCalibration) -> Session:
        """Frames for ``seconds``, each checked against the label by its load."""
        session = Session(label, started=time.time())
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            frame = await self._read()
            load = calibration.measure(frame).kg
            agrees = load < OCCUPIED_OFF_KG if label == "empty" else load >= OCCUPIED_ON_KG
            if not agrees:
                session.dropped += 1
                continue
            session.frames.append(frame)
            session.times.append(time.time())
            session.loads.append(load)
        total = len(session.frames) + session.dropped
        if total == 0 or session.dropped > MAX_DROPPED * total:
            what = "occupied" if label == "empty" else "empty"
            raise RecordError(
                f"cot {self.sensor.cot} read {what} in {session.dropped} of {total} frames, "
                f"which does not fit --label {label}: nothing saved"
            )
        return session


def _calibration_arrays(cal: MatCalibration) -> dict[str, np.ndarray]:
    shape = (cal.rows, cal.cols)
    dead = np.zeros(cal.rows * cal.cols, dtype=bool)
    dead[list(cal.dead)] = True
    return {
        "empty_level": np.asarray(cal.level, dtype=np.float32).reshape(shape),
        "empty_noise": np.asarray(cal.noise, dtype=np.float32).reshape(shape),
        "dead": dead.reshape(shape),
    }


def load_calibration(data: dict[str, Any]) -> MatCalibration:
    """The calibration kept in a recording (to record more frames against it)."""
    level = data["empty_level"]
    rows, cols = level.shape
    return MatCalibration(
        rows, cols, level.ravel().tolist(), data["empty_noise"].ravel().tolist(),
        dead=np.flatnonzero(data["dead"].ravel()).tolist(),
        counts_per_kg=float(data["counts_per_kg"]), cell_cm=float(data["cell_cm"]),
    )  # fmt: skip


def read_recording(path: Path) -> dict[str, Any]:
    """A recording's arrays (numpy's own loader; no pickled objects are accepted)."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def save(
    path: Path,
    manifest_path: Path,
    *,
    config: Config,
    mat: str,
    session: Session,
    calibration: MatCalibration,
    calibrated_at: float,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """Append ``session`` to the recording (a new one when ``previous`` is None); the manifest."""
    sensor = mat_sensor(config, mat)
    rows, cols = calibration.rows, calibration.cols
    frames = np.frombuffer(b"".join(f.cells for f in session.frames), dtype=np.uint8)
    n = len(session.frames)
    new = {
        "frames": frames.reshape(n, rows, cols),
        "labels": np.array([session.label] * n, dtype="<U8"),
        "timestamps": np.array(session.times, dtype=np.float64),
        "seq": np.array([f.seq for f in session.frames], dtype=np.int32),
        "load_kg": np.array(session.loads, dtype=np.float32),
    }
    number = 0 if previous is None else int(previous["session"].max()) + 1
    new["session"] = np.full(n, number, dtype=np.int32)
    if previous is not None:
        new = {k: np.concatenate([previous[k], v]) for k, v in new.items()}
    arrays: dict[str, Any] = {
        **new,
        **_calibration_arrays(calibration),
        "rows": np.int32(rows),
        "cols": np.int32(cols),
        "cell_cm": np.float32(calibration.cell_cm),
        "counts_per_kg": np.float32(calibration.counts_per_kg),
        "calibrated_at": np.float64(calibrated_at),
        "format": np.int32(FORMAT),
        "device": np.str_(config.device.id),
        "site": np.str_(config.device.site),
        "cot": np.str_(sensor.cot),
        "mat": np.str_(mat),
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
    labels = Counter(str(v) for v in arrays["labels"])
    sessions = []
    if manifest_path.exists():
        sessions = json.loads(manifest_path.read_text(encoding="utf-8")).get("sessions", [])
    sessions.append({
        "session": number,
        "label": session.label,
        "started": _iso(session.started),
        "frames": n,
        "dropped": session.dropped,
        "load_kg_median": round(float(np.median(session.loads)), 2) if n else None,
    })  # fmt: skip
    manifest = {
        "format": FORMAT,
        "file": path.name,
        "device": config.device.id,
        "site": config.device.site,
        "cot": sensor.cot,
        "mat": mat,
        "geometry": {"rows": rows, "cols": cols, "cell_cm": calibration.cell_cm},
        "calibrated_at": _iso(calibrated_at),
        "frames": int(arrays["frames"].shape[0]),
        "frames_by_label": {k: labels.get(k, 0) for k in LABELS},
        "sessions": sessions,
        "note": "labels as staff saw them; no child's name is stored (see docs/recording.md)",
    }
    write_atomic(
        manifest_path,
        (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8"),
    )
    return manifest


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


async def _console_ask(text: str) -> None:
    """Print the instruction; wait for Enter when a person is at the terminal."""
    print(text, flush=True)
    if sys.stdin.isatty():
        await asyncio.to_thread(input, "  press Enter when ready ")


async def run_record(
    config: Config,
    *,
    mat: str,
    label: str,
    seconds: float,
    out_dir: Path,
    calibrate_s: float = 10.0,
    ask: Ask = _console_ask,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """One recording run (see the module's docstring); the manifest, or RecordError."""
    check_label(label)
    sensor = mat_sensor(config, mat)
    if not (math.isfinite(seconds) and seconds > 0):
        raise RecordError(f"--seconds {seconds:g}: give a positive number of seconds")
    if calibrate_s < MIN_CALIBRATION_S:
        raise RecordError(
            f"--calibrate-seconds {calibrate_s:g}: at least {MIN_CALIBRATION_S:g} "
            f"(the daemon learns the empty mat from {AUTO_CALIBRATION_FRAMES} frames, 5 s)"
        )
    data_path, manifest_path = paths(out_dir, mat)
    previous = read_recording(data_path) if data_path.exists() else None
    if previous is not None:
        kept = (str(previous["device"]), str(previous["cot"]))
        if kept != (config.device.id, sensor.cot):
            raise RecordError(
                f"{data_path} holds device {kept[0]} cot {kept[1]}, not device "
                f"{config.device.id} cot {sensor.cot}: use another --out folder"
            )
    cot = sensor.cot
    recorder = Recorder(config, mat, out=out)
    try:
        if previous is None:
            await _maybe_await(ask(
                f"cot {cot}: take the child off; leave the mattress and sheet as they will "
                f"be used. Calibrating the empty mat for {calibrate_s:g} s."
            ))  # fmt: skip
            calibration = await recorder.calibrate(calibrate_s)
            calibrated_at = time.time()
            print(f"cot {cot}: empty mat calibrated", file=out, flush=True)
        else:
            calibration = load_calibration(previous)
            calibrated_at = float(previous["calibrated_at"])
            frame = await recorder._read()
            if not calibration.matches(frame):
                raise RecordError(
                    f"the mat now reads {frame.rows} x {frame.cols}, the recording in "
                    f"{data_path} {calibration.rows} x {calibration.cols}: another mat? "
                    "use another --out folder"
                )
        what = "leave the cot empty" if label == "empty" else f"lay the child {label}"
        await _maybe_await(ask(f"cot {cot}: {what}. Recording for {seconds:g} s."))
        session = await recorder.record(label, seconds, calibration)
    finally:
        recorder.close()
    manifest = save(
        data_path, manifest_path, config=config, mat=mat, session=session,
        calibration=calibration, calibrated_at=calibrated_at, previous=previous,
    )  # fmt: skip
    print(
        f"{data_path}: {len(session.frames)} {label} frame(s) added "
        f"({session.dropped} dropped); {manifest['frames']} in all: "
        + ", ".join(f"{k} {v}" for k, v in manifest["frames_by_label"].items()),
        file=out,
        flush=True,
    )
    return manifest


async def _maybe_await(result: object) -> None:
    if inspect.isawaitable(result):
        await result
