"""Inference latency per model, and the daemon's resident memory with both models loaded.

    .venv/bin/python benchmarks/inference.py [--calls 2000]

* latency: median and p99 of ``PostureModel.classify(frame)`` and
  ``AnomalyModel.assess(window)`` -- the calls the rules make, quantisation and
  dequantisation included -- on the committed models through LiteRT;
* memory: a fresh Python process imports the daemon's modules
  (``edge.cli``, ``edge.daemon``, ``edge.inference.runtime``), loads both models and
  runs each once, then reports its VmRSS and VmHWM from ``/proc/self/status``
  (target: <= 60 MB RSS).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivers.motion_mat import MatFrame  # noqa: E402
from edge.inference.runtime import AnomalyModel, PostureModel  # noqa: E402
from edge.sim.mat_emulator import random_frame  # noqa: E402

RSS_PROBE = """
import json, sys
sys.path.insert(0, {root!r})
def status():
    out = {{}}
    for line in open('/proc/self/status'):
        k, _, v = line.partition(':')
        if k in ('VmRSS', 'VmHWM'):
            out[k] = int(v.split()[0]) / 1024
    return out
base = status()
import edge.cli, edge.daemon  # the daemon's modules
imported = status()
from drivers.motion_mat import MatFrame
from edge.inference.runtime import AnomalyModel, PostureModel
posture = PostureModel.load()
anomaly = AnomalyModel.load(series='water')
posture.classify(MatFrame(0, 16, 32, bytes(512)))
anomaly.score([50.0] * anomaly.window)
loaded = status()
print(json.dumps({{'python': base, 'daemon_imported': imported, 'models_loaded': loaded}}))
"""


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def latency(fn: object, args: list[object], calls: int) -> tuple[float, float]:
    times = []
    for i in range(calls):
        a = args[i % len(args)]
        t0 = time.perf_counter()
        fn(a)  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times), percentile(times, 0.99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()

    posture = PostureModel.load()
    frames: list[object] = [
        MatFrame(0, 16, 32, random_frame(label, 3_000_000_000 + i))
        for i in range(20)
        for label in posture.labels
    ]
    for f in frames[:20]:
        posture.classify(f)  # type: ignore[arg-type]
    med, p99 = latency(posture.classify, frames, args.calls)
    print(f"posture.classify(frame): median {med:.0f} us, p99 {p99:.0f} us ({args.calls} calls)")

    anomaly = AnomalyModel.load(series="water")
    windows: list[object] = [
        [50.0 + 0.1 * ((i * 7 + k) % 13) for k in range(64)] for i in range(50)
    ]
    for w in windows[:20]:
        anomaly.assess(w)  # type: ignore[arg-type]
    med, p99 = latency(anomaly.assess, windows, args.calls)
    print(f"anomaly.assess(window): median {med:.0f} us, p99 {p99:.0f} us ({args.calls} calls)")

    probe = subprocess.run(
        [sys.executable, "-c", RSS_PROBE.format(root=str(ROOT))],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    mem = json.loads(probe.stdout.strip().splitlines()[-1])
    for stage, v in mem.items():
        print(f"RSS {stage}: {v['VmRSS']:.1f} MB (peak {v['VmHWM']:.1f} MB)")
    rss = mem["models_loaded"]["VmRSS"]
    verdict = "OK" if rss <= 60 else "OVER"
    print(f"daemon modules + both models: {rss:.1f} MB RSS (target <= 60 MB): {verdict}")


if __name__ == "__main__":
    main()
