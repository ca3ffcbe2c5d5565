"""The fleet page's rollout buttons end to end: the deploy tools' own ``fleet.sqlite3``
(made by :class:`deploy.fleet.FleetDB`), the real ``satoyama-deploy`` run by the console,
a real mosquitto the devices' commands go through, and ``satoyama-deploy rollout status``
as the judge of what the console did."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from cloud.config import MqttTlsConfig, NotifierConfig, load_config
from cloud.console.app import deploy_args
from cloud.console.config import anchored, check_console
from cloud.errors import ConfigError
from edge.sim.broker import Mosquitto
from tests.cloud.console.conftest import DEVICE_A, DEVICE_B, console_toml, serve
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)

DEVICES = (DEVICE_A, DEVICE_B, "pi-c-03", "pi-d-04")


def deploy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def fleet_file(tmp_path: Path) -> tuple[Path, list[str]]:
    """A rollout of 1.3.0 to four devices, half of them in the first stage."""
    from deploy.fleet import FleetDB  # the file is built with the real deploy tool

    path = tmp_path / "fleet.sqlite3"
    with FleetDB(path) as fleet_db:
        for device in DEVICES:
            fleet_db.add_device(device, "s", "1.2.3")
        fleet_db.create_rollout(
            version="1.3.0", url="https://ota.example.jp/b.tar", devices=list(DEVICES),
            percent=50.0, sha256="0" * 64, size=1, rollout_id="r1",
        )  # fmt: skip
        first = sorted(p["device"] for p in fleet_db.progress("r1") if p["stage"] == 1)
    assert 0 < len(first) < len(DEVICES)
    return path, first


async def test_pause_and_start_from_the_fleet_page(
    seeded: NotifierConfig, broker: Mosquitto, tmp_path: Path
) -> None:
    path, first = fleet_file(tmp_path)
    config = msgspec.structs.replace(
        seeded,
        mqtt=msgspec.structs.replace(seeded.mqtt, port=broker.port),
        console=msgspec.structs.replace(seeded.console, fleet_db=str(path)),
    )
    got: list[str] = []
    async with aiomqtt.Client(broker.host, broker.port, identifier="the-devices") as devices:
        await devices.subscribe("satoyama/v1/+/cmd/update", qos=1)

        async def listen() -> None:
            async for message in devices.messages:
                got.append(str(message.topic).split("/")[2])

        listener = asyncio.create_task(listen())
        try:
            async for s in serve(config, live_task=False):
                olga = await s.as_user("olga")
                _, _, page = await olga.get("/fleet")
                assert 'data-rollout="r1" data-paused="false"' in page
                assert 'data-testid="rollout-pause-r1"' in page
                assert 'data-testid="rollout-start-r1"' in page

                # a farmer cannot pause it
                alice = await s.as_user("alice")
                assert (await alice.post("/fleet/rollout/r1/pause"))[0] == 403
                assert "PAUSED" not in deploy("rollout", "status", "--db", str(path),
                                              "--id", "r1").stdout  # fmt: skip

                # pause: the deploy tool's own status says so, and it announces nothing
                status, headers, _ = await olga.post("/fleet/rollout/r1/pause")
                assert (status, headers["Location"]) == (303, "/fleet")
                _, _, page = await olga.get("/fleet")
                assert "rollout r1 paused" in page
                assert 'data-rollout="r1" data-paused="true"' in page
                assert 'data-testid="rollout-pause-r1"' not in page
                assert 'data-testid="rollout-start-r1"' in page
                said = await asyncio.to_thread(
                    deploy, "rollout", "status", "--db", str(path), "--id", "r1"
                )
                assert said.returncode == 0 and "PAUSED since" in said.stdout
                assert "by olga" in said.stdout
                refused = await asyncio.to_thread(
                    deploy, "rollout", "announce", "--db", str(path), "--id", "r1",
                    "--stage", "first", "--broker", f"{broker.host}:{broker.port}",
                )  # fmt: skip
                assert refused.returncode != 0 and "is paused" in refused.stderr

                # start: resumed, and the first stage's devices get cmd/update
                status, _, _ = await olga.post("/fleet/rollout/r1/start")
                assert status == 303
                _, _, page = await olga.get("/fleet")
                assert "rollout r1 resumed" in page and "stage first" in page
                assert 'data-rollout="r1" data-paused="false"' in page
                await until(lambda: len(got) >= len(first), 20, "cmd/update at the devices")
                said = await asyncio.to_thread(
                    deploy, "rollout", "status", "--db", str(path), "--id", "r1"
                )
                assert "PAUSED" not in said.stdout

                # start again: the tool's gate refuses the rest, in its own words
                status, _, _ = await olga.post("/fleet/rollout/r1/start")
                assert status == 303
                _, _, page = await olga.get("/fleet")
                assert "first stage not done yet" in page

                store = s.console.config.store.path
                assert store is not None
                with sqlite3.connect(store) as conn:
                    actions = conn.execute(
                        "SELECT action, target, by_user FROM console_actions"
                        " WHERE action LIKE 'rollout_%' ORDER BY id"
                    ).fetchall()
                assert actions == [("rollout_pause", "r1", "olga"), ("rollout_start", "r1", "olga")]
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    assert sorted(got) == first  # the first stage only, once each


async def test_a_rollout_the_fleet_file_does_not_hold_is_not_found(
    seeded: NotifierConfig, tmp_path: Path
) -> None:
    path, _ = fleet_file(tmp_path)
    config = msgspec.structs.replace(
        seeded, console=msgspec.structs.replace(seeded.console, fleet_db=str(path))
    )
    async for s in serve(config, live_task=False):
        olga = await s.as_user("olga")
        for action in ("start", "pause"):
            assert (await olga.post(f"/fleet/rollout/nope/{action}"))[0] == 404


def test_the_rollout_publisher_certificate_is_its_own(tmp_path: Path) -> None:
    """``start`` publishes ``cmd/update`` with ``[console] rollout_cert_file`` (the
    operator's identity), not with the console's own certificate (allowed ``cmd/nap_ack``
    only); without it, the console's own; the two keys go together, and are read
    relative to the configuration file."""
    path = tmp_path / "n.toml"
    path.write_text(console_toml(tmp_path / "n.sqlite3"), encoding="utf-8")
    plain = load_config(path)
    tls = MqttTlsConfig(ca_file="/etc/ca.crt", cert_file="/etc/n.crt", key_file="/etc/n.key")
    mqtt = msgspec.structs.replace(plain.mqtt, tls=tls)

    def args(**keys: str) -> tuple[str, ...]:
        console = anchored(msgspec.structs.replace(plain.console, **keys), tmp_path)
        check_console(console)
        return deploy_args(msgspec.structs.replace(plain, mqtt=mqtt, console=console))

    mine = {"mqtt_cert_file": "console.crt", "mqtt_key_file": "console.key"}
    got = args(**mine, rollout_cert_file="operator.crt", rollout_key_file="operator.key")
    assert got[got.index("--tls-cert") + 1] == str(tmp_path / "operator.crt")
    assert got[got.index("--tls-key") + 1] == str(tmp_path / "operator.key")
    assert got[got.index("--tls-ca") + 1] == "/etc/ca.crt"
    got = args(**mine)
    assert got[got.index("--tls-cert") + 1] == str(tmp_path / "console.crt")
    assert "--tls-cert" not in deploy_args(plain)  # plain TCP: no certificate at all
    with pytest.raises(ConfigError, match=r"console\.rollout_key_file"):
        args(**mine, rollout_cert_file="operator.crt")
