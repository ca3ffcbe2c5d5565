"""The daemon loads what its configuration uses, and nothing else (a Pi Zero 2 W has 512 MB).

Each case starts the real daemon (``Daemon.start``) in a fresh Python process on
an emulated site (a water gauge on a pseudo-terminal; a body-motion mat with a
child on it, a buzzer and the acknowledge button on gpiozero's mock pins), waits
until it has done its work (a level read and its fault rule built; the mat's
frame classified by the posture model) and reports which modules that process
holds.  A water gauge must not pay for LiteRT and the posture model (~12 MB of
RSS), nor for numpy (~12 MB) when it has no fault checks: a regression there is
what a user of a small device would notice first, as an out-of-memory kill.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.sim import site_text
from edge.sim.mat_emulator import MatModel
from edge.sim.serial_device import UltrasonicModel

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

# Runs in the daemon's own process: start it, wait for its work, print sys.modules.
RUN = """
import asyncio, json, sys
from edge.config import load
from edge.daemon import Daemon
from tests.support.waiting import until

async def main():
    daemon = Daemon(load(sys.argv[1]))
    await daemon.start()
    try:
        await until(lambda: all(w.last_level_cm is not None for w in daemon.water.values()),
                    60, "a water level read")
        await until(lambda: all(w.anomaly is None or w.anomaly.rule is not None
                                for w in daemon.water.values()), 60, "the fault rules built")
        await until(lambda: all(n.model is not None for n in daemon.naps.values()), 60,
                    "the posture model loaded")
        calls = []
        for nap in daemon.naps.values():  # count the real model's calls from now on
            def counted(*args, _real=nap.model.classify, **kwargs):
                calls.append(_real(*args, **kwargs))
                return calls[-1]
            nap.model.classify = counted
        await until(lambda: not daemon.naps or calls, 60, "a frame classified")
        if daemon.wildlife is not None:  # a boar at the fence, then a trap's door shuts
            import sqlite3

            def recorded():
                db = sqlite3.connect(daemon.config.outbox.path)
                try:
                    return {kind for (kind,) in db.execute("SELECT kind FROM events")}
                finally:
                    db.close()
            daemon.pin_factory.pin(17).drive_high()
            daemon.pin_factory.pin(5).drive_low()
            await until(lambda: daemon.actuators["siren"].is_on, 30, "the siren sounding")
            await until(lambda: {"animal_detected", "trap_triggered"} <= recorded(), 60,
                        "the detection and the capture recorded")
    finally:
        await daemon.close()
    print(json.dumps({"modules": sorted(sys.modules), "optimize": sys.flags.optimize,
                      "docstring": Daemon.__doc__}))

asyncio.run(main())
"""


def _free_port() -> int:
    """A loopback port nobody listens on: the uplink retries in the background."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])




def _modules(
    tmp_path: Path, *, water: bool, nursery: bool, anomaly: bool, wildlife: bool = False
) -> set[str]:
    return set(_run(tmp_path, water=water, nursery=nursery, anomaly=anomaly,
                    wildlife=wildlife)["modules"])  # fmt: skip


def _run(
    tmp_path: Path,
    *,
    water: bool,
    nursery: bool,
    anomaly: bool,
    wildlife: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    with UltrasonicModel(distance_mm=3000) as ranger, MatModel(seed=7) as mat:
        mat.lie_down("supine")
        text = site_text.device(
            tmp_path / "outbox.sqlite3", device_id="imports-01", site="bench", latitude=35.86,
            longitude=139.65, broker_port=_free_port(), mock_pins=True,
        )  # fmt: skip
        text += site_text.health(anomaly_models=anomaly)
        text += site_text.water_bridge(ranger.port, window_s=0.5) if water else ""
        text += site_text.nap_room((mat.port, "ひよこ-1")) if nursery else ""
        text += site_text.paddy_edge(trap_pin=5) if wildlife else ""  # PIR 17, trap 5
        config = tmp_path / "device.toml"
        config.write_text(text, encoding="utf-8")
        out = subprocess.run(
            [sys.executable, "-c", RUN, str(config)],
            cwd=ROOT, capture_output=True, text=True, timeout=180,
            env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _loaded(modules: set[str], *packages: str) -> list[str]:
    return sorted(
        m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)
    )


LITERT = ("ai_edge_litert", "tflite_runtime", "edge.inference.runtime")
NURSERY_MODULES = ("edge.nursery", "edge.inference")
WILDLIFE = ("edge.wildlife", "drivers.pir", "drivers.trap_switch")


def test_a_water_gauge_without_fault_checks_loads_neither_numpy_nor_litert(
    tmp_path: Path,
) -> None:
    modules = _modules(tmp_path, water=True, nursery=False, anomaly=False)
    assert "edge.water.watch" in modules  # it did run the water rule
    assert _loaded(modules, "numpy", *LITERT) == []
    assert _loaded(modules, *NURSERY_MODULES, *WILDLIFE) == []
    assert _loaded(modules, "edge.health.water_faults", "edge.health.mat_load_faults") == []
    assert _loaded(modules, "importlib.metadata", "uuid6") == []


def test_a_water_gauge_with_fault_checks_loads_its_rules_but_no_posture_model(
    tmp_path: Path,
) -> None:
    modules = _modules(tmp_path, water=True, nursery=False, anomaly=True)
    assert "edge.health.water_faults" in modules
    assert _loaded(modules, *LITERT, *NURSERY_MODULES, *WILDLIFE) == []


def test_a_nap_room_loads_the_posture_model_and_nothing_of_a_water_gauge(tmp_path: Path) -> None:
    modules = _modules(tmp_path, water=False, nursery=True, anomaly=False)
    # The other side of the checks above: here LiteRT is loaded, and would be seen.
    assert "ai_edge_litert" in modules and "edge.inference.runtime" in modules
    # (edge.water.rule, the pure rule, comes with the configuration's validation)
    assert _loaded(modules, "edge.water.watch", "edge.health.water_faults", *WILDLIFE) == []
    # The posture input's median does not go through np.median (which imports numpy.ma).
    assert "numpy.ma" not in modules
    # gpiozero looks pin factories up by name only when asked (edge.devices.lazy_metadata),
    # and event ids are made without the uuid6 package: neither loads importlib.metadata
    # (email, zipfile, csv: ~2.3 MB).
    assert _loaded(modules, "importlib.metadata", "uuid6", "zipfile", "csv") == []


def test_a_paddy_edge_loads_neither_numpy_nor_litert_nor_a_gauges_or_a_cots_code(
    tmp_path: Path,
) -> None:
    """The most common device (a detector, a siren, a trap) pays only for what it does,
    through a detection and a capture."""
    modules = _modules(tmp_path, water=False, nursery=False, anomaly=True, wildlife=True)
    assert "edge.wildlife.watch" in modules  # it did run the deterrent and the trap
    assert _loaded(modules, "numpy", *LITERT) == []
    assert _loaded(modules, *NURSERY_MODULES, "edge.water.watch", "edge.health.water_faults") == []
    assert _loaded(modules, "importlib.metadata", "uuid6") == []


def _unit_environment() -> dict[str, str]:
    """The daemon unit's ``Environment=`` lines."""
    unit = (ROOT / "systemd/satoyama-edge.service").read_text(encoding="utf-8")
    words = [w for line in unit.splitlines() if line.startswith("Environment=")
             for w in shlex.split(line.partition("=")[2])]  # fmt: skip
    return dict(w.split("=", 1) for w in words)


def _bytecode_files(prefix: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in prefix.rglob("*.pyc")}


def test_a_whole_site_runs_on_the_optimised_bytecode_compiled_at_install(tmp_path: Path) -> None:
    """As the unit runs it: ``PYTHONOPTIMIZE=2`` (docstrings out: 3 MB of RSS) and the
    release's bytecode, compiled by the updater's step (``edge bytecode``).  A module the
    step missed would be compiled at every start (memory, seconds on a Pi Zero): here the
    prefix is writable, so Python writes each module it had to compile, and any such
    write shows that the step missed it."""
    env = _unit_environment()
    assert env["PYTHONOPTIMIZE"] == "2" and env["PYTHONPYCACHEPREFIX"].startswith("/opt/")
    prefix = tmp_path / "pycache"
    compiled = subprocess.run(
        [sys.executable, "-m", "edge", "bytecode", "--prefix", str(prefix)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr
    before = _bytecode_files(prefix)
    assert len(before) > 300, compiled.stdout
    run_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8",
               **env, "PYTHONPYCACHEPREFIX": str(prefix)}  # fmt: skip
    result = _run(tmp_path, water=True, nursery=True, anomaly=True, wildlife=True, env=run_env)
    assert result["optimize"] == 2 and result["docstring"] is None
    assert {"edge.health.water_faults", "edge.inference.runtime", "numpy"} <= set(
        result["modules"]
    )
    tests_dir = str(prefix) + str(ROOT / "tests")
    written = sorted(
        str(p) for p, mtime in _bytecode_files(prefix).items()
        if before.get(p) != mtime and not str(p).startswith(tests_dir)
    )  # fmt: skip
    assert not written, "compiled by the daemon itself, missed at install:\n" + "\n".join(written)
