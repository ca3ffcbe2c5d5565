"""The outbox on a disk that really fills up (a tiny tmpfs in a private mount
namespace, as in test_store_and_forward.py): counts stay exact, nothing durable is
evicted that the cap did not call for, and each fault is one notice.

The scenario runs in its own process inside ``unshare -rm`` (this module is also
the script: ``python -m tests.e2e.test_outbox_faults DIR CAP MEMORY DURABLE MORE``)
and prints what it saw as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from edge.config import parse
from edge.daemon import Daemon
from edge.link.outbox import Outbox
from edge.sim.broker import Mosquitto
from tests.e2e.test_store_and_forward import DEVICE, ROOT, config_text, in_private_tmpfs
from tests.edge.link.test_outbox import make_event
from tests.support.events import numbered
from tests.support.spy import spy_on
from tests.support.waiting import until_sync

pytestmark = pytest.mark.slow


async def scenario(
    folder: Path, cap: int, memory: int, durable_n: int, more: int
) -> dict[str, Any]:
    from edge.link.outbox import Outbox
    from tests.edge.link.test_outbox import make_event
    from tests.support.daemon_harness import fill

    path = folder / "outbox.sqlite3"
    box = Outbox(path, max_events=cap, memory_max_events=memory)
    box.open()
    durable: list[str] = []
    in_memory: list[str] = []
    notices: list[Any] = []
    try:
        for start in range(0, durable_n, 50):  # the link is down: nothing is acknowledged
            events = [make_event(i) for i in range(start, min(durable_n, start + 50))]
            assert await box.put_many(events)
            durable += [e.id for e in events]
        fill(folder)  # a real ENOSPC
        for i in range(more):
            event = make_event(durable_n + i, ("alarm", "warning", "info")[i % 3])
            (durable if await box.put(event) else in_memory).append(event.id)
            if i % 25 == 0:
                await box.retry()  # as the daemon's storage watcher does
                await box.pending(20)  # as the uplink does
        during = await box.stats()
        (folder / "filler").unlink()
        recovered = await box.retry()
        after = await box.stats()
        notices = [(n.kind, n.code) for n in box.take_notices()]
    finally:
        box.close()
    with sqlite3.connect(path) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM events")]
        kept = conn.execute("SELECT value FROM meta WHERE key = 'count'").fetchone()[0]
    return {
        "durable": durable,
        "in_memory": in_memory,
        "depth_during": during.depth,
        "depth_after": after.depth,
        "evicted": after.evicted,
        "recovered": recovered,
        "notices": notices,
        "ids": ids,
        "kept_count": kept,
    }


def run_scenario(tmp_path: Path, *args: int) -> dict[str, Any]:
    folder = tmp_path / "disk"
    result = subprocess.run(
        [*in_private_tmpfs(folder, 4096), sys.executable, "-m", "tests.e2e.test_outbox_faults",
         str(folder), *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_disk_full_at_a_small_cap_with_the_link_down_loses_nothing_durable(
    tmp_path: Path,
) -> None:
    r = run_scenario(tmp_path, 1000, 2000, 500, 300)
    assert r["in_memory"], "the disk never filled: the test means nothing"
    # 500 + 300 < 1000: the cap never called for an eviction.
    assert r["evicted"] == {}
    assert set(r["durable"]) <= set(r["ids"]), "durable events were lost"
    assert set(r["ids"]) == set(r["durable"]) | set(r["in_memory"])
    assert r["depth_during"] == r["depth_after"] == len(r["ids"]) == r["kept_count"] == 800
    assert r["recovered"] is True
    assert [n for n in r["notices"] if n[0] in ("fault", "recovered")] == [
        ["fault", "disk_full"], ["recovered", "disk_full"]]


def test_rows_that_neither_disk_nor_memory_can_hold_are_counted_and_reported(
    tmp_path: Path,
) -> None:
    r = run_scenario(tmp_path, 1000, 50, 100, 200)
    lost = sum(r["evicted"].values())
    assert lost == len(r["in_memory"]) - 50  # every row the buffer could not keep
    assert [n for n in r["notices"] if n[0] == "memory_full"] == [["memory_full", "memory_full"]]
    assert set(r["durable"]) <= set(r["ids"])
    assert len(r["ids"]) == r["kept_count"] == r["depth_after"]


async def test_daemon_reports_a_damaged_row_once_and_sends_the_alarm_behind_it(
    tmp_path: Path, broker: Mosquitto
) -> None:
    path = tmp_path / "device" / "outbox.sqlite3"
    path.parent.mkdir()
    box = Outbox(path)
    box.open()
    bad, alarm = make_event(1), make_event(2)
    await box.put(bad)
    await box.put(alarm)
    box.close()
    with sqlite3.connect(path) as conn:  # a flipped bit: the id is no longer UTF-8
        conn.execute("UPDATE events SET id = CAST(? AS TEXT) WHERE id = ?",
                     (b"\xff" + bad.id.encode()[1:], bad.id))

    def reports() -> list[Any]:
        return [e for e in spy.of_kind("sensor_fault") if e.data.get("fault") == "quarantined"]

    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with Daemon(parse(config_text(tmp_path, broker.port))) as daemon:
            await spy.wait(lambda: alarm.id in spy.ids(), 10, "the alarm behind the damaged row")
            await spy.wait(lambda: bool(reports()), 10, "the report of the damaged row")
            await daemon.heartbeat.beat()  # the uplink reads the outbox again, and again
            await spy.wait(lambda: len(spy.of_kind("heartbeat")) >= 2, 10, "a second heartbeat")
    assert len(reports()) == 1
    assert reports()[0].data["sensor"] == "outbox" and reports()[0].data["rows"] == 1


async def test_a_fault_that_clears_at_once_is_still_reported_once_with_its_recovery(
    tmp_path: Path, broker: Mosquitto
) -> None:
    path = tmp_path / "device" / "outbox.sqlite3"

    def storage(kind: str) -> list[Any]:
        return [e for e in spy.of_kind(kind) if e.data.get("sensor") == "storage"]

    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with Daemon(parse(config_text(tmp_path, broker.port))) as daemon:
            assert daemon.recorder is not None and daemon.outbox._conn is not None
            await spy.wait(lambda: bool(spy.of_kind("heartbeat")), 10, "the first heartbeat")
            daemon.outbox._conn.execute("PRAGMA busy_timeout=20")
            blocker = sqlite3.connect(path, timeout=0, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # another writer, for a moment
            await daemon.recorder.record(numbered(1), severity="info")  # kept in memory
            blocker.execute("ROLLBACK")
            blocker.close()
            await daemon.recorder.record(numbered(2), severity="info")  # durable: both written
            await spy.wait(lambda: bool(storage("sensor_recovered")), 10, "the recovery")
            await spy.wait(lambda: len(spy.of_kind("anomaly")) == 2, 10, "both events")
            for _ in range(20):
                await daemon.outbox.pending(10)  # reads decide nothing about the disk
            await daemon.heartbeat.beat()
            await spy.wait(lambda: len(spy.of_kind("heartbeat")) >= 2, 10, "a later heartbeat")
    assert [e.data["fault"] for e in storage("sensor_fault")] == ["locked"]
    assert len(storage("sensor_recovered")) == 1


async def test_the_siren_is_armed_before_the_outbox_is_opened(tmp_path: Path) -> None:
    path = tmp_path / "device" / "outbox.sqlite3"
    path.parent.mkdir()
    box = Outbox(path)
    box.open()
    box.close()
    # Another writer holds the file: opening the outbox waits out its busy timeout.
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    daemon = Daemon(parse(config_text(tmp_path, 9)))  # nothing listens on port 9
    seen: dict[str, Any] = {}

    def detect_while_the_outbox_opens() -> None:
        try:
            try:
                until_sync(lambda: "pir_north" in daemon.detectors, 4.0, "the detector")
            except AssertionError:
                seen["siren"] = "no detector while the outbox was opening"
                return
            pin = daemon.pin_factory.pin(17)
            pin.drive_high()
            seen["siren"] = bool(daemon.pin_factory.pin(27).state)
            seen["outbox_open"] = daemon.outbox._thread is not None
            pin.drive_low()
        finally:
            blocker.execute("ROLLBACK")

    thread = threading.Thread(target=detect_while_the_outbox_opens)
    thread.start()
    try:
        await daemon.start()
        thread.join()
        assert seen == {"siren": True, "outbox_open": False}
    finally:
        thread.join()
        await daemon.close()
        blocker.close()


if __name__ == "__main__":
    folder, cap, memory, durable_n, more = sys.argv[1], *map(int, sys.argv[2:6])
    out = asyncio.run(scenario(Path(folder), cap, memory, durable_n, more))
    print(json.dumps(out))
