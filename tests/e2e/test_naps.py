"""Nap room fallbacks: a missing posture model means 'check by hand', and apnea still alarms."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from drivers.motion_mat import MatFrame
from edge.inference.runtime import PostureModel
from edge.nursery.log import NapLog
from edge.nursery.sheet import JST, build_sheet, cell_text
from edge.sim.emulated import EmulatedSite
from edge.sim.mat_emulator import MatScene
from edge.tools.bench import SCENARIOS, SITES, load_scenario, run_scenario
from tests.support.waiting import until

pytestmark = pytest.mark.slow


async def test_missing_posture_model_falls_back_and_apnea_still_alarms(tmp_path: Path) -> None:
    text = (SITES / "nap-alarms.toml").read_text(encoding="utf-8")
    empty = tmp_path / "no-model"
    empty.mkdir()
    text = text.replace("[rules.naps]", f'[rules.naps]\nmodel_dir = "{empty}"')
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


def _unreadable_body(scene: MatScene) -> list[float]:
    """A body of a world the shipped model never trained on (``regions``) that it abstains
    on ("unknown") whatever the sensor noise, on this mat's own empty level."""
    import random

    import numpy as np

    from models.posture import regions

    offsets = np.array(scene.offsets)
    with PostureModel.load() as model:
        for seed in range(200):
            for posture in ("supine", "left", "right", "prone"):
                frame, level = regions.render(posture, seed, rough_empty=False)
                load = np.clip(frame.astype(float) - level, 0.0, None).ravel()
                answers = set()
                for k in range(5):
                    noise = random.Random(k)
                    cells = bytes(min(255, max(0, int(v + noise.gauss(0.0, scene.noise) + 0.5)))
                                  for v in offsets + load)  # fmt: skip
                    answers.add(model.classify(MatFrame(0, scene.rows, scene.cols, cells),
                                               offsets)[0])  # fmt: skip
                if answers == {"unknown"}:
                    return [float(v) for v in load]
    raise AssertionError("no frame of the regions world that the model abstains on")


async def test_a_child_the_model_cannot_read_is_look_now_never_safe(tmp_path: Path) -> None:
    """The real model on the emulated mat: a body from a world it never trained on makes it
    abstain; the nap rule then prompts staff to look (a warning event and a chirp, never the
    alarm's steady tone), and the sheet shows the look-now slots, never a safe posture."""
    text = (SITES / "nap-alarms.toml").read_text(encoding="utf-8")
    text = text.replace("[rules.naps]", "[rules.naps]\nunknown_prompt_s = 5")
    async with EmulatedSite(text, tmp_path / "site") as site:
        kinds = lambda k: [e for e in site.events() if e["kind"] == k]  # noqa: E731
        mat = site.emulators["mat_1"]
        body = _unreadable_body(mat.scene)
        await site.apply("mat_1", "lie_down")
        await until(lambda: bool(kinds("posture_check")), 15, "a posture check")
        assert kinds("posture_check")[0]["data"]["posture"] == "supine"
        buzzer = site.daemon.pin_factory.pin(12)  # type: ignore[union-attr]
        heard = len(buzzer.states)
        mat.lay(body, label="regions")
        await until(lambda: bool(kinds("posture_unknown")), 30, "the look-now prompt")
        [look] = kinds("posture_unknown")
        assert look["severity"] == "warning"
        assert look["data"]["cot"] == "ひよこ-1" and look["data"]["unknown_s"] >= 5
        # It chirps (short beeps), it does not sound the alarm's steady tone...
        await until(lambda: _beeps(buzzer.states[heard:]), 15, "a chirp")
        assert all(length < 1.0 for length in _beeps(buzzer.states[heard:]))
        # ...and nothing says the child is safe or face-down: no alarm, no safe posture.
        assert not kinds("prone_alarm") and not kinds("apnea_alarm")
        # The checks while the prompt is on say "unknown" (a check on the sheet's grid can
        # fall just after the first, before the body was laid: those are not judged here).
        during = lambda: [e["data"]["posture"] for e in kinds("posture_check")  # noqa: E731
                          if e["id"] > look["id"]]  # ids are time-ordered  # fmt: skip
        await until(lambda: bool(during()), 15, "a posture check during the look-now")
        assert set(during()) == {"unknown"}, during()
        # The model reads the child again: the prompt ends and the buzzer falls silent.
        mat.roll_to("supine")
        await until(lambda: _look_now_ends(tmp_path / "site" / "naps.sqlite3"), 15,
                    "the end of the look-now")
        await until(lambda: not site.actuator_states()["buzzer"], 5, "the buzzer silent")
        # The nursery, told to look, hears that the prompt is over and what the model reads.
        await until(lambda: bool(kinds("alarm_cleared")), 15, "the end of the prompt, sent")
        [end] = kinds("alarm_cleared")
        assert end["data"]["cleared"] == "posture_unknown"
        assert (end["data"]["acknowledged_by"], end["data"]["posture"]) == ("model", "supine")
        assert not kinds("prone_alarm") and not kinds("apnea_alarm")
    entries = _today_entries(tmp_path / "site" / "naps.sqlite3")
    assert [e.value for e in entries if e.kind == "posture_unknown"] == ["unknown"]
    assert _look_now_ends(tmp_path / "site" / "naps.sqlite3") == ["supine"]
    sheet = build_sheet(entries, {"ひよこ-1": ""}, date=dt.datetime.fromtimestamp(
        entries[-1].t, JST).date())  # fmt: skip
    looked = [c for c in sheet.rows[0].cells.values() if "posture_unknown" in c.alarms]
    assert looked and all(c.posture == "unknown" for c in looked)
    assert all(cell_text(c, "ja", short=True) == "?見" for c in looked)


def _beeps(states: list[Any]) -> list[float]:
    """How long each finished beep of a mock buzzer pin lasted (s), from its state history."""
    lengths, on_at = [], None
    for change in states:
        if change.state and on_at is None:
            on_at = change.timestamp
        elif not change.state and on_at is not None:
            lengths.append(change.timestamp - on_at)
            on_at = None
    return lengths


def _look_now_ends(path: Path) -> list[str]:
    """How each look-now prompt ended (the posture the model read again), not counting the
    closing of whatever an earlier run left open ("start")."""
    entries = _today_entries(path)
    return [e.value for e in entries if e.kind == "posture_unknown_end" and e.value != "start"]


def _today_entries(path: Path) -> list[Any]:
    log = NapLog(path)
    try:
        now = dt.datetime.now(JST)
        return log.day(now.date(), JST) + log.day(now.date() - dt.timedelta(days=1), JST)
    finally:
        log.close()


async def test_bench_nap_prone_run_keeps_its_own_log_and_the_sheet_shows_the_alarm(
    tmp_path: Path,
) -> None:
    shared = Path(tempfile.gettempdir()) / "satoyama-bench-naps.sqlite3"
    before = shared.stat().st_mtime_ns if shared.exists() else None
    report = await run_scenario(load_scenario(SCENARIOS / "nap-prone.toml"), tmp_path)
    assert report.passed, report.render()
    # The run's log is private to the run: in its state directory, nowhere shared.
    assert (shared.stat().st_mtime_ns if shared.exists() else None) == before
    entries = _today_entries(tmp_path / "naps.sqlite3")
    assert {e.cot for e in entries} == {"ひよこ-1"}
    sheet = build_sheet(entries, {"ひよこ-1": ""}, date=dt.datetime.now(JST).date())
    row = sheet.rows[0]
    alarm_cells = [c for c in row.cells.values() if c.alarms]
    assert alarm_cells, "no alarm on the sheet"
    assert all(c.posture == "prone" for c in alarm_cells)  # never shown as on the back
    [alarm] = row.alarms
    assert alarm.kind == "prone_alarm"
    assert [by for _, by in alarm.acks] == ["button"]  # pressed at 9 s, before the turn
    assert alarm.cleared is not None and alarm.cleared > alarm.acks[0][0]
    [nap] = row.naps
    assert nap.start <= alarm.raised


def _with_state_dir(text: str, state: Path) -> str:
    return text + f'\n[outbox]\npath = "{state / "outbox.sqlite3"}"\n'


async def _edge(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_staff_acknowledge_by_name_and_the_alarm_waits_for_the_turn(tmp_path: Path) -> None:
    state = tmp_path / "site"
    # The command line reads the same state directory as the daemon (beside the outbox).
    text = _with_state_dir((SITES / "nap-alarms.toml").read_text(encoding="utf-8"), state)
    config = tmp_path / "device.toml"
    config.write_text(text, encoding="utf-8")
    async with EmulatedSite(text, state) as site:
        kinds = lambda k: [e for e in site.events() if e["kind"] == k]  # noqa: E731
        code, _, err = await _edge("nap", "ack", "-c", str(config), "--by", "ZZ")
        assert code == 2 and "--by ZZ: not in rules.naps.staff (YT, KS)" in err
        await site.apply("mat_1", "lie_down")
        await until(lambda: bool(kinds("posture_check")), 10, "a posture check")
        await site.apply("mat_1", "roll_to", "prone")
        await until(lambda: bool(kinds("prone_alarm")), 15, "the prone alarm")
        code, out, err = await _edge("nap", "ack", "-c", str(config), "--by", "YT")
        assert code == 0, err
        assert "still" in out and "until" in out  # acknowledged; sounds until turned
        assert site.actuator_states()["buzzer"] is True
        await site.apply("mat_1", "roll_to", "supine")
        await until(lambda: bool(kinds("alarm_cleared")), 15, "the alarm cleared")
        # The event says a staff member answered; who by name stays on the device.
        assert kinds("alarm_cleared")[0]["data"]["acknowledged_by"] == "staff"
        assert "YT" not in str(site.events())
        await until(lambda: site.actuator_states()["buzzer"] is False, 3, "the buzzer off")
        # No alarm now: the staff member's round is recorded as a check.
        code, out, err = await _edge("nap", "ack", "-c", str(config), "--by", "KS")
        assert code == 0 and "check" in out, (out, err)
    code, out, err = await _edge("report", "naps", "-c", str(config), "--date",
                                 dt.datetime.now(JST).date().isoformat(),
                                 "--out", str(tmp_path / "out"))
    assert code == 0, err
    csv_text = next((tmp_path / "out").glob("*.csv")).read_text(encoding="utf-8-sig")
    assert "YT" in csv_text and "KS" in csv_text and "ベンチ保育園" in csv_text


async def test_a_mat_reading_zero_everywhere_is_check_by_hand_not_empty(tmp_path: Path) -> None:
    text = (SITES / "nap-alarms.toml").read_text(encoding="utf-8")
    async with EmulatedSite(text, tmp_path / "site") as site:
        kinds = lambda k: [e for e in site.events() if e["kind"] == k]  # noqa: E731
        await site.apply("mat_1", "lie_down")
        await until(lambda: bool(kinds("posture_check")), 10, "a posture check")
        mat = site.emulators["mat_1"]
        mat.scene.dead = frozenset(range(mat.scene.rows * mat.scene.cols))
        await until(lambda: bool(kinds("sensor_fault")), 10, "the mat fault")
        fault = kinds("sensor_fault")[0]["data"]
        assert fault["fault"] == "all_zero" and "by hand" in fault["message"]
        assert "ひよこ-1" in fault["message"]
        n_checks = len(kinds("posture_check"))
        await until(lambda: site.daemon.naps["naps"].by_hand() == ["ひよこ-1"], 5,
                    "the nap rule to check the cot by hand")
        mat.scene.dead = frozenset()
        await until(lambda: bool(kinds("sensor_recovered")), 10, "the recovery")
        await until(lambda: not site.daemon.naps["naps"].by_hand(), 5, "automatic checks again")
        assert all(e["data"]["posture"] != "empty" for e in kinds("posture_check")[n_checks:])
    entries = _today_entries(tmp_path / "site" / "naps.sqlite3")
    by_hand = [e for e in entries if e.kind == "by_hand"]
    assert [(e.cot, e.value) for e in by_hand] == [("ひよこ-1", "all_zero")]
    assert any(e.kind == "by_hand_end" for e in entries)
    sheet = build_sheet(entries, {"ひよこ-1": ""}, date=dt.datetime.now(JST).date())
    assert any(c.by_hand for c in sheet.rows[0].cells.values())
    assert not any(c.posture == "empty" for c in sheet.rows[0].cells.values())


async def test_a_restart_closes_what_the_last_run_left_open(
    tmp_path: Path,
) -> None:
    """Stopped while the mat read zero and the child slept; started again with the mat
    working and the cot empty: the fault and the nap end there, not at the end of the day."""
    text = (SITES / "nap-alarms.toml").read_text(encoding="utf-8")
    state = tmp_path / "site"
    async with EmulatedSite(text, state) as site:
        kinds = lambda k: [e for e in site.events() if e["kind"] == k]  # noqa: E731
        await site.apply("mat_1", "lie_down")
        await until(lambda: bool(kinds("posture_check")), 10, "a posture check")
        mat = site.emulators["mat_1"]
        mat.scene.dead = frozenset(range(mat.scene.rows * mat.scene.cols))
        await until(lambda: site.daemon.naps["naps"].by_hand() == ["ひよこ-1"], 10, "by hand")
    async with EmulatedSite(text, state) as site:
        await until(lambda: "mat_1" in site.daemon.naps["naps"]._seen, 10, "a first reading")
    entries = _today_entries(state / "naps.sqlite3")
    sheet = build_sheet(entries, {"ひよこ-1": ""}, date=dt.datetime.now(JST).date())
    row = sheet.rows[0]
    [(_, until_t, why)] = row.by_hand
    assert why == "all_zero" and until_t is not None
    [nap] = row.naps
    assert nap.wake is not None and nap.wake == until_t
