"""Store-and-forward figures: durable ingest, backlog drain, bytes on the wire, memory.

    .venv/bin/python benchmarks/store_and_forward.py [--quick]

Everything runs through the real code: the outbox on a real SQLite file
(synchronous=FULL), the uplink through a real mosquitto, and a simulated
cellular link (a TCP proxy, ``edge.sim.cellular``) that adds latency, can
limit each direction's bandwidth and counts the bytes that cross the socket.
The cloud's end-to-end acknowledgement (``PREFIX/DEVICE/ack``) comes from a
stand-in (:class:`CloudAcker`: one ``encode_ack`` message per id, or batched
as the notifier does), so the drain and the data budget pay for it as they
will in the field.  Each figure is printed beside a baseline run in the same
process.  Targets (issue 5):

* durable ingest: group commit >= 10x one-transaction-per-event, and >= 20,000 events/s;
* backlog drain at 100 ms RTT: windowed >= 10x one-at-a-time; loopback >= 5,000 events/s;
  also against paho's default window (20), and on an LTE-M-like link (100 ms RTT,
  300 kbit/s each way) as a share of what the link can carry;
* bytes per telemetry reading, batched compact <= 30 % of one pretty JSON message each
  (and against one compact JSON message each);
* daemon RSS with a 50,000-event backlog: flat, <= 60 MB;
* data per device-month at default rates (heartbeats and the cloud's acknowledgements
  included) <= 1 MB, over mutual TLS (the broker requires a client certificate), for a
  wildlife and a water-level device, with resumed and with full-handshake reconnects
  (issue 12), against the old defaults measured in the same run, and each lever that
  brings it down measured on its own (``--only month``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import faulthandler
import ipaddress
import json
import math
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edge.link.uplink
from deploy.keys import write_private_file
from deploy.pki import create_ca, issue_device_identity
from edge.config import TlsConfig, parse
from edge.daemon import GIL_SWITCH_INTERVAL_S, Daemon
from edge.event import (
    DEFAULT_TOPIC_PREFIX,
    Event,
    Location,
    ack_topic,
    encode_ack,
    new_event_id,
    salvage_id,
)
from edge.link.linkstats import read_counters
from edge.link.outbox import Outbox
from edge.link.telemetry import TelemetryBuffer
from edge.link.tlsresume import ResumingContext
from edge.sim.broker import Mosquitto, free_port
from edge.sim.cellular import MSS, PACKET_OVERHEAD, CellularLink
from edge.sim.site import DEVICE_ID, device_config

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
         f"p99 {calm_ms[int(len(calm_ms) * 0.99)]:.2f} ms, max {calm_ms[-1]:.2f} ms "
         f"(n={len(calm_ms)})")
    line("target", ">= 10x, >= 20,000 ev/s")
    return naive, burst


# -- the cloud's acknowledgement, and mutual TLS ---------------------------------------


class CloudAcker:
    """Stands in for the notifier's end-to-end acknowledgement.

    Every event and telemetry batch the broker delivers is acknowledged on
    ``PREFIX/DEVICE/ack`` with :func:`edge.event.encode_ack`: one message per id
    (``batch_s`` 0), or the ids of ``batch_s`` seconds in one message, as the
    notifier does (``mqtt.ack_delay_s``, 0.2 s).  Nothing is stored first: this
    measures the link, not the notifier's database.
    """

    def __init__(
        self,
        broker: Mosquitto,
        *,
        qos: int = 1,
        batch_s: float = 0.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.broker = broker
        self.qos = qos
        self.batch_s = batch_s
        self.tls_context = tls_context
        self.acked = 0
        self.ids: set[str] = set()
        """Every id acknowledged so far."""
        self.last_event_size = 0
        """Payload bytes of the last event delivered (to size a heartbeat)."""
        self._pending: dict[str, list[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CloudAcker]:
        async with aiomqtt.Client(
            self.broker.host, self.broker.port, identifier="satoyama-cloud-acker",
            tls_context=self.tls_context, max_inflight_messages=100,
        ) as client:
            client.pending_calls_threshold = 10_000
            await client.subscribe(
                [
                    (f"{DEFAULT_TOPIC_PREFIX}/+/events", 1),
                    (f"{DEFAULT_TOPIC_PREFIX}/+/telemetry", 1),
                ]
            )
            listener = asyncio.create_task(self._listen(client))
            try:
                yield self
            finally:
                listener.cancel()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(listener, *self._tasks, return_exceptions=True)

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            row_id = salvage_id(payload, msgpack=topic.endswith("/telemetry"))
            if topic.endswith("/events"):
                self.last_event_size = len(payload)
            if row_id is None:
                continue
            device = topic.split("/")[-2]
            if self.batch_s == 0:
                self._spawn(self._publish(client, device, [row_id]))
                continue
            waiting = self._pending.setdefault(device, [])
            waiting.append(row_id)
            if len(waiting) == 1:
                self._spawn(self._flush_later(client, device))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_later(self, client: aiomqtt.Client, device: str) -> None:
        await asyncio.sleep(self.batch_s)
        ids = self._pending.pop(device, [])
        for start in range(0, len(ids), 200):
            await self._publish(client, device, ids[start : start + 200])

    async def _publish(self, client: aiomqtt.Client, device: str, ids: list[str]) -> None:
        await client.publish(
            ack_topic(DEFAULT_TOPIC_PREFIX, device), encode_ack(ids), qos=self.qos
        )
        self.acked += len(ids)
        self.ids.update(ids)


@dataclass(frozen=True)
class Fleet:
    """A fleet CA, the broker's certificate and two client identities, as deploy/ makes them."""

    ca: Path
    broker_cert: Path
    broker_key: Path
    device: TlsConfig
    cloud: TlsConfig

    def broker_tls(self) -> tuple[Path, Path, Path]:
        return (self.ca, self.broker_cert, self.broker_key)


def make_fleet(folder: Path) -> Fleet:
    """Device and cloud identities by ``deploy.pki`` (what an installer provisions); the
    broker's certificate (P-256, for 127.0.0.1) signed by the same fleet CA."""
    ca_key_path, ca_path = create_ca(folder / "ca", "bench")
    identities = {}
    for name in (DEVICE_ID, "satoyama-cloud"):
        ident = issue_device_identity(ca_path, ca_key_path, name)
        key_file, cert_file = folder / f"{name}.key", folder / f"{name}.crt"
        write_private_file(key_file, ident.key_pem)
        cert_file.write_bytes(ident.cert_pem)
        identities[name] = TlsConfig(
            ca_file=str(ca_path), cert_file=str(cert_file), key_file=str(key_file)
        )
    ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker.bench")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    broker_key, broker_cert = folder / "broker.key", folder / "broker.crt"
    write_private_file(
        broker_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    broker_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Fleet(
        ca_path, broker_cert, broker_key, identities[DEVICE_ID], identities["satoyama-cloud"]
    )


def client_context(tls: TlsConfig, *, resume: bool, tls13: bool = False) -> ssl.SSLContext:
    """What edge/link/uplink.py's ``tls_context`` builds, with or without session resumption
    (``tls13``: offer TLS 1.3 only, which leaves TLS 1.2's suites out of the ClientHello)."""
    ctx = ResumingContext() if resume else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls13 else ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=tls.ca_file)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


@contextlib.contextmanager
def uplink_tls(*, resume: bool, tls13: bool = False) -> Iterator[None]:
    """Make the uplink build its TLS context with (or without) resumption, whatever
    edge/link/uplink.py does by itself, so both are measured in one run."""
    original = edge.link.uplink.tls_context
    edge.link.uplink.tls_context = lambda tls: client_context(tls, resume=resume, tls13=tls13)
    try:
        yield
    finally:
        edge.link.uplink.tls_context = original


def tls_table(tls: TlsConfig) -> str:
    return (
        f'\n[uplink.tls]\nca_file = "{tls.ca_file}"\ncert_file = "{tls.cert_file}"\n'
        f'key_file = "{tls.key_file}"\n'
    )


def uplink_setting(text: str, setting: str) -> str:
    """Add ``setting`` (a TOML line) to the [uplink] table of a device configuration."""
    return text.replace("reconnect_min_s", f"{setting}\nreconnect_min_s", 1)


# -- 2. backlog drain -------------------------------------------------------------


@dataclass(frozen=True)
class Drain:
    rate: float
    """Events per second, from connect until the outbox is empty."""
    up_bytes: float
    """TCP payload the device sent per event (MQTT and the event; TCP_INFO)."""
    down_bytes: float


async def drain(
    tmp: Path, broker: Mosquitto, port: int, n: int, window: int, *, setting: str = ""
) -> Drain:
    """Fill the outbox with ``n`` events, connect, time until the outbox is empty (every
    row acknowledged: by the cloud's stand-in, or by its PUBACK with ``delivery = "puback"``)."""
    outbox_path = tmp / f"drain-{window}-{port}-{n}-{len(setting)}.sqlite3"
    box = Outbox(outbox_path, max_events=10_000_000)
    box.open()
    wanted: set[str] = set()
    for start in range(0, n, 5000):
        batch = [event(i) for i in range(start, min(n, start + 5000))]
        wanted.update(e.id for e in batch)
        await box.put_many(batch)
    box.close()
    text = device_config(outbox_path, port, warmup_s=0)
    text = uplink_setting(text, f"publish_window = {window}\n{setting}")
    text += "\n[health]\nheartbeat_s = 86400\nmodem = \"none\"\n"
    async with CloudAcker(broker, batch_s=0.2).running() as acker, Daemon(parse(text)) as daemon:
        up = daemon.uplink
        assert up is not None
        t = time.perf_counter()
        all_acked: float | None = None
        depth = n
        while depth > 0:
            try:
                depth = await asyncio.wait_for(daemon.outbox.depth(), 10)
            except TimeoutError:
                print(f"  !! Outbox.depth() did not answer in 10 s ({len(wanted - acker.ids)} "
                      f"rows not yet acknowledged by the cloud, {rows_left(outbox_path)} "
                      "rows in the file)")
                raise
            await asyncio.sleep(0.02)
            if all_acked is None and wanted <= acker.ids:
                all_acked = time.perf_counter()
            elif all_acked is not None and time.perf_counter() - all_acked > 5:
                print(f"  !! the outbox still says depth {depth} 5 s after the cloud "
                      f"acknowledged every row; timing until that acknowledgement")
                break
            if time.perf_counter() - t > 20 + n / 5:
                print(f"  !! drain stalled: depth {depth}, {len(wanted - acker.ids)} rows not "
                      f"acknowledged, {rows_left(outbox_path)} rows in the file")
                raise TimeoutError("drain stalled")
        end = all_acked if depth and all_acked is not None else time.perf_counter()
        rate = n / (end - t)
        client = up._client_now
        sock = client._client.socket() if client else None
        counters = read_counters(sock if isinstance(sock, socket.socket) else None)
    assert counters is not None
    return Drain(rate, counters.bytes_out / n, counters.bytes_in / n)


def on_air(payload_bytes: float) -> float:
    """Bytes a full-size packet stream spends on the radio for this much TCP payload."""
    return payload_bytes * (1 + PACKET_OVERHEAD / MSS)


async def drains(tmp: Path, broker: Mosquitto, quick: bool) -> None:
    n = 5_000 if quick else 50_000
    print(f"backlog drain through real mosquitto, the cloud's ack included ({n} events):")
    loop = await drain(tmp, broker, broker.port, n, 64)
    line("loopback, window 64", f"{loop.rate:,.0f} ev/s", "target >= 5,000 ev/s")
    if has_cloud_ack():
        # Rows awaiting the cloud's ack are capped (unacked_max), and the cloud batches
        # its acks (0.2 s here, as the notifier's ack_delay_s): at most cap / delay ev/s.
        cap = int(getattr(parse(device_config(tmp / "x", 1883)).uplink, "unacked_max", 0))
        wide = await drain(tmp, broker, broker.port, n, 64, setting="unacked_max = 4096")
        line(f"  (bounded by unacked_max {cap} / 0.2 s ack batches", f"{cap / 0.2:,.0f} ev/s)")
        line("loopback, window 64, unacked_max 4096", f"{wide.rate:,.0f} ev/s")
    with CellularLink(broker.host, broker.port, delay_s=0.05) as cell:
        naive = await drain(tmp, broker, cell.port, 100 if quick else 200, 1)
        line("100 ms RTT, one at a time", f"{naive.rate:,.1f} ev/s")
        paho = await drain(tmp, broker, cell.port, n // 10 if quick else n // 5, 20)
        line("100 ms RTT, window 20 (paho's default)", f"{paho.rate:,.1f} ev/s")
        windowed = await drain(tmp, broker, cell.port, n // 5 if quick else n // 2, 64)
        line("100 ms RTT, window 64", f"{windowed.rate:,.1f} ev/s")
        line("ratio to one at a time", f"{windowed.rate / naive.rate:.1f}x", "target >= 10x")
        line("ratio to paho's window of 20", f"{windowed.rate / paho.rate:.2f}x")
    kbit_s = 300
    print(f"backlog drain on an LTE-M-like link (100 ms RTT, {kbit_s} kbit/s each way):")
    m = 600 if quick else 3_000
    with CellularLink(
        broker.host, broker.port, delay_s=0.05, up_kbit_s=kbit_s, down_kbit_s=kbit_s
    ) as cell:
        lte = {
            w: await drain(tmp, broker, cell.port, m if w > 1 else m // 15, w) for w in (1, 20, 64)
        }
    per_event = on_air(lte[64].up_bytes)
    capacity = kbit_s * 1000 / 8 / per_event
    line("bytes per event up (TCP payload)", f"{lte[64].up_bytes:.0f} B",
         f"{per_event:.0f} B on air with IP+TCP headers; {lte[64].down_bytes:.0f} B down")
    line("what the uplink can carry", f"{capacity:,.1f} ev/s",
         f"{kbit_s} kbit/s / {per_event:.0f} B")
    for w, d in lte.items():
        name = {1: "one at a time", 20: "window 20 (paho's default)", 64: "window 64"}[w]
        line(name, f"{d.rate:,.1f} ev/s", f"{100 * d.rate / capacity:.0f} % of the link")
    line("window 64 / window 20", f"{lte[64].rate / lte[20].rate:.2f}x")


# -- 3. bytes per telemetry reading -------------------------------------------------


def reading_json(i: int, t0: float, *, pretty: bool) -> str:
    """One reading as its own event-like JSON message (the naive way)."""
    body = {
        "id": new_event_id(),
        "device": DEVICE_ID,
        "site": "shiojiri-kataoka",
        "kind": "telemetry",
        "severity": "info",
        "ts": dt.datetime.fromtimestamp(t0 + 600 * i, dt.UTC).isoformat(),
        "clock_synced": True,
        "location": {"lat": 36.10395, "lon": 137.96563},
        "data": {"sensor": "level_east", "level_cm": round(12.0 + i * 0.1, 1)},
    }
    return json.dumps(body, indent=2) if pretty else json.dumps(body, separators=(",", ":"))


async def telemetry_bytes(
    broker: Mosquitto, readings: int, per_batch: int
) -> tuple[float, float, float]:
    """Bytes per reading (TCP payload both ways, as the proxy counts them): one pretty-JSON
    message each, one compact-JSON message each, batched MessagePack."""
    topic = f"satoyama/v1/{DEVICE_ID}/telemetry"
    t0 = time.time()
    naive: list[float] = []
    with CellularLink(broker.host, broker.port) as cell:
        for pretty in (True, False):
            async with aiomqtt.Client(cell.host, cell.port, identifier="bytes-naive") as c:
                cell.reset_counters()
                for i in range(readings):
                    await c.publish(topic, reading_json(i, t0, pretty=pretty), qos=1)
                naive.append((cell.bytes_up + cell.bytes_down) / readings)
        async with aiomqtt.Client(cell.host, cell.port, identifier="bytes-batched") as c:
            cell.reset_counters()
            buf = TelemetryBuffer(
                device=DEVICE_ID, site="shiojiri-kataoka",
                boot="3f0b6a1e-2c55-4d7e-9a51-0b7f1f2c9d10", batch_s=3600,
                max_readings=per_batch, clock_synced=lambda: True,
            )
            for i in range(readings):
                buf.add("level_east.level_cm", round(12.0 + i * 0.1, 1), at=t0 + 600 * i)
                if len(buf) >= per_batch or i == readings - 1:
                    row = buf.take()
                    assert row is not None
                    await c.publish(topic, row.payload, qos=1)
            batched = (cell.bytes_up + cell.bytes_down) / readings
    return naive[0], naive[1], batched


# -- 4. memory with a backlog ---------------------------------------------------------


def rss_mb(pid: int) -> float:
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return int(text.split()[1]) / 1024
    return 0.0


def rows_left(path: Path) -> int:
    """Rows in another process's outbox, read-only (an Outbox.open() there would check
    and repair the file under the daemon's feet)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


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
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "run", "--config", str(config),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    offline: list[float] = []
    online: list[float] = []
    try:
        for _ in range(20):  # 10 s with the link down and 50,000 events waiting
            await asyncio.sleep(0.5)
            offline.append(rss_mb(proc.pid))
        with Mosquitto(port=port) as broker:
            # Rows leave only with the cloud's acknowledgement: its stand-in gives it.
            async with CloudAcker(broker, batch_s=0.2).running():
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    online.append(rss_mb(proc.pid))
                    depth = rows_left(outbox_path)
                    if depth == 0:
                        break
                else:
                    print(f"  !! {depth} rows still in the outbox after 120 s")
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    return offline, online


# -- 5. a device-month of data -----------------------------------------------------


OLD_DEFAULTS = {"heartbeat_s": 3600.0, "keepalive_s": 1200, "ack_qos": 1}
"""The defaults before issue 12's data budget (the baseline of the month figures): hourly
heartbeats, a 1200 s keepalive, the cloud's acks at QoS 1, telemetry as float arrays."""


@dataclass(frozen=True)
class Costs:
    """Bytes on the wire (kernel TCP counters, both ways, 52 B of IP+TCP header per
    segment) of each kind of traffic, measured on the daemon's own socket."""

    start: int
    """Daemon start: connect, status, subscribe, the first heartbeat (and its ack)."""
    reconnect: int
    """A reconnect after the link dropped: handshake, CONNECT, status, SUBSCRIBE."""
    resumed: bool | None
    """Whether that reconnect resumed the TLS session (None: no TLS)."""
    heartbeat: int
    """One heartbeat event and its PUBACK, the cloud's ack (and our PUBACK of it at QoS 1)."""
    heartbeat_payload: int
    batch: int
    """One telemetry batch (as many readings as a batch_s of 10-minute readings) and ack,
    encoded as this tree's defaults encode it (packed columns)."""
    batch_arrays: int
    """The same batch encoded as float arrays (before issue 12)."""
    heartbeat_batch: int
    """A heartbeat that takes the held readings with it (this tree's daemon): both rows,
    their PUBACKs and the cloud's one ack for both."""
    readings: int
    ping: int


@dataclass(frozen=True)
class Rates:
    heartbeat_s: float
    keepalive_s: float
    batch_s: float
    reconnects_per_day: float = 2.0
    rides_heartbeat: bool = True
    """The telemetry batch leaves with the heartbeat (this tree; batch_s >= heartbeat_s)."""
    publish_resets_ping: bool = True
    """A publish resets the keepalive timer (this tree's uplink); paho 2.2 alone pings
    every keepalive whatever else crossed the link."""


def per_day(c: Costs, r: Rates) -> dict[str, float]:
    pings_per_day = (86400 / r.heartbeat_s) * max(0, math.ceil(r.heartbeat_s / r.keepalive_s) - 1)
    if not r.publish_resets_ping:
        pings_per_day = 86400 / r.keepalive_s
    if r.rides_heartbeat and r.batch_s >= r.heartbeat_s:
        # Every heartbeat takes the readings held since the last one.
        telemetry = (86400 / r.heartbeat_s) * (c.heartbeat_batch - c.heartbeat)
        return {
            f"heartbeats (every {r.heartbeat_s:g} s)": (86400 / r.heartbeat_s) * c.heartbeat,
            f"keepalive pings (idle {r.keepalive_s:g} s)": pings_per_day * c.ping,
            f"telemetry, water level (with each heartbeat, {c.readings} readings)": telemetry,
            f"reconnects ({r.reconnects_per_day:g} a day)": r.reconnects_per_day * c.reconnect,
        }
    return {
        f"heartbeats (every {r.heartbeat_s:g} s)": (86400 / r.heartbeat_s) * c.heartbeat,
        f"keepalive pings (idle {r.keepalive_s:g} s)": pings_per_day * c.ping,
        f"telemetry, water level (batch every {r.batch_s:g} s)": (86400 / r.batch_s) * c.batch,
        f"reconnects ({r.reconnects_per_day:g} a day)": r.reconnects_per_day * c.reconnect,
    }


def per_month(c: Costs, r: Rates) -> tuple[float, float]:
    """Bytes per device-month (30 days): a wildlife device (no telemetry), a water-level one."""
    day = per_day(c, r)
    wildlife = sum(b for n, b in day.items() if not n.startswith("telemetry")) * 30
    return wildlife, sum(day.values()) * 30


def has_cloud_ack() -> bool:
    """Whether this tree's uplink waits for the cloud's acknowledgement (``delivery``)."""
    return "delivery" in parse(device_config(Path("x"), 1883)).uplink.__struct_fields__


@contextlib.contextmanager
def device_ack_qos(qos: int) -> Iterator[None]:
    """The QoS the device subscribes to its ack topic with (0 in this tree, 1 before)."""
    original = getattr(edge.link.uplink, "ACK_QOS", 1)
    setattr(edge.link.uplink, "ACK_QOS", qos)  # noqa: B010 - a Final of the module under test
    try:
        yield
    finally:
        setattr(edge.link.uplink, "ACK_QOS", original)  # noqa: B010


async def measure(
    tmp: Path,
    broker: Mosquitto,
    fleet: Fleet | None,
    *,
    resume: bool,
    ack_qos: int | None,
    tls13: bool = False,
) -> Costs:
    """Run the daemon straight to the broker and measure each kind of traffic.

    ``fleet``: mutual TLS with these identities (None: plain MQTT).  ``ack_qos``: the
    QoS of the cloud's acks, published and subscribed (None: no acks, rows deleted on
    PUBACK).
    """
    tag = f"{'mtls' if fleet else 'plain'}-{'resume' if resume else 'full'}-{ack_qos}-{tls13}"
    acker = (
        CloudAcker(
            broker,
            qos=ack_qos,
            batch_s=0.2,  # as the notifier's mqtt.ack_delay_s
            tls_context=client_context(fleet.cloud, resume=False) if fleet else None,
        )
        if ack_qos is not None
        else None
    )
    async with contextlib.AsyncExitStack() as stack:
        if acker is not None:
            await stack.enter_async_context(acker.running())
        # Straight to the broker: a proxy in between would change how TCP segments
        # (and so headers) fall; the far end of a real link is the broker itself.
        text = device_config(tmp / f"month-{tag}.sqlite3", broker.port, warmup_s=0)
        text = uplink_setting(text, "keepalive_s = 5\nconnect_timeout_s = 5")
        if ack_qos is None and has_cloud_ack():
            text = uplink_setting(text, 'delivery = "puback"')
        text += '\n[health]\nheartbeat_s = 86400\nmodem = "none"\n'
        if fleet is not None:
            text += tls_table(fleet.device)
        stack.enter_context(uplink_tls(resume=resume, tls13=tls13))
        stack.enter_context(device_ack_qos(1 if ack_qos is None else ack_qos))
        daemon = await stack.enter_async_context(Daemon(parse(text)))
        up = daemon.uplink
        assert up is not None and daemon.telemetry is not None

        async def settled(mark: int) -> int:
            """Bytes since ``mark`` once the outbox is empty and the last ACKs crossed."""
            while await daemon.outbox.depth():  # noqa: ASYNC110 - no event says "empty"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            up.sample_usage()
            return up.usage.total - mark

        defaults = parse(device_config(tmp / "x", 1883))
        readings = int(defaults.telemetry.batch_s // 600)  # water level every 10 minutes
        await asyncio.wait_for(up.connected.wait(), 20)
        start = await settled(0)
        mark = up.usage.total
        await daemon.heartbeat.beat()
        heartbeat = await settled(mark)
        heartbeat_payload = acker.last_event_size if acker is not None else 0
        batches: dict[bool, int] = {}
        for columns in (False, True):
            daemon.telemetry.buffer.columns = columns
            mark = up.usage.total
            t0 = time.time()
            for i in range(readings):
                # A sampler's timestamps (a few ms of jitter) and a level to 1 mm.
                daemon.telemetry.add("level_east.level_cm", round(40.0 + math.sin(i / 3), 1),
                                   at=t0 + 600 * i + (i * 7919 % 13) / 1000)  # fmt: skip
            await daemon.telemetry.flush()
            batches[columns] = await settled(mark)
        daemon.telemetry.buffer.columns = True
        mark = up.usage.total
        t0 = time.time()
        for i in range(readings):
            daemon.telemetry.add("level_east.level_cm", round(40.0 + math.sin(i / 3), 1),
                               at=t0 + 600 * i + (i * 7919 % 13) / 1000)  # fmt: skip
        await daemon.heartbeat.beat()  # takes the readings with it
        heartbeat_batch = await settled(mark)
        mark = up.usage.total
        await asyncio.sleep(5.5)  # one idle keepalive period: one PINGREQ/PINGRESP
        ping = await settled(mark)
        # The link drops (no goodbye: the socket just dies) and the uplink reconnects.
        assert up._client_now is not None
        dying = up._client_now._client.socket()
        assert isinstance(dying, socket.socket)
        socket.socket.shutdown(dying, socket.SHUT_RDWR)
        deadline = time.monotonic() + 10
        while up.connected.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # (no event says "disconnected")
        mark = up.usage.total  # the dropped connection was counted as its session ended
        await asyncio.wait_for(up.connected.wait(), 30)
        reconnect = await settled(mark)
        resumed = None
        if fleet is not None and up._client_now is not None:
            sock = up._client_now._client.socket()
            resumed = sock.session_reused if isinstance(sock, ssl.SSLSocket) else None
    return Costs(
        start=start, reconnect=reconnect, resumed=resumed, heartbeat=heartbeat,
        heartbeat_payload=heartbeat_payload, batch=batches[True],
        batch_arrays=batches[False], heartbeat_batch=heartbeat_batch, readings=readings,
        ping=ping,
    )


def batch_sizes(readings: int) -> tuple[int, int]:
    """Payload bytes of a water-level batch of ``readings`` (as measure() makes it): float
    arrays, packed columns."""
    t0 = 1_764_900_000.25
    sizes = []
    for columns in (False, True):
        buf = TelemetryBuffer(
            device=DEVICE_ID, site="shiojiri-kataoka", boot="3f0b6a1e-2c55-4d7e-9a51-0b7f1f2c9d10",
            batch_s=10800, max_readings=1000, clock_synced=lambda: True, columns=columns,
        )  # fmt: skip
        for i in range(readings):
            buf.add("level_east.level_cm", round(40.0 + math.sin(i / 3), 1),
                    at=t0 + 600 * i + (i * 7919 % 13) / 1000)  # fmt: skip
        row = buf.take()
        assert row is not None
        sizes.append(len(row.payload))
    return sizes[0], sizes[1]


async def month(tmp: Path, broker: Mosquitto) -> None:
    """The data budget per device-month over mutual TLS: this tree's defaults (resumed and
    full-handshake reconnects) against the old defaults, measured in the same run, and
    each lever alone."""
    fleet = make_fleet(tmp / "pki")
    defaults = parse(device_config(tmp / "x", 1883))
    new_rates = Rates(
        heartbeat_s=defaults.health.heartbeat_s,
        keepalive_s=defaults.uplink.keepalive_s,
        batch_s=defaults.telemetry.batch_s,
    )
    old_rates = replace(
        new_rates,
        rides_heartbeat=False,
        publish_resets_ping=False,
        heartbeat_s=OLD_DEFAULTS["heartbeat_s"],
        keepalive_s=OLD_DEFAULTS["keepalive_s"],
    )
    new_qos = int(getattr(edge.link.uplink, "ACK_QOS", 1))
    plain = await measure(tmp, broker, None, resume=False, ack_qos=new_qos)
    with Mosquitto(workdir=tmp / "tls-broker", tls=fleet.broker_tls()) as tls_broker:
        old_full = await measure(tmp, tls_broker, fleet, resume=False, ack_qos=1)
        old_res = await measure(tmp, tls_broker, fleet, resume=True, ack_qos=1)
        full = await measure(tmp, tls_broker, fleet, resume=False, ack_qos=new_qos)
        res = await measure(tmp, tls_broker, fleet, resume=True, ack_qos=new_qos)
        only13 = await measure(tmp, tls_broker, fleet, resume=False, ack_qos=new_qos, tls13=True)
        no_ack = (
            await measure(tmp, tls_broker, fleet, resume=False, ack_qos=None)
            if has_cloud_ack()
            else None
        )
    # The old defaults sent float arrays; this tree packs columns.
    old_columns = old_full.batch
    old_full = replace(old_full, batch=old_full.batch_arrays)
    old_res = replace(old_res, batch=old_res.batch_arrays)
    arrays_b, columns_b = batch_sizes(full.readings)

    print("bytes on the wire per kind of traffic (kernel TCP counters, IP+TCP headers included;")
    print(f"old: the cloud's acks at QoS 1, float arrays; new: acks at QoS {new_qos}, columns):")
    print(f"  {'':<46} {'old mTLS':>9} {'new plain':>9} {'new mTLS':>9} {'resumed':>9}")

    def row(name: str, pick: Callable[[Costs], int]) -> None:
        print(f"  {name:<46} {pick(old_full):>7} B {pick(plain):>7} B {pick(full):>7} B "
              f"{pick(res):>7} B")  # fmt: skip

    row("daemon start: connect ... first heartbeat", lambda c: c.start)
    row("a reconnect after the link dropped", lambda c: c.reconnect)
    row("one heartbeat + PUBACK + the cloud's ack", lambda c: c.heartbeat)
    row(f"one telemetry batch of {full.readings} readings + ack", lambda c: c.batch)
    row("a heartbeat taking that batch with it + ack", lambda c: c.heartbeat_batch)
    row("one keepalive ping", lambda c: c.ping)
    line("the reconnect resumed the TLS session", f"{full.resumed} / {res.resumed}",
         "(new mTLS / resumed)")
    line("the cloud's ack at QoS 1 -> QoS 0, per event",
         f"{old_full.heartbeat - full.heartbeat} B less",
         f"heartbeat {old_full.heartbeat} B -> {full.heartbeat} B (no PUBACK from the device)")
    if no_ack is not None:
        line("the cloud's ack at QoS 0, per event", f"{full.heartbeat - no_ack.heartbeat} B",
             f"heartbeat {full.heartbeat} B with it, {no_ack.heartbeat} B without")
    line("a heartbeat event's payload (JSON)", f"{full.heartbeat_payload} B")
    line(f"a batch of {full.readings} readings' payload", f"{columns_b} B",
         f"packed columns; float arrays {arrays_b} B; on the wire with its ack "
         f"{full.batch} B instead of {full.batch_arrays} B")

    print("old defaults (heartbeat 3600 s, keepalive 1200 s, acks QoS 1, float arrays) vs")
    print(f"new defaults (heartbeat {new_rates.heartbeat_s:g} s, keepalive "
          f"{new_rates.keepalive_s:g} s, acks QoS {new_qos}, packed columns), 2 reconnects a "
          "day,")
    print("per device-month over mutual TLS, acks included (wildlife / water level):")

    def verdict(w: float, t: float) -> str:
        return "meets 1 MB" if max(w, t) <= 1e6 else "over 1 MB"

    results: dict[str, tuple[float, float]] = {}
    for name, costs, r in (
        ("old defaults, resumed reconnects", old_res, old_rates),
        ("old defaults, full-handshake reconnects", old_full, old_rates),
        ("new defaults, resumed reconnects", res, new_rates),
        ("new defaults, full-handshake reconnects", full, new_rates),
    ):
        w, t = results[name] = per_month(costs, r)
        line(name, f"{w / 1e6:.2f} / {t / 1e6:.2f} MB", verdict(w, t))
    for kind in ("resumed", "full-handshake"):
        ow, ot = results[f"old defaults, {kind} reconnects"]
        nw, nt = results[f"new defaults, {kind} reconnects"]
        line(f"  new / old, {kind}", f"{nw / ow:.2f} / {nt / ot:.2f}")
    pw, pt = per_month(plain, new_rates)
    line("new defaults, plain MQTT (no TLS)", f"{pw / 1e6:.2f} / {pt / 1e6:.2f} MB")

    print("the new defaults per day, full-handshake reconnects:")
    for name, b in per_day(full, new_rates).items():
        line(f"{name} per day", f"{b / 1000:.1f} kB")

    print("levers, each alone from the old defaults, full-handshake reconnects "
          "(kB per device-month, wildlife / water):")
    base_w, base_t = results["old defaults, full-handshake reconnects"]

    def lever(name: str, costs: Costs, r: Rates, note: str = "") -> None:
        w, t = per_month(costs, r)
        line(name, f"{(w - base_w) / 1000:+.0f} / {(t - base_t) / 1000:+.0f} kB", note)

    lever("the cloud's acks at QoS 0", replace(old_full, heartbeat=full.heartbeat,
          batch=full.batch_arrays), old_rates, "a lost ack: the row is resent after "
          "ack_timeout_s")  # fmt: skip
    lever("heartbeat every 3 h", old_full, replace(old_rates, heartbeat_s=10800),
          "the will still says offline within 1.5 keepalives")
    lever("keepalive 1800 s", old_full, replace(old_rates, keepalive_s=1800),
          "learned down where the carrier's NAT forgets sooner")
    lever("telemetry as packed columns", replace(old_full, batch=old_columns),
          old_rates, f"batch payload {arrays_b} B -> {columns_b} B")
    lever("a publish resets the keepalive timer", old_full,
          replace(old_rates, publish_resets_ping=True), "paho alone pings every keepalive")
    lever("TLS session resumption (every reconnect)",
          replace(old_full, reconnect=old_res.reconnect), old_rates,
          "only where the broker's tickets outlive the connection (mosquitto: 2 h)")
    lever("TLS 1.3 only (a shorter ClientHello)", replace(old_full, reconnect=only13.reconnect),
          old_rates, f"full handshake {only13.reconnect} B instead of {full.reconnect} B")
    lever("one reconnect a day instead of two", old_full, replace(old_rates, reconnects_per_day=1))
    if no_ack is not None:
        lever("(no cloud acks at all: what they cost at QoS 1)",
              replace(old_full, heartbeat=no_ack.heartbeat, batch=no_ack.batch_arrays),
              old_rates)  # fmt: skip

    print("the new defaults without one of their parts, where the keepalive was learned down, or")
    print("with more reconnects (per device-month, full-handshake reconnects, wildlife / water):")
    for name, r, note in (
        ("telemetry in its own flight (as before)", replace(new_rates, rides_heartbeat=False),
         "batch every batch_s, not with the heartbeat"),
        ("a ping every keepalive however busy (paho alone)",
         replace(new_rates, publish_resets_ping=False), "publishes not counted as traffic"),
        ("keepalive learned down to 900 s", replace(new_rates, keepalive_s=900),
         "a NAT that forgets flows idle 15-30 min"),
        ("keepalive at its floor, 240 s", replace(new_rates, keepalive_s=240),
         "a NAT that forgets flows idle 4-8 min"),
        ("one reconnect a day", replace(new_rates, reconnects_per_day=1), ""),
        ("four reconnects a day", replace(new_rates, reconnects_per_day=4), "a flapping link"),
    ):
        w, t = per_month(full, r)
        line(name, f"{w / 1e6:.2f} / {t / 1e6:.2f} MB", f"{verdict(w, t)}; {note}".rstrip("; "))


async def main(quick: bool, only: str | None) -> None:
    def wanted(section: str) -> bool:
        return only is None or only == section

    with tempfile.TemporaryDirectory(prefix="satoyama-bench-") as d:
        tmp = Path(d)
        if wanted("ingest"):
            await ingest(
                tmp, n_naive=1_000 if quick else 2_000, n_group=20_000 if quick else 50_000
            )

        with Mosquitto(workdir=tmp / "broker") as broker:
            if wanted("drain"):
                await drains(tmp, broker, quick)
            if wanted("bytes"):
                readings = 120
                pretty, compact, batched6 = await telemetry_bytes(broker, readings, 6)
                _, _, batched60 = await telemetry_bytes(broker, readings, 60)
                print("bytes per telemetry reading (TCP payload both directions, MQTT included):")
                line("one pretty-JSON message per reading", f"{pretty:.0f} B")
                line("one compact-JSON message per reading", f"{compact:.0f} B",
                     f"{100 * compact / pretty:.0f} % of pretty")
                for per, b in ((6, batched6), (60, batched60)):
                    line(f"batched MessagePack, {per} readings/batch", f"{b:.0f} B",
                         f"{100 * b / pretty:.0f} % of pretty (target <= 30 %), "
                         f"{100 * b / compact:.0f} % of compact")
            if wanted("month"):
                await month(tmp, broker)

        if wanted("memory"):
            n = 5_000 if quick else 50_000
            offline, online = await memory(tmp, n)
            print(f"daemon RSS with a {n}-event backlog (edge run, real process):")
            line("link down, 10 s", f"{min(offline):.1f}-{max(offline):.1f} MB")
            line("draining", f"{min(online):.1f}-{max(online):.1f} MB", "target flat, <= 60 MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument(
        "--only", choices=["ingest", "drain", "bytes", "month", "memory"], default=None,
        help="run one section",
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it stuck?
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # as in the daemon's own process
    asyncio.run(main(args.quick, args.only))
