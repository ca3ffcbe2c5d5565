"""The heartbeat: every sensor's state, the outbox's depth, and the telemetry held on the
device leaving with it (one flight).  Real SQLite outbox, recorder and GPIO mock pins."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from edge.config import PirSensorConfig, parse
from edge.devices.factory import build_detector
from edge.event import decode, decode_telemetry
from edge.health.heartbeat import Heartbeat, SensorBoard
from edge.health.supervisor import Supervisor
from edge.link.linkstats import DailyUsage
from edge.link.outbox import Outbox
from edge.link.recorder import Recorder
from edge.link.telemetry import Telemetry, TelemetryBuffer
from edge.sim import site_text
from tests.support.waiting import until


async def test_a_heartbeat_says_how_each_sensor_is_and_takes_the_held_readings(
    tmp_path: Path, pins: MockFactory
) -> None:
    config = parse(
        site_text.device(tmp_path / "outbox.sqlite3") + site_text.health(heartbeat_s=3600), "test"
    )
    outbox = Outbox(config.outbox.path)
    outbox.open()
    recorder = Recorder(config, outbox)
    detector = build_detector(PirSensorConfig(pin=17, warmup_s=600), pins)
    try:
        board = SensorBoard(recorder.record, Supervisor(recorder.record))
        board.detectors["pir_north"] = detector
        await board.sensor("level_east").fault("bus_error", "no answer")
        board.sensor("trap_a")
        telemetry = Telemetry(
            TelemetryBuffer(device="dev-1", site="site-1", boot=recorder.boot, batch_s=3600,
                            max_readings=100, clock_synced=lambda: True),
            outbox,
        )  # fmt: skip
        telemetry.add("level_east.level_cm", 42.0)
        wanted = asyncio.Event()
        heartbeat = Heartbeat(
            config.health, outbox=outbox, recorder=recorder, sensors=board,
            telemetry=telemetry, usage=DailyUsage(), started_at=time.monotonic() - 5,
            wanted=wanted,
        )  # fmt: skip
        task = asyncio.create_task(heartbeat.run())
        try:
            await until(lambda: _kinds(outbox, "heartbeat", 1), 5, "the first heartbeat")
            wanted.set()  # cmd/heartbeat: one more now, not in an hour
            await until(lambda: _kinds(outbox, "heartbeat", 2), 5, "the requested heartbeat")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        rows = await outbox.pending(100)
        beat = next(decode(r.payload) for r in rows if r.kind == "heartbeat")
        assert beat.data["sensors"] == {
            "pir_north": "warming_up", "level_east": "fault", "trap_a": "ok"
        }
        assert beat.data["interval_s"] == 3600 and beat.data["uptime_s"] >= 5
        assert "link" not in beat.data  # modem = "none"
        [batch] = [decode_telemetry(r.payload) for r in rows if r.channel == "telemetry"]
        assert batch.series["level_east.level_cm"].v == [42.0]
        assert len(telemetry) == 0
    finally:
        detector.close()
        outbox.close()


async def _kinds(outbox: Outbox, kind: str, n: int) -> bool:
    return len([r for r in await outbox.pending(100) if r.kind == kind]) >= n
