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
