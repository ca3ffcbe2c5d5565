"""Nap room fallbacks: a missing posture model means 'check by hand', and apnea still alarms."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.bench import SITES
from edge.sim.emulated import EmulatedSite
from tests.support.waiting import until

pytestmark = pytest.mark.slow


async def test_missing_posture_model_falls_back_and_apnea_still_alarms(tmp_path: Path) -> None:
    text = (SITES / "nap-alarms.toml").read_text(encoding="utf-8")
    empty = tmp_path / "no-model"
    empty.mkdir()
    text = text.replace("log_path =", f'model_dir = "{empty}"\nlog_path =')
    text = text.replace("/tmp/satoyama-bench-naps.sqlite3", str(tmp_path / "naps.sqlite3"))
    async with EmulatedSite(text, tmp_path / "site") as site:
        kinds = lambda k: [e for e in site.events() if e["kind"] == k]  # noqa: E731
        await until(lambda: bool(kinds("sensor_fault")), 10, "the model fault")
        fault = kinds("sensor_fault")[0]["data"]
        assert fault["sensor"] == "naps.posture_model"
        assert "missing" in fault["message"] and "by hand" in fault["message"]
        await site.apply("mat_1", "lie_down")
        await until(lambda: bool(kinds("posture_check")), 10, "a posture check")
        assert kinds("posture_check")[0]["data"]["posture"] == "unknown"
        await site.apply("mat_1", "stop_breathing")
        await until(lambda: bool(kinds("apnea_alarm")), 15, "the apnea alarm")
        assert site.actuator_states()["buzzer"] is True
