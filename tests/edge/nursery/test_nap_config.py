"""Nap room configuration: a mat nobody watches is refused, the nap log lives in the
device's state directory, staff initials and the sheet's header fields are checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ConfigError, NapRuleConfig, parse
from edge.nursery.log import nap_log_path

HEAD = """
[device]
id = "nursery-01"
site = "nursery"
latitude = 35.86
longitude = 139.65
[uplink]
host = "127.0.0.1"
[outbox]
path = "/srv/state/outbox.sqlite3"
[sensors.mat_1]
type = "mat"
port = "/dev/ttyUSB0"
cot = "A-1"
[actuators.buzzer]
type = "buzzer"
pin = 12
"""
RULE = """
[rules.naps]
type = "nap"
mats = ["mat_1"]
buzzer = "buzzer"
ack_pin = 26
"""


def test_a_mat_that_no_nap_rule_watches_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sensors.mat_1: mat is in no nap rule"):
        parse(HEAD)
    config = tmp_path / "device.toml"
    mat_2 = '\n[sensors.mat_2]\ntype = "mat"\nport = "/dev/ttyUSB1"\ncot = "A-2"\n'
    config.write_text(HEAD + RULE.replace('["mat_1"]', '["mat_1", "mat_2"]') + mat_2)
    ok = subprocess.run([sys.executable, "-m", "edge", "validate", "-c", str(config)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    config.write_text(HEAD + RULE + mat_2)
    refused = subprocess.run([sys.executable, "-m", "edge", "validate", "-c", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line == (f"config error: {config}: sensors.mat_2: mat is in no nap rule; "
                    "list it in a nap rule's mats")


def test_a_mat_in_two_nap_rules_is_refused() -> None:
    text = HEAD + RULE + RULE.replace("rules.naps", "rules.again").replace(
        "buzzer = \"buzzer\"", "buzzer = \"buzzer2\"").replace("26", "19") + (
        '\n[actuators.buzzer2]\ntype = "buzzer"\npin = 13\n')
    with pytest.raises(ConfigError, match=r"rules.again.mats\[0\]: sensors.mat_1 is already "
                                          r"watched by rules.naps"):
        parse(text)


def test_the_nap_log_defaults_to_the_state_directory_and_a_relative_path_stays_there() -> None:
    config = parse(HEAD + RULE)
    rule = config.rules["naps"]
    assert isinstance(rule, NapRuleConfig)
    assert nap_log_path(config, rule) == Path("/srv/state/naps.sqlite3")
    config = parse(HEAD + RULE + 'log_path = "nursery/naps.sqlite3"\n')
    rule = config.rules["naps"]
    assert isinstance(rule, NapRuleConfig)
    assert nap_log_path(config, rule) == Path("/srv/state/nursery/naps.sqlite3")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('staff = ["YT", "YT"]', r"rules.naps.staff\[1\]: 'YT' is listed twice"),
        ('staff = ["Y T"]', r"rules.naps.staff\[0\]"),
        ('period = ["15:00", "12:30"]', r"rules.naps.period: the nap period must end after it "
                                        r"starts"),
        ('period = ["12:30", "25:00"]', r"rules.naps.period\[1\]"),
    ],
)
def test_bad_sheet_settings_name_the_key(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(HEAD + RULE + extra + "\n")


def test_sheet_settings_are_accepted() -> None:
    config = parse(HEAD + RULE + 'staff = ["YT", "KS"]\nfacility = "さとやま保育園"\n'
                   'class_name = "ひよこ組"\nperiod = ["12:30", "15:00"]\n')
    rule = config.rules["naps"]
    assert isinstance(rule, NapRuleConfig)
    assert rule.staff == ["YT", "KS"] and rule.period == ["12:30", "15:00"]


def test_no_bundled_site_logs_naps_to_a_shared_temporary_path() -> None:
    from edge.tools.bench import SITES

    for site in SITES.glob("*.toml"):
        config = parse(site.read_text(encoding="utf-8"), site.name)
        for rule in config.rules.values():
            if isinstance(rule, NapRuleConfig):
                assert rule.log_path == "", f"{site.name}: the nap log belongs in the state dir"
