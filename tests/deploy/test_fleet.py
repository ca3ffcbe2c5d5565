"""The cloud side: who runs what, staged rollouts by device-id hash, the update command."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from deploy.errors import DeployError
from deploy.fleet import Broker, FleetDB, bucket, publish, record, split_stages
from deploy.updater import UpdateRequest
from edge.sim.broker import Mosquitto
from tests.deploy.helpers import REPO

PREFIX = "satoyama/v1"
DEVICES = [f"shiojiri-{i:03d}" for i in range(200)]


def test_stages_are_deterministic_and_roughly_the_percentage() -> None:
    first, rest = split_stages(DEVICES, 10)
    assert (first, rest) == split_stages(list(reversed(DEVICES)), 10), "independent of order"
    assert 10 <= len(first) <= 35 and len(first) + len(rest) == 200
    assert all(bucket(d) < 10 for d in first) and all(bucket(d) >= 10 for d in rest)
    # A bigger first stage contains the smaller one: canaries stay canaries.
    assert set(first) <= set(split_stages(DEVICES, 25)[0])
    assert split_stages(DEVICES, 10, salt="2026-06")[0] != first
    with pytest.raises(DeployError):
        split_stages(DEVICES, 0)


def test_rollout_waits_for_a_healthy_first_stage(tmp_path: Path) -> None:
    with FleetDB(tmp_path / "fleet.sqlite3") as db:
        for d in DEVICES[:20]:
            db.record_status(d, {"device": d, "state": "online", "version": "0.2.0"})
        rid = db.create_rollout(
            version="0.3.0",
            url="https://ota.example.jp/satoyama-edge-0.3.0.tar",
            devices=DEVICES[:20],
            percent=20,
            sha256="ab" * 32,
            size=123,
        )
        first = [p["device"] for p in db.progress(rid) if p["stage"] == 1]
        assert first and len(first) < 20
        msgs = db.announce(rid, 1, PREFIX)
        assert sorted(m.topic for m in msgs) == sorted(f"{PREFIX}/{d}/cmd/update" for d in first)
        # The payload is exactly what the device's updater accepts.
        req = msgspec.json.decode(msgs[0].payload, type=UpdateRequest)
        assert (req.version, req.sha256, req.size, req.rollout) == ("0.3.0", "ab" * 32, 123, rid)
        with pytest.raises(DeployError, match="first stage not done yet"):
            db.announce(rid, 2, PREFIX)
        # One canary fails, the others update.
        for d in first[1:]:
            db.record_event(
                d,
                {
                    "id": f"e-{d}",
                    "kind": "update_installed",
                    "site": "shiojiri",
                    "data": {"from_version": "0.2.0", "to_version": "0.3.0"},
                },
            )
        db.record_event(
            first[0],
            {
                "id": "e-bad",
                "kind": "update_failed",
                "site": "shiojiri",
                "data": {"from_version": "0.2.0", "to_version": "0.3.0", "reason": "not healthy"},
            },
        )
        with pytest.raises(DeployError, match=f"first stage has failures \\({first[0]}\\)"):
            db.announce(rid, 2, PREFIX)
        rest = db.announce(rid, 2, PREFIX, force=True)
        assert len(rest) == 20 - len(first)
        versions = {r["device"]: r["version"] for r in db.devices()}
        assert versions[first[1]] == "0.3.0" and versions[first[0]] == "0.2.0"


async def _collect(
    broker: Mosquitto, topic: str, n: int, ready: asyncio.Event
) -> list[aiomqtt.Message]:
    """A device-side subscriber: signals ``ready`` once subscribed, returns after ``n`` messages."""
    got: list[aiomqtt.Message] = []
    async with aiomqtt.Client(broker.host, broker.port, identifier="device-listener") as client:
        await client.subscribe(topic, qos=1)
        ready.set()
        async for msg in client.messages:
            got.append(msg)
            if len(got) == n:
                return got
    return got


async def test_announce_over_mqtt_reaches_the_first_stage_only(
    tmp_path: Path, broker: Mosquitto
) -> None:
    ready = asyncio.Event()
    with FleetDB(tmp_path / "fleet.sqlite3") as db:
        rid = db.create_rollout(
            version="0.3.0", url="https://ota.example.jp/b.tar", devices=DEVICES[:30], percent=30,
            sha256="ab" * 32, size=123,
        )
        first = {p["device"] for p in db.progress(rid) if p["stage"] == 1}
        msgs = db.announce(rid, 1, PREFIX)
    listener = asyncio.create_task(_collect(broker, f"{PREFIX}/+/cmd/update", len(first), ready))
    await asyncio.wait_for(ready.wait(), 10)
    await publish(Broker(broker.host, broker.port), msgs)
    got = await asyncio.wait_for(listener, 10)
    assert {str(m.topic).split("/")[2] for m in got} == first
    assert all(m.qos == 1 and not m.retain for m in got)
    assert json.loads(got[0].payload)["cmd"] == "update"  # type: ignore[arg-type]


async def test_record_who_runs_what_from_status_and_events(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="devices") as client:
        for i, d in enumerate(DEVICES[:3]):
            status = {"device": d, "state": "online", "boot": "b", "version": f"0.{i + 1}.0"}
            await client.publish(f"{PREFIX}/{d}/status", json.dumps(status), qos=1, retain=True)
    with FleetDB(tmp_path / "fleet.sqlite3") as db:
        seen = await record(
            db, Broker(broker.host, broker.port), PREFIX, max_messages=3, listen_s=10
        )
        assert seen == 3
        assert {r["device"]: r["version"] for r in db.devices()} == {
            DEVICES[0]: "0.1.0",
            DEVICES[1]: "0.2.0",
            DEVICES[2]: "0.3.0",
        }
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "deploy.cli",
            "fleet",
            "devices",
            "--db",
            str(tmp_path / "fleet.sqlite3"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert DEVICES[2] in proc.stdout and "0.3.0" in proc.stdout


def test_a_rollout_devices_would_refuse_is_refused_before_it_is_announced(tmp_path: Path) -> None:
    with FleetDB(tmp_path / "fleet.sqlite3") as db:
        good = {"version": "0.3.0", "url": "https://ota.example.jp/b.tar",
                "devices": DEVICES[:3], "percent": 50.0, "sha256": "ab" * 32, "size": 123}
        for bad, says in (
            ({"sha256": None}, "sha256 and size"),
            ({"size": None}, "sha256 and size"),
            ({"url": "http://ota.example.jp/b.tar"}, "would refuse"),
            ({"url": "file:///etc/shadow"}, "would refuse"),
        ):
            with pytest.raises(DeployError, match=says):
                db.create_rollout(**(good | bad))  # type: ignore[arg-type]
        db.create_rollout(**good)  # type: ignore[arg-type]


def test_a_paused_rollout_announces_nothing_until_resumed(tmp_path: Path) -> None:
    path = tmp_path / "fleet.sqlite3"
    with FleetDB(path) as db:
        rid = db.create_rollout(
            version="0.3.0",
            url="https://ota.example.jp/satoyama-edge-0.3.0.tar",
            devices=DEVICES[:20],
            percent=20,
            sha256="ab" * 32,
            size=123,
        )
        assert db.pause(rid, by="ops") and not db.pause(rid, by="someone else")
        for stage, force in ((1, False), (2, True)):
            with pytest.raises(DeployError, match=f"rollout {rid} is paused .* by ops"):
                db.announce(rid, stage, PREFIX, force=force)
        assert all(p["announced"] is None for p in db.progress(rid)), "nothing marked as told"
    # The pause is in the file: another process (the console, the CLI) sees it.
    status = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "rollout", "status", "--db", str(path), "--id", rid],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert status.stdout.startswith("PAUSED since ") and " by ops" in status.stdout
    resumed = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "rollout", "resume", "--db", str(path), "--id", rid],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert resumed.stdout.strip() == f"rollout {rid} resumed"
    with FleetDB(path) as db:
        assert db.announce(rid, 1, PREFIX), "the first stage goes out once resumed"
        assert not db.resume(rid)


def test_a_fleet_file_from_before_pauses_opens_and_keeps_its_rollouts(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "fleet.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE rollouts (id TEXT PRIMARY KEY, version TEXT NOT NULL, url TEXT NOT NULL, "
        "sha256 TEXT, size INTEGER, percent REAL NOT NULL, salt TEXT NOT NULL DEFAULT '', "
        "created TEXT NOT NULL);"
        "INSERT INTO rollouts VALUES ('r1', '0.3.0', 'https://x/b.tar', 'ab', 1, 10, '', 'then');"
    )
    old.commit()
    old.close()
    with FleetDB(path) as db:
        assert db.rollout("r1")["paused"] is None
        assert db.pause("r1") and db.rollout("r1")["paused"] is not None
