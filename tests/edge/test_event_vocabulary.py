"""The typed event vocabulary on the device: what the recorder writes for each type."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.config import parse
from edge.event import (
    DATA_TYPES,
    KINDS,
    AnimalDetected,
    HeartbeatData,
    ProneAlarm,
    SensorRecovered,
    WaterLevelAlert,
    WaterStage,
    channel_topic,
    decode,
    events_topic,
    topic_device,
)
from edge.link.outbox import Outbox
from edge.link.recorder import PlacedRecord, Recorder
from edge.sim import site_text


@pytest.fixture
async def recorder(tmp_path: Path) -> AsyncIterator[Recorder]:
    config = parse(site_text.device(tmp_path / "outbox.sqlite3"), "test")
    outbox = Outbox(config.outbox.path)
    outbox.open()
    yield Recorder(config, outbox)
    outbox.close()


async def _stored(recorder: Recorder) -> list[dict[str, object]]:
    rows = await recorder.outbox.pending(100)
    return [
        {"kind": e.kind, "severity": e.severity, "data": e.data}
        for e in (decode(r.payload) for r in rows if r.channel == "events")
    ]


def test_every_kind_is_a_type_that_knows_it() -> None:
    assert {t.kind for t in DATA_TYPES.values()} == KINDS == set(DATA_TYPES)
    assert {"update_installed", "update_failed", "trap_armed", "command_rejected"} <= KINDS


async def test_the_event_has_its_types_kind_severity_and_fields(recorder: Recorder) -> None:
    await recorder.record(ProneAlarm(cot="ひよこ3", posture="prone", duration_s=65.0))
    await recorder.record(SensorRecovered(sensor="storage", down_s=None, lost_in_memory={}))
    assert await _stored(recorder) == [
        {"kind": "prone_alarm", "severity": "alarm",
         "data": {"cot": "ひよこ3", "posture": "prone", "duration_s": 65.0}},
        # Fields without a value are absent, as before; a given None stays.
        {"kind": "sensor_recovered", "severity": "info",
         "data": {"sensor": "storage", "down_s": None, "lost_in_memory": {}}},
    ]  # fmt: skip


async def test_a_kind_without_its_own_severity_needs_one(recorder: Recorder) -> None:
    alert = WaterLevelAlert(
        sensor="level_east", level_cm=182.5, stage="danger", stage_label="避難判断水位",
        threshold_cm=180.0, direction="rising",
        stages=[WaterStage(name="danger", label="避難判断水位", level_cm=180.0)],
    )  # fmt: skip
    with pytest.raises(ValueError, match="water_level_alert: a severity is needed"):
        await recorder.record(alert)
    event = await recorder.record(alert, severity="alarm")
    assert event.severity == "alarm"
    assert event.data["stages"] == [{"name": "danger", "label": "避難判断水位", "level_cm": 180.0}]


async def test_a_heartbeat_leaves_out_what_has_no_value(recorder: Recorder) -> None:
    event = recorder.make(HeartbeatData(interval_s=300.0, uptime_s=5.0, outbox_depth=0))
    assert event.data == {
        "interval_s": 300.0, "uptime_s": 5.0, "outbox_depth": 0, "evicted": {},
        "sensors": {}, "bytes_sent_today": 0,
    }  # fmt: skip


async def test_the_watches_record_names_the_place(recorder: Recorder) -> None:
    record = PlacedRecord("  東の\n田んぼ  ")
    record.recorder = recorder
    detection = AnimalDetected(
        sensor="pir_north", rule="chase", deterrent="sounded", siren=True, strobe=True
    )
    event = await record(detection, at=1_795_000_000.0)
    assert event.data["place"] == "東の 田んぼ"
    assert event.ts.timestamp() == 1_795_000_000.0
    unnamed = PlacedRecord("")
    unnamed.recorder = recorder
    assert "place" not in (await unnamed(detection)).data


def test_topics() -> None:
    assert events_topic("satoyama/v1", "+") == "satoyama/v1/+/events"
    assert channel_topic("a/b", "dev-1", "telemetry") == "a/b/dev-1/telemetry"
    assert topic_device("a/b/dev-1/events") == ("dev-1", "events")
