"""The configuration is checked before anything runs; every error names the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ConfigError, PirSensorConfig, StrobeConfig, load, parse
from tests.edge.conftest import EXAMPLE


def test_shipped_example_is_valid() -> None:
    config = load(EXAMPLE)
    assert config.device.id == "shiojiri-kataoka-01"
    assert isinstance(config.sensors["pir_north"], PirSensorConfig)
    assert isinstance(config.actuators["strobe"], StrobeConfig)
    assert config.rules["chase_north"].actuators == ["siren", "strobe"]
    assert config.client_id == "shiojiri-kataoka-01"


def _broken(old: str, new: str) -> str:
    text = EXAMPLE.read_text()
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # unknown keys, at every level
        ('pull = "down"', 'pul = "down"', "sensors.pir_north.pul: unknown key"),
        ("[uplink]", "[uplnk]", "uplnk: unknown key"),
        ("port = 1883", "port = 1883\nbrokr = 1", "uplink.brokr: unknown key"),
        # wrong types and ranges
        ("port = 1883", 'port = "1883"', "uplink.port: expected `int`, got `str`"),
        ("pin = 17", "pin = 40", "sensors.pir_north.pin: expected `int` <= 27"),
        ("on_s = 30 ", "on_s = -1 ", "rules.chase_north.on_s: expected `float` > 0"),
        ('type = "siren"', 'type = "horn"', "actuators.siren.type: 'horn' is not a known type"),
        # pins used twice
        ("pin = 22", "pin = 17", "actuators.strobe.pin: GPIO17 is already used by sensors.pir_north"),
        # missing location
        ("latitude = 36.103950", "", "device.latitude: required key is missing"),
        ("latitude = 36.103950", "latitude = 136.1", "device.latitude: expected `float` <= 90"),
        # references across sections
        ('detectors = ["pir_north"]', 'detectors = ["pir_south"]', "rules.chase_north.detectors[0]: no sensor named 'pir_south'"),
        ("max_on_s = 120", "max_on_s = 10", "rules.chase_north.max_on_s: must be >= on_s"),
        ("[sensors.pir_north]", "[sensors.PirNorth]", "sensors.PirNorth: names are lower-case"),
        ('id = "shiojiri-kataoka-01"', 'id = "a/b#"', "device.id: expected `str` matching regex"),
        ("[device]", "[device", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(old: str, new: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(_broken(old, new), "paddy.toml")
    assert str(err.value).startswith("paddy.toml: ")
    assert expected in str(err.value)


def test_password_needs_username() -> None:
    with pytest.raises(ConfigError, match="uplink.password: username and password go together"):
        parse(_broken("port = 1883", 'port = 1883\npassword = "x"'))


def test_detector_in_no_rule_is_refused() -> None:
    text = EXAMPLE.read_text() + '\n[sensors.pir_east]\ntype = "pir"\npin = 5\n'
    with pytest.raises(ConfigError, match=r"sensors.pir_east: detector is in no rule"):
        parse(text)


def test_actuator_driven_by_two_rules_is_refused() -> None:
    text = EXAMPLE.read_text() + (
        '\n[sensors.pir_east]\ntype = "pir"\npin = 5\n'
        '[rules.chase_east]\ntype = "deterrent"\ndetectors = ["pir_east"]\nactuators = ["siren"]\n'
    )
    with pytest.raises(ConfigError, match=r"rules.chase_east.actuators\[0\]: actuators.siren is already driven by rules.chase_north"):
        parse(text)


@pytest.mark.parametrize("command", ["run", "validate"])
def test_cli_refuses_bad_config_with_exit_2(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(_broken("pin = 22", "pin = 17"))
    result = subprocess.run(
        [sys.executable, "-m", "edge", command, "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"config error: {bad}: actuators.strobe.pin: GPIO17 is already used" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_validate_accepts_example() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge", "validate", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "ok - device shiojiri-kataoka-01" in result.stdout
