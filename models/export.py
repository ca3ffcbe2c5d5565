"""Full-integer int8 conversion and ``card.json`` writing, shared by the training scripts.

Imports TensorFlow inside :func:`to_int8_tflite` only (the ``train`` extra).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

CARD_SCHEMA = 1


def to_int8_tflite(model: Any, representative: Iterable[np.ndarray]) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with int8 weights, activations and I/O.

    ``representative`` yields single float32 input batches (shape ``(1, ...)``)
    used to calibrate the activation ranges.
    """
    import tensorflow as tf

    samples = [np.asarray(x, dtype=np.float32) for x in representative]
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def gen() -> Any:
        for x in samples:
            yield [x]

    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def tensor_details(tflite: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input, output) as the card records them: shape, dtype, scale, zero point."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_content=tflite)
    interp.allocate_tensors()

    def one(d: dict[str, Any]) -> dict[str, Any]:
        scale, zero = d["quantization"]
        return {
            "shape": [int(v) for v in d["shape"]],
            "dtype": np.dtype(d["dtype"]).name,
            "scale": float(scale),
            "zero_point": int(zero),
        }

    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    return one(inp), one(out)


def tflite_runner(tflite: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """A float -> float function through the int8 model (training-time evaluation)."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_content=tflite)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    si, zi = inp["quantization"]
    so, zo = out["quantization"]

    def run(x: np.ndarray) -> np.ndarray:
        res = []
        for row in np.asarray(x, dtype=np.float32):
            q = np.clip(np.rint(row / si) + zi, -128, 127).astype(np.int8)
            interp.set_tensor(inp["index"], q[None])
            interp.invoke()
            res.append((interp.get_tensor(out["index"])[0].astype(np.float32) - zo) * so)
        return np.stack(res)

    return run


def write_model(folder: Path, name: str, tflite: bytes, card: dict[str, Any]) -> dict[str, Any]:
    """Write ``<name>.tflite`` and ``card.json`` (with hash, size and tensor details)."""
    inp, out = tensor_details(tflite)
    full = {
        "schema": CARD_SCHEMA,
        "name": name,
        "file": f"{name}.tflite",
        "sha256": hashlib.sha256(tflite).hexdigest(),
        "size_bytes": len(tflite),
        "input": inp,
        "output": out,
        **card,
    }
    (folder / f"{name}.tflite").write_bytes(tflite)
    (folder / "card.json").write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n")
    return full
