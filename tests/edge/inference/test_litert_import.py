"""LiteRT's interpreter without the package's preload of ``libLiteRt.so``.

``ai_edge_litert/__init__.py`` loads ``libLiteRt.so`` (8 MB; the LiteRt* C API of the
compiled-model and accelerator interfaces) into every process that imports any part of
the package; the classic ``Interpreter`` the daemon uses lives in
``libpywrap_litert_common.so`` and takes nothing from it.  ``edge.inference.runtime``
imports the interpreter without the package's start.  What would show that wrong: the
library still mapped, or any model output that differs, bit for bit, from the same
models run after the package's own start (the library loaded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import hashlib, json, sys
if sys.argv[1] == "package":
    import ai_edge_litert  # the package's own start: libLiteRt.so loaded
from drivers.motion_mat import MatFrame
from edge.inference.runtime import AnomalyModel, PostureModel
from edge.sim.mat_emulator import random_frame

posture = PostureModel.load()
digest = hashlib.sha256()
for seed in range(60):
    for label in posture.labels:
        frame = MatFrame(0, 16, 32, random_frame(label, 7_000_000 + seed))
        digest.update(posture.model.predict(
            __import__("numpy").frombuffer(frame.cells, dtype="uint8").astype("float32")
        ).tobytes())
        digest.update(json.dumps(posture.probabilities(frame)).encode())
for series in ("water", "mat_load"):
    model = AnomalyModel.load(series=series)
    for k in range(40):
        window = [50.0 + 0.37 * ((k * 11 + i * 7) % 17) - 0.02 * i for i in range(model.window)]
        digest.update(json.dumps(model.assess(window)).encode())
maps = open("/proc/self/maps").read()
print(json.dumps({
    "digest": digest.hexdigest(),
    "liblitert": "libLiteRt.so" in maps,
    "interpreter": "libpywrap_litert_common" in maps,
}))
"""


def _run(mode: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True,
        timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_the_interpreter_runs_without_libLiteRt_and_answers_the_same() -> None:
    ours = _run("runtime")
    package = _run("package")
    assert ours["interpreter"] and package["interpreter"]
    assert not ours["liblitert"]
    assert package["liblitert"]  # the other run did load it: the comparison means something
    assert ours["digest"] == package["digest"]
