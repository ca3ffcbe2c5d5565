"""The link's daemon tasks on their own: commands run or refused, the updater's spool sent,
storage notices reported, telemetry queued when due.  Real SQLite outbox and recorder."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.config import Config, parse
from edge.event import Event, decode, decode_telemetry
from edge.link.commands import CommandRunner, parse_update_request
from edge.link.outbox import Notice, Outbox
from edge.link.recorder import Recorder
from edge.link.spool import SpoolDrain
from edge.link.storage import StorageWatch, notice_event
from edge.link.telemetry import Telemetry, TelemetryBuffer
from edge.sim import site_text
from tests.support.waiting import until

UPDATE = {
    "id": "u-1",
    "version": "1.4.2",
    "url": "https://updates.example.jp/bundles/edge-1.4.2.tar",
    "sha256": "ab" * 32,
    "size": 1024,
}


@pytest.fixture
async def link(tmp_path: Path) -> AsyncIterator[tuple[Config, Outbox, Recorder]]:
    config = parse(site_text.device(tmp_path / "outbox.sqlite3"), "test")
    outbox = Outbox(config.outbox.path)
    outbox.open()
    yield config, outbox, Recorder(config, outbox)
    outbox.close()


async def _events(outbox: Outbox) -> list[Event]:
    rows = await outbox.pending(100)
    return [decode(r.payload) for r in rows if r.channel == "events"]


async def test_commands_are_run_or_refused_with_an_event(
    link: tuple[Config, Outbox, Recorder], tmp_path: Path
) -> None:
    _, outbox, recorder = link
    tasks: set[asyncio.Task[object]] = set()
    heartbeat = asyncio.Event()
    request = tmp_path / "drop" / "request.json"
    runner = CommandRunner(
        record=recorder.record, spawn=lambda coro, what: tasks.add(asyncio.create_task(coro)),
        heartbeat_now=heartbeat.set, request_path=request,
    )  # fmt: skip
    runner("heartbeat", b"{}")
    assert heartbeat.is_set()
    runner("reboot", b"{}")
    runner("update", json.dumps(UPDATE).encode())
    await asyncio.gather(*tasks)
    [rejected] = await _events(outbox)
    assert rejected.kind == "command_rejected"
    assert rejected.data["command"] == "reboot" and "unknown command" in rejected.data["reason"]
    # The request the updater reads is the very command, and passes its check.
    assert parse_update_request(request.read_bytes()).version == "1.4.2"
    assert not list(request.parent.glob(".*.tmp"))


async def test_the_spool_is_sent_once_with_each_line_s_own_id(
    link: tuple[Config, Outbox, Recorder], tmp_path: Path
) -> None:
    _, outbox, recorder = link
    spool = tmp_path / "spool" / "events.jsonl"
    spool.parent.mkdir()
    lines = [
        {"id": "0190-a", "kind": "update_installed", "severity": "info",
         "ts": "2026-05-01T03:00:00Z", "data": {"from_version": "1.4.1", "to_version": "1.4.2"},
         "source": "updater"},
        {"kind": "update_failed"},  # no severity: dropped, never guessed
    ]  # fmt: skip
    spool.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ack = tmp_path / "drop" / "events.ack"
    drain = SpoolDrain(spool, ack=ack, record=recorder.record, poll_s=0.05)
    task = asyncio.create_task(drain.run())
    try:
        await until(lambda: ack.exists(), 5, "the spool acknowledged")
        [event] = await _events(outbox)
        assert event.id == "0190-a" and event.kind == "update_installed"
        assert event.data == {"source": "updater", "from_version": "1.4.1", "to_version": "1.4.2"}
        assert event.ts.year == 2026 and ack.read_text().strip() == "0190-a"
        # The updater appends a line (it rewrites the file whole): only that one is sent.
        lines.append({"id": "0190-b", "kind": "update_failed", "severity": "warning"})
        spool.write_text("".join(json.dumps(line) + "\n" for line in lines))
        await until(lambda: ack.read_text().strip() == "0190-b", 5, "the new line taken")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(e.id for e in await _events(outbox)) == ["0190-a", "0190-b"]  # each once


def test_storage_notices_become_faults_and_recoveries() -> None:
    fault = notice_event(Notice("fault", "read_only", "the disk is read-only"))
    assert (fault.kind, fault.severity) == ("sensor_fault", "warning")
    assert fault.to_data() == {
        "sensor": "storage", "fault": "read_only", "message": "the disk is read-only"
    }  # fmt: skip
    data = notice_event(Notice("wal", "foreign", "set aside", {"path": "x"})).to_data()
    assert (data["sensor"], data["fault"], data["path"]) == ("outbox", "wal_foreign", "x")
    data = notice_event(Notice("evicting", "full", "full", {"evicted": {"heartbeat": 3}})).to_data()
    assert data["sensor"] == "outbox" and data["fault"] == "full"
    assert data["evicted"] == {"heartbeat": 3}
    recovered = notice_event(Notice("recovered", "", "", {"down_s": 12.5}))
    assert (recovered.kind, recovered.severity) == ("sensor_recovered", "info")
    assert recovered.to_data() == {"sensor": "storage", "down_s": 12.5, "lost_in_memory": {}}


async def test_a_corrupt_outbox_file_is_reported_by_the_storage_watch(tmp_path: Path) -> None:
    # The outbox cannot say how many rows a garbage file held (``unreadable`` unknown):
    # the report goes out anyway, naming where the file went.
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"\x00garbage from a dying SD card" * 1000)
    config = parse(site_text.device(path), "test")
    outbox = Outbox(path)
    outbox.open()
    try:
        recorder = Recorder(config, outbox)
        watch = StorageWatch(outbox, record=recorder.record, retry_s=1.0)
        task = asyncio.create_task(watch.run())
        try:
            await until(lambda: _kind(outbox, "sensor_fault"), 5, "the fault reported")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        [fault] = [e for e in await _events(outbox) if e.kind == "sensor_fault"]
        assert fault.data["sensor"] == "outbox" and fault.data["fault"] == "corrupt"
        assert fault.data["moved_to"] in fault.data["message"]
        assert (tmp_path / fault.data["moved_to"]).name.startswith("outbox.sqlite3.corrupt-")
    finally:
        outbox.close()


async def _kind(outbox: Outbox, kind: str) -> bool:
    return any(e.kind == kind for e in await _events(outbox))


async def test_telemetry_is_queued_when_its_batch_is_full_and_on_flush(
    link: tuple[Config, Outbox, Recorder],
) -> None:
    _, outbox, recorder = link
    buffer = TelemetryBuffer(
        device="dev-1", site="site-1", boot=recorder.boot, batch_s=3600, max_readings=3,
        clock_synced=lambda: True,
    )  # fmt: skip
    telemetry = Telemetry(buffer, outbox)
    task = asyncio.create_task(telemetry.run())
    try:
        for i in range(3):
            telemetry.add("level.level_cm", 10.0 + i, at=1_700_000_000 + i)
        await until(lambda: _rows(outbox, 1), 5, "the full batch queued")
        telemetry.add("level.level_cm", 20.0)
        await telemetry.flush()
        rows = [r for r in await outbox.pending(10) if r.channel == "telemetry"]
        batches = [decode_telemetry(r.payload) for r in rows]
        assert [b.series["level.level_cm"].v for b in batches] == [[10.0, 11.0, 12.0], [20.0]]
        assert len(telemetry) == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _rows(outbox: Outbox, n: int) -> bool:
    return len([r for r in await outbox.pending(10) if r.channel == "telemetry"]) >= n


