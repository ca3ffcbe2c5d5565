"""Configuration -> devices: the one factory the daemon, ``edge check`` and the bench use."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge.config import BuzzerConfig, PirSensorConfig, StrobeConfig, TrapSensorConfig
from edge.devices.factory import (
    build_actuator,
    build_detector,
    build_trap_switch,
    lgpio_workdir,
    make_pin_factory,
)

UNWRITABLE = "/proc"
"""A folder nobody can make a file in, root included: the daemon's ``/`` as its user sees it."""


def test_each_actuator_type_drives_its_pin(pins: MockFactory) -> None:
    buzzer = build_actuator(BuzzerConfig(pin=12), pins)
    strobe = build_actuator(StrobeConfig(pin=22, active_high=False), pins)
    try:
        buzzer.on()
        assert pins.pin(12).state == 1 and buzzer.is_on
        buzzer.off()
        assert pins.pin(12).state == 0
        assert pins.pin(22).state == 1  # active low, off
    finally:
        buzzer.close()
        strobe.close()


def test_detector_and_trap_switch_keep_their_configured_wiring(pins: MockFactory) -> None:
    seen: list[float] = []
    detector = build_detector(PirSensorConfig(pin=17, warmup_s=600), pins, on_detect=seen.append)
    quiet = build_detector(PirSensorConfig(pin=18, warmup_s=600), pins, warmup_s=0)
    switch = build_trap_switch(TrapSensorConfig(pin=5), pins)
    try:
        assert detector.warming_up and not quiet.warming_up
        pins.pin(17).drive_high()
        assert seen == []  # still warming up: ignored
        assert not switch.closed
        pins.pin(5).drive_low()  # normally open to ground, pulled up
        assert switch.closed
    finally:
        detector.close()
        quiet.close()
        switch.close()


def test_a_pin_factory_is_made_by_name_and_an_unknown_name_is_refused() -> None:
    assert make_pin_factory("auto") is None
    mock = make_pin_factory("mock")
    try:
        assert isinstance(mock, MockFactory)
    finally:
        mock.close()
    with pytest.raises(ValueError, match="unknown pin factory 'bogus'"):
        make_pin_factory("bogus")


def test_lgpio_gets_the_units_runtime_folder_when_the_working_folder_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A device whose unit predates LG_WD: systemd still gives the daemon its
    # RuntimeDirectory, and its working folder is one it cannot write.
    monkeypatch.chdir(UNWRITABLE)
    monkeypatch.setenv("LG_WD", "")
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="edge.devices.factory"):
        assert make_pin_factory("auto") is None
    assert os.environ["LG_WD"] == str(tmp_path)
    assert f"lgpio's pipe goes in {tmp_path}" in caplog.text
    assert "the working folder is /proc" in caplog.text


def test_lgpio_falls_back_to_the_state_folder_then_the_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(UNWRITABLE)
    environ = {"RUNTIME_DIRECTORY": f"{UNWRITABLE}/sys", "STATE_DIRECTORY": f"{tmp_path}:/x"}
    assert lgpio_workdir(environ) == str(tmp_path)
    assert environ["LG_WD"] == str(tmp_path)
    environ = {"RUNTIME_DIRECTORY": f"{UNWRITABLE}/sys"}
    assert lgpio_workdir(environ) == tempfile.gettempdir() == environ["LG_WD"]


def test_lgpio_keeps_a_folder_it_already_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(UNWRITABLE)
    environ = {"LG_WD": "/run/satoyama", "RUNTIME_DIRECTORY": str(tmp_path)}
    assert lgpio_workdir(environ) is None
    assert environ["LG_WD"] == "/run/satoyama"  # the unit's, or an installer's, choice
    monkeypatch.chdir(tmp_path)
    bare: dict[str, str] = {}
    assert lgpio_workdir(bare) is None  # a writable working folder: lgpio's own default
    assert bare == {}
