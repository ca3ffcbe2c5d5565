"""A mat whose every cell reads zero (grid unpowered, ribbon cut) is a sensor fault that
says 'check by hand' -- never an empty cot -- and its recovery is reported."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.config import MatSensorConfig
from edge.event import EventData, Severity
from edge.health.sensor import SensorHealth
from edge.link.outbox import Outbox
from edge.link.telemetry import Telemetry, TelemetryBuffer
from edge.nursery.mat_watch import MatWatch
from edge.sim.mat_emulator import MatModel
from tests.support.waiting import until


@pytest.fixture
def telemetry(tmp_path: Path) -> Iterator[Telemetry]:
    """The daemon's telemetry sink, on a real outbox."""
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    outbox.open()
    buffer = TelemetryBuffer(
        device="dev", site="site", boot="boot", batch_s=60, max_readings=100,
        clock_synced=lambda: True,
    )  # fmt: skip
    yield Telemetry(buffer, outbox)
    outbox.close()


async def test_a_mat_reading_zero_everywhere_is_a_fault_not_an_empty_cot(
    telemetry: Telemetry,
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def record(
        data: EventData, *, severity: Severity | None = None, at: float | None = None
    ) -> None:
        events.append((data.kind, data.to_data()))

    with MatModel(seed=5).start() as mat:
        mat.lie_down()
        watch = MatWatch(
            "mat_1",
            MatSensorConfig(port=mat.port, cot="ひよこ-1"),
            health=SensorHealth("mat_1", record),
            telemetry=telemetry,
        )
        task = asyncio.create_task(watch.run())
        try:
            await until(lambda: watch.last is not None and watch.last.occupied, 15, "occupied")
            assert watch.fault is None
            mat.scene.dead = frozenset(range(mat.scene.rows * mat.scene.cols))
            await until(lambda: any(k == "sensor_fault" for k, _ in events), 5, "the fault")
            [(_, fault)] = [(k, d) for k, d in events if k == "sensor_fault"]
            assert fault["sensor"] == "mat_1" and fault["fault"] == "all_zero"
            assert "ひよこ-1" in fault["message"] and "by hand" in fault["message"]
            assert watch.fault == "all_zero"
            # The zeros never reached the signals: the cot still reads as occupied.
            assert watch.last is not None and watch.last.occupied
            mat.scene.dead = frozenset()
            await until(lambda: any(k == "sensor_recovered" for k, _ in events), 5, "recovery")
            assert watch.fault is None
            await until(lambda: watch.last is not None and watch.last.occupied, 5, "occupied")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_silent_mat_says_check_by_hand(telemetry: Telemetry) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def record(
        data: EventData, *, severity: Severity | None = None, at: float | None = None
    ) -> None:
        events.append((data.kind, data.to_data()))

    with MatModel(seed=6).start() as mat:
        watch = MatWatch(
            "mat_1",
            MatSensorConfig(port=mat.port, cot="A-1"),
            health=SensorHealth("mat_1", record),
            telemetry=telemetry,
            silence_s=1.0,
        )
        task = asyncio.create_task(watch.run())
        try:
            await until(lambda: watch.last is not None, 10, "a reading")
            mat.unplug()
            await until(lambda: any(k == "sensor_fault" for k, _ in events), 5, "the fault")
            fault = next(d for k, d in events if k == "sensor_fault")
            assert fault["fault"] == "no_answer" and "check cot A-1 by hand" in fault["message"]
            assert watch.fault == "no_answer"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
