"""On-device inference: TFLite models through the LiteRT interpreter, checked against their cards.

One wrapper for every model (:class:`Model`) plus the two faces the rules use:

- :class:`PostureModel` -- ``classify(frame) -> (label, probability)`` for a
  body-motion mat frame;
- :class:`AnomalyModel` -- ``assess(window) -> (score, tests)``,
  ``score(window) -> float`` and ``is_anomalous(window) -> bool`` for a
  window of a scalar series.

A model is two files: ``<name>.tflite`` and its ``card.json`` (shapes, dtypes
and quantisation of the input and output tensors, the file's sha256, labels,
preprocessing, thresholds).  :meth:`Model.load` refuses a model whose file is
missing, unreadable by the interpreter, not the file the card describes, or
whose tensors differ from the card, with a :class:`ModelError` naming what is
wrong: the daemon reports that as a fault and its rules fall back.

The interpreter comes from ``ai_edge_litert`` (LiteRT; without the package's preload of
``libLiteRt.so``, which it does not use: :func:`_interpreter_class`), or ``tflite_runtime``
where only that is installed.  numpy and the interpreter are imported with
this module, which the daemon imports only when a model is configured.
Each model owns one interpreter; :meth:`Model.predict` holds a lock around
set-input / invoke / get-output, so any thread may call it (the daemon calls
it from a worker thread, off the event loop).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from drivers.motion_mat import MatFrame
from edge.inference.card import ModelError, packaged_model, read_card
from edge.order_statistics import median_rows

LITERT_PACKAGE = "ai_edge_litert"


def _interpreter_class() -> Any:
    """LiteRT's ``Interpreter`` (the maintained successor of tflite-runtime's), or
    tflite-runtime's where only that is installed.

    Imported without running ``ai_edge_litert/__init__.py``, whose one act on Linux is to
    load ``libLiteRt.so`` into the process (``RTLD_GLOBAL``): the LiteRt* C API of the
    package's compiled-model and accelerator interfaces, 8 MB of library of which its
    start touches 1.5 MB.  The interpreter lives in ``libpywrap_litert_common.so``, which
    neither needs nor shares a symbol with it (``tests/edge/inference/test_litert_import.py``
    checks every model output bit for bit against a run after the package's own start).
    The package is registered from its spec, unexecuted, so its submodules import as
    usual; should a release's interpreter need that start after all, it is run and the
    import tried again.
    """
    if LITERT_PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(LITERT_PACKAGE)
        if spec is None or spec.submodule_search_locations is None:
            from tflite_runtime.interpreter import (  # type: ignore[import-not-found,unused-ignore]
                Interpreter,
            )

            return Interpreter
        sys.modules[LITERT_PACKAGE] = importlib.util.module_from_spec(spec)
        try:
            from ai_edge_litert.interpreter import (  # type: ignore[import-untyped]
                Interpreter,
            )

            return Interpreter
        except ImportError:  # pragma: no cover - a release that needs its package's start
            for name in [n for n in sys.modules if n.partition(".")[0] == LITERT_PACKAGE]:
                del sys.modules[name]
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter


_Interpreter = _interpreter_class()

__all__ = [
    "ANOMALY_TESTS",
    "AnomalyModel",
    "Model",
    "ModelError",
    "PostureModel",
    "anomaly_tests",
    "normalise_window",
    "packaged_model",
]

_QUANT_RTOL = 1e-6

XNNPACK_INFO = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
"""The line LiteRT's C++ runtime prints on stderr when it makes its first interpreter.
No setting silences it (``TF_CPP_MIN_LOG_LEVEL`` does not reach TFLite's own logger)."""
_fd2_lock = threading.Lock()


@contextlib.contextmanager
def _without_xnnpack_info() -> Iterator[None]:
    """Make an interpreter with :data:`XNNPACK_INFO` kept off stderr, and nothing else.

    File descriptor 2 points at a temporary file meanwhile; afterwards every
    other byte written there (an error from the runtime, another thread's
    warning) is copied to the real stderr.  Without a usable fd 2, a no-op.
    """
    with _fd2_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield
            return
        try:
            with tempfile.TemporaryFile() as capture:
                os.dup2(capture.fileno(), 2)
                try:
                    yield
                finally:
                    with contextlib.suppress(OSError, ValueError, AttributeError):
                        sys.stderr.flush()
                    os.dup2(saved, 2)
                    capture.seek(0)
                    kept = b"".join(
                        line for line in capture.read().splitlines(keepends=True)
                        if line.rstrip(b"\r\n") != XNNPACK_INFO
                    )
                    while kept:
                        kept = kept[os.write(2, kept) :]
        finally:
            os.close(saved)


class Model:
    """One TFLite model and its card; :meth:`predict` maps float input to float output."""

    def __init__(self, interpreter: Any, card: dict[str, Any], path: Path) -> None:
        self._interp = interpreter
        self.card = card
        self.path = path
        self._lock = threading.Lock()
        (self._in,) = interpreter.get_input_details()
        (self._out,) = interpreter.get_output_details()
        self.input_shape: tuple[int, ...] = tuple(int(v) for v in self._in["shape"])
        self.output_shape: tuple[int, ...] = tuple(int(v) for v in self._out["shape"])
        self._in_dtype = np.dtype(self._in["dtype"])
        self._in_scale, self._in_zero = (float(v) for v in self._in["quantization"])
        self._out_scale, self._out_zero = (float(v) for v in self._out["quantization"])
        info = np.iinfo(self._in_dtype) if self._in_dtype.kind in "iu" else None
        self._in_range = (info.min, info.max) if info else None
        self._closed = False

    @classmethod
    def load(cls, tflite_path: str | Path, card_path: str | Path | None = None) -> Model:
        """Open a model and check it against its card (default: ``card.json`` beside it).

        Raises :class:`ModelError` naming the problem: a missing or unreadable
        file, a card that is not valid JSON, a sha256 that differs from the
        card's, a file the interpreter rejects, or input / output shapes,
        dtypes or quantisation parameters that differ from the card's.
        """
        path = Path(tflite_path)
        card_file = Path(card_path) if card_path is not None else path.with_name("card.json")
        card = read_card(card_file)
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"model file missing: {path}") from None
        except OSError as e:
            raise ModelError(f"model file unreadable: {path}: {e}") from None
        digest = hashlib.sha256(content).hexdigest()
        if card.get("sha256") != digest:
            raise ModelError(
                f"hash mismatch: {path} has sha256 {digest}, card {card_file} expects "
                f"{card.get('sha256')}"
            )
        try:
            with _without_xnnpack_info():
                interp = _Interpreter(model_content=content, num_threads=1)
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:  # what the interpreter raises for a bad model
            raise ModelError(
                f"corrupt model file: {path}: the interpreter refused it: {e}"
            ) from None
        model = cls(interp, card, path)
        model._check_card(card_file)
        return model

    def _check_card(self, card_file: Path) -> None:
        for role, details in (("input", self._in), ("output", self._out)):
            want = self.card.get(role)
            if not isinstance(want, dict):
                raise ModelError(f"card {card_file} has no '{role}' section")
            shape = [int(v) for v in details["shape"]]
            dtype = np.dtype(details["dtype"]).name
            scale, zero = (float(v) for v in details["quantization"])
            problems = []
            if want.get("shape") != shape:
                problems.append(f"shape {shape} (card: {want.get('shape')})")
            if want.get("dtype") != dtype:
                problems.append(f"dtype {dtype} (card: {want.get('dtype')})")
            wscale, wzero = want.get("scale"), want.get("zero_point")
            if not isinstance(wscale, int | float) or not math.isclose(
                scale, float(wscale), rel_tol=_QUANT_RTOL
            ):
                problems.append(f"quantisation scale {scale!r} (card: {wscale!r})")
            if wzero != zero:
                problems.append(f"quantisation zero point {int(zero)} (card: {wzero!r})")
            if problems:
                raise ModelError(
                    f"{self.path.name} does not match its card {card_file}: {role} "
                    + ", ".join(problems)
                )

    def predict(self, x: Any) -> np.ndarray:
        """Float input of the model's input shape (a missing batch axis is added) -> float output.

        Quantises with the input tensor's scale / zero point (saturating) and
        dequantises the output.  Thread-safe.
        """
        arr = np.asarray(x, dtype=np.float32)
        if arr.shape != self.input_shape:
            if arr.size != math.prod(self.input_shape):
                raise ValueError(f"input of shape {arr.shape} does not fit {self.input_shape}")
            arr = arr.reshape(self.input_shape)
        if self._in_range is not None:
            q = np.rint(arr / self._in_scale) + self._in_zero
            tensor = np.clip(q, *self._in_range).astype(self._in_dtype)
        else:
            tensor = arr.astype(self._in_dtype)
        with self._lock:
            if self._closed:
                raise ModelError(f"{self.path.name} is closed")
            self._interp.set_tensor(self._in["index"], tensor)
            self._interp.invoke()
            raw = self._interp.get_tensor(self._out["index"]).copy()
        out: np.ndarray = raw.astype(np.float32)
        if self._out_scale:
            out = (out - np.float32(self._out_zero)) * np.float32(self._out_scale)
        return out

    def close(self) -> None:
        """Drop the interpreter (idempotent)."""
        with self._lock:
            self._closed = True
            self._interp = None

    def __enter__(self) -> Model:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _require(card: dict[str, Any], key: str, path: Path) -> Any:
    if key not in card:
        raise ModelError(f"card of {path.name} lacks '{key}'")
    return card[key]


class PostureModel:
    """The posture classifier: a mat frame (and the mat's empty level) -> ``(label, probability)``.

    Cards from v2 on describe the canonical preprocessing
    (:mod:`edge.inference.posture_input`; perhaps a ``compress`` step) and a
    ``decision`` rule: calibrated probabilities (temperature), ``prone`` from
    ``prone_threshold``, any other label only from ``answer_threshold``; below it the
    answer is ``unknown`` (:data:`UNKNOWN`), which the nap rule never reads as safe.  A v1 card
    (raw counts / ``divide_by``) loads as before and never abstains.
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        self.labels: tuple[str, ...] = tuple(_require(model.card, "labels", model.path))
        pre = _require(model.card, "preprocessing", model.path)
        self.canonical = bool(pre.get("canonical"))
        self.compress = str(pre.get("compress", "none"))
        from edge.inference.posture_input import COMPRESSIONS

        if self.compress not in COMPRESSIONS:
            raise ModelError(
                f"{model.path.name}: card's preprocessing.compress {self.compress!r} is not one "
                f"of {', '.join(COMPRESSIONS)}"
            )
        self.divisor = float(pre.get("divide_by", 1.0))
        decision = model.card.get("decision") or {}
        try:
            self.temperature = float(decision.get("temperature", 1.0))
            self.prone_threshold = float(decision.get("prone_threshold", 2.0))
            self.answer_threshold = float(decision.get("answer_threshold", 0.0))
        except (TypeError, ValueError):
            raise ModelError(
                f"{model.path.name}: card's decision thresholds are not numbers"
            ) from None
        if not self.temperature > 0:
            raise ModelError(f"{model.path.name}: card's temperature must be positive")
        if model.output_shape[-1] != len(self.labels):
            raise ModelError(
                f"{model.path.name}: {model.output_shape[-1]} outputs but "
                f"{len(self.labels)} labels in its card"
            )
        self.rows, self.cols = model.input_shape[1], model.input_shape[2]
        self._prone = self.labels.index("prone") if "prone" in self.labels else -1

    @classmethod
    def load(
        cls, tflite_path: str | Path | None = None, card_path: str | Path | None = None
    ) -> PostureModel:
        """Load (default: the packaged ``models/posture`` files)."""
        if tflite_path is None:
            tflite_path, card_path = packaged_model("posture")
        return cls(Model.load(tflite_path, card_path))

    def probabilities(
        self, frame: MatFrame, empty_level: Sequence[float] | np.ndarray | None = None
    ) -> dict[str, float]:
        """Calibrated probability of each label for one frame.

        ``empty_level``: the mat's calibrated empty level per cell, row-major
        (``MatCalibration.level``); None before the mat has calibrated.
        """
        if (frame.rows, frame.cols) != (self.rows, self.cols):
            raise ValueError(
                f"posture model needs {self.rows} x {self.cols} frames, got "
                f"{frame.rows} x {frame.cols}"
            )
        if self.canonical:
            from edge.inference.posture_input import canonical

            x = canonical(
                frame.cells, empty_level, frame.rows, frame.cols, compress=self.compress
            )
            # Which end is the head is the model's to find: ask it both ways round and
            # average, so a child turned by 180 degrees gets exactly the same answer.
            p = (self.model.predict(x)[0] + self.model.predict(x[::-1, ::-1])[0]) / 2.0
            p = p.astype(np.float64)
        else:
            x = np.frombuffer(frame.cells, dtype=np.uint8).astype(np.float32) / self.divisor
            p = self.model.predict(x)[0].astype(np.float64)
        if self.temperature != 1.0:
            z = np.log(np.maximum(p, 1.0 / 512)) / self.temperature
            e = np.exp(z - z.max())
            p = e / e.sum()
        return {label: float(v) for label, v in zip(self.labels, p, strict=True)}

    def classify(
        self, frame: MatFrame, empty_level: Sequence[float] | np.ndarray | None = None
    ) -> tuple[str, float]:
        """The card's decision: ``(label, its probability)``, or ``("unknown", best p)``."""
        probs = self.probabilities(frame, empty_level)
        if self._prone >= 0 and probs["prone"] >= self.prone_threshold:
            return "prone", probs["prone"]
        label = max(probs, key=probs.__getitem__)
        if probs[label] < self.answer_threshold:
            return UNKNOWN, probs[label]
        return label, probs[label]

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> PostureModel:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


UNKNOWN = "unknown"
"""What :meth:`PostureModel.classify` says when the model is not confident enough."""


def normalise_window(window: Sequence[float] | np.ndarray, scale: float, clip: float) -> np.ndarray:
    """An anomaly window as the model sees it: minus its mean, / scale, clipped to +-clip."""
    w = np.asarray(window, dtype=np.float64)
    w = w - w.mean(axis=-1, keepdims=True)
    out: np.ndarray = np.clip(w / scale, -clip, clip).astype(np.float32)
    return out


ANOMALY_TESTS: tuple[str, ...] = ("energy", "quiet", "denoised", "peak")
"""The anomaly score's tests; each has its own threshold per series (card: ``thresholds``).

- ``energy``: the plain reconstruction's residual is far *above* normal in
  some quarter of the window -- a shape the autoencoder has not seen;
- ``quiet``: it is far *below* normal in some quarter -- the series lost its
  noise (a stuck sensor);
- ``denoised``: the residual against the denoising head (the normal series it
  believes lies under any fault) is far above normal -- a drift;
- ``peak``: a burst of residual energy over a few consecutive readings, against
  the window's own residual noise -- a spike or a step.
"""


def anomaly_tests(
    x: np.ndarray,
    output: np.ndarray,
    *,
    segments: int,
    reference_mse: float,
    denoised_reference_mse: float | None,
    peak_width: int,
    noise_floor: float,
) -> dict[str, np.ndarray]:
    """Every test of :data:`ANOMALY_TESTS` for windows ``x`` and the model's ``output`` (last axis).

    ``x``: normalised windows (``... x n``); ``output``: the model's ``... x n``
    (one head: the plain reconstruction) or ``... x 2n`` (then the denoised
    reconstruction follows).  With ``m_i`` / ``d_i`` the mean squared residual of
    each of ``segments`` equal parts against the plain / denoised head:

    - ``energy = ln(max m_i / reference_mse)``;
    - ``quiet = ln(reference_mse / min m_i)``;
    - ``denoised = ln(max d_i / denoised_reference_mse)`` (absent for one head);
    - ``peak = ln(max over any peak_width consecutive readings of the sum of
      squared plain residuals / s^2)``, ``s = max(1.4826 * MAD(residual),
      noise_floor)``: a robust estimate of the window's own residual noise, so
      a burst stands out in a calm window and a rainy, rough one needs more.
    """
    xf = np.asarray(x, dtype=np.float64)
    out = np.asarray(output, dtype=np.float64)
    n = xf.shape[-1]
    r = xf - out[..., :n]
    m = np.mean(r.reshape(*r.shape[:-1], segments, n // segments) ** 2, axis=-1) + 1e-9
    tests = {
        "energy": np.log(m.max(axis=-1) / reference_mse),
        "quiet": np.log(reference_mse / m.min(axis=-1)),
    }
    if out.shape[-1] >= 2 * n and denoised_reference_mse is not None:
        rd = xf - out[..., n : 2 * n]
        d = np.mean(rd.reshape(*rd.shape[:-1], segments, n // segments) ** 2, axis=-1) + 1e-9
        tests["denoised"] = np.log(d.max(axis=-1) / denoised_reference_mse)
    dev = np.abs(r - median_rows(r)[..., None])
    s = np.maximum(1.4826 * median_rows(dev), noise_floor)
    c = np.cumsum(np.concatenate([np.zeros((*r.shape[:-1], 1)), r**2], axis=-1), axis=-1)
    burst = (c[..., peak_width:] - c[..., :-peak_width]).max(axis=-1)
    tests["peak"] = np.log(burst / s**2 + 1e-9)
    return tests


class AnomalyModel:
    """The anomaly detector for one series (``water`` or ``mat_load``) of its card.

    The model has two heads (output ``2 x window``): a plain autoencoder
    reconstruction and a denoising one; the score combines the tests of
    :data:`ANOMALY_TESTS` with the per-series ``thresholds`` of the card (a
    test without a threshold is not used for that series).
    """

    threshold = 0.0
    """The combined score's threshold: every test is measured against its own."""

    def __init__(self, model: Model, series: str) -> None:
        self.model = model
        card = model.card
        table = _require(card, "series", model.path)
        if series not in table:
            raise ModelError(
                f"{model.path.name}: no calibration for series {series!r} (card has "
                f"{sorted(table)})"
            )
        self.series = series
        cal = table[series]
        self.window = int(_require(card, "window", model.path))
        self.clip = float(_require(card, "clip", model.path))
        self.segments = int(_require(card, "segments", model.path))
        self.heads = int(card.get("heads", 1))
        try:
            self.peak_width = int(card["peak_width"])
            self.noise_floor = float(card["noise_floor"])
            self.scale = float(cal["scale"])
            self.code = float(cal["code"])
            self.reference_mse = float(cal["reference_mse"])
            self.denoised_reference_mse = (
                float(cal["denoised_reference_mse"]) if self.heads == 2 else None
            )
            self.thresholds = {
                k: float(v) for k, v in dict(cal["thresholds"]).items() if v is not None
            }
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(
                f"{model.path.name}: the card's calibration for {series!r} is incomplete "
                f"or malformed ({type(e).__name__}: {e}); cards before v2.1 have no "
                "per-test thresholds"
            ) from e
        unknown = sorted(set(self.thresholds) - set(ANOMALY_TESTS))
        if unknown or not self.thresholds or (self.heads == 1 and "denoised" in self.thresholds):
            raise ModelError(
                f"{model.path.name}: thresholds for {series!r} name tests "
                f"{sorted(self.thresholds)}; expected some of {list(ANOMALY_TESTS)}"
                + (" (no denoised head)" if self.heads == 1 else "")
            )
        if (
            model.input_shape[-1] != self.window + 1
            or model.output_shape[-1] != self.heads * self.window
        ):
            raise ModelError(
                f"{model.path.name}: tensors {model.input_shape} -> {model.output_shape} "
                f"do not fit the card's window of {self.window} (+ the series code) "
                f"x {self.heads} head(s)"
            )

    @classmethod
    def load(
        cls,
        tflite_path: str | Path | None = None,
        card_path: str | Path | None = None,
        *,
        series: str = "water",
    ) -> AnomalyModel:
        """Load (default: the packaged ``models/anomaly`` files) for one series."""
        if tflite_path is None:
            tflite_path, card_path = packaged_model("anomaly")
        return cls(Model.load(tflite_path, card_path), series)

    def tests(self, window: Sequence[float]) -> dict[str, float]:
        """Every test's value for the last :attr:`window` readings (see :data:`ANOMALY_TESTS`)."""
        if len(window) != self.window:
            raise ValueError(f"anomaly window must hold {self.window} readings, got {len(window)}")
        x = normalise_window(window, self.scale, self.clip)
        out = self.model.predict(np.append(x, np.float32(self.code)))[0]
        values = anomaly_tests(
            x,
            out,
            segments=self.segments,
            reference_mse=self.reference_mse,
            denoised_reference_mse=self.denoised_reference_mse,
            peak_width=self.peak_width,
            noise_floor=self.noise_floor,
        )
        return {k: float(v) for k, v in values.items()}

    def assess(self, window: Sequence[float]) -> tuple[float, list[str]]:
        """``(score, tests)``: how far (natural-log units) the strongest test is past its own
        threshold -- anomalous when above 0 -- and the tests past their thresholds, in the
        order of :data:`ANOMALY_TESTS`."""
        values = self.tests(window)
        margins = {k: values[k] - t for k, t in self.thresholds.items()}
        passed = [k for k in ANOMALY_TESTS if margins.get(k, 0.0) > 0.0]
        return max(margins.values()), passed

    def score(self, window: Sequence[float]) -> float:
        """Anomaly score of the last :attr:`window` readings: above 0 is anomalous."""
        return self.assess(window)[0]

    def is_anomalous(self, window: Sequence[float]) -> bool:
        """Whether any test passes its threshold (calibrated at the card's false-positive rate)."""
        return self.score(window) > self.threshold

    def close(self) -> None:
        self.model.close()
