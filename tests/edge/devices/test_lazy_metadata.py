"""gpiozero under the daemon: ``importlib.metadata`` only when a pin factory is named.

What would show it wrong: a fresh process in which gpiozero, its mock pins and a device
on them work and ``importlib.metadata`` stays unloaded; then gpiozero's own lookups by
name (``GPIOZERO_PIN_FACTORY``, a mock pin class given as a string) answer as they do
with the real ``importlib.metadata``, which they load at that moment.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import edge.devices  # noqa: F401  (installs the stand-in, as the daemon does)
from edge.devices import lazy_metadata

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import json, os, sys
import edge.devices
from gpiozero import LED, Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

seen = {}
factory = MockFactory()
led = LED(17, pin_factory=factory)
led.on()
seen["lit"] = led.is_lit
led.close()
seen["metadata_after_devices"] = "importlib.metadata" in sys.modules

os.environ["GPIOZERO_PIN_FACTORY"] = "mock"
named = Device._default_pin_factory()
seen["named_factory"] = type(named).__name__
seen["pwm_by_name"] = MockFactory(pin_class="mockpwmpin").pin_class is MockPWMPin
seen["metadata_after_lookup"] = "importlib.metadata" in sys.modules
print(json.dumps(seen))
"""


def test_gpiozero_runs_without_importlib_metadata_until_a_factory_is_named() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {
        "lit": True,
        "metadata_after_devices": False,
        "named_factory": "MockFactory",
        "pwm_by_name": True,
        "metadata_after_lookup": True,
    }


def test_the_stand_in_answers_as_importlib_metadata() -> None:
    stand_in = sys.modules[lazy_metadata.NAME]
    assert isinstance(stand_in, lazy_metadata.LazyMetadata)
    group = "gpiozero_pin_factories"
    assert sorted(ep.name for ep in stand_in.entry_points(group=group)) == sorted(
        ep.name for ep in importlib.metadata.entry_points(group=group)
    )
    assert "mock" in {ep.name for ep in stand_in.entry_points(group=group)}
    # any other name comes from importlib.metadata itself
    assert stand_in.version("gpiozero") == importlib.metadata.version("gpiozero")
    assert stand_in.PackageNotFoundError is importlib.metadata.PackageNotFoundError


def test_install_leaves_an_importlib_metadata_already_there_alone() -> None:
    before = sys.modules[lazy_metadata.NAME]
    lazy_metadata.install()
    assert sys.modules[lazy_metadata.NAME] is before
