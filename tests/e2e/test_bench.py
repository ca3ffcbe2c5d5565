"""Every bundled bench scenario passes against the emulated site; a wrong expectation fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.bench import SCENARIOS, ScenarioError, load_scenario, run_scenario

pytestmark = pytest.mark.slow

BUNDLED = sorted(SCENARIOS.glob("*.toml"))


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
async def test_bundled_scenario_passes(path: Path, tmp_path: Path) -> None:
    report = await run_scenario(load_scenario(path), tmp_path)
    assert report.passed, report.render()
    assert report.checks


def test_a_wrong_expectation_fails_with_exit_1_and_a_json_report(tmp_path: Path) -> None:
    scenario = tmp_path / "wrong.toml"
    scenario.write_text(
        'name = "expects a siren that never sounds"\nsite = "paddy-edge"\nduration_s = 1\n'
        '[[expect]]\nactuator = "siren"\nstate = "on"\nafter_s = 0.1\nwithin_s = 0.5\n'
    )
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "edge", "bench", "run", str(scenario), "--report", str(report)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[FAIL] actuator siren on" in result.stdout
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["checks"][0]["passed"] is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nsite = "paddy-edge"\n', "duration_s"),
        ('name = "x"\nsite = "paddy-edge"\nduration_s = 1\nbogus = 2\n', "bogus"),
        ('name = "x"\nsite = "paddy-edge"\nduration_s = 1\n[[expect]]\nstate = "on"\n',
         r"expect\[0\]: give either actuator or event"),
    ],
)
def test_bad_scenario_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


async def test_a_device_on_the_bench_through_a_rig(tmp_path: Path, broker) -> None:  # type: ignore[no-untyped-def]
    """--device mode: the rig's outputs are wired to the device's inputs (gpiozero's own
    MockConnectedPin stands in for the jumper wires); what the rig cannot do is prompted."""
    from gpiozero.pins.mock import MockConnectedPin, MockFactory

    from edge.config import parse
    from edge.sim.site import device_config

    pins = MockFactory()
    pins.pin(23, pin_class=MockConnectedPin, input_pin=pins.pin(17))  # rig -> detector
    pins.pin(24, pin_class=MockConnectedPin, input_pin=pins.pin(5))  # rig -> trap switch
    device = parse(
        device_config(tmp_path / "o.sqlite3", broker.port, warmup_s=0, on_s=1, max_on_s=1,
                      cooldown_s=0)
        + '\n[sensors.trap_a]\ntype = "trap"\npin = 5\ndebounce_s = 0.1\n'
        + '\n[health]\nmodem = "none"\n'
    )
    scenario_path = tmp_path / "bench.toml"
    scenario_path.write_text("""
name = "on the bench"
site = "whole-site"     # the scenario's vocabulary: a paddy edge with a water gauge
duration_s = 4

[rig.pir_north]
pin = 23

[rig.trap_a]
pin = 24
active_high = false     # the trap switch closes to ground

[[stimulus]]
at_s = 0.5
target = "pir_north"
action = "motion"
value = 0.3

[[stimulus]]
at_s = 1.0
target = "trap_a"
action = "bounce_close"

[[stimulus]]
at_s = 1.5
target = "level_probe"
action = "level_cm"
value = 250

[[expect]]
actuator = "siren"
state = "on"
after_s = 0.5
within_s = 0.1

[[expect]]
event = "animal_detected"
after_s = 0.5
within_s = 2

[[expect]]
event = "trap_triggered"
after_s = 1.0
within_s = 2
count = 1
""")
    prompts: list[str] = []
    try:
        report = await run_scenario(
            load_scenario(scenario_path), tmp_path, device=device, pin_factory=pins,
            prompt=prompts.append,
        )
    finally:
        pins.reset()
    assert report.passed, report.render()
    assert prompts == ["NOW: level_probe level_cm 250"]
