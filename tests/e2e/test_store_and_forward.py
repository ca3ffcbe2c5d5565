"""Store-and-forward that loses nothing: kills, outages, priorities, commands, health.

Real mosquitto, the daemon in-process or as a real process (SIGKILL), a
simulated cellular link (a TCP proxy that can be cut) between them.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from edge.config import parse
from edge.daemon import Daemon
from edge.event import Severity
from edge.sim.broker import Mosquitto
from edge.sim.cellular import CellularLink
from edge.sim.site import device_config
from tests.support.events import numbered
from tests.support.spy import spy_on
from tests.support.waiting import until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DEVICE = "shiojiri-kataoka-01"


@pytest.fixture
def link(broker: Mosquitto) -> Iterator[CellularLink]:
    with CellularLink(broker.host, broker.port) as cell:
        yield cell


def config_text(tmp_path: Path, port: int, **extra: str) -> str:
    text = device_config(tmp_path / "device" / "outbox.sqlite3", port, warmup_s=0, on_s=0.2,
                         max_on_s=0.2, cooldown_s=0, reconnect_max_s=0.5)
    # A CONNECT that the cut link swallows is abandoned quickly.
    text = text.replace("reconnect_min_s", "connect_timeout_s = 1\nreconnect_min_s")
    for section, body in extra.items():
        text += f"\n[{section}]\n{body}\n"
    return text


class Harness:
    """The real daemon as a process (tests/support/daemon_harness.py)."""

    def __init__(self, config: Path, wrapper: list[str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*(wrapper or []), sys.executable, "-m", "tests.support.daemon_harness", str(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        first = self.readline()
        if first != "ready":
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"harness did not start: {first!r}\n{err[-3000:]}")

    def readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        self.lines.append(line)
        return line

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ask(self, command: str) -> str:
        self.send(command)
        return self.readline()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


async def read_until_killed(h: Harness, made: set[str], recorded: set[str]) -> None:
    """Collect what the harness says it made and recorded, until its stdout closes."""

    def pump() -> None:
        assert h.proc.stdout is not None
        for line in h.proc.stdout:
            if not line.endswith("\n"):
                continue  # cut short by the kill: says nothing reliable
            words = line.split()
            if len(words) == 2 and words[0] == "made":
                made.add(words[1])
            elif len(words) == 3 and words[0] == "rec" and words[2] in ("durable", "memory"):
                recorded.add(words[1])

    await asyncio.to_thread(pump)


async def test_sigkill_during_bursts_loses_nothing_recorded_and_invents_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = tmp_path / "device.toml"
    config.write_text(config_text(tmp_path, broker.port))
    rng = random.Random(20261124)
    made: set[str] = set()
    recorded: set[str] = set()
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        for _round in range(8):
            h = Harness(config)
            h.send("burst 3000")
            reader = asyncio.create_task(read_until_killed(h, made, recorded))
            await asyncio.sleep(rng.uniform(0.05, 0.6))  # a random moment in the burst
            h.kill()
            await reader
        h = Harness(config)  # the last restart drains everything left
        try:
            await spy.wait(lambda: recorded <= set(spy.ids()), 60, "every recorded event")
        finally:
            h.stop()
    received = set(spy.ids())
    anomalies = {e.id for e in spy.of_kind("anomaly")}
    assert len(recorded) > 1000, "the bursts were killed too early to mean anything"
    assert recorded <= received, f"{len(recorded - received)} recorded events lost"
    assert anomalies <= made, "events arrived that the daemon never made"
    # De-duplicated by id, each arrives once; redelivery is allowed, loss is not.
    assert len(anomalies) == len(received & made)


async def test_status_online_then_offline_by_last_will_or_by_shutdown(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = tmp_path / "device.toml"
    config.write_text(config_text(tmp_path, broker.port))
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/status") as spy:
        h = Harness(config)
        await spy.wait(lambda: any(s.state == "online" for s in spy.statuses), 10, "online")
        h.kill()  # the device vanishes: the broker publishes its last will
        await spy.wait(lambda: spy.statuses[-1].state == "offline", 10, "the last will")
        assert spy.statuses[-1].reason == "connection lost"
        h = Harness(config)
        await spy.wait(lambda: spy.statuses[-1].state == "online", 10, "online again")
        h.stop()  # a clean stop says so itself
        await spy.wait(lambda: spy.statuses[-1].state == "offline", 10, "offline")
        assert spy.statuses[-1].reason == "shutdown"
    # Retained: a newcomer learns the state at once.
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/status",
                      identifier="late-spy") as late:
        await late.wait(lambda: bool(late.statuses), 10, "the retained status")
        assert late.statuses[0].state == "offline"


async def test_after_an_outage_alarms_leave_first(
    tmp_path: Path, broker: Mosquitto, link: CellularLink
) -> None:
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with Daemon(parse(config_text(tmp_path, link.port))) as daemon:
            assert daemon.recorder is not None and daemon.uplink is not None
            await asyncio.wait_for(daemon.uplink.connected.wait(), 10)
            await spy.wait(lambda: bool(spy.of_kind("heartbeat")), 10, "the first heartbeat")
            link.cut()
            await spy.wait(lambda: not daemon.uplink.connected.is_set(), 10, "the link to drop")
            order: list[Severity] = ["info", "warning", "alarm", "info", "alarm", "warning"] * 5
            made = [
                await daemon.recorder.record(numbered(i), severity=sev)
                for i, sev in enumerate(order)
            ]
            link.restore()
            await spy.wait(lambda: len(spy.of_kind("anomaly")) == len(made), 20, "the backlog")
    got = [e.severity for e in spy.of_kind("anomaly")]
    assert got == sorted(got, key=["alarm", "warning", "info"].index)
    alarms = [e.data["score"] for e in spy.of_kind("anomaly") if e.severity == "alarm"]
    assert alarms == sorted(alarms)  # oldest first within a class


async def test_commands_queued_while_offline_are_validated_then_run_or_refused(
    tmp_path: Path, broker: Mosquitto, link: CellularLink
) -> None:
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with Daemon(parse(config_text(tmp_path, link.port))) as daemon:
            assert daemon.uplink is not None
            await asyncio.wait_for(daemon.uplink.connected.wait(), 10)
            await spy.wait(lambda: len(spy.of_kind("heartbeat")) == 1, 10, "the first heartbeat")
            link.cut()
            await spy.wait(lambda: not daemon.uplink.connected.is_set(), 10, "the link to drop")
            async with aiomqtt.Client(broker.host, broker.port) as cloud:
                base = f"satoyama/v1/{DEVICE}/cmd"
                await cloud.publish(f"{base}/heartbeat", b"{}", qos=1)
                await cloud.publish(f"{base}/format_disk", b"{}", qos=1)
                await cloud.publish(f"{base}/heartbeat", b'{"now": "please"}', qos=1)
                await cloud.publish(f"{base}/heartbeat", b"\xff\xfe garbage", qos=1)
            link.restore()  # the broker kept them in the device's persistent session
            await spy.wait(lambda: len(spy.of_kind("command_rejected")) == 3, 20, "3 refusals")
            await spy.wait(lambda: len(spy.of_kind("heartbeat")) == 2, 20, "the asked heartbeat")
    reasons = sorted(e.data["reason"] for e in spy.of_kind("command_rejected"))
    assert any("unknown command 'format_disk'" in r for r in reasons)
    assert sum("invalid payload" in r for r in reasons) == 2


async def test_heartbeat_tells_the_cloud_how_the_device_is(
    tmp_path: Path, broker: Mosquitto, link: CellularLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ModemManager-managed modem, faked at the lowest level: the mmcli binary.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mmcli = bin_dir / "mmcli"
    mmcli.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  "-L -J") echo \'{"modem-list": ["/org/freedesktop/ModemManager1/Modem/0"]}\' ;;\n'
        '  "-m 0 -J") echo \'{"modem": {"generic": {"state": "connected", '
        '"access-technologies": ["lte"], "signal-quality": {"value": "67", "recent": "yes"}}, '
        '"3gpp": {"operator-name": "SORACOM", "registration-state": "roaming"}}}\' ;;\n'
        "  *) exit 1 ;;\nesac\n"
    )
    mmcli.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with Daemon(parse(config_text(tmp_path, link.port))) as daemon:
            await spy.wait(lambda: bool(spy.of_kind("heartbeat")), 10, "a heartbeat")
            await asyncio.to_thread(daemon.pin_factory.pin(17).drive_high)
            await daemon.heartbeat.beat()
            await spy.wait(lambda: len(spy.of_kind("heartbeat")) == 2, 10, "a second heartbeat")
    hb = spy.of_kind("heartbeat")[-1].data
    assert hb["interval_s"] == 10800  # "armed and alive" every 3 hours by default
    assert hb["uptime_s"] >= 0
    assert hb["sensors"] == {"pir_north": "ok"}
    assert hb["link"] == {
        "access_tech": "lte",
        "signal_pct": 67,
        "state": "connected",
        "operator": "SORACOM",
        "registration": "roaming",
    }
    assert hb["bytes_sent_today"] > 0
    assert hb["outbox_depth"] >= 1  # the detection and this heartbeat itself, at most
    first = spy.of_kind("heartbeat")[0]
    assert first.severity == "info"


async def test_todays_link_usage_survives_a_restart(tmp_path: Path, broker: Mosquitto) -> None:
    # A SIM bills by the month in 100 KB units: a daemon restarted by an update
    # must not report a day's traffic as if it had just begun.
    text = config_text(tmp_path, broker.port, health='modem = "none"')
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with Daemon(parse(text)) as daemon:
            assert daemon.uplink is not None
            await spy.wait(lambda: bool(spy.of_kind("heartbeat")), 10, "the first run's heartbeat")
            daemon.uplink.sample_usage()
            before = daemon.uplink.usage.today
            assert before > 0
        kept = json.loads((tmp_path / "device" / "link-usage.json").read_text())
        assert kept["today"] >= before
        async with Daemon(parse(text)):
            await spy.wait(lambda: len({e.id for e in spy.of_kind("heartbeat")}) == 2, 10,
                           "the second run's heartbeat")  # fmt: skip
    newest = max(spy.of_kind("heartbeat"), key=lambda e: e.seq)
    assert newest.data["bytes_sent_today"] >= before


async def test_no_modem_means_no_link_field(
    tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        async with Daemon(parse(config_text(tmp_path, broker.port))):
            await spy.wait(lambda: bool(spy.of_kind("heartbeat")), 10, "a heartbeat")
    assert "link" not in spy.of_kind("heartbeat")[0].data


async def test_telemetry_is_batched_into_one_compact_message(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/telemetry") as spy:
        text = config_text(tmp_path, broker.port, telemetry="batch_s = 3600\nmax_readings = 10")
        async with Daemon(parse(text)) as daemon:
            t0 = time.time()
            for i in range(10):
                daemon.telemetry.add("level_east.level_cm", 12.0 + i / 10, at=t0 + 60 * i)
            await spy.wait(lambda: len(spy.telemetry) == 1, 10, "the full batch")
            daemon.telemetry.add("level_east.level_cm", 99.0, at=t0 + 600)
            await daemon.telemetry.flush()
            await spy.wait(lambda: len(spy.telemetry) == 2, 10, "the flushed batch")
    first = spy.telemetry[0]
    series = first.series["level_east.level_cm"]
    assert series.v == pytest.approx([12.0 + i / 10 for i in range(10)])
    assert series.t == pytest.approx([60 * i for i in range(10)], abs=0.01)
    assert first.t0 == pytest.approx(t0, abs=0.01)
    assert (first.seq, spy.telemetry[1].seq) == (1, 2)
    assert spy.telemetry[1].series["level_east.level_cm"].v == [99.0]


class ForgetfulNat:
    """A carrier's NAT in front of the broker: it forwards bytes, and forgets a flow that
    carried nothing for ``idle_s``.  From then on it drops that flow's packets silently,
    both ways (no FIN, no reset), as a real one does; the device learns only when its
    ping goes unanswered.  Runs on the test's own loop."""

    def __init__(self, target_port: int, idle_s: float) -> None:
        self.target_port = target_port
        self.idle_s = idle_s
        self.port = 0
        self.flows = 0
        self.forgotten = 0
        """Flows the NAT forgot (each one a connection the device lost)."""
        self.quiet_gaps = 0
        """Packets of the newest flow that crossed after at least idle_s / 2 of silence
        (the device's keepalive pings, kept alive)."""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> ForgetfulNat:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.flows += 1
        self.quiet_gaps = 0
        flow = self.flows
        self._writers.update((writer, up_writer))
        last = time.monotonic()
        forgotten = False

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            nonlocal last, forgotten
            while data := await src.read(65536):
                now = time.monotonic()
                if not forgotten and now - last > self.idle_s:
                    forgotten = True
                    self.forgotten += 1
                if forgotten:
                    continue  # into the void
                if now - last >= self.idle_s / 2 and flow == self.flows:
                    self.quiet_gaps += 1
                last = now
                dst.write(data)
                await dst.drain()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (writer, up_writer):  # the device gave up: the broker sees it go
                self._writers.discard(w)
                w.transport.abort()


async def test_keepalive_steps_down_behind_a_nat_that_forgets_idle_flows_and_remembers_it(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The NAT forgets flows idle for 7 s; the device asks for a 10 s keepalive.  Its
    first connection dies at the first ping (an event recorded meanwhile is sent again on
    the next), it steps down to 5 s, that connection holds through pings, and a restarted
    daemon starts at 5 s."""
    async with ForgetfulNat(broker.port, idle_s=7.0) as nat:
        text = config_text(tmp_path, nat.port, health='modem = "none"').replace(
            "reconnect_min_s", "keepalive_s = 10\nkeepalive_min_s = 5\nreconnect_min_s"
        )
        recorded: list[str] = []
        async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
            async with Daemon(parse(text)) as daemon:
                up = daemon.uplink
                assert up is not None and daemon.recorder is not None
                assert up.keepalive.keepalive_s == 10
                await spy.wait(lambda: bool(spy.of_kind("heartbeat")), 10, "the heartbeat")
                await until(lambda: nat.forgotten >= 1 or up.connections > 1, 15,
                            "the NAT to forget the idle flow")  # fmt: skip
                # Recorded while the flow is gone and the device does not know yet.
                lost = await daemon.recorder.record(numbered(0, "nat"))
                recorded.append(lost.id)
                await until(lambda: up.keepalive.keepalive_s == 5, 30, "the keepalive halved")
                await until(lambda: up.connected.is_set() and up.connections == 2, 15,
                            "the second connection")  # fmt: skip
                await spy.wait(lambda: lost.id in spy.ids(), 20, "the event sent again")
                # The shorter keepalive holds: three pings cross, on the same connection.
                await until(lambda: nat.quiet_gaps >= 3, 30, "three keepalive pings")
                assert up.connections == 2 and nat.forgotten == 1
                later = await daemon.recorder.record(numbered(1, "nat"))
                recorded.append(later.id)
                await spy.wait(lambda: later.id in spy.ids(), 10, "an event on the held link")

                async def empty() -> bool:
                    return await daemon.outbox.depth() == 0

                await until(empty, 10, "every row acknowledged")
            kept = json.loads((tmp_path / "device" / "keepalive.json").read_text())
            assert kept["keepalive_s"] == 5
            async with Daemon(parse(text)) as again:
                assert again.uplink is not None and again.uplink.keepalive.keepalive_s == 5
                await until(lambda: nat.flows == 3, 10, "the restarted daemon connected")
        assert set(recorded) <= set(spy.ids())


async def test_readings_held_leave_with_the_heartbeat_as_packed_columns(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """One flight every 3 hours instead of two: the heartbeat takes the readings held
    (long before batch_s), packed as columns, and the cloud's decoder reads them back."""
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/#") as spy:
        text = config_text(tmp_path, broker.port, health='modem = "none"',
                           telemetry="batch_s = 86400")  # fmt: skip
        async with Daemon(parse(text)) as daemon:
            await spy.wait(lambda: bool(spy.of_kind("heartbeat")), 10, "the first heartbeat")
            t0 = time.time()
            for i in range(18):
                level = round(40.0 + i / 10, 1)
                daemon.telemetry.add("level_east.level_cm", level, at=t0 + 600 * i)
            await daemon.heartbeat.beat()
            await spy.wait(lambda: len(spy.telemetry) == 1, 10, "the batch with the heartbeat")
            assert len(spy.of_kind("heartbeat")) == 2
    raw = [p for topic, p in spy.raw if topic.endswith("/telemetry")]
    assert raw and len(raw[0]) < 300  # float arrays: 527 B
    assert spy.telemetry[0].series["level_east.level_cm"].v == [
        round(40.0 + i / 10, 1) for i in range(18)
    ]


def test_private_key_readable_by_others_is_refused(tmp_path: Path, broker: Mosquitto) -> None:
    key = tmp_path / "device.key"
    key.write_text("not really a key")
    key.chmod(0o644)
    config = tmp_path / "device.toml"
    config.write_text(
        config_text(tmp_path, broker.port).replace(
            "[outbox]",
            f'[uplink.tls]\nca_file = "{tmp_path}/ca.pem"\ncert_file = "{tmp_path}/d.pem"\n'
            f'key_file = "{key}"\n\n[outbox]',
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert f"uplink.tls.key_file: {key} is readable by other users (mode 0644)" in result.stderr
    assert "chmod 600" in result.stderr


def test_config_holding_a_password_must_be_private(tmp_path: Path, broker: Mosquitto) -> None:
    config = tmp_path / "device.toml"
    config.write_text(
        config_text(tmp_path, broker.port).replace(
            "reconnect_min_s", 'username = "dev"\npassword = "s3cret-field-pass"\nreconnect_min_s'
        )
    )
    config.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "readable by other users" in result.stderr
    assert "s3cret-field-pass" not in result.stderr + result.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o644  # we never change it behind your back


# -- the disk going away, for real: a tiny tmpfs in a private mount namespace ------

UNSHARE = shutil.which("unshare")


def in_private_tmpfs(folder: Path, size_kb: int, *, read_only: bool = False) -> list[str]:
    """Run a command with a tmpfs of ``size_kb`` mounted at ``folder`` (user+mount namespace).

    ``read_only``: the file system is read-only from the start, as after a boot
    where the kernel found the SD card damaged.  (A busy file system cannot be
    remounted read-only under a running writer, so that is how the test gets one.)
    """
    assert UNSHARE, "unshare (util-linux) is needed for the disk-fault tests"
    folder.mkdir(parents=True, exist_ok=True)
    ro = f' && mount -o remount,ro "{folder}"' if read_only else ""
    return [
        UNSHARE, "-rm", "sh", "-c",
        f'mount -t tmpfs -o size={size_kb}k tmpfs "{folder}"{ro} && exec "$@"', "sh",
    ]


@pytest.mark.parametrize("fault", ["fill", "ro"])
async def test_full_or_read_only_disk_keeps_the_siren_and_the_events(
    tmp_path: Path, broker: Mosquitto, fault: str
) -> None:
    state = tmp_path / "device"
    config = tmp_path / "device.toml"
    config.write_text(config_text(tmp_path, broker.port, health="storage_retry_s = 0.2"))
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        h = Harness(config, wrapper=in_private_tmpfs(state, 2048, read_only=fault == "ro"))
        try:
            await spy.wait(lambda: bool(spy.of_kind("heartbeat")), 10, "the first heartbeat")
            if fault == "fill":
                assert h.ask(f"fill {state}") == "filled"
            assert h.ask("detect pir_north") == "siren on"  # actuators never wait for the disk
            await spy.wait(lambda: bool(spy.of_kind("animal_detected")), 10, "the detection")
            await spy.wait(lambda: bool(spy.of_kind("sensor_fault")), 10, "the storage fault")
            fault_event = spy.of_kind("sensor_fault")[0]
            assert fault_event.data["sensor"] == "storage"
            expected = {"disk_full"} if fault == "fill" else {"read_only", "cannot_open"}
            assert fault_event.data["fault"] in expected
            # More events while the disk is gone: kept in memory, still delivered.
            h.send("burst 50")
            while h.readline() != "burst done":
                pass
            assert sum(1 for line in h.lines if line.endswith("memory")) == 50
            await spy.wait(lambda: len(spy.of_kind("anomaly")) == 50, 10, "the burst")
            assert h.ask(("free " if fault == "fill" else "rw ") + str(state)) in (
                "freed", "mounted rw")
            await spy.wait(lambda: bool(spy.of_kind("sensor_recovered")), 30, "recovery")
            assert spy.of_kind("sensor_recovered")[0].data["sensor"] == "storage"
            assert h.ask("detect pir_north") == "siren on"
        finally:
            h.stop()
    assert h.proc.returncode == 0  # it never crashed


async def test_corrupt_outbox_is_moved_aside_reported_and_the_daemon_runs(
    tmp_path: Path, broker: Mosquitto
) -> None:
    outbox = tmp_path / "device" / "outbox.sqlite3"
    outbox.parent.mkdir(parents=True)
    outbox.write_bytes(b"\x00garbage from a dying SD card" * 1000)
    config = tmp_path / "device.toml"
    config.write_text(config_text(tmp_path, broker.port))
    async with spy_on(broker.host, broker.port, f"satoyama/v1/{DEVICE}/events") as spy:
        h = Harness(config)
        try:
            await spy.wait(lambda: bool(spy.of_kind("sensor_fault")), 10, "the fault report")
            assert h.ask("detect pir_north") == "siren on"
            await spy.wait(lambda: bool(spy.of_kind("animal_detected")), 10, "the detection")
        finally:
            h.stop()
    fault = spy.of_kind("sensor_fault")[0].data
    assert fault["sensor"] == "outbox" and fault["fault"] == "corrupt"
    moved = list(outbox.parent.glob("outbox.sqlite3.corrupt-*"))
    assert len(moved) == 1 and moved[0].name in fault["message"]
    assert moved[0].read_bytes().startswith(b"\x00garbage")
