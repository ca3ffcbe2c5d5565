"""Store-and-forward figures: durable ingest, backlog drain, bytes on the wire, memory.

    .venv/bin/python benchmarks/store_and_forward.py [--quick]

Everything runs through the real code: the outbox on a real SQLite file
(synchronous=FULL), the uplink through a real mosquitto, and a simulated
cellular link (a TCP proxy, ``edge.sim.cellular``) that adds latency and counts
the bytes that cross the socket.  Each figure is printed beside a naive
baseline run in the same process.  Targets (issue 5):

* durable ingest: group commit >= 10x one-transaction-per-event, and >= 20,000 events/s;
* backlog drain at 100 ms RTT: windowed >= 10x one-at-a-time; loopback >= 5,000 events/s;
* bytes per telemetry reading, batched compact <= 30 % of one pretty JSON message each;
* daemon RSS with a 50,000-event backlog: flat, <= 60 MB;
* data per device-month at default rates (heartbeats included) <= 1 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.config import parse  # noqa: E402
from edge.daemon import GIL_SWITCH_INTERVAL_S, Daemon  # noqa: E402
from edge.event import Event, Location, new_event_id  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.sim.broker import Mosquitto, free_port  # noqa: E402
from edge.sim.cellular import CellularLink  # noqa: E402
from edge.sim.site import DEVICE_ID, device_config  # noqa: E402
from edge.telemetry import TelemetryBuffer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def event(seq: int, severity: str = "warning") -> Event:
    return Event(
        id=new_event_id(),
        device=DEVICE_ID,
        site="shiojiri-kataoka",
        kind="anomaly",
        severity=severity,  # type: ignore[arg-type]
        ts=dt.datetime.now(dt.UTC),
        clock_synced=True,
        seq=seq,
        boot="3f0b6a1e-2c55-4d7e-9a51-0b7f1f2c9d10",
        location=Location(lat=36.10395, lon=137.96563),
        data={"sensor": "level_east", "score": 0.93},
    )


def line(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<46} {value:>16}  {note}")


# -- 1. durable ingest ----------------------------------------------------------


async def ingest(tmp: Path, n_naive: int, n_group: int) -> tuple[float, float]:
    box = Outbox(tmp / "naive.sqlite3", max_events=10_000_000)
    box.open()
    t = time.perf_counter()
    for i in range(n_naive):
        await box.put(event(i))  # one durable transaction per event, one at a time
    naive = n_naive / (time.perf_counter() - t)
    box.close()

    # A burst: every event handed over at once; each put returns when its own row
    # is durable, and they share commits.
    box = Outbox(tmp / "burst.sqlite3", max_events=10_000_000)
    box.open()
    events = [event(i) for i in range(n_group)]
    t = time.perf_counter()
    await asyncio.gather(*(box.put(e) for e in events))
    burst = n_group / (time.perf_counter() - t)
    burst_commits = box.commits
    box.close()

    # Many producers, each waiting for its event to be durable before the next
    # (sensors recording as fast as the outbox lets them), while an alarm is
    # recorded every 10 ms: how long does the alarm wait to be durable?
    box = Outbox(tmp / "producers.sqlite3", max_events=10_000_000)
    box.open()
    producers = 1000
    per = n_group // producers
    alarm_ms: list[float] = []
    done = asyncio.Event()

    async def producer(k: int) -> None:
        for e in events[k * per : (k + 1) * per]:
            await box.put(e)

    async def alarms() -> None:
        i = 0
        while not done.is_set():
            t0 = time.perf_counter()
            await box.put(event(10_000_000 + i, "alarm"))
            alarm_ms.append((time.perf_counter() - t0) * 1000)
            i += 1
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(alarms())
    t = time.perf_counter()
    await asyncio.gather(*(producer(k) for k in range(producers)))
    many = producers * per / (time.perf_counter() - t)
    done.set()
    await watcher
    box.close()
    alarm_ms.sort()
    # A heavy but realistic background (5,000 events/s) and the same alarms.
    box = Outbox(tmp / "background.sqlite3", max_events=10_000_000)
    box.open()
    calm_ms: list[float] = []
    done = asyncio.Event()

    async def background() -> None:
        i = 0
        while not done.is_set():
            await asyncio.gather(*(box.put(event(20_000_000 + i + k)) for k in range(5)))
            i += 5
            await asyncio.sleep(0.001)

    async def calm_alarms() -> None:
        for i in range(200):
            t0 = time.perf_counter()
            await box.put(event(30_000_000 + i, "alarm"))
            calm_ms.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.01)
        done.set()

    await asyncio.gather(background(), calm_alarms())
    box.close()
    calm_ms.sort()

    print("durable ingest (synchronous=FULL, WAL; each put returns once its row is durable):")
    line("one transaction per event (naive)", f"{naive:,.0f} ev/s")
    line(f"group commit, burst of {n_group}", f"{burst:,.0f} ev/s",
         f"{burst / naive:.1f}x naive, {burst_commits} commits")
    line(f"group commit, {producers} producers", f"{many:,.0f} ev/s", f"{many / naive:.1f}x naive")
    line("  an alarm's wait meanwhile (loop saturated)",
         f"p50 {alarm_ms[len(alarm_ms) // 2]:.1f} ms",
         f"p99 {alarm_ms[int(len(alarm_ms) * 0.99)]:.1f} ms, max {alarm_ms[-1]:.1f} ms "
         f"(n={len(alarm_ms)})")
    line("an alarm's wait, ~5,000 ev/s background",
         f"p50 {calm_ms[len(calm_ms) // 2]:.2f} ms",
         f"p99 {calm_ms[int(len(calm_ms) * 0.99)]:.2f} ms, max {calm_ms[-1]:.2f} ms (n={len(calm_ms)})")
    line("target", ">= 10x, >= 20,000 ev/s")
    return naive, burst


# -- 2. backlog drain -------------------------------------------------------------


async def drain(tmp: Path, broker: Mosquitto, port: int, n: int, window: int) -> float:
    """Fill the outbox with ``n`` events, connect, time until the broker has them all."""
    outbox_path = tmp / f"drain-{window}-{port}.sqlite3"
    box = Outbox(outbox_path, max_events=10_000_000)
    box.open()
    for start in range(0, n, 5000):
        await box.put_many([event(i) for i in range(start, min(n, start + 5000))])
    box.close()
    text = device_config(outbox_path, port, warmup_s=0).replace(
        "reconnect_min_s", f"publish_window = {window}\nreconnect_min_s"
    )
    text += "\n[health]\nheartbeat_s = 86400\nmodem = \"none\"\n"
    async with Daemon(parse(text)) as daemon:
        t = time.perf_counter()
        while await daemon.outbox.depth() > 0:
            await asyncio.sleep(0.02)
        return n / (time.perf_counter() - t)


# -- 3. bytes per telemetry reading -------------------------------------------------


async def telemetry_bytes(broker: Mosquitto, readings: int, per_batch: int) -> tuple[float, float]:
    with CellularLink(broker.host, broker.port) as cell:
        async with aiomqtt.Client(cell.host, cell.port, identifier="bytes-naive") as c:
            cell.reset_counters()
            t0 = time.time()
            for i in range(readings):
                payload = json.dumps(
                    {
                        "id": new_event_id(),
                        "device": DEVICE_ID,
                        "site": "shiojiri-kataoka",
                        "kind": "telemetry",
                        "severity": "info",
                        "ts": dt.datetime.fromtimestamp(t0 + 600 * i, dt.UTC).isoformat(),
                        "clock_synced": True,
                        "location": {"lat": 36.10395, "lon": 137.96563},
                        "data": {"sensor": "level_east", "level_cm": round(12.0 + i * 0.1, 1)},
                    },
                    indent=2,
                )
                await c.publish(f"satoyama/v1/{DEVICE_ID}/telemetry", payload, qos=1)
            naive = (cell.bytes_up + cell.bytes_down) / readings
        async with aiomqtt.Client(cell.host, cell.port, identifier="bytes-batched") as c:
            cell.reset_counters()
            buf = TelemetryBuffer(
                device=DEVICE_ID, site="shiojiri-kataoka", boot="3f0b6a1e-2c55-4d7e-9a51-0b7f1f2c9d10",
                batch_s=3600, max_readings=per_batch, clock_synced=lambda: True,
            )
            for i in range(readings):
                buf.add("level_east.level_cm", round(12.0 + i * 0.1, 1), at=t0 + 600 * i)
                if len(buf) >= per_batch or i == readings - 1:
                    row = buf.take()
                    assert row is not None
                    await c.publish(f"satoyama/v1/{DEVICE_ID}/telemetry", row.payload, qos=1)
            batched = (cell.bytes_up + cell.bytes_down) / readings
    return naive, batched


# -- 4. memory with a backlog ---------------------------------------------------------


def rss_mb(pid: int) -> float:
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return int(text.split()[1]) / 1024
    return 0.0


async def memory(tmp: Path, n: int) -> tuple[list[float], list[float]]:
    outbox_path = tmp / "rss.sqlite3"
    box = Outbox(outbox_path, max_events=10_000_000)
    box.open()
    for start in range(0, n, 5000):
        await box.put_many([event(i) for i in range(start, min(n, start + 5000))])
    box.close()
    port = free_port()
    config = tmp / "rss.toml"
    config.write_text(device_config(outbox_path, port, warmup_s=0) + '\n[health]\nmodem = "none"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    offline: list[float] = []
    online: list[float] = []
    try:
        for _ in range(20):  # 10 s with the link down and 50,000 events waiting
            await asyncio.sleep(0.5)
            offline.append(rss_mb(proc.pid))
        with Mosquitto(port=port):
            reader = Outbox(outbox_path)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                online.append(rss_mb(proc.pid))
                reader.open()
                depth = await reader.depth()
                reader.close()
                if depth == 0:
                    break
    finally:
        proc.terminate()
        proc.wait(10)
    return offline, online


# -- 5. a device-month of data -----------------------------------------------------


async def month(tmp: Path, broker: Mosquitto) -> None:
    """Measure each kind of traffic on the daemon's own socket, then scale to default rates.

    Bytes come from the kernel (TCP_INFO): payload both ways, TLS/MQTT framing
    included, plus 52 B of IP+TCP header for every segment actually sent or
    received (ACKs included).
    """
    text = device_config(tmp / "month.sqlite3", broker.port, warmup_s=0).replace(
        "reconnect_min_s", "keepalive_s = 5\nreconnect_min_s"
    )
    text += '\n[health]\nheartbeat_s = 86400\nmodem = "none"\n'
    async with Daemon(parse(text)) as daemon:
        up = daemon.uplink
        assert up is not None

        async def settled() -> int:
            while await daemon.outbox.depth():
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # let the last ACKs cross before reading the counters
            before = up.usage.total
            up.sample_usage()
            return up.usage.total - before

        defaults = parse(device_config(tmp / "x", 1883))
        readings = int(defaults.telemetry.batch_s // 600)  # water level every 10 minutes
        await asyncio.wait_for(up.connected.wait(), 10)
        await settled()
        connect = up.usage.total  # CONNECT, status, SUBSCRIBE, the first heartbeat
        await daemon.heartbeat()
        heartbeat = await settled()
        for i in range(readings):
            daemon.add_reading("level_east.level_cm", 12.0 + i / 10, at=time.time() + 600 * i)
        await daemon.flush_telemetry()
        batch = await settled()
        await asyncio.sleep(5.5)  # one idle keepalive period: one PINGREQ/PINGRESP
        ping = await settled()
    hb_s = defaults.health.heartbeat_s
    keepalive = defaults.uplink.keepalive_s
    batch_s = defaults.telemetry.batch_s
    pings_per_day = (86400 / hb_s) * max(0, -(-hb_s // keepalive) - 1)
    per_day = {
        f"heartbeats (every {hb_s:g} s)": (86400 / hb_s) * heartbeat,
        f"keepalive pings (idle {keepalive} s)": pings_per_day * ping,
        f"telemetry, water level (batch every {batch_s:g} s)": (86400 / batch_s) * batch,
        "reconnects (2 a day)": 2 * connect,
    }
    print("data per device-month at default rates (kernel TCP counters, headers included):")
    line("connect + status + subscribe + heartbeat", f"{connect} B")
    line("one heartbeat event + PUBACK", f"{heartbeat} B")
    line(f"one telemetry batch of {readings} readings", f"{batch} B")
    line("one keepalive ping", f"{ping} B")
    for name, b in per_day.items():
        line(f"{name} per day", f"{b / 1000:.1f} kB")
    wildlife = sum(b for n, b in per_day.items() if not n.startswith("telemetry")) * 30
    water = sum(per_day.values()) * 30
    line("per device-month, wildlife device", f"{wildlife / 1e6:.2f} MB", "target <= 1 MB")
    line("per device-month, water-level device", f"{water / 1e6:.2f} MB", "target <= 1 MB")


async def main(quick: bool) -> None:
    n_drain = 5_000 if quick else 50_000
    with tempfile.TemporaryDirectory(prefix="satoyama-bench-") as d:
        tmp = Path(d)
        await ingest(tmp, n_naive=1_000 if quick else 2_000, n_group=20_000 if quick else 50_000)

        with Mosquitto(workdir=tmp / "broker") as broker:
            print(f"backlog drain through real mosquitto ({n_drain} events):")
            loop_rate = await drain(tmp, broker, broker.port, n_drain, 64)
            line("loopback, window 64", f"{loop_rate:,.0f} ev/s", "target >= 5,000 ev/s")
            with CellularLink(broker.host, broker.port, delay_s=0.05) as cell:
                naive = await drain(tmp, broker, cell.port, 100 if quick else 200, 1)
                line("100 ms RTT, one at a time", f"{naive:,.1f} ev/s")
                windowed = await drain(tmp, broker, cell.port, n_drain // (5 if quick else 2), 64)
                line("100 ms RTT, window 64", f"{windowed:,.1f} ev/s")
                line("ratio", f"{windowed / naive:.1f}x", "target >= 10x")

            naive_b, batched_b = await telemetry_bytes(broker, 120, 6)
            _, batched60 = await telemetry_bytes(broker, 120, 60)
            print("bytes on the wire per telemetry reading (both directions, MQTT included):")
            line("one pretty-JSON message per reading", f"{naive_b:.0f} B")
            line("batched MessagePack, 6 readings/batch", f"{batched_b:.0f} B",
                 f"{100 * batched_b / naive_b:.0f} % of naive (target <= 30 %)")
            line("batched MessagePack, 60 readings/batch", f"{batched60:.0f} B",
                 f"{100 * batched60 / naive_b:.0f} % of naive")
            await month(tmp, broker)

        offline, online = await memory(tmp, 5_000 if quick else 50_000)
        print(f"daemon RSS with a {5_000 if quick else 50_000}-event backlog (edge run, real process):")
        line("link down, 10 s", f"{min(offline):.1f}-{max(offline):.1f} MB")
        line("draining", f"{min(online):.1f}-{max(online):.1f} MB", "target flat, <= 60 MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # as in the daemon's own process
    asyncio.run(main(args.quick))
