"""edge validate: a position outside Japan is a warning naming the key and the likely value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFIG = """
[device]
id = "kataoka-01"
site = "shiojiri-kataoka"
latitude = {lat}
longitude = {lon}

[uplink]
host = "broker.example.jp"
"""


def validate(tmp_path: Path, lat: float, lon: float) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "device.toml"
    path.write_text(CONFIG.format(lat=lat, lon=lon))
    return subprocess.run(
        [sys.executable, "-m", "edge", "validate", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_longitude_missing_its_hundreds_warns_and_suggests_the_value(tmp_path: Path) -> None:
    result = validate(tmp_path, 36.10395, 37.96563)  # points to the Middle East
    assert result.returncode == 0, result.stderr  # a warning: a rig abroad is legal
    warnings = [ln for ln in result.stdout.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1, result.stdout
    assert warnings[0].startswith("warning: device.longitude: 37.96563 is outside Japan")
    assert "did you mean 137.96563?" in warnings[0]


def test_a_negative_latitude_warns_and_a_position_in_japan_does_not(tmp_path: Path) -> None:
    result = validate(tmp_path, -36.1, 137.9)
    assert result.returncode == 0
    assert "warning: device.latitude: -36.1 is outside Japan" in result.stdout
    assert "did you mean 36.1?" in result.stdout
    result = validate(tmp_path, 36.1, 137.9)
    assert result.returncode == 0 and "warning" not in result.stdout, result.stdout
    result = validate(tmp_path, 26.2, 127.7)  # Naha
    assert "warning" not in result.stdout, result.stdout
