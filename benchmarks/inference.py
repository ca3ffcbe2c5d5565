"""Inference latency per model, and the resident memory of the REAL daemon on a whole site.

    .venv/bin/python benchmarks/inference.py [--calls 2000] [--seconds 30] [--compare]
    .venv/bin/python benchmarks/inference.py --memory-only --seconds 30
    python benchmarks/inference.py --memory-only --daemon-only --broker HOST:PORT --unit FILE

(the last: in the virtual Pi, ``scripts/vpi/stage.py --memory``: the installed
release's interpreter, its unit file, the host's broker, no import probes)

* latency: median and p99 of ``PostureModel.classify(frame)`` and
  ``AnomalyModel.assess(window)`` -- the calls the rules make, quantisation and
  dequantisation included -- on the committed models through LiteRT;
* daemon memory: ``python -m edge run --config FILE`` as its own process, as
  systemd starts it -- with the environment of ``systemd/satoyama-edge.service``'s
  ``Environment=`` lines and nothing else of this shell's (plus ``PYTHONPATH`` to
  this checkout; the unit's ``PYTHONOPTIMIZE=2`` among them), its modules read
  from the optimised bytecode the updater compiles into a release on the device
  (``edge bytecode`` into a private ``PYTHONPYCACHEPREFIX`` before the runs) -- on
  a nursery + water site: one motion mat (an emulated
  infant lying on it, on a real pseudo-terminal), its nap rule and buzzer on
  mock pins, an ultrasonic water gauge (emulated, on a pty) with its water
  rule, anomaly models on (so the posture model and two anomaly series,
  ``water`` and ``mat_load``, are loaded), a private mosquitto as the broker.
  VmRSS is sampled from ``/proc/PID/status`` every 0.5 s for ``--seconds``;
  printed: the peak (VmHWM), the steady RSS (median of the last third), and the
  split into anonymous memory and file-backed pages (RssAnon / RssFile: the
  latter are shared libraries, shareable with other processes and reclaimable).
  The run checks that the mat was read (the cot reads occupied) and that no
  model failed to load, so the figure is that of a daemon doing its work.
  At the end of the whole-site run it prints where the RSS lies, by mapping
  (``/proc/PID/smaps``: each library, ``[heap]``, the anonymous mappings).
  Target: <= 60 MB steady RSS.  ``--compare`` also runs the same site with
  ``health.anomaly_models = false`` and on a water-only site (no mat, no posture
  model) with and without anomaly models, which shows what the models, numpy
  and LiteRT cost the real daemon;
* what each step costs: RSS added by each heavy import in a fresh process
  (numpy, the LiteRT interpreter, msgspec, aiomqtt, gpiozero, the
  daemon's modules, the inference runtime) and by loading each model (the
  anomaly model once per series, as the daemon does), and ``python -X
  importtime`` totals for the daemon's modules.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivers.motion_mat import MatFrame  # noqa: E402
from edge.sim import site_text  # noqa: E402
from edge.sim.broker import Mosquitto  # noqa: E402
from edge.sim.mat_emulator import MatModel, random_frame  # noqa: E402
from edge.sim.serial_device import UltrasonicModel  # noqa: E402

TARGET_MB = 60.0
SAMPLE_S = 0.5
UNIT = ROOT / "systemd" / "satoyama-edge.service"
BROKER: tuple[str, int] | None = None
"""``--broker``: a running broker to use instead of a private mosquitto (in the virtual Pi)."""


def unit_environment(unit: Path = UNIT) -> dict[str, str]:
    """The ``Environment=`` assignments of a systemd unit (later ones win, as in systemd)."""
    env: dict[str, str] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key == "Environment":
            for word in shlex.split(value):
                name, _, val = word.partition("=")
                env[name] = val
    return env


def daemon_environment(pycache: Path) -> dict[str, str]:
    """What the daemon runs with here: the unit's environment and nothing of this shell's
    but ``PATH``; ``PYTHONPATH`` stands for the installed package, ``PYTHONPYCACHEPREFIX``
    (where the unit sets one) for the release's bytecode folder (filled by
    :func:`fill_bytecode`); where it sets none, the bytecode installed with the packages."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        **unit_environment(UNIT),
        "PYTHONPATH": str(ROOT),
    }
    if "PYTHONPYCACHEPREFIX" in env:
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def fill_bytecode(env: dict[str, str]) -> None:
    """Compile the daemon's bytecode into ``env``'s cache as the updater does at install
    (``edge bytecode``); compiling in the measured process would cost it memory."""
    subprocess.run([sys.executable, "-m", "edge", "bytecode", "--prefix",
                    env["PYTHONPYCACHEPREFIX"]], check=True, cwd=ROOT, env=env,
                   capture_output=True)  # fmt: skip


# One fresh process per probe: RSS (MB) before and after a statement, after a setup.
IMPORT_PROBES: tuple[tuple[str, str, str], ...] = (
    ("import msgspec", "", "import msgspec"),
    ("import numpy", "", "import numpy"),
    ("  ... numpy.ma (np.median's first call)", "import numpy", "import numpy.ma"),
    ("import aiomqtt (paho)", "", "import aiomqtt"),
    ("import gpiozero (as edge.devices does)", "", "import edge.devices, gpiozero"),
    ("import ai_edge_litert.interpreter (+ libLiteRt.so)", "", "import ai_edge_litert.interpreter"),
    ("import edge.config", "", "import edge.config"),
    ("import edge.cli + edge.daemon", "", "import edge.cli, edge.daemon"),
    ("import edge.inference.runtime", "", "import edge.inference.runtime"),
    ("  ... after the daemon's modules", "import edge.cli, edge.daemon",
     "import edge.inference.runtime"),
    ("load the posture model", "from edge.inference.runtime import PostureModel as P",
     "m = P.load(); m.classify(__import__('drivers.motion_mat').motion_mat.MatFrame("
     "0, 16, 32, bytes(512)))"),
    ("load the anomaly model (water)", "from edge.inference.runtime import AnomalyModel as A",
     "a = A.load(series='water'); a.score([50.0] * a.window)"),
    ("  ... and again for mat_load", "from edge.inference.runtime import AnomalyModel as A\n"
     "a = A.load(series='water'); a.score([50.0] * a.window)",
     "b = A.load(series='mat_load'); b.score([8.0] * b.window)"),
)

IMPORT_PROBE = """
import sys
sys.path.insert(0, {root!r})
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
{setup}
before = rss()
{stmt}
print(before, rss(), 'numpy' in sys.modules)
"""


def status(pid: int | str) -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile of a process, in MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) / 1024
    return out


HEAVY_LIBRARIES = {"numpy": "_multiarray_umath", "litert": "libpywrap_litert_common"}
"""Shared libraries that tell, from /proc/PID/maps, whether numpy and LiteRT were loaded."""


def mapped_libraries(pid: int) -> dict[str, float]:
    """1.0 for each of :data:`HEAVY_LIBRARIES` the process has mapped, else 0.0."""
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
        maps = f.read()
    return {name: float(lib in maps) for name, lib in HEAVY_LIBRARIES.items()}


def rss_by_mapping(pid: int, top: int = 10) -> list[tuple[str, float, float]]:
    """Where a process's RSS lies, from ``/proc/PID/smaps``: ``(mapping, RSS MB, of it
    anonymous MB)``, the largest ``top`` first.  Mappings are grouped by what backs them:
    a library's file (its code and read-only data, plus its relocated data, which is
    anonymous), ``[heap]`` (malloc: C libraries' allocations, Python objects over 512
    bytes), and anonymous mappings (pymalloc's 1 MB arenas, thread stacks, large mallocs)."""
    sizes: dict[str, list[float]] = {}
    name = ""
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as f:
        for line in f:
            head = line.split(maxsplit=5)
            if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
                path = head[5].strip() if len(head) == 6 else ""
                name = Path(path).name if path.startswith("/") else (path or "[anonymous]")
            elif line.startswith(("Rss:", "Anonymous:")):
                entry = sizes.setdefault(name, [0.0, 0.0])
                entry[0 if line.startswith("Rss:") else 1] += int(line.split()[1]) / 1024
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1][0])
    return [(n, rss, anon) for n, (rss, anon) in ranked[:top]]


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


def bench_latency(calls: int) -> None:
    from edge.inference.runtime import AnomalyModel, PostureModel

    posture = PostureModel.load()
    frames: list[object] = [
        MatFrame(0, 16, 32, random_frame(label, 3_000_000_000 + i))
        for i in range(20)
        for label in posture.labels
    ]
    for f in frames[:20]:
        posture.classify(f)  # type: ignore[arg-type]
    med, p99 = latency(posture.classify, frames, calls)
    print(f"posture.classify(frame): median {med:.0f} us, p99 {p99:.0f} us ({calls} calls)")

    anomaly = AnomalyModel.load(series="water")
    windows: list[object] = [
        [50.0 + 0.1 * ((i * 7 + k) % 13) for k in range(64)] for i in range(50)
    ]
    for w in windows[:20]:
        anomaly.assess(w)  # type: ignore[arg-type]
    med, p99 = latency(anomaly.assess, windows, calls)
    print(f"anomaly.assess(window): median {med:.0f} us, p99 {p99:.0f} us ({calls} calls)")
    posture.close()
    anomaly.model.close()


def run_daemon(
    seconds: float, *, nursery: bool, anomaly: bool, env: dict[str, str]
) -> tuple[dict[str, float], list[tuple[str, float, float]]]:
    """Run ``edge run`` on an emulated site for ``seconds``; its memory figures (MB) and,
    at the end, :func:`rss_by_mapping`."""
    with tempfile.TemporaryDirectory(prefix="satoyama-mem-") as tmp:
        work = Path(tmp)
        with contextlib.ExitStack() as stack:
            if BROKER is None:
                broker = stack.enter_context(Mosquitto(workdir=work / "broker"))
                host, port = "127.0.0.1", broker.port
            else:
                host, port = BROKER
            ranger = stack.enter_context(UltrasonicModel(distance_mm=3000))
            mat = stack.enter_context(MatModel(seed=7))
            mat.lie_down("supine")
            text = site_text.device(
                work / "outbox.sqlite3", device_id="bench-memory-01", site="bench",
                latitude=35.86, longitude=139.65, broker_port=port, broker_host=host,
                mock_pins=True,
            )  # fmt: skip
            text += site_text.health(anomaly_models=anomaly)
            text += site_text.nap_room((mat.port, "ひよこ-1")) if nursery else ""
            text += site_text.water_bridge(ranger.port)
            config = work / "device.toml"
            config.write_text(text, encoding="utf-8")
            log_path = work / "daemon.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "edge", "run", "--config", str(config)],
                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                )  # fmt: skip
                samples: list[dict[str, float]] = []
                try:
                    t0 = time.monotonic()
                    while time.monotonic() - t0 < seconds:
                        if proc.poll() is not None:
                            raise SystemExit(
                                f"the daemon exited with {proc.returncode}:\n"
                                + log_path.read_text(encoding="utf-8", errors="replace")
                            )
                        samples.append(status(proc.pid))
                        time.sleep(SAMPLE_S)
                    final = status(proc.pid)
                    loaded = mapped_libraries(proc.pid)
                    mappings = rss_by_mapping(proc.pid)
                finally:
                    proc.terminate()
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            text_log = log_path.read_text(encoding="utf-8", errors="replace")
    problems = [
        line for line in text_log.splitlines()
        if re.search(r"model unavailable|Traceback| ERROR ", line)
    ]  # fmt: skip
    if problems:
        raise SystemExit("the daemon reported errors:\n" + "\n".join(problems))
    if nursery and "ひよこ-1: occupied" not in text_log:
        raise SystemExit("the daemon never read the mat as occupied:\n" + text_log)
    tail = samples[len(samples) * 2 // 3 :]
    return {
        "steady_rss": statistics.median(s["VmRSS"] for s in tail),
        "peak_rss": final["VmHWM"],
        "rss_anon": statistics.median(s["RssAnon"] for s in tail),
        "rss_file": statistics.median(s["RssFile"] for s in tail),
        "final_rss": final["VmRSS"],
        **loaded,
    }, mappings


def import_costs(env: dict[str, str]) -> list[tuple[str, float, bool]]:
    """(what, MB of RSS one import adds in a fresh process, whether numpy came with it)."""
    out = []
    for name, setup, stmt in IMPORT_PROBES:
        probe = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE.format(root=str(ROOT), setup=setup, stmt=stmt)],
            check=True, capture_output=True, text=True, cwd=ROOT, env=env,
        )  # fmt: skip
        before, after, numpy = probe.stdout.split()
        out.append((name, float(after) - float(before), numpy == "True"))
    return out


def import_times(stmt: str, env: dict[str, str]) -> list[tuple[str, int]]:
    """``python -X importtime``: the top-level packages by cumulative import time (us)."""
    probe = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", stmt],
        check=True, capture_output=True, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    tops: dict[str, int] = {}
    for line in probe.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(2)) <= 1:  # top-level imports only
            tops[m.group(3)] = int(m.group(1))
    return sorted(tops.items(), key=lambda kv: -kv[1])


def bench_memory(seconds: float, compare: bool, daemon_only: bool = False) -> None:
    pycache = Path(tempfile.mkdtemp(prefix="satoyama-pyc-"))
    try:
        env = daemon_environment(pycache)
        if "PYTHONPYCACHEPREFIX" in env:
            fill_bytecode(env)
        _bench_memory(seconds, compare, env, daemon_only)
    finally:
        shutil.rmtree(pycache, ignore_errors=True)


def _bench_memory(
    seconds: float, compare: bool, env: dict[str, str], daemon_only: bool
) -> None:
    unit_env = " ".join(f"{k}={v}" for k, v in unit_environment(UNIT).items())
    print(f"environment (from {UNIT}): {unit_env}; bytecode compiled beforehand")
    if not daemon_only:
        _import_figures(env)

    variants = [("nursery + water, anomaly models on", True, True)]
    if compare:
        variants += [
            ("nursery + water, anomaly models off", True, False),
            ("water only, anomaly models on", False, True),
            ("water only, anomaly models off", False, False),
        ]
    print(f"\nthe daemon (python -m edge run --config), {seconds:g} s each:")
    results = {}
    mappings: dict[str, list[tuple[str, float, float]]] = {}
    for label, nursery, anomaly in variants:
        r, mappings[label] = run_daemon(seconds, nursery=nursery, anomaly=anomaly, env=env)
        results[label] = r
        libs = [name for name in HEAVY_LIBRARIES if r[name]]
        print(
            f"  {label}: steady {r['steady_rss']:.1f} MB RSS (anon {r['rss_anon']:.1f} + "
            f"file {r['rss_file']:.1f}), peak {r['peak_rss']:.1f} MB; loaded: "
            + (", ".join(libs) or "neither numpy nor LiteRT")
        )
    main = results[variants[0][0]]
    print(f"where the {variants[0][0]} daemon's RSS lies at the end (MB, of it anonymous):")
    for name, mb, anon in mappings[variants[0][0]]:
        print(f"  {name:<52} {mb:5.2f}  ({anon:.2f})")
    verdict = "OK" if main["steady_rss"] <= TARGET_MB else "OVER"
    print(
        f"whole-site daemon: steady {main['steady_rss']:.1f} MB, peak {main['peak_rss']:.1f} MB "
        f"RSS (target <= {TARGET_MB:g} MB steady): {verdict}"
    )
    print(json.dumps({"daemon_mb": results}, ensure_ascii=False))


def _import_figures(env: dict[str, str]) -> None:
    print(f"\nwhat each step costs (RSS added in a fresh Python {sys.version.split()[0]} process):")
    for name, mb, numpy in import_costs(env):
        print(f"  {name:<36} +{mb:5.1f} MB" + ("  (numpy loaded)" if numpy else ""))
    stmt = "import edge.cli, edge.daemon, edge.inference.runtime"
    times = import_times(stmt, env)
    total = sum(us for _, us in times)
    print(f"import time of {stmt!r}: {total / 1000:.0f} ms; largest:")
    for name, us in times[:8]:
        print(f"  {name:<28} {us / 1000:6.1f} ms")


def main() -> None:
    global UNIT, BROKER
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=30.0,
                    help="how long each daemon runs before its RSS is taken (default 30)")
    ap.add_argument("--compare", action="store_true",
                    help="also run without anomaly models, and without the nursery")
    ap.add_argument("--memory-only", action="store_true", help="skip the latency figures")
    ap.add_argument("--daemon-only", action="store_true",
                    help="only the daemon's memory: no import probes (slow under emulation)")
    ap.add_argument("--unit", type=Path, default=UNIT,
                    help="the daemon's unit file whose Environment= lines it runs with")
    ap.add_argument("--broker", metavar="HOST:PORT",
                    help="a running broker (plain MQTT) instead of a private mosquitto")
    args = ap.parse_args()
    UNIT = args.unit
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        BROKER = (host, int(port))
    if not args.memory_only:
        bench_latency(args.calls)
    bench_memory(args.seconds, args.compare, args.daemon_only)


if __name__ == "__main__":
    main()
