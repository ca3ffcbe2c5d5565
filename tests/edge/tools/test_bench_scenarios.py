"""Bench scenarios are checked whole before anything starts, as configurations are:
a typo anywhere is one line naming the file and the key, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import parse
from edge.sim.site import device_config
from edge.tools.bench import SCENARIOS, ScenarioError, load_scenario

NAP = (SCENARIOS / "nap-prone.toml").read_text(encoding="utf-8")
BOAR = (SCENARIOS / "boar-deterrent.toml").read_text(encoding="utf-8")
STORM = (SCENARIOS / "world-storm-night.toml").read_text(encoding="utf-8")


def one_change(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_bundled_scenario_is_valid(path: Path) -> None:
    assert load_scenario(path).name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # a target that is not on the site, with what is there
        (one_change(NAP, 'target = "mat_1"', 'target = "mat_l"'),
         r"stimulus\[0\]\.target: no sensor, actuator or nap rule named 'mat_l' "
         r"\(this site has: buzzer, mat_1, naps\)"),
        (one_change(NAP, 'target = "naps"', 'target = "nap"'), r"stimulus\[2\]\.target: .*'nap'"),
        # an action the target does not know, and a value the action cannot take
        (one_change(NAP, 'action = "roll_to"', 'action = "roll"'),
         r"stimulus\[1\]\.action: a mat knows .*'roll_to'.*not 'roll'"),
        (one_change(NAP, 'value = "prone"', 'value = "face-down"'),
         r"stimulus\[1\]\.value: 'roll_to' needs a posture"),
        (one_change(BOAR, "value = 0.3", 'value = "long"'),
         r"stimulus\[0\]\.value: 'motion' needs seconds"),
        (one_change(BOAR, 'action = "motion"', 'action = "close"'),
         r"stimulus\[0\]\.action: a pir knows 'motion', not 'close'"),
        # a misspelt key anywhere
        (one_change(NAP, "target =", "targt ="), r"stimulus\[0\]\.targt: unknown key"),
        (one_change(NAP, "within_s = 4", "within = 4"), r"expect\[0\]\.within: unknown key"),
        (one_change(STORM, "rise_cm", "rise"), r"world\.rain\[0\]\.rise: unknown key"),
        # expectations naming what does not exist
        (one_change(NAP, 'actuator = "buzzer"', 'actuator = "buzer"'),
         r"expect\[2\]\.actuator: no actuator named 'buzer' \(this site has: buzzer\)"),
        (one_change(NAP, 'event = "prone_alarm"', 'event = "prone_alarms"'),
         r"expect\[1\]\.event: 'prone_alarms' is not an event kind"),
        (one_change(NAP, 'cot = "ひよこ-1", posture = "prone"',
                    'cot = "ひよこ-2", posture = "prone"'),
         r"expect\[1\]\.data\.cot: no mat is cot 'ひよこ-2' \(this site's cots: ひよこ-1\)"),
        (one_change(STORM, 'sensor = "level_bridge"', 'sensor = "level_brige"'),
         r"expect\[1\]\.data\.sensor: no sensor named 'level_brige'"),
        # times past the end
        (one_change(NAP, "at_s = 11.0", "at_s = 16.0"),
         r"stimulus\[3\]\.at_s: 16 s is not before the end \(duration_s = 15\)"),
        (one_change(NAP, "after_s = 14.5", "after_s = 15.5"), r"expect\[4\]\.after_s: "),
        # the world and the rig
        (one_change(STORM, '{ at_s = 5, do = "roll_to", posture = "left" }',
                    '{ at_s = 5, do = "roll_to", posture = "side" }'),
         r"world\.infant\[1\]\.posture: 'roll_to' needs a posture"),
        (one_change(STORM, '{ at_s = 0.5, do = "lie_down" }',
                    '{ at_s = 0.5, do = "lie_down", mat = "mat_9" }'),
         r"world\.infant\[0\]\.mat: no mat named 'mat_9'"),
        (BOAR + '\n[rig.pir_nort]\npin = 23\n', r"rig\.pir_nort: no sensor named 'pir_nort'"),
        (one_change(BOAR, 'site = "paddy-edge"', 'site = "paddy-edgy"'),
         r"site: no site 'paddy-edgy' \(bundled: .*paddy-edge"),
        (BOAR.replace("[[stimulus]]", "[[initial]]", 1),
         r"initial\[0\]\.target: 'pir_north' is not an emulated bus or port sensor"),
    ],
)
def test_a_mistake_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError, match=message) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


def test_against_a_device_the_rig_must_name_its_sensors(tmp_path: Path) -> None:
    device = parse(device_config(tmp_path / "o.sqlite3", 1883))  # pir_north, siren, strobe
    path = tmp_path / "scenario.toml"
    path.write_text(BOAR + "\n[rig.trap_a]\npin = 24\n", encoding="utf-8")
    load_scenario(path)  # the paddy-edge site has a trap ...
    with pytest.raises(ScenarioError, match=r"rig\.trap_a: no sensor named 'trap_a' .*device"):
        load_scenario(path, device)  # ... the device on the bench has none


def test_the_command_refuses_a_typo_before_anything_starts(tmp_path: Path) -> None:
    """As a bench engineer sees it: one line on stderr, exit 2, and no broker, no
    emulator, no daemon started (no work folder was even made)."""
    path = tmp_path / "typo.toml"
    path.write_text(one_change(NAP, 'target = "mat_1"', 'target = "mat_l"'), encoding="utf-8")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "edge", "bench", "run", str(path)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"bench error: {path}: stimulus[0].target: no sensor, actuator or nap rule named "
        "'mat_l' (this site has: buzzer, mat_1, naps)"
    ]
    assert result.stdout == ""
    assert list(scratch.iterdir()) == []
